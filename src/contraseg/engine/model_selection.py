"""Which evaluation set picks ``best.pth``: ``train.best_on``, stated, never silently the target.

``train.best_on`` (config key):

* ``auto`` (default): plain training selects on ``data.val[0]``, and says so in its first
  lines (naming the set, and warning when it is not the training data's dataset, e.g. a
  source-only run evaluated on the target domain); adaptation (a config with an ``adapt``
  section) keeps no ``best.pth``, since its evaluation sets hold target labels that
  unsupervised adaptation must not select on: ``last.pth`` is the result.
* ``none``: no ``best.pth``; ``last.pth`` is the result.
* a dataset label ``name/split`` of ``data.val`` (e.g. ``cityscapes/val``) or its index
  (``0``, ``1``, ...): select on that set, stated at the start.
"""

from __future__ import annotations

from typing import Any, Sequence

from .config_schema import ConfigError


def resolve_best_on(cfg: Any, val_labels: Sequence[str]) -> tuple[str | None, str]:
    """``(label of the selecting val set or None, the sentence that says so)``.

    Raises:
        ConfigError: ``train.best_on`` names no set of ``data.val``.
    """
    raw = getattr(cfg.train, "best_on", "auto")
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise ConfigError(f"config key train.best_on: expected auto, none, a data.val label or an index, got {raw!r}")
    choice = str(raw).strip()
    adapting = bool(getattr(cfg, "adapt", None))
    if choice == "none" or (choice == "auto" and adapting):
        why = " (adaptation: the evaluation sets hold target labels)" if choice == "auto" else ""
        return None, (f"model selection: none{why}; last.pth is the result, no best.pth "
                      f"(set train.best_on to a data.val set to select on it)")
    if choice == "auto":
        label = val_labels[0]
        train_name = cfg.data.train.name
        note = (f"model selection: best.pth is chosen on {label} (data.val[0], train.best_on: auto)")
        if not label.startswith(f"{train_name}/"):
            note += (f"; it is not the training data's dataset ({train_name}): if its labels are your test "
                     f"labels, set train.best_on to none or to a validation set of your own")
        return label, note
    if choice.isdigit():
        index = int(choice)
        if index >= len(val_labels):
            raise ConfigError(f"config key train.best_on: {choice} but data.val has {len(val_labels)} set(s)")
        label = val_labels[index]
    elif choice in val_labels:
        label = choice
    else:
        raise ConfigError(f"config key train.best_on: {choice!r} is not a data.val set; allowed values: auto, none, "
                          f"{', '.join(val_labels)} or an index 0..{len(val_labels) - 1}")
    return label, f"model selection: best.pth is chosen on {label} (train.best_on)"
