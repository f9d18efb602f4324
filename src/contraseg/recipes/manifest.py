"""The in-repo manifest of released recipe values (``configs/recipes/released/<experiment>.yaml``).

One file per headline experiment of a paper (ContrastiveSeg, ProtoSeg, WDASS, ProAC)::

    experiment: contrastiveseg_hrnet_w48
    title: ContrastiveSeg, HRNet-W48, Cityscapes
    config: configs/recipes/<recipe config>.yaml      (relative to the repository root)
    released: {repo: owner/name, commit: 40 hex digits}
    items:
      <item>:                       e.g. optimizer.base_lr
        value: 0.01                 the released value (any YAML)
        source: {repo, commit, file, line[, line_end]}
        also: [file:line, ...]      optional further released lines
        key: optim.lr               contraseg's key (dotted; list items by index, ``a|b`` =
                                    the first of a, b that is not null), null when contraseg has
                                    no such key, or a list of checks {key, from?, expect?, normalise?}
        from: inter.max_samples     (in a check) the part of ``value`` the key holds
        expect: 512                 optional: the contraseg value that means ``value``
        normalise: wh_to_hw         optional: a name of :data:`contraseg.recipes.compare.NORMALISERS`
        status: equal | 'differs: <reason>' | 'not released: <reason>'
        contraseg: {key: value}     differs / not released with a key: what the recipe sets
        in_code: <module>           equal with key null: where contraseg does the same in code
        note: ...                   optional

The values and citations were read from the released code (repository, commit, file and
line); the released lines themselves are not copied here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..engine.config_schema import ConfigError

__all__ = ["Check", "Item", "Manifest", "load_manifest", "manifest_paths", "STATUS_KINDS"]

STATUS_KINDS = ("equal", "differs", "not released")
_SOURCE_KEYS = ("repo", "commit", "file", "line")
_ITEM_KEYS = {"value", "source", "also", "key", "expect", "normalise", "status", "contraseg", "in_code", "note"}
_CHECK_KEYS = {"key", "from", "expect", "normalise"}


@dataclass(frozen=True)
class Check:
    """One contraseg key compared with (a part of) a released value."""

    key: str
    part: str | None = None          # ``from``: dotted path into the released value
    expect: Any = None
    has_expect: bool = False
    normalise: str | None = None


@dataclass(frozen=True)
class Item:
    """One recipe item of a manifest."""

    name: str
    value: Any
    source: dict[str, Any]
    status: str
    checks: tuple[Check, ...] = ()
    contraseg: dict[str, Any] = field(default_factory=dict)
    in_code: str | None = None
    also: tuple[str, ...] = ()
    note: str | None = None

    @property
    def kind(self) -> str:
        """``equal``, ``differs`` or ``not released``."""
        return self.status.split(":", 1)[0].strip()

    @property
    def reason(self) -> str:
        """The written reason of a difference ('' for equal)."""
        return self.status.split(":", 1)[1].strip() if ":" in self.status else ""

    @property
    def citation(self) -> str:
        """``file:line`` (or ``file:line-line_end``) of the released source."""
        end = self.source.get("line_end")
        return f"{self.source['file']}:{self.source['line']}" + (f"-{end}" if end else "")

    @property
    def url(self) -> str:
        """The released line on GitHub at the cited commit."""
        s = self.source
        end = f"-L{s['line_end']}" if s.get("line_end") else ""
        return f"https://github.com/{s['repo']}/blob/{s['commit']}/{s['file']}#L{s['line']}{end}"


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest file."""

    path: Path
    experiment: str
    title: str
    config: str
    released: dict[str, str]
    items: tuple[Item, ...]


def _fail(path: Path, where: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: {message}")


def _check(path: Path, name: str, raw: Any) -> Check:
    if isinstance(raw, str):
        return Check(key=raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("key"), str) or set(raw) - _CHECK_KEYS:
        raise _fail(path, f"item {name}", f"a check must be a key or a mapping with keys {sorted(_CHECK_KEYS)}, "
                                          f"got {raw!r}")
    return Check(key=raw["key"], part=raw.get("from"), expect=raw.get("expect"), has_expect="expect" in raw,
                 normalise=raw.get("normalise"))


def _item(path: Path, name: str, raw: Any) -> Item:
    if not isinstance(raw, dict):
        raise _fail(path, f"item {name}", "must be a mapping")
    unknown = set(raw) - _ITEM_KEYS
    if unknown:
        raise _fail(path, f"item {name}", f"unknown field(s) {sorted(unknown)}; allowed: {sorted(_ITEM_KEYS)}")
    for needed in ("value", "source", "key", "status"):
        if needed not in raw:
            raise _fail(path, f"item {name}", f"missing field {needed!r}")
    source = raw["source"]
    if not isinstance(source, dict) or any(k not in source for k in _SOURCE_KEYS):
        raise _fail(path, f"item {name}.source", f"needs {', '.join(_SOURCE_KEYS)}")
    if not re.fullmatch(r"[0-9a-f]{40}", str(source["commit"])):
        raise _fail(path, f"item {name}.source.commit", f"not a 40-digit commit: {source['commit']!r}")
    status = raw["status"]
    kind = status.split(":", 1)[0].strip() if isinstance(status, str) else None
    if kind not in STATUS_KINDS or (kind != "equal" and not status.split(":", 1)[1:]):
        raise _fail(path, f"item {name}.status", f"expected 'equal', 'differs: <reason>' or "
                                                 f"'not released: <reason>', got {status!r}")
    if kind != "equal" and not status.split(":", 1)[1].strip():
        raise _fail(path, f"item {name}.status", "a difference needs its written reason")
    key = raw["key"]
    if key is None:
        checks: tuple[Check, ...] = ()
    elif isinstance(key, list) and key:
        checks = tuple(_check(path, name, k) for k in key)
    else:
        single = {"key": key, **{k: raw[k] for k in ("expect", "normalise") if k in raw}}
        checks = (_check(path, name, single),)
    if kind == "equal" and not checks and not raw.get("in_code"):
        raise _fail(path, f"item {name}", "equal with key null needs in_code (where contraseg does the same)")
    contraseg = raw.get("contraseg") or {}
    if kind != "equal" and checks and set(contraseg) != {c.key for c in checks}:
        raise _fail(path, f"item {name}.contraseg", f"must give the recipe's value of each key "
                                                    f"{sorted({c.key for c in checks})}")
    return Item(name=name, value=raw["value"], source=dict(source), status=status, checks=checks,
                contraseg=dict(contraseg), in_code=raw.get("in_code"), also=tuple(raw.get("also") or ()),
                note=raw.get("note"))


def load_manifest(path: str | Path) -> Manifest:
    """Read and check one manifest file.

    Raises:
        ConfigError: one line naming the file, the item and the problem.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the manifest ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a manifest must be a YAML mapping")
    for needed in ("experiment", "title", "config", "released", "items"):
        if needed not in data:
            raise _fail(path, "top level", f"missing field {needed!r}")
    items = data["items"]
    if not isinstance(items, dict) or not items:
        raise _fail(path, "items", "must be a non-empty mapping of item name -> item")
    return Manifest(path=path, experiment=data["experiment"], title=data["title"], config=data["config"],
                    released=dict(data["released"]), items=tuple(_item(path, n, r) for n, r in items.items()))


def manifest_paths(root: str | Path) -> list[Path]:
    """The manifest files under ``<root>/configs/recipes/released``, sorted."""
    return sorted((Path(root) / "configs" / "recipes" / "released").glob("*.yaml"))
