"""Reading configs: YAML files, ``_base_`` includes and ``--set key=value`` overrides.

A file may start with ``_base_: other.yaml`` (or a list of files), paths relative to
the including file. Bases are merged in order, then the file itself on top; mappings
merge key by key, anything else (lists included) is replaced whole. A mapping with the
key ``_replace_: true`` replaces the inherited mapping instead of merging into it (so a
child config can drop inherited keys, e.g. dataset ``options``). ``--set`` overrides
are applied last, e.g. ``--set optim.lr=0.02 --set data.crop_size=[256,512]`` (the value
is parsed as a YAML scalar or list); a list item is addressed by its index,
``--set data.val.0.options.length=4`` or ``--set data.val[0].options.length=4``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from .config import Config, ConfigError, config_from_dict, config_to_dict

BASE_KEY = "_base_"
REPLACE_KEY = "_replace_"


def _without_replace(value: Any, where: str = "") -> Any:
    """A copy of ``value`` with every ``_replace_`` key removed (checked to be a boolean)."""
    if isinstance(value, dict):
        flag = value.get(REPLACE_KEY, False)
        if not isinstance(flag, bool):
            raise ConfigError(f"config key {where + '.' if where else ''}{REPLACE_KEY}: expected true or false, "
                              f"got {flag!r}")
        return {k: _without_replace(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()
                if k != REPLACE_KEY}
    if isinstance(value, list):
        return [_without_replace(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return copy.deepcopy(value)


def merge_dicts(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge: mappings merge key by key, other values in ``update`` win; a
    mapping in ``update`` with ``_replace_: true`` replaces the base's mapping whole."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        replace = isinstance(value, dict) and value.get(REPLACE_KEY) is True
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and not replace:
            merged[key] = merge_dicts(merged[key], value)
        elif replace:
            merged[key] = _without_replace(value, str(key))
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or (str(err).splitlines() or [type(err).__name__])[0]
        context = getattr(err, "context", None)
        raise ConfigError(f"{where}: not valid YAML ({f'{context}: ' if context else ''}{problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def load_raw_config(path: str | Path, _stack: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The merged mapping of ``path`` and its ``_base_`` files (not yet checked)."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(p.name for p in _stack + (path,))
        raise ConfigError(f"{path}: circular _base_ include ({chain})")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of file names, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        merged = merge_dicts(merged, load_raw_config(path.parent / base, _stack + (path,)))
    return _without_replace(merge_dicts(merged, data))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.02"`` -> ``(["optim", "lr"], 0.02)``; the value is read as YAML.
    ``data.val[0].split=x`` reads as ``data.val.0.split=x``."""
    key, sep, value = text.partition("=")
    key = re.sub(r"\[(\d+)\]", r".\1", key.strip())
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override {text!r}: expected key.sub=value, e.g. optim.lr=0.02")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"bad override {text!r}: the value is not a YAML scalar or list") from None
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key.sub=value`` override set."""
    result = copy.deepcopy(raw)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = result
        for depth, part in enumerate(keys):
            where = ".".join(keys[:depth])
            last = depth == len(keys) - 1
            if isinstance(node, list):
                if not part.isdigit():
                    raise ConfigError(f"bad override {text!r}: config key {where} is a list; "
                                      f"address an item by its index, e.g. {where}.0")
                index = int(part)
                if index >= len(node):
                    raise ConfigError(f"bad override {text!r}: config key {where} has {len(node)} item(s), "
                                      f"no index {index}")
                if last:
                    node[index] = value
                else:
                    node = node[index]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"bad override {text!r}: config key {where} is not a section")
            if last:
                node[part] = value
                break
            child = node.get(part)
            if child is None:
                if keys[depth + 1].isdigit():
                    full = ".".join(keys[: depth + 1])
                    raise ConfigError(f"bad override {text!r}: config key {full} is not set in the config, "
                                      f"so it has no item {keys[depth + 1]}; set the whole list instead")
                child = node[part] = {}
            node = child
    return result


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read, merge, override and check a config file.

    Raises:
        ConfigError: one line naming the file or key and the allowed values.
    """
    raw = load_raw_config(path)
    raw = apply_overrides(raw, overrides)
    if "name" not in raw:
        raw["name"] = Path(path).stem
    from .config_report import collect_config_errors

    return collect_config_errors(raw, config_from_dict)


def config_to_yaml(cfg: Config) -> str:
    """The whole (resolved) config as YAML text; ``load`` of it gives the same config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def config_from_yaml(text: str) -> Config:
    """Inverse of :func:`config_to_yaml` (used for the copy stored in checkpoints)."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError("stored config is not a YAML mapping")
    return config_from_dict(data)
