"""Cityscapes (Cordts et al., CVPR 2016), fine and coarse annotations.

Layout (as downloaded)::

    root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    root/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png      (mode="fine")
    root/gtCoarse/{split}/{city}/{city}_{seq}_{frame}_gtCoarse_labelIds.png  (mode="coarse")

Splits: fine ``train`` / ``val`` / ``test``; coarse ``train`` / ``val`` / ``train_extra``.
Labels are the raw ``labelIds`` (0..33), mapped to the 19 train ids with the official
table of ``cityscapesscripts`` (e.g. 7 road -> 0, 26 car -> 13, 0 unlabeled -> 255).
Sample names are ``{city}_{seq}_{frame}``. Without a label folder for the split the
images are loaded unlabeled (target-domain training).
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetInfo, FileListing, FileSegmentationDataset, JointTransform, LabelTable, index_files
from .palettes import CITYSCAPES_CLASSES, CITYSCAPES_ID_TO_TRAIN_ID, CITYSCAPES_PALETTE
from .pseudo_labels import PseudoLabelDir

__all__ = ["CityscapesDataset", "CITYSCAPES_INFO", "CITYSCAPES_LABEL_TABLE"]

CITYSCAPES_INFO = DatasetInfo("cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)
CITYSCAPES_LABEL_TABLE = LabelTable(CITYSCAPES_ID_TO_TRAIN_ID)

_IMAGE_SUFFIX = "_leftImg8bit.png"
_SPLITS = {"fine": ("train", "val", "test"), "coarse": ("train", "val", "train_extra")}
_LABEL_FOLDER = {"fine": "gtFine", "coarse": "gtCoarse"}


class CityscapesDataset(FileSegmentationDataset):
    """Cityscapes with 19 train ids.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/`` (or ``gtCoarse/``).
        split: see the module docstring.
        mode: ``"fine"`` or ``"coarse"`` annotations.
        transform, pseudo_label_dir, missing_labels: see
            :class:`~contraseg.data.base.FileSegmentationDataset`.

    Sample: ``{"image": float32 3 x H x W, "label": int64 H x W, "name": "aachen_000000_000019"}``.
    """

    info = CITYSCAPES_INFO
    label_table = CITYSCAPES_LABEL_TABLE

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        mode: str = "fine",
        transform: JointTransform | None = None,
        pseudo_label_dir: str | Path | PseudoLabelDir | None = None,
        *,
        missing_labels: str = "error",
    ) -> None:
        if mode not in _SPLITS:
            raise ValueError(f"CityscapesDataset: mode must be 'fine' or 'coarse', got {mode!r}")
        if split not in _SPLITS[mode]:
            raise ValueError(f"CityscapesDataset: split must be one of {list(_SPLITS[mode])} for mode={mode!r}, got {split!r}")
        self.mode = mode
        super().__init__(root, split, transform, pseudo_label_dir, missing_labels=missing_labels)

    @property
    def label_suffix(self) -> str:
        """File-name ending of this mode's label files, e.g. ``_gtFine_labelIds.png``."""
        return f"_{_LABEL_FOLDER[self.mode]}_labelIds.png"

    def scan(self) -> FileListing:
        image_dir = self.root / "leftImg8bit" / self.split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"Cityscapes image folder not found: {image_dir}")
        label_dir = self.root / _LABEL_FOLDER[self.mode] / self.split
        images = index_files(image_dir, f"*/*{_IMAGE_SUFFIX}", lambda p: p.name[: -len(_IMAGE_SUFFIX)])
        suffix = self.label_suffix
        labels = index_files(label_dir, f"*/*{suffix}", lambda p: p.name[: -len(suffix)]) if label_dir.is_dir() else None
        expected = {name: label_dir / path.parent.name / f"{name}{suffix}" for name, path in images.items()}
        return FileListing(images, labels, expected)
