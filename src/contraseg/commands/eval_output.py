"""Where ``eval`` writes its JSON, checked before the evaluation runs.

The JSON records what was evaluated and how: ``datasets`` (name, split, root, options) and
``inference`` (mode, crop_size, stride, scales, flip, resize, batch_size). The default file
name is short: ``<checkpoint>.eval.<name>-<split>[+N].<hash>.json``, the hash (8 hex digits of
SHA-1) taken over those two records, so other settings give another file and an earlier JSON
is never replaced by a result of other settings. An existing ``--out`` of other settings is
refused in one line unless ``--overwrite``; one of the same settings is replaced (the same
evaluation again). :func:`check_writable` writes a probe file in the output folder first, so
a read-only folder fails at once, not after the whole evaluation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError


def dataset_record(ds: Any) -> dict[str, Any]:
    """``{"name", "split", "root", "options"}`` of a DatasetConfig."""
    return {"name": ds.name, "split": ds.split, "root": None if ds.root is None else str(ds.root),
            "options": dict(sorted(ds.options.items()))}


def inference_record(cfg: Any) -> dict[str, Any]:
    """The evaluation settings of a config (after the command line's overrides)."""
    from ..engine.evaluate import inference_options

    options = inference_options(cfg)
    record = {"mode": options.mode, "scales": [float(s) for s in options.scales], "flip": bool(options.flip),
              "resize": cfg.eval.resize, "batch_size": cfg.eval.batch_size}
    if options.mode == "slide":
        record.update(crop_size=list(options.crop_size), stride=list(options.stride))
    return json.loads(json.dumps(record))


def settings_of(datasets: Sequence[Any], cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps({"datasets": [dataset_record(ds) for ds in datasets],
                                  "inference": inference_record(cfg)}, default=str))


def default_name(checkpoint: str | Path, settings: dict[str, Any]) -> Path:
    """``<checkpoint>.eval.<name>-<split>[+N].<hash8>.json``."""
    first = settings["datasets"][0]
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{first['name']}-{first['split']}")
    more = len(settings["datasets"]) - 1
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return Path(f"{checkpoint}.eval.{label}{f'+{more}' if more else ''}.{digest}.json")


def check_writable(out: Path) -> None:
    """Create ``out``'s folder and write a probe file there (UserError naming ``out`` if not)."""
    out.parent.mkdir(parents=True, exist_ok=True)  # a file in the way: one line (contraseg.errors)
    try:
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise UserError(f"cannot write the metrics file {out}: {err.strerror or err} "
                        f"(choose a writable --out)") from None


def check_previous(out: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse to replace a JSON of other settings (unless ``overwrite``)."""
    if overwrite or not out.is_file():
        return
    try:
        earlier = json.loads(out.read_text())
    except (OSError, ValueError):
        earlier = {}
    old = {k: earlier.get(k) for k in settings} if isinstance(earlier, dict) else {}
    if old == settings:
        return
    changed = [f"{k} {old.get(section, {}).get(k)!r} -> {v!r}"
               for section in ("inference",) for k, v in settings[section].items()
               if isinstance(old.get(section), dict) and old[section].get(k) != v]
    if old.get("datasets") != settings["datasets"]:
        changed.append("datasets differ")
    why = ", ".join(changed) or "it records no settings"
    raise UserError(f"{out} holds an evaluation of other settings ({why}): choose another --out, "
                    f"or pass --overwrite to replace it")
