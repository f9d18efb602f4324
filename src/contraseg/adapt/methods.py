"""The adaptation-method table: ``adapt.method`` name -> trainer class.

A method is an :class:`~contraseg.adapt.trainer.AdaptTrainer` subclass whose ``method``
attribute is its name. The built-in methods are listed as ``"module:Class"`` strings and
imported on first use (as :mod:`contraseg.data.registry` lists datasets), so reading a
config never imports a trainer; code outside the package adds its own with the class
decorator :func:`register_method`. Config validation (``adapt.method``,
:func:`contraseg.adapt.config.check_adapt_relations`) and
:func:`contraseg.adapt.run.build_adapt_trainer` read this table.
"""

from __future__ import annotations

from typing import Any

from .._lazy import table_entry

_BUILTIN: dict[str, str] = {
    "self_training": "contraseg.adapt.self_training:SelfTrainingTrainer",
    "wdass": "contraseg.adapt.wdass_trainer:WDASSTrainer",
    "source_only": "contraseg.adapt.trainer:SourceOnlyTrainer",
    "fda": "contraseg.adapt.fda_trainer:FDATrainer",
    "dacs": "contraseg.adapt.dacs_trainer:DACSTrainer",
}
_REGISTERED: dict[str, Any] = {}


def register_method(cls: Any) -> Any:
    """Class decorator: make ``adapt.method: <cls.method>`` train with ``cls``."""
    name = cls.method
    if name in _BUILTIN or name in _REGISTERED:
        raise ValueError(f"adaptation method {name!r} is already registered")
    _REGISTERED[name] = cls
    return cls


def unregister_method(name: str) -> None:
    """Remove a method added by :func:`register_method`."""
    del _REGISTERED[name]


def method_names() -> list[str]:
    """Every ``adapt.method`` value: the built-in ones, then the registered ones."""
    return [*_BUILTIN, *_REGISTERED]


def trainer_class(name: str) -> Any:
    """The trainer class of method ``name``; ValueError listing the known methods otherwise."""
    cls = table_entry(name, _REGISTERED, _BUILTIN)
    if cls is None:
        raise ValueError(f"unknown adaptation method {name!r}; known methods: {', '.join(method_names())}")
    return cls
