"""Reading image and label files: the lowest layer of ``contraseg.data``.

Every other data module may import from here; this module imports nothing from
``contraseg.data``. (It exists so that :mod:`.base` and :mod:`.pseudo_labels`, which
both read label PNGs, depend on it instead of on each other.)

Errors are one line naming the file: an unreadable, truncated or colour label raises
``ValueError("cannot read label <path>: ...")``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["one_line", "read_label_png", "read_rgb_image"]


def one_line(err: BaseException) -> str:
    """``str(err)`` on one line (whitespace collapsed), or the exception's type name."""
    return " ".join(str(err).split()) or type(err).__name__


def read_rgb_image(path: str | Path) -> np.ndarray:
    """The image file at ``path`` as uint8 H x W x 3 RGB.

    Unreadable or truncated files raise a one-line ValueError naming the file.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {one_line(err)}") from None


def read_label_png(path: str | Path) -> np.ndarray:
    """A single-channel label PNG (8-bit grey, paletted or 16-bit) as an H x W integer array.

    Paletted PNGs give their palette indices (GTA5 labels are stored that way).
    Unreadable files or colour (multi-channel) labels raise a one-line ValueError.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode = img.mode
            array = np.asarray(img).copy()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read label {path}: {one_line(err)}") from None
    if array.ndim != 2:
        raise ValueError(f"label {path} must be a single-channel image, got mode {mode} with shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise ValueError(f"label {path} must hold integer ids, got dtype {array.dtype}")
    return array
