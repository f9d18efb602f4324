"""Dataset base classes shared by every dataset format and the synthetic benchmark.

Two layers:

* :class:`SegmentationDataset` -- the sample contract. A subclass says how many
  samples there are and how to load sample ``i`` as numpy arrays
  (``sample_name``, ``load_image``, ``load_ground_truth``); the base class applies the
  pseudo-label override and the joint transform and returns::

      {"image": float32 3 x H x W (normalised), "label": int64 H x W (255 = ignore),
       "name": str}                      # plus "gt_label": int64 H x W with pseudo labels

  The synthetic datasets subclass it directly (images are drawn, not read).
* :class:`FileSegmentationDataset` -- a dataset stored as image / label files under a
  root folder. A format module only implements :meth:`~FileSegmentationDataset.scan`
  (which files belong to a split) and says how raw label ids map to train ids
  (:class:`LabelTable`, or by overriding ``load_label``).

The pieces a format module needs besides these two classes live in :mod:`.dataset_info`
(:class:`DatasetInfo`, :class:`LabelTable`), :mod:`.listing` (:class:`FileListing` and
the file-finding helpers) and :mod:`.files` (the readers); this module re-exports them
(``__all__``), so a format imports everything from here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from .dataset_info import DatasetInfo, LabelTable
from .files import read_label_png, read_rgb_image
from .listing import FileListing, Sample, check_root, index_files, read_split_file, scan_paired_folders
from .pseudo_labels import PseudoLabelDir

__all__ = [
    "DatasetInfo",
    "FileListing",
    "FileSegmentationDataset",
    "LabelTable",
    "JointTransform",
    "Sample",
    "SegmentationDataset",
    "check_root",
    "index_files",
    "read_split_file",
    "scan_paired_folders",
    "read_label_png",
    "read_rgb_image",
]

# A joint transform: (image uint8 H x W x 3, mask, *extra masks) -> (image, mask, *extra) tensors.
JointTransform = Callable[..., tuple[Tensor, ...]]


def _default_transform() -> JointTransform:
    from .transforms import EvalTransform

    return EvalTransform()


class SegmentationDataset(Dataset, ABC):
    """Base of every dataset: pseudo-label override + joint transform -> sample dict.

    Subclasses implement ``__len__``, :meth:`sample_name`, :meth:`load_image` and
    :meth:`load_ground_truth`, and set ``self.info`` (or a class attribute ``info``).

    Args:
        info: the dataset's :class:`DatasetInfo`.
        transform: joint transform called as ``transform(image, label[, gt_label])``
            with an H x W x 3 uint8 image and H x W uint8 masks, returning
            ``(image 3 x H' x W' float32, label H' x W' int64[, gt_label])``.
            ``None`` -> :class:`~contraseg.data.transforms.EvalTransform` (ImageNet
            normalisation only).
        pseudo_label_dir: a folder of ``<name>.png`` pseudo labels (train ids). When
            given, they are returned as ``"label"`` and the dataset's own label, if it
            has one, as ``"gt_label"``.
    """

    info: DatasetInfo

    def __init__(
        self,
        info: DatasetInfo,
        transform: JointTransform | None = None,
        pseudo_label_dir: str | Path | PseudoLabelDir | None = None,
    ) -> None:
        self.info = info
        self.transform = transform if transform is not None else _default_transform()
        if pseudo_label_dir is None or isinstance(pseudo_label_dir, PseudoLabelDir):
            self.pseudo_labels = pseudo_label_dir
        else:
            self.pseudo_labels = PseudoLabelDir(pseudo_label_dir)

    # -- what a subclass provides -------------------------------------------------
    @abstractmethod
    def __len__(self) -> int:
        """The number of samples."""

    @abstractmethod
    def sample_name(self, index: int) -> str:
        """A unique name of sample ``index`` (no folder separators); pseudo labels use it."""

    @abstractmethod
    def load_image(self, index: int) -> np.ndarray:
        """Sample ``index``'s image, uint8 H x W x 3 RGB."""

    @abstractmethod
    def load_ground_truth(self, index: int) -> np.ndarray | None:
        """Sample ``index``'s label as uint8 H x W train ids (255 ignore), or None if unlabeled."""

    # -- shared behaviour ---------------------------------------------------------
    @property
    def eval_classes(self) -> tuple[int, ...] | None:
        """Train ids evaluation averages over (``None``: all classes)."""
        return self.info.eval_classes

    def describe(self, index: int) -> str:
        """Sample ``index`` in words, for error messages (file datasets name the files)."""
        return f"sample {self.sample_name(index)}"

    def _index(self, index: int) -> int:
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {size}")
        return index % size

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._index(int(index))
        name = self.sample_name(index)
        image = self.load_image(index)
        ground_truth = self.load_ground_truth(index)
        height, width = image.shape[:2]
        if ground_truth is not None and ground_truth.shape != (height, width):
            raise ValueError(
                f"{self.describe(index)}: label is {ground_truth.shape[0]}x{ground_truth.shape[1]} "
                f"but image is {height}x{width}"
            )
        if self.pseudo_labels is not None:
            label = self.pseudo_labels.load(name, size=(height, width))
            extra = [ground_truth] if ground_truth is not None else []
        else:
            label = ground_truth
            extra = []
        if label is None:
            label = np.full((height, width), self.info.ignore_index, dtype=np.uint8)
        out = self.transform(image, label, *extra)
        sample: dict[str, Any] = {"image": out[0], "label": out[1], "name": name}
        if extra:
            sample["gt_label"] = out[2]
        return sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.info.name!r}, samples={len(self)})"


class FileSegmentationDataset(SegmentationDataset):
    """A dataset stored as image and label files under ``root``.

    A format subclass sets the class attributes ``info`` and ``label_table`` and
    implements :meth:`scan`; it may override :meth:`read_raw_label` (how a label file
    is decoded into raw ids) or :meth:`load_label` (raw ids -> train ids).

    Construction lists the split (kept as ``self.listing``). An image whose label is
    missing raises a one-line FileNotFoundError naming the expected label file, unless
    ``missing_labels="unlabeled"`` (such images then have no label, as in an unlabeled
    split). A split with no label folder at all is unlabeled: every sample's
    ``"label"`` is all ``ignore_index`` unless pseudo labels are given.
    """

    label_table: LabelTable
    splits: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: JointTransform | None = None,
        pseudo_label_dir: str | Path | PseudoLabelDir | None = None,
        *,
        missing_labels: str = "error",
    ) -> None:
        if self.splits and split not in self.splits:
            raise ValueError(f"{type(self).__name__}: split must be one of {list(self.splits)}, got {split!r}")
        if missing_labels not in ("error", "unlabeled"):
            raise ValueError(f"missing_labels must be 'error' or 'unlabeled', got {missing_labels!r}")
        super().__init__(type(self).info, transform, pseudo_label_dir)
        self.root = check_root(root)
        self.split = split
        self.listing = self.scan()
        missing = self.listing.missing_labels()
        if missing and missing_labels == "error":
            raise FileNotFoundError(
                f"label not found for image {self.listing.images[missing[0]]}: expected "
                f"{self.listing.expected_labels[missing[0]]} ({len(missing)} images without labels)"
            )
        labels = self.listing.labels or {}
        self.samples: list[Sample] = [
            Sample(name, path, labels.get(name)) for name, path in sorted(self.listing.images.items())
        ]

    @abstractmethod
    def scan(self) -> FileListing:
        """List the images and labels of ``self.split`` under ``self.root``."""

    def read_raw_label(self, path: Path) -> np.ndarray:
        """The raw ids stored in label file ``path`` (H x W integers)."""
        return read_label_png(path)

    def load_label(self, path: Path) -> np.ndarray:
        """Label file ``path`` as uint8 H x W train ids.

        Raw values outside the format's id table are refused with a one-line ValueError
        naming the file and the values, as ``contraseg datasets check`` refuses them (they
        used to become ignore silently, so training and the check disagreed).
        """
        raw = self.read_raw_label(path)
        table = self.label_table
        if raw.size and not table.all_known(raw):
            unknown = table.unknown_values(raw)
            shown = ", ".join(str(v) for v in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise ValueError(f"label {path}: value(s) {shown} outside the {self.info.name} id table "
                             f"(contraseg datasets check lists every such file)")
        return table.map(raw)

    def __len__(self) -> int:
        return len(self.samples)

    def sample_name(self, index: int) -> str:
        return self.samples[index].name

    def load_image(self, index: int) -> np.ndarray:
        return read_rgb_image(self.samples[index].image)

    def load_ground_truth(self, index: int) -> np.ndarray | None:
        path = self.samples[index].label
        return None if path is None else self.load_label(path)

    def describe(self, index: int) -> str:
        sample = self.samples[index]
        return f"image {sample.image} (label {sample.label})"
