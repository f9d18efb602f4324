"""What ``predict`` writes besides the predictions: where each one goes, whether a rerun may
continue a folder, and the palette's legend.

* :func:`collect_images` walks folders recursively and keeps each image's path relative to
  the folder given, so ``leftImg8bit/val`` (city subfolders) gives ``OUT/<city>/<name>.png``:
  the layout ``cityscapesscripts``' evaluator walks (it matches ``<city>_<seq>_<frame>*.png``
  anywhere under its results folder, ``evalPixelLevelSemanticLabeling.getPrediction``).
* :func:`check_continuation`: ``OUT/predict.json`` records the settings of the run that writes
  the folder (checkpoint, format, inference); a rerun with the same settings continues (images
  whose outputs exist are skipped), with other settings it is refused in one line.
* :func:`write_legend`: ``legend.png`` (a swatch and the class name per row) and
  ``legend.json`` (``[{"id", "name", "rgb"}]``) beside the palette PNGs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MANIFEST = "predict.json"
LEGEND_FILES = ("legend.png", "legend.json")


@dataclass(frozen=True)
class ImageJob:
    """One input image and its output stem (relative path without suffix) under ``--out``."""

    path: Path
    stem: Path


def collect_images(items: Sequence[str]) -> list[ImageJob]:
    """Files as given (stem: the file name), folders walked recursively (stem: the path
    relative to the folder); duplicate stems get ``_1``, ``_2``. UserError for a missing path
    or a folder tree without images."""
    jobs: list[ImageJob] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise UserError(f"no .png/.jpg/.jpeg images in folder {path} or its subfolders")
            jobs.extend(ImageJob(p, p.relative_to(path).with_suffix("")) for p in found)
        elif path.is_file():
            jobs.append(ImageJob(path, Path(path.stem)))
        else:
            raise UserError(f"image not found: {path}")
    seen: dict[Path, int] = {}
    unique = []
    for job in jobs:
        count = seen.get(job.stem, 0)
        seen[job.stem] = count + 1
        unique.append(job if count == 0 else ImageJob(job.path, job.stem.with_name(f"{job.stem.name}_{count}")))
    return unique


def output_paths(out: Path, stem: Path, fmt: str) -> tuple[Path, ...]:
    """The files ``predict`` writes for one image."""
    if fmt == "color":
        return out / stem.parent / f"{stem.name}_pred.png", out / stem.parent / f"{stem.name}_overlay.png"
    return (out / stem.parent / f"{stem.name}.png",)


def check_continuation(out: Path, settings: dict[str, Any], overwrite: bool) -> bool:
    """True when ``out`` holds an earlier ``predict`` of the same ``settings`` (continue it).

    Raises:
        UserError: ``out`` holds other files or another run's settings, without ``overwrite``.
    """
    manifest = out / MANIFEST
    if overwrite or not manifest.is_file():
        return False
    try:
        earlier = json.loads(manifest.read_text())
    except (OSError, ValueError):
        earlier = None
    if earlier == settings:
        return True
    changed = ", ".join(f"{k} {earlier.get(k)!r} -> {settings[k]!r}" for k in settings
                        if isinstance(earlier, dict) and earlier.get(k) != settings[k]) or "unreadable predict.json"
    raise UserError(f"prediction folder {out} holds predictions of other settings ({changed}): choose another "
                    f"--out or pass --overwrite (which deletes its .png files first)")


def write_manifest(out: Path, settings: dict[str, Any]) -> None:
    from .._io import atomic_write

    atomic_write(out / MANIFEST, lambda handle: handle.write((json.dumps(settings, indent=1) + "\n").encode()))


def legend_image(classes: Sequence[str], palette: Sequence[Sequence[int]], row: int = 18) -> np.ndarray:
    """An RGB image: one row per class, a ``row`` x ``2 row`` swatch then the class name."""
    from PIL import Image, ImageDraw

    width = 3 * row + 8 * max((len(name) for name in classes), default=1) + 8
    image = Image.new("RGB", (width, row * len(classes) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for k, (name, rgb) in enumerate(zip(classes, palette)):
        top = 2 + k * row
        draw.rectangle([2, top + 1, 2 + 2 * row, top + row - 2], fill=tuple(int(c) for c in rgb), outline=(0, 0, 0))
        draw.text((3 * row + 4, top + 3), f"{k} {name}", fill=(0, 0, 0))
    return np.asarray(image)


def write_legend(out: Path, classes: Sequence[str], palette: Sequence[Sequence[int]]) -> tuple[Path, Path]:
    """``legend.png`` and ``legend.json`` in ``out``; returns both paths."""
    from PIL import Image

    from .._io import atomic_write

    png, js = out / LEGEND_FILES[0], out / LEGEND_FILES[1]
    atomic_write(png, lambda handle: Image.fromarray(legend_image(classes, palette)).save(handle, format="PNG"))
    entries = [{"id": k, "name": name, "rgb": [int(c) for c in rgb]} for k, (name, rgb) in enumerate(zip(classes, palette))]
    atomic_write(js, lambda handle: handle.write((json.dumps(entries) + "\n").encode()))
    return png, js
