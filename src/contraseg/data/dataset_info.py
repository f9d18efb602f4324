"""What a dataset's labels mean: :class:`DatasetInfo` (class names, palette, ignore index,
evaluated subset) and :class:`LabelTable` (a format's raw label ids -> train ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset's labels mean.

    Attributes:
        name: the registered dataset name (``"cityscapes"``).
        classes: the K class names, index = train id.
        palette: K RGB colours (uint8 each), one per class, for visualisation.
        ignore_index: the label value of pixels that are not evaluated (255).
        eval_classes: train ids that evaluation averages over, or ``None`` for all K
            (SYNTHIA is evaluated on 16 or 13 of the 19 Cityscapes classes).
    """

    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = 255
    eval_classes: tuple[int, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if len(self.classes) == 0:
            raise ValueError(f"DatasetInfo {self.name!r}: classes must not be empty")
        if len(self.palette) != len(self.classes):
            raise ValueError(
                f"DatasetInfo {self.name!r}: palette has {len(self.palette)} colours "
                f"but there are {len(self.classes)} classes"
            )
        for colour in self.palette:
            if len(colour) != 3 or any(not 0 <= int(c) <= 255 for c in colour):
                raise ValueError(f"DatasetInfo {self.name!r}: palette colour {colour} is not 3 values in [0, 255]")
        if 0 <= self.ignore_index < len(self.classes):
            raise ValueError(
                f"DatasetInfo {self.name!r}: ignore_index={self.ignore_index} collides with "
                f"class ids [0, {len(self.classes)})"
            )
        if self.eval_classes is not None:
            bad = [c for c in self.eval_classes if not 0 <= c < len(self.classes)]
            if bad:
                raise ValueError(
                    f"DatasetInfo {self.name!r}: eval_classes {bad} outside [0, {len(self.classes)})"
                )

    @property
    def num_classes(self) -> int:
        """K, the number of train ids."""
        return len(self.classes)


class LabelTable:
    """Raw label id -> train id, as a lookup table.

    ``mapping`` lists every raw id the format defines (void ids included, mapped to
    ``ignore_index``). :meth:`map` sends raw ids missing from it to ``ignore_index``;
    datasets refuse label files holding them (``SegmentationDataset.load_label``) and
    :meth:`unknown_values` reports them (``contraseg datasets check``).

    Example: Cityscapes ``{7: 0, 26: 13, 0: 255, ...}``; raw label images may be
    uint8 or uint16 (SYNTHIA), any shape.
    """

    def __init__(self, mapping: Mapping[int, int], ignore_index: int = 255) -> None:
        if not mapping:
            raise ValueError("LabelTable: mapping must not be empty")
        bad = {k: v for k, v in mapping.items() if k < 0 or not 0 <= v <= 255}
        if bad:
            raise ValueError(f"LabelTable: raw ids must be >= 0 and train ids in [0, 255], got {bad}")
        self.mapping = dict(mapping)
        self.ignore_index = ignore_index
        size = max(256, max(self.mapping) + 1)
        self.lut = np.full(size, ignore_index, dtype=np.uint8)
        self.known = np.zeros(size, dtype=bool)
        for raw, train in self.mapping.items():
            self.lut[raw] = train
            self.known[raw] = True

    def map(self, raw: np.ndarray) -> np.ndarray:
        """Train ids (uint8, same shape) of the raw ids ``raw`` (any integer array)."""
        raw = np.asarray(raw)
        if raw.dtype.kind not in "iu":
            raise ValueError(f"LabelTable.map: raw labels must be integers, got dtype {raw.dtype}")
        inside = (raw >= 0) & (raw < self.lut.size)
        if inside.all():
            return self.lut[raw]
        return np.where(inside, self.lut[np.clip(raw, 0, self.lut.size - 1)], self.ignore_index).astype(np.uint8)

    def all_known(self, raw: np.ndarray) -> bool:
        """Whether every value of ``raw`` is a raw id of the table (cheap: one gather)."""
        raw = np.asarray(raw)
        if raw.size == 0:
            return True
        if int(raw.min()) < 0 or int(raw.max()) >= self.known.size:
            return False
        return bool(self.known[raw].all())

    def unknown_values(self, raw: np.ndarray) -> list[int]:
        """The distinct raw values of ``raw`` that the table does not define, ascending."""
        values = np.unique(np.asarray(raw))
        inside = (values >= 0) & (values < self.lut.size)
        known = np.zeros(values.shape, dtype=bool)
        known[inside] = self.known[values[inside]]
        return [int(v) for v in values[~known]]
