"""Prediction PNGs: the colourised label map and its overlay on the input image."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colours`` for uint8 H x W x 3 arrays (rounded)."""
    if image.shape != colours.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image and colours must both be H x W x 3, got {image.shape} and {colours.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def save_prediction_images(image: np.ndarray, prediction: np.ndarray, palette: Sequence[Sequence[int]],
                           out_dir: str | Path, stem: str, alpha: float = 0.5) -> tuple[Path, Path]:
    """Write ``<stem>_pred.png`` (palette colours) and ``<stem>_overlay.png``.

    Args:
        image: uint8 H x W x 3 RGB input.
        prediction: integer H x W class ids.
        palette: K RGB triples.

    Returns:
        The two written paths.
    """
    from ..data.palettes import colorize

    if prediction.shape != image.shape[:2]:
        raise ValueError(f"prediction is {prediction.shape} but image is {image.shape[:2]}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    colours = colorize(prediction.astype(np.int64), palette)
    pred_path, overlay_path = out / f"{stem}_pred.png", out / f"{stem}_overlay.png"
    from .._io import atomic_write  # whole files only: a rerun of predict skips what exists

    atomic_write(pred_path, lambda handle: Image.fromarray(colours).save(handle, format="PNG"))
    blended = overlay(image, colours, alpha)
    atomic_write(overlay_path, lambda handle: Image.fromarray(blended).save(handle, format="PNG"))
    return pred_path, overlay_path
