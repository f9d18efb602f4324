"""GTA5 (Richter et al., "Playing for Data", ECCV 2016).

Layout (as downloaded)::

    root/images/00001.png        RGB frames
    root/labels/00001.png        paletted PNGs whose indices are Cityscapes labelIds
    root/{split}.txt             optional split lists, one id or file name per line

Labels map to the 19 Cityscapes train ids with the official Cityscapes table.
Splits: ``"all"`` is every image (each must have a label) unless ``root/all.txt``
exists; ``"train"`` / ``"val"`` need ``root/train.txt`` / ``root/val.txt``.
A few real GTA5 frames differ in size from their label: loading such a sample raises
a one-line ValueError naming both files, and ``contraseg datasets check`` lists them.
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetInfo, FileListing, FileSegmentationDataset, JointTransform, scan_paired_folders
from .cityscapes import CITYSCAPES_LABEL_TABLE
from .palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from .pseudo_labels import PseudoLabelDir

__all__ = ["GTA5Dataset", "GTA5_INFO"]

GTA5_INFO = DatasetInfo("gta5", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)


class GTA5Dataset(FileSegmentationDataset):
    """GTA5 with the 19 Cityscapes train ids.

    Args:
        root: the folder holding ``images/`` and ``labels/``.
        split: ``"all"``, ``"train"`` or ``"val"`` (see the module docstring).
        transform, pseudo_label_dir, missing_labels: see
            :class:`~contraseg.data.base.FileSegmentationDataset`.

    Sample: ``{"image": float32 3 x H x W, "label": int64 H x W, "name": "00001"}``.
    """

    info = GTA5_INFO
    label_table = CITYSCAPES_LABEL_TABLE
    splits = ("all", "train", "val")

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        transform: JointTransform | None = None,
        pseudo_label_dir: str | Path | PseudoLabelDir | None = None,
        *,
        missing_labels: str = "error",
    ) -> None:
        super().__init__(root, split, transform, pseudo_label_dir, missing_labels=missing_labels)

    def scan(self) -> FileListing:
        return scan_paired_folders(self.root, self.root / "images", self.root / "labels", self.split, "GTA5")
