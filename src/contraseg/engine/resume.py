"""What a trainer checks when it starts in a run folder or resumes from a checkpoint.

A run folder holds ``last.pth`` (:data:`LAST`, the latest complete training state) and
``best.pth`` (:data:`BEST`). ``--resume auto`` continues from ``last.pth`` when it
exists (:func:`resolve_resume`). Resuming compares the checkpoint's config with the
requested one: a difference in a key that changes training (anything but
:data:`NON_TRAINING_KEYS`) is refused with the list of keys unless ``resume_changed``
(:func:`checked_config_changes`); then the new values are used. Temporary files of a
killed write are removed when a trainer starts in the folder
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

LAST = "last.pth"
BEST = "best.pth"

# Config keys a resume may change freely: they do not change what is trained.
NON_TRAINING_KEYS = ("name", "recipe", "data.val", "data.num_workers", "data.eval_classes", "eval",
                     "train.log_interval", "train.best_on", "train.eval_interval", "train.checkpoint_interval",
                     "train.tensorboard")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay whole values)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def config_changes(stored: dict[str, Any], requested: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (stored value, requested value)}`` for every key that differs and
    changes training (keys under :data:`NON_TRAINING_KEYS` are left out)."""
    old, new = _flatten(stored), _flatten(requested)
    changes = {}
    for key in sorted(set(old) | set(new)):
        if any(key == k or key.startswith(k + ".") for k in NON_TRAINING_KEYS):
            continue
        if old.get(key) != new.get(key):
            changes[key] = (old.get(key), new.get(key))
    return changes


def checked_config_changes(path: Path, stored_yaml: Any, cfg: Any, resume_changed: bool) -> dict[str, tuple[Any, Any]]:
    """The training keys that resuming ``cfg`` from checkpoint ``path`` (whose config is
    ``stored_yaml``) changes, as :func:`config_changes`.

    The stored config goes through the config class, so a key added since the checkpoint
    compares as its default. Raises a one-line ValueError listing the changes unless
    ``resume_changed``.
    """
    from .config import ConfigError
    from .config_io import config_from_yaml, config_to_yaml

    try:
        stored = yaml.safe_load(config_to_yaml(config_from_yaml(stored_yaml)))
    except (ConfigError, yaml.YAMLError, TypeError):
        stored = yaml.safe_load(stored_yaml) if isinstance(stored_yaml, str) else None
    if not isinstance(stored, dict):
        return {}
    requested = yaml.safe_load(config_to_yaml(cfg))
    changes = config_changes(stored, requested)
    if changes and not resume_changed:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changes.items())[:6])
        more = f" (and {len(changes) - 6} more)" if len(changes) > 6 else ""
        raise ValueError(f"--resume {path}: the config changes training keys ({shown}{more}); "
                         "pass --resume-changed to continue with the new values, or start a new run")
    return changes


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files a killed atomic write leaves (``.NAME.*.tmp``,
    ``log.jsonl.tmp``) in ``run_dir``; returns what was removed."""
    removed = []
    if run_dir.is_dir():
        for path in list(run_dir.glob(".*.tmp")) + list(run_dir.glob("*.jsonl.tmp")):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """``None`` -> None; ``"auto"`` -> ``run_dir/last.pth`` if it exists else None; a path
    -> that path (which must exist)."""
    if resume is None:
        return None
    if resume == "auto":
        last = run_dir / LAST
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: checkpoint not found: {path}")
    return path
