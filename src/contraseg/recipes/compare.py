"""Resolve a recipe config through contraseg's own loaders and compare it with its manifest.

:func:`resolve_recipe` reads a config as ``contraseg train`` / ``contraseg adapt`` do
(:func:`contraseg.engine.config_io.load_config`, and for an ``adapt:`` section
:func:`contraseg.adapt.config.adapt_section`) and returns the fully resolved mapping, every
default filled in. :func:`compare_item` checks one manifest item against it:

- ``equal``: each check's contraseg value equals the released value, read through the
  check's ``from`` part, ``expect`` (what a descriptive released value means in contraseg)
  or ``normalise`` (a unit or layout change, :data:`NORMALISERS`);
- ``differs`` / ``not released`` with a key: the resolved value equals the ``contraseg``
  value the manifest records, so a deliberate difference cannot drift silently either;
- key null: nothing to resolve (``in_code`` or the reason says why).

Numbers compare with a relative tolerance of 1e-9 (ints and floats alike); lists element
by element.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from ..engine.config_schema import ConfigError
from .manifest import Check, Item

__all__ = ["NORMALISERS", "ItemResult", "compare_item", "lookup", "resolve_recipe", "same_value"]

_MISSING = object()


def _after_iteration(value: dict) -> int:
    """``{'on_when': 'itern > 10000'}`` -> 10001, the first 0-based iteration it is on."""
    match = re.search(r">\s*(\d+)", str(value["on_when"]))
    if match is None:
        raise ValueError(f"no '> N' in {value['on_when']!r}")
    return int(match.group(1)) + 1


def _per_process(value: Any, resolved: dict) -> Any:
    """A released total over ``recipe.world_size`` processes -> the per-process value."""
    return value / lookup(resolved, "recipe.world_size")


# name -> f(released value[, resolved config]) = the contraseg value it means
NORMALISERS: dict[str, Callable[..., Any]] = {
    "wh_to_hw": lambda v: [v[1], v[0]],                                   # [w, h] -> [h, w]
    "range_max": lambda v: v["range"][1],                                 # {'range': [-a, a]} -> a
    "start_iteration": lambda v: v["iteration"],                          # hard start at N -> N
    "after_iteration": _after_iteration,                                  # on when i > N -> N + 1
    "top_bottom": lambda v: [v["top"], v["bottom"]],
    "head_over_backbone": lambda v: v["head_lr_mult"] / v["backbone_lr_mult"],
    "per_process": _per_process,
}
_NEEDS_CONFIG = {"per_process"}


def resolve_recipe(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """The fully resolved config of ``path`` as a plain mapping (``adapt`` parsed too).

    Raises:
        ConfigError: one line naming the file or key (e.g. a key this checkout lacks).
    """
    from ..engine.config import config_to_dict
    from ..engine.config_io import load_config

    cfg = load_config(path, list(overrides))
    resolved = config_to_dict(cfg)
    if cfg.adapt is not None:
        from ..adapt.config import adapt_config_to_dict, adapt_section

        resolved["adapt"] = adapt_config_to_dict(adapt_section(cfg, str(path)))
    return resolved


def _walk(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def lookup(resolved: dict[str, Any], key: str) -> Any:
    """The value of dotted ``key`` (``a.b.0.c``); ``a|b``: the first of them that is not null.

    Raises:
        ConfigError: the key is not in the resolved config.
    """
    value: Any = None
    for alternative in key.split("|"):
        value = _walk(resolved, alternative)
        if value is _MISSING:
            raise ConfigError(f"config key {alternative}: not in the resolved config")
        if value is not None:
            return value
    return value


def same_value(a: Any, b: Any) -> bool:
    """Equal, numbers with relative tolerance 1e-9 (bools only equal bools)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


def expected_value(item: Item, check: Check, resolved: dict[str, Any]) -> Any:
    """What the released value means as contraseg's value of ``check.key``."""
    if check.has_expect:
        return check.expect
    value = item.value if check.part is None else _walk(item.value, check.part)
    if value is _MISSING:
        raise ConfigError(f"item {item.name}: the released value has no part {check.part!r}")
    if check.normalise is None:
        return value
    if check.normalise not in NORMALISERS:
        raise ConfigError(f"item {item.name}: unknown normalise {check.normalise!r}; "
                          f"allowed: {', '.join(NORMALISERS)}")
    fn = NORMALISERS[check.normalise]
    return fn(value, resolved) if check.normalise in _NEEDS_CONFIG else fn(value)


@dataclass(frozen=True)
class ItemResult:
    """One item compared: the resolved values by key, and what is wrong ('' when nothing)."""

    item: Item
    values: dict[str, Any]
    problem: str

    @property
    def ok(self) -> bool:
        return not self.problem


def compare_item(item: Item, resolved: dict[str, Any]) -> ItemResult:
    """Check ``item`` against the resolved recipe config (see the module docstring)."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for check in item.checks:
        try:
            got = lookup(resolved, check.key)
            want = expected_value(item, check, resolved) if item.kind == "equal" else item.contraseg[check.key]
        except (ConfigError, KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            problems.append(f"{check.key}: {err}")
            continue
        values[check.key] = got
        if not same_value(got, want):
            what = "released value means" if item.kind == "equal" else "manifest records the deliberate value"
            problems.append(f"{check.key} = {got!r}, the {what} {want!r}")
    if item.kind == "equal" and not item.checks and not item.in_code:
        problems.append("equal with no key and no in_code")
    if item.kind != "equal" and not item.reason:
        problems.append("a difference without a written reason")
    return ItemResult(item=item, values=values, problem="; ".join(problems))
