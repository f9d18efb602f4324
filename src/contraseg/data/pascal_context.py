"""PASCAL-Context (Mottaghi et al., CVPR 2014), the 59-class setting.

Label values (both layouts): 8-bit PNGs with 0 = background (every Detail-API class
outside the 59) and k = 1..59 the classes of
:data:`~contraseg.data.palettes.PASCAL_CONTEXT_59_CLASSES`. The 59-class setting drops
background with reduce-zero-label: raw 0 -> 255 (ignored), raw k -> k - 1; raw values
above 59 are outside the table. This is mmsegmentation's ``PascalContextDataset59``
and ContrastiveSeg / openseg's ``pascal_context`` (``reduce_zero_label: true``).

Two on-disk layouts, chosen by ``layout`` (``"auto"`` picks the one present):

``"voc2010"`` -- mmsegmentation's, as written by its ``pascal_context.py`` converter
from ``trainval_merged.json``::

    root/JPEGImages/2008_000002.jpg                    (all VOC2010 images)
    root/SegmentationClassContext/2008_000002.png
    root/ImageSets/SegmentationContext/{train,val}.txt (4998 / 5105 names)

``"openseg"`` -- ContrastiveSeg / openseg's ``pascal_context_generator.py`` output::

    root/{train,val}/image/2008_000002.jpg
    root/{train,val}/label/2008_000002.png

Splits: ``train`` and ``val``. Sample names are the VOC ids (``2008_000002``).
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    DatasetInfo,
    FileListing,
    FileSegmentationDataset,
    JointTransform,
    LabelTable,
    index_files,
    read_split_file,
)
from .palettes import PASCAL_CONTEXT_59_CLASSES, PASCAL_CONTEXT_59_PALETTE
from .pseudo_labels import PseudoLabelDir

__all__ = ["PascalContextDataset", "PASCAL_CONTEXT_INFO", "PASCAL_CONTEXT_LABEL_TABLE"]

PASCAL_CONTEXT_INFO = DatasetInfo("pascal-context", PASCAL_CONTEXT_59_CLASSES, PASCAL_CONTEXT_59_PALETTE)
# reduce-zero-label: 0 (background) -> ignore, k -> k - 1
PASCAL_CONTEXT_LABEL_TABLE = LabelTable(
    {0: 255, **{k: k - 1 for k in range(1, len(PASCAL_CONTEXT_59_CLASSES) + 1)}}
)
LAYOUTS = ("auto", "voc2010", "openseg")


class PascalContextDataset(FileSegmentationDataset):
    """PASCAL-Context with 59 train ids (reduce-zero-label).

    Args:
        root: ``VOCdevkit/VOC2010`` (``layout="voc2010"``) or the openseg folder
            holding ``train/`` and ``val/`` (``layout="openseg"``).
        split: ``"train"`` or ``"val"``.
        layout: ``"auto"`` (default), ``"voc2010"`` or ``"openseg"`` (module docstring).
        transform, pseudo_label_dir, missing_labels: see
            :class:`~contraseg.data.base.FileSegmentationDataset`.

    Sample: ``{"image": float32 3 x H x W, "label": int64 H x W, "name": "2008_000002"}``.
    """

    info = PASCAL_CONTEXT_INFO
    label_table = PASCAL_CONTEXT_LABEL_TABLE
    splits = ("train", "val")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        layout: str = "auto",
        transform: JointTransform | None = None,
        pseudo_label_dir: str | Path | PseudoLabelDir | None = None,
        *,
        missing_labels: str = "error",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"PascalContextDataset: layout must be one of {list(LAYOUTS)}, got {layout!r}")
        self.layout = layout
        super().__init__(root, split, transform, pseudo_label_dir, missing_labels=missing_labels)

    def _resolve_layout(self) -> str:
        if self.layout != "auto":
            return self.layout
        if (self.root / "JPEGImages").is_dir():
            return "voc2010"
        if (self.root / self.split / "image").is_dir():
            return "openseg"
        raise FileNotFoundError(
            f"PASCAL-Context images not found under {self.root}: expected {self.root / 'JPEGImages'} "
            f"(mmsegmentation layout) or {self.root / self.split / 'image'} (openseg layout)"
        )

    def scan(self) -> FileListing:
        self.layout = self._resolve_layout()
        if self.layout == "openseg":
            image_dir, label_dir = self.root / self.split / "image", self.root / self.split / "label"
            if not image_dir.is_dir():
                raise FileNotFoundError(f"PASCAL-Context image folder not found: {image_dir}")
            images = index_files(image_dir, "*.jpg", lambda p: p.stem)
            labels = index_files(label_dir, "*.png", lambda p: p.stem) if label_dir.is_dir() else None
        else:
            image_dir, label_dir = self.root / "JPEGImages", self.root / "SegmentationClassContext"
            if not image_dir.is_dir():
                raise FileNotFoundError(f"PASCAL-Context image folder not found: {image_dir}")
            split_file = self.root / "ImageSets" / "SegmentationContext" / f"{self.split}.txt"
            if not split_file.is_file():
                raise FileNotFoundError(f"PASCAL-Context split list not found: {split_file}")
            wanted = read_split_file(split_file)
            images = {name: image_dir / f"{name}.jpg" for name in wanted}
            absent = [name for name, path in images.items() if not path.is_file()]
            if absent:
                raise FileNotFoundError(
                    f"split file {split_file} lists {len(absent)} samples without an image, first: {images[absent[0]]}"
                )
            labels = None
            if label_dir.is_dir():
                # Label files of this split only (the folder holds train and val).
                labels = {name: label_dir / f"{name}.png" for name in wanted if (label_dir / f"{name}.png").is_file()}
        expected = {name: label_dir / f"{name}.png" for name in images}
        return FileListing(images, labels, expected)
