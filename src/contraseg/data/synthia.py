"""SYNTHIA-RAND-CITYSCAPES (Ros et al., CVPR 2016), the 9,400-image UDA source set.

Layout (as downloaded)::

    root/RGB/0000000.png           8-bit RGB frames
    root/GT/LABELS/0000000.png     16-bit, 3-channel PNGs: class id in the FIRST channel
                                   (R), instance id in the second; OpenCV reads BGR, so
                                   the class is ``cv2.imread(p, IMREAD_UNCHANGED)[..., 2]``
    root/{split}.txt               optional split lists (as for GTA5)

SYNTHIA class ids (dataset README) and the Cityscapes train id each becomes:

====  =============  ========  ====  =============  ========
 id   SYNTHIA        train id   id   SYNTHIA        train id
====  =============  ========  ====  =============  ========
  0   void           255        12   motorcycle     17
  1   sky            10         13   parking-slot   255
  2   building       2          14   road-work      255
  3   road           0          15   traffic light  6
  4   sidewalk       1          16   terrain        9
  5   fence          4          17   rider          12
  6   vegetation     8          18   truck          14
  7   pole           5          19   bus            15
  8   car            13         20   train          16
  9   traffic sign   7          21   wall           3
 10   pedestrian     11         22   lanemarking    255
 11   bicycle        18
====  =============  ========  ====  =============  ========

Terrain, truck and train are defined but do not occur in the data; parking-slot,
road-work and lane markings are ignored, as in the usual SYNTHIA -> Cityscapes protocol.

Decision: labels are always emitted as the 19 Cityscapes train ids, so one model with
19 outputs trains on SYNTHIA and is evaluated on Cityscapes unchanged. The evaluation
subset is a property: ``num_classes=16`` evaluates on the 16 shared classes (19 minus
terrain, truck, train), ``num_classes=13`` also drops wall, fence and pole; it is
``dataset.eval_classes`` (= ``dataset.info.eval_classes``), which the evaluation uses
to average the per-class IoU. Use the same tuple when evaluating the Cityscapes target.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DatasetInfo, FileListing, FileSegmentationDataset, JointTransform, LabelTable, scan_paired_folders
from .palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, SYNTHIA_13_CLASSES, SYNTHIA_16_CLASSES
from .pseudo_labels import PseudoLabelDir

__all__ = ["SYNTHIA_ID_TO_TRAIN_ID", "SYNTHIA_LABEL_TABLE", "SynthiaDataset", "synthia_info"]

SYNTHIA_ID_TO_TRAIN_ID: dict[int, int] = {
    0: 255, 1: 10, 2: 2, 3: 0, 4: 1, 5: 4, 6: 8, 7: 5, 8: 13, 9: 7, 10: 11, 11: 18,
    12: 17, 13: 255, 14: 255, 15: 6, 16: 9, 17: 12, 18: 14, 19: 15, 20: 16, 21: 3, 22: 255,
}
SYNTHIA_LABEL_TABLE = LabelTable(SYNTHIA_ID_TO_TRAIN_ID)
_EVAL_CLASSES = {16: SYNTHIA_16_CLASSES, 13: SYNTHIA_13_CLASSES}


def synthia_info(num_classes: int = 16) -> DatasetInfo:
    """SYNTHIA's DatasetInfo: 19 Cityscapes classes, ``eval_classes`` the 16- or 13-class subset."""
    if num_classes not in _EVAL_CLASSES:
        raise ValueError(f"SYNTHIA num_classes must be 16 or 13, got {num_classes}")
    return DatasetInfo("synthia", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, eval_classes=_EVAL_CLASSES[num_classes])


def read_synthia_label(path: Path) -> np.ndarray:
    """The SYNTHIA class ids of label file ``path``: H x W uint16 (first / R channel).

    Single-channel label PNGs (re-encoded copies) are read as they are. Unreadable or
    truncated files raise a one-line ValueError naming the file.
    """
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"cannot read label {path}: OpenCV could not decode it (missing, truncated or not an image)")
    if raw.ndim == 2:
        return raw
    if raw.ndim == 3 and raw.shape[2] in (3, 4):
        return raw[..., 2]  # BGR(A) order: index 2 is the file's first (R) channel
    raise ValueError(f"label {path} must have 1, 3 or 4 channels, got shape {raw.shape}")


class SynthiaDataset(FileSegmentationDataset):
    """SYNTHIA-RAND-CITYSCAPES with 19 Cityscapes train ids and a 16/13-class eval subset.

    Args:
        root: the ``RAND_CITYSCAPES`` folder holding ``RGB/`` and ``GT/LABELS/``.
        split: ``"all"`` or a name with a ``root/{split}.txt`` list.
        num_classes: 16 or 13, the evaluation subset (``eval_classes``); labels are
            the 19 train ids either way.
        transform, pseudo_label_dir, missing_labels: see
            :class:`~contraseg.data.base.FileSegmentationDataset`.

    Sample: ``{"image": float32 3 x H x W, "label": int64 H x W, "name": "0000000"}``.
    """

    info = synthia_info(16)
    label_table = SYNTHIA_LABEL_TABLE

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        num_classes: int = 16,
        transform: JointTransform | None = None,
        pseudo_label_dir: str | Path | PseudoLabelDir | None = None,
        *,
        missing_labels: str = "error",
    ) -> None:
        info = synthia_info(num_classes)
        super().__init__(root, split, transform, pseudo_label_dir, missing_labels=missing_labels)
        self.info = info
        self.num_classes = num_classes

    def scan(self) -> FileListing:
        return scan_paired_folders(self.root, self.root / "RGB", self.root / "GT" / "LABELS", self.split, "SYNTHIA")

    def read_raw_label(self, path: Path) -> np.ndarray:
        return read_synthia_label(path)
