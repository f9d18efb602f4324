"""ADE20K / SceneParse150 (Zhou et al., CVPR 2017), 150 classes.

Layout (``ADEChallengeData2016`` as downloaded)::

    root/images/{split}/ADE_train_00000001.jpg
    root/annotations/{split}/ADE_train_00000001.png     8-bit, 0 = other / void

Splits: ``training`` and ``validation``. Labels use reduce-zero-label: raw 0 -> 255
(ignored), raw k -> k - 1 for k = 1..150; raw values above 150 are outside the table.
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetInfo, FileListing, FileSegmentationDataset, JointTransform, LabelTable, index_files
from .palettes import ADE20K_CLASSES, ADE20K_PALETTE
from .pseudo_labels import PseudoLabelDir

__all__ = ["ADE20KDataset", "ADE20K_INFO", "ADE20K_LABEL_TABLE"]

ADE20K_INFO = DatasetInfo("ade20k", ADE20K_CLASSES, ADE20K_PALETTE)
# reduce-zero-label: 0 (other) -> ignore, k -> k - 1
ADE20K_LABEL_TABLE = LabelTable({0: 255, **{k: k - 1 for k in range(1, len(ADE20K_CLASSES) + 1)}})


class ADE20KDataset(FileSegmentationDataset):
    """ADE20K with 150 train ids (reduce-zero-label).

    Args:
        root: the ``ADEChallengeData2016`` folder holding ``images/`` and ``annotations/``.
        split: ``"training"`` or ``"validation"``.
        transform, pseudo_label_dir, missing_labels: see
            :class:`~contraseg.data.base.FileSegmentationDataset`.

    Sample: ``{"image": float32 3 x H x W, "label": int64 H x W, "name": "ADE_train_00000001"}``.
    """

    info = ADE20K_INFO
    label_table = ADE20K_LABEL_TABLE
    splits = ("training", "validation")

    def __init__(
        self,
        root: str | Path,
        split: str = "training",
        transform: JointTransform | None = None,
        pseudo_label_dir: str | Path | PseudoLabelDir | None = None,
        *,
        missing_labels: str = "error",
    ) -> None:
        super().__init__(root, split, transform, pseudo_label_dir, missing_labels=missing_labels)

    def scan(self) -> FileListing:
        image_dir = self.root / "images" / self.split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"ADE20K image folder not found: {image_dir}")
        label_dir = self.root / "annotations" / self.split
        images = index_files(image_dir, "*.jpg", lambda p: p.stem)
        labels = index_files(label_dir, "*.png", lambda p: p.stem) if label_dir.is_dir() else None
        expected = {name: label_dir / f"{name}.png" for name in images}
        return FileListing(images, labels, expected)
