"""Reading configs: YAML files, ``_base_`` includes and ``--set key=value`` overrides.

A file may start with ``_base_: other.yaml`` (or a list of files), paths relative to
the including file. Bases are merged in order, then the file itself on top; mappings
merge key by key, anything else (lists included) is replaced whole. ``--set`` overrides
are applied last, e.g. ``--set optim.lr=0.02 --set data.crop_size=[256,512]`` (the value
is parsed as a YAML scalar or list).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable

import yaml

from .config import Config, ConfigError, config_from_dict, config_to_dict

BASE_KEY = "_base_"


def merge_dicts(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge: mappings merge key by key, other values in ``update`` win."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{path}: not valid YAML ({first})") from None
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
    return merge_dicts(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=0.02"`` -> ``(["optim", "lr"], 0.02)``; the value is read as YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
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
        node = result
        for depth, part in enumerate(keys[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"bad override {text!r}: config key {where} is not a section")
            node = child
        node[keys[-1]] = value
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
    return config_from_dict(raw)


def config_to_yaml(cfg: Config) -> str:
    """The whole (resolved) config as YAML text; ``load`` of it gives the same config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def config_from_yaml(text: str) -> Config:
    """Inverse of :func:`config_to_yaml` (used for the copy stored in checkpoints)."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError("stored config is not a YAML mapping")
    return config_from_dict(data)
