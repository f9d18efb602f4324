"""Lazy attribute loading for package ``__init__`` files (PEP 562), and lazy plug-in tables.

A package lists ``{public name: submodule}``; the submodule is imported the first
time the name is used, so ``import contraseg.losses`` stays cheap and one broken
optional dependency does not break unrelated imports. A plug-in table (datasets,
adaptation methods) lists its built-in entries as ``"module:attr"`` strings the same
way and looks a name up with :func:`table_entry`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for a package exporting ``exports``."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__


def table_entry(name: str, registered: dict[str, Any], builtin: dict[str, str]) -> Any | None:
    """The object registered as ``name``, else the one that the built-in entry
    ``builtin[name] = "module:attr"`` names (its module imported now); None if neither has it."""
    if name in registered:
        return registered[name]
    if name not in builtin:
        return None
    module, attr = builtin[name].split(":")
    return getattr(importlib.import_module(module), attr)
