"""All the mistakes of a config in one report.

``config_from_dict`` stops at the first bad key. :func:`collect_config_errors` runs it,
and after each :class:`ConfigError` that names a key (``config key K: ...`` /
``unknown config key K; ...``) drops ``K`` from a copy of the raw config (so it takes its
default, or disappears when unknown) and runs it again, until the config builds or an
error names no key or one already reported. More than one error raises
:class:`ConfigErrors`, whose ``messages`` the CLI prints one line each.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Callable

from .config_schema import ConfigError

MAX_REPORTED = 20
_KEY = re.compile(r"^(?:unknown )?config key ([A-Za-z0-9_.\[\]]+)")


class ConfigErrors(ConfigError):
    """Several config errors; ``messages`` holds one line per error."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(f"{len(messages)} config errors: " + "; ".join(messages))
        self.messages = [f"{len(messages)} config errors:"] + [f"  {m}" for m in messages]


def _split_key(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for piece in key.split("."):
        name, *indices = re.split(r"\[(\d+)\]", piece)
        if name:
            parts.append(name)
        parts.extend(int(i) for i in indices if i != "")
    return parts


def _drop(raw: dict[str, Any], key: str) -> bool:
    """Remove ``key`` (dotted, list indices as ``[i]``) from ``raw``; False if absent."""
    node: Any = raw
    parts = _split_key(key)
    for part in parts[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = parts[-1] if parts else None
    if isinstance(node, dict) and last in node:
        del node[last]
        return True
    return False


def collect_config_errors(raw: dict[str, Any], build: Callable[[dict[str, Any]], Any]) -> Any:
    """``build(raw)``; on errors, every error that can be found (see the module docstring)."""
    try:
        return build(raw)
    except ConfigError as err:
        first: ConfigError = err
    messages = [str(first)]
    error = first
    trial = copy.deepcopy(raw)
    seen: set[str] = set()
    while len(messages) < MAX_REPORTED:
        found = _KEY.match(str(error))
        key = found.group(1) if found else None
        if key is None or key in seen or not _drop(trial, key):
            break
        seen.add(key)
        try:
            build(trial)
            break
        except ConfigError as err:
            if str(err) in messages:
                break
            messages.append(str(err))
            error = err
    if len(messages) == 1:
        raise first
    raise ConfigErrors(messages) from None
