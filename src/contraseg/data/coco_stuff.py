"""COCO-Stuff 164k (Caesar et al., CVPR 2018), 171 classes.

Layout (mmsegmentation's, i.e. COCO 2017 images next to the ``stuffthingmaps``)::

    root/images/{train2017,val2017}/000000000009.jpg
    root/annotations/{train2017,val2017}/000000000009.png                 raw ids
    root/annotations/{train2017,val2017}/000000000009_labelTrainIds.png   train ids

Two label files are understood, chosen by ``label_format``:

* ``"raw"``: the ``stuffthingmaps_trainval2017`` PNGs as downloaded: value = COCO
  category id - 1 (0..181; things 0..90, stuff 91..181), 255 = unlabeled. The 11 ids
  that no annotation uses (COCO's unused thing ids 12, 26, 29, 30, 45, 66, 68, 69, 71,
  83, 91, i.e. raw 11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90) are outside the table;
  the other 171 map to train ids 0..170 in ascending order (raw 12 -> 11, raw 181 ->
  170), as mmsegmentation's ``coco_stuff164k.py`` converter does.
* ``"trainids"``: that converter's ``*_labelTrainIds.png`` output: 0..170, 255 ignored.
* ``"auto"`` (default): ``trainids`` when the split's label folder holds any
  ``*_labelTrainIds.png``, else ``raw``.

Splits: ``train2017`` (118k images) and ``val2017`` (5k). Sample names are the COCO
file stems (``000000000009``). COCO-Stuff-10k's ``.mat`` annotations are not read.
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetInfo, FileListing, FileSegmentationDataset, JointTransform, LabelTable, index_files
from .palettes import COCO_STUFF_171_CLASSES, COCO_STUFF_171_PALETTE
from .pseudo_labels import PseudoLabelDir

__all__ = [
    "COCO_STUFF_INFO",
    "COCO_STUFF_RAW_TABLE",
    "COCO_STUFF_TRAINID_TABLE",
    "COCO_STUFF_UNUSED_RAW_IDS",
    "CocoStuffDataset",
]

COCO_STUFF_INFO = DatasetInfo("coco-stuff", COCO_STUFF_171_CLASSES, COCO_STUFF_171_PALETTE)
# COCO category ids 1..182 that no COCO-Stuff annotation uses, as 0-based raw values.
COCO_STUFF_UNUSED_RAW_IDS: tuple[int, ...] = tuple(cid - 1 for cid in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91))
_USED_RAW_IDS = [raw for raw in range(182) if raw not in COCO_STUFF_UNUSED_RAW_IDS]
COCO_STUFF_RAW_TABLE = LabelTable({**{raw: train for train, raw in enumerate(_USED_RAW_IDS)}, 255: 255})
COCO_STUFF_TRAINID_TABLE = LabelTable({**{k: k for k in range(len(COCO_STUFF_171_CLASSES))}, 255: 255})
LABEL_FORMATS = ("auto", "raw", "trainids")
_TRAINID_SUFFIX = "_labelTrainIds.png"


class CocoStuffDataset(FileSegmentationDataset):
    """COCO-Stuff 164k with 171 train ids.

    Args:
        root: the folder holding ``images/`` and ``annotations/``.
        split: ``"train2017"`` or ``"val2017"``.
        label_format: ``"auto"`` (default), ``"raw"`` or ``"trainids"`` (module docstring).
        transform, pseudo_label_dir, missing_labels: see
            :class:`~contraseg.data.base.FileSegmentationDataset`.

    Sample: ``{"image": float32 3 x H x W, "label": int64 H x W, "name": "000000000009"}``.
    """

    info = COCO_STUFF_INFO
    label_table = COCO_STUFF_TRAINID_TABLE
    splits = ("train2017", "val2017")

    def __init__(
        self,
        root: str | Path,
        split: str = "train2017",
        label_format: str = "auto",
        transform: JointTransform | None = None,
        pseudo_label_dir: str | Path | PseudoLabelDir | None = None,
        *,
        missing_labels: str = "error",
    ) -> None:
        if label_format not in LABEL_FORMATS:
            raise ValueError(
                f"CocoStuffDataset: label_format must be one of {list(LABEL_FORMATS)}, got {label_format!r}"
            )
        self.label_format = label_format
        super().__init__(root, split, transform, pseudo_label_dir, missing_labels=missing_labels)

    def scan(self) -> FileListing:
        image_dir = self.root / "images" / self.split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"COCO-Stuff image folder not found: {image_dir}")
        label_dir = self.root / "annotations" / self.split
        images = index_files(image_dir, "*.jpg", lambda p: p.stem)
        if self.label_format == "auto":
            has_trainids = label_dir.is_dir() and next(label_dir.glob(f"*{_TRAINID_SUFFIX}"), None) is not None
            self.label_format = "trainids" if has_trainids else "raw"
        if self.label_format == "trainids":
            self.label_table = COCO_STUFF_TRAINID_TABLE
            suffix = _TRAINID_SUFFIX
            labels = (
                index_files(label_dir, f"*{suffix}", lambda p: p.name[: -len(suffix)]) if label_dir.is_dir() else None
            )
        else:
            self.label_table = COCO_STUFF_RAW_TABLE
            suffix = ".png"
            labels = None
            if label_dir.is_dir():
                raw = index_files(label_dir, "*.png", lambda p: p.stem)
                labels = {name: path for name, path in raw.items() if not path.name.endswith(_TRAINID_SUFFIX)}
        expected = {name: label_dir / f"{name}{suffix}" for name in images}
        return FileListing(images, labels, expected)
