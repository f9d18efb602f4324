"""Pseudo-label folders: one 8-bit PNG of train ids per image, named ``<sample name>.png``.

Self-training writes them (``contraseg pseudo-label``); a dataset built with
``pseudo_label_dir=...`` then returns them as its ``"label"``. Files are written
atomically (temporary file in the same folder, fsync, ``os.replace``) so a crash never
leaves a half-written label behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .._io import atomic_write
from .files import read_label_png

__all__ = ["PseudoLabelDir", "write_label_png"]


def _as_label_array(label: np.ndarray | torch.Tensor, name: str = "label") -> np.ndarray:
    """``label`` (H x W integers in [0, 255]) as a uint8 numpy array."""
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    array = np.asarray(label)
    if array.ndim != 2:
        raise ValueError(f"{name} must be H x W, got shape {array.shape}")
    if array.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer train ids, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{name} values must be in [0, 255], got range [{array.min()}, {array.max()}]")
    return array.astype(np.uint8, copy=False)


def write_label_png(path: str | Path, label: np.ndarray | torch.Tensor) -> Path:
    """Write ``label`` (H x W train ids, 255 ignore) as an 8-bit grey PNG, atomically.

    The PNG is written to a temporary file next to ``path``, flushed to disk and moved
    over ``path`` with ``os.replace``; the parent folder is created if needed.
    Returns ``path``.
    """
    from PIL import Image

    array = _as_label_array(label)
    return atomic_write(path, lambda handle: Image.fromarray(array).save(handle, format="PNG"))


class PseudoLabelDir:
    """A folder of pseudo labels, ``<path>/<sample name>.png`` (uint8 train ids, 255 ignore).

    Args:
        path: the folder.
        create: make the folder if it is missing (for writing); otherwise a missing
            folder raises a one-line FileNotFoundError naming it.
    """

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.path = Path(path).expanduser()
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_dir():
            raise FileNotFoundError(f"pseudo-label folder not found: {self.path}")

    def path_for(self, name: str) -> Path:
        """The file that holds sample ``name``'s pseudo label."""
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"pseudo-label sample name must be a plain file name, got {name!r}")
        return self.path / f"{name}.png"

    def __contains__(self, name: str) -> bool:
        return self.path_for(name).is_file()

    def names(self) -> list[str]:
        """Sample names that have a pseudo label, sorted."""
        return sorted(p.stem for p in self.path.glob("*.png"))

    def load(self, name: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """Sample ``name``'s pseudo label, uint8 H x W.

        ``size`` (H, W), when given, must match the label's size (ValueError otherwise).
        A missing file raises a one-line FileNotFoundError naming it.
        """
        file = self.path_for(name)
        if not file.is_file():
            raise FileNotFoundError(f"pseudo label not found: {file}")
        label = read_label_png(file)
        if label.dtype != np.uint8:
            raise ValueError(f"pseudo label {file} must be an 8-bit PNG, got dtype {label.dtype}")
        if size is not None and label.shape != tuple(size):
            raise ValueError(
                f"pseudo label {file} is {label.shape[0]}x{label.shape[1]} but its image is {size[0]}x{size[1]}"
            )
        return label

    def write(self, name: str, label: np.ndarray | torch.Tensor) -> Path:
        """Write sample ``name``'s pseudo label atomically; returns the file."""
        return write_label_png(self.path_for(name), label)

    def __repr__(self) -> str:
        return f"PseudoLabelDir({str(self.path)!r})"
