"""Name -> dataset class registry used by ``build_dataset`` and the CLI.

Built-in datasets are listed as ``"module:Class"`` strings and imported on first
use, so a missing optional dependency (OpenCV for SYNTHIA, say) only matters
for the dataset that needs it. Third-party code may add its own with
:func:`register_dataset`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from .._lazy import table_entry

_BUILTIN: dict[str, str] = {
    "cityscapes": "contraseg.data.cityscapes:CityscapesDataset",
    "gta5": "contraseg.data.gta5:GTA5Dataset",
    "synthia": "contraseg.data.synthia:SynthiaDataset",
    "ade20k": "contraseg.data.ade20k:ADE20KDataset",
    "pascal-context": "contraseg.data.pascal_context:PascalContextDataset",
    "coco-stuff": "contraseg.data.coco_stuff:CocoStuffDataset",
    "synthetic-source": "contraseg.data.synthetic:SyntheticSourceDataset",
    "synthetic-target": "contraseg.data.synthetic:SyntheticTargetDataset",
}
_REGISTERED: dict[str, Callable[..., Any]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Class decorator: make ``build_dataset(name, ...)`` construct the class."""

    def wrap(cls: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTERED[name] = cls
        return cls

    return wrap


def dataset_names() -> list[str]:
    """Every name ``build_dataset`` accepts, built-in and registered, sorted."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_dataset_class(name: str) -> Callable[..., Any]:
    """The class registered for ``name``; ValueError listing the known names otherwise."""
    cls = table_entry(name, _REGISTERED, _BUILTIN)
    if cls is None:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    return cls


def dataset_options(cls: type) -> set[str]:
    """The keyword arguments of dataset class ``cls`` a user may set (a config's
    ``options:``, the command line's ``--option KEY=VALUE``): every constructor argument
    but ``root``, ``split`` and what the engine sets itself (transform, pseudo labels)."""
    fixed = {"self", "root", "split", "transform", "pseudo_label_dir", "missing_labels"}
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in parameters if p.name not in fixed and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def build_dataset(name: str, **kwargs: Any) -> Any:
    """Construct the dataset registered as ``name`` with ``kwargs``."""
    return get_dataset_class(name)(**kwargs)
