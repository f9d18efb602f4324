"""The vocabulary of config sections: checked fields, and a checked dataclass from a mapping.

A config section is a dataclass; each field's type annotation and ``metadata`` (lower
bound, list length) are checked by :func:`build_section`, so a typo or a bad value
fails at once with a one-line :class:`ConfigError` that names the key and what is
allowed. :func:`config_field` declares such a field; :func:`default_of` reads a
default from the constructor it configures, so a config refers to a loss's (or an
estimator's) released default instead of repeating the number.

Used by :mod:`contraseg.engine.config` (the training config), the regulariser table
(:mod:`contraseg.engine.regularisers`) and :mod:`contraseg.adapt.config`.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import field
from typing import Any, Callable, Literal

__all__ = ["ConfigError", "build_section", "config_field", "default_of", "size_field"]


class ConfigError(ValueError):
    """A config key is unknown or its value is not allowed (a one-line message)."""


def config_field(default: Any = dataclasses.MISSING, *, minimum: float | None = None, exclusive: bool = False,
         length: int | None = None, factory: Any = None) -> Any:
    """A dataclass field with a checked lower bound (``minimum``, excluded with
    ``exclusive``) or list ``length``; ``factory`` makes a mutable default."""
    metadata = {"minimum": minimum, "exclusive": exclusive, "length": length}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def size_field() -> Any:
    """An optional ``[h, w]`` of positive integers, null by default (sizes, crops, strides)."""
    return config_field(None, minimum=1, length=2)


def default_of(constructor: Callable[..., Any], argument: str) -> Any:
    """The default value of ``argument`` in ``constructor``'s signature, e.g.
    ``default_of(PixelContrastLoss, "temperature")`` -> 0.1."""
    parameter = inspect.signature(constructor).parameters[argument]
    if parameter.default is inspect.Parameter.empty:
        raise TypeError(f"{getattr(constructor, '__qualname__', constructor)}: {argument} has no default")
    return parameter.default


_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it converted."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"config key {key}: null is not allowed")
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is Literal:
        if value not in args or isinstance(value, bool) != isinstance(args[0], bool):
            allowed = ", ".join(str(a) for a in args)
            raise ConfigError(f"config key {key}: {value!r} is not allowed; allowed values: {allowed}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected a list, got {_describe(value)}")
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"config key {key}: expected a mapping with string keys, got {_describe(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build_section(tp, value, key)
    if value is None:
        raise ConfigError(f"config key {key}: null is not allowed; expected {_TYPE_NAMES[tp]}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" as a string
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
        raise ConfigError(f"config key {key}: expected {_TYPE_NAMES[tp]}, got {_describe(value)}")
    return value


def _check_bounds(value: Any, meta: typing.Mapping[str, Any], key: str) -> None:
    if value is None:
        return
    length = meta.get("length")
    if length is not None and len(value) != length:
        raise ConfigError(f"config key {key}: expected a list of {length} values, got {value!r}")
    minimum = meta.get("minimum")
    if minimum is None:
        return
    items = value if isinstance(value, list) else [value]
    exclusive = meta.get("exclusive", False)
    for item in items:
        if item < minimum or (exclusive and item == minimum):
            bound = f"> {minimum}" if exclusive else f">= {minimum}"
            raise ConfigError(f"config key {key}: {value!r} is not allowed; it must be {bound}")


def build_section(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from the mapping ``raw`` (null: all defaults), checking every
    key against its field; ``prefix`` is the section's dotted key for the messages."""
    where = prefix or "the top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {where}: expected a mapping, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in raw if k not in fields]
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(f"unknown config key {name}; allowed keys in {where}: {', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        converted = _convert(value, hints[name], key)
        _check_bounds(converted, fields[name].metadata, key)
        kwargs[name] = converted
    return cls(**kwargs)
