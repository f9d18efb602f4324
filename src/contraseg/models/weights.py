"""Pretrained-weight loading for backbones: a local file or the library's own download.

``pretrained`` takes one of three forms everywhere in :mod:`contraseg.models`:

* ``None``: random initialisation, nothing is read;
* a local path to a torchvision / timm ``state_dict`` (``.pth``, ``.pt``, ``.bin`` read with
  ``torch.load(weights_only=True)``, or ``.safetensors``);
* ``"hub"``: torchvision's / timm's own pretrained download. This machine may be offline,
  so a failed download raises a one-line ``RuntimeError`` that asks for a local path.

Classifier keys (``fc.``, ``classifier.``, ...) of an ImageNet checkpoint are dropped
before loading, and the missing / unexpected keys are reported in one log line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

PretrainedSpec = Union[None, str, os.PathLike]
StateDict = dict[str, Tensor]

# Wrapper prefixes that a state dict may carry around the library model's own keys:
# DistributedDataParallel, a contraseg Segmentor and a contraseg backbone, in that order.
_WRAPPER_PREFIXES = ("module.", "backbone.body.", "body.")
# Keys under which training scripts commonly nest the state dict in a checkpoint file.
_NESTING_KEYS = ("state_dict", "model", "model_state", "module")


@dataclass
class LoadReport:
    """What :func:`load_state_dict_into` did: key counts for one log line."""

    source: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: loaded count, then the first few missing / unexpected keys."""

        def few(keys: list[str]) -> str:
            shown = ", ".join(keys[:3])
            more = f", ... (+{len(keys) - 3})" if len(keys) > 3 else ""
            return f"{len(keys)} [{shown}{more}]" if keys else "0"

        return (
            f"loaded {self.loaded} tensors from {self.source}; missing {few(self.missing)}; "
            f"unexpected {few(self.unexpected)}; dropped {len(self.dropped)} classifier keys"
        )


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read a ``state_dict`` file (``.safetensors`` or a ``torch.save`` file) on the CPU.

    ``torch.save`` files are read with ``weights_only=True`` (no arbitrary code runs).
    A checkpoint that nests the weights under ``"state_dict"``, ``"model"``,
    ``"model_state"`` or ``"module"`` is unwrapped.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file does not hold a mapping of names to tensors.
    """
    file = Path(path).expanduser()
    if file.is_dir():
        from ..load_errors import not_a_file_message

        raise IsADirectoryError(not_a_file_message(file, "weights"))
    if not file.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {str(file)!r}")
    if file.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # safetensors ships with timm, but is not required by us
            raise ImportError(f"reading {str(file)!r} needs the 'safetensors' package") from err
        state: object = load_file(str(file), device="cpu")
    else:
        state = torch.load(file, map_location="cpu", weights_only=True)
    return _unwrap_state_dict(state, str(file))


def _unwrap_state_dict(state: object, source: str) -> StateDict:
    """Follow the usual nesting keys down to a flat ``{name: Tensor}`` mapping."""
    while isinstance(state, Mapping):
        nested = next((state[k] for k in _NESTING_KEYS if isinstance(state.get(k), Mapping)), None)
        if nested is None:
            break
        state = nested
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{source} does not hold a state_dict (a non-empty mapping of names to tensors)")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(f"{source} holds a mapping without any tensor: keys {list(state)[:5]}")
    return tensors


def strip_wrapper_prefixes(state: StateDict, target_keys: Iterable[str]) -> StateDict:
    """Remove ``module.`` / ``backbone.body.`` / ``body.`` prefixes that hide the target's keys.

    ``module.`` (DDP) and ``body.`` (a saved contraseg backbone) are removed when every key
    carries them; from a whole contraseg Segmentor (``backbone.body.`` keys next to
    ``head.`` ones) only the backbone's keys are kept. A prefix that the target model's own
    keys start with is left alone.
    """
    targets = set(target_keys)
    for prefix in _WRAPPER_PREFIXES:
        if any(k.startswith(prefix) for k in targets):
            continue
        carried = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if carried and (len(carried) == len(state) or prefix == "backbone.body."):
            state = carried
    return state


def load_state_dict_into(
    module: nn.Module,
    state: StateDict,
    *,
    source: str,
    drop_prefixes: tuple[str, ...] = (),
) -> LoadReport:
    """Copy matching tensors of ``state`` into ``module`` (non-strict) and report.

    Args:
        module: the library model (a torchvision / timm module) that receives the weights.
        state: ``{name: Tensor}``; wrapper prefixes are stripped first.
        source: the file path or ``"hub:<arch>"``, used in messages.
        drop_prefixes: key prefixes of the ImageNet classifier to discard silently
            (``("fc.",)`` for a ResNet).

    Raises:
        ValueError: a tensor has the wrong shape, or no key at all matches the module.
    """
    state = strip_wrapper_prefixes(state, module.state_dict().keys())
    own = module.state_dict()
    dropped = [k for k in state if drop_prefixes and k.startswith(drop_prefixes) and k not in own]
    drop = set(dropped)
    state = {k: v for k, v in state.items() if k not in drop}
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{source}: tensor {key!r} has shape {tuple(value.shape)} but the model expects "
                f"{tuple(own[key].shape)}"
            )
    matched = [k for k in state if k in own]
    if not matched:
        raise ValueError(
            f"{source}: no key matches the model (file keys start {sorted(state)[:3]}, "
            f"model keys start {sorted(own)[:3]})"
        )
    result = module.load_state_dict(state, strict=False)
    report = LoadReport(
        source=source,
        loaded=len(matched),
        missing=list(result.missing_keys),
        unexpected=list(result.unexpected_keys),
        dropped=dropped,
    )
    level = logging.WARNING if report.missing or report.unexpected else logging.INFO
    logger.log(level, report.summary())
    return report


def load_pretrained(
    module: nn.Module,
    pretrained: PretrainedSpec,
    *,
    arch: str,
    fetch_hub: Callable[[], StateDict],
    drop_prefixes: tuple[str, ...] = (),
    transform: Callable[[StateDict], StateDict] | None = None,
) -> LoadReport | None:
    """Load ``pretrained`` (None, a local path or ``"hub"``) into ``module``.

    Args:
        module: the library model that receives the weights.
        pretrained: see the module docstring.
        arch: the backbone name, used in messages.
        fetch_hub: downloads the library's ImageNet state dict (called only for ``"hub"``).
        drop_prefixes: classifier key prefixes to discard.
        transform: renames the file's keys to the module's (e.g. timm ``features_only``).

    Returns:
        The :class:`LoadReport`, or None when ``pretrained`` is None.

    Raises:
        FileNotFoundError: a local path that does not exist.
        RuntimeError: ``"hub"`` and the download failed (offline machine).
        TypeError: ``pretrained`` is neither None, a string nor a path.
    """
    if pretrained is None:
        return None
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(
            f"pretrained must be None, 'hub' or a file path, got {type(pretrained).__name__}"
        )
    if isinstance(pretrained, str) and pretrained == "hub":
        try:
            state = fetch_hub()
        except Exception as err:  # any download failure: offline, proxy, bad cache
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise RuntimeError(
                f"could not download pretrained weights for backbone {arch!r} ({reason}); "
                f"this machine may be offline: pass a local file path instead, "
                f"pretrained='/path/to/{arch}.pth'"
            ) from err
        source = f"hub:{arch}"
    else:
        state = read_state_dict(pretrained)
        source = str(pretrained)
    if transform is not None:
        state = transform(state)
    return load_state_dict_into(module, state, source=source, drop_prefixes=drop_prefixes)


def torchvision_hub_state_dict(arch: str) -> StateDict:
    """Download torchvision's default ImageNet weights for ``arch`` (e.g. ``"resnet50"``)
    through ``torch.hub.load_state_dict_from_url`` (cached in ``$TORCH_HOME``)."""
    import torchvision

    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)


def timm_hub_state_dict(model_name: str) -> StateDict:
    """Download timm's default ImageNet weights for ``model_name`` (Hugging Face hub or URL,
    whichever timm's pretrained config names) and return the classifier model's state dict."""
    import timm

    return timm.create_model(model_name, pretrained=True).state_dict()
