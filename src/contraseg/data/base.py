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
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from .files import one_line as _one_line
from .files import read_label_png, read_rgb_image
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
    ``ignore_index``). Raw ids missing from it also map to ``ignore_index`` when
    loading, and :meth:`unknown_values` reports them (``contraseg datasets check``).

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

    def unknown_values(self, raw: np.ndarray) -> list[int]:
        """The distinct raw values of ``raw`` that the table does not define, ascending."""
        values = np.unique(np.asarray(raw))
        inside = (values >= 0) & (values < self.lut.size)
        known = np.zeros(values.shape, dtype=bool)
        known[inside] = self.known[values[inside]]
        return [int(v) for v in values[~known]]


@dataclass(frozen=True)
class Sample:
    """One image of a file dataset: its name, image file and label file (None if unlabeled)."""

    name: str
    image: Path
    label: Path | None


@dataclass
class FileListing:
    """What :meth:`FileSegmentationDataset.scan` found on disk for one split.

    Attributes:
        images: sample name -> image file, for every image of the split.
        labels: sample name -> label file, for every label file present in the split,
            or ``None`` when the split has no label folder at all (unlabeled data).
        expected_labels: sample name -> the label path each image should have
            (used to name the missing file in errors).
    """

    images: dict[str, Path]
    labels: dict[str, Path] | None
    expected_labels: dict[str, Path]

    def missing_labels(self) -> list[str]:
        """Names of images whose label file is absent (empty for unlabeled splits)."""
        if self.labels is None:
            return []
        return [name for name in self.images if name not in self.labels]

    def orphan_labels(self) -> list[str]:
        """Names of label files that have no image."""
        if self.labels is None:
            return []
        return [name for name in self.labels if name not in self.images]


def check_root(root: str | Path, what: str = "dataset root") -> Path:
    """``root`` as a Path; a one-line FileNotFoundError naming it when it is not a folder."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def index_files(folder: Path, pattern: str, name_of: Callable[[Path], str]) -> dict[str, Path]:
    """Files under ``folder`` matching the glob ``pattern``, keyed by ``name_of(path)``.

    Two files with the same sample name raise a one-line ValueError naming both.
    """
    found: dict[str, Path] = {}
    for path in sorted(folder.glob(pattern), key=str):
        if not path.is_file():
            continue
        name = name_of(path)
        if name in found:
            raise ValueError(f"two files for sample {name!r}: {found[name]} and {path}")
        found[name] = path
    return found


def read_split_file(path: Path) -> list[str]:
    """Sample names listed in a split file: one id or file name per line.

    ``00001``, ``00001.png`` and ``images/00001.png`` all name sample ``00001``;
    blank lines and lines starting with ``#`` are skipped.
    """
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read split file {path}: {_one_line(err)}") from None
    names = []
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            file = Path(entry)
            names.append(file.stem if file.suffix.lower() in _IMAGE_SUFFIXES else file.name)
    return names


def scan_paired_folders(
    root: Path, image_dir: Path, label_dir: Path, split: str, what: str, image_suffix: str = ".png"
) -> FileListing:
    """Pair ``image_dir/<name><image_suffix>`` with ``label_dir/<name>.png``, within a split list.

    ``root/{split}.txt``, when it exists, lists the split's sample names; without it
    ``"all"`` means every image and any other split raises FileNotFoundError naming
    the missing list. A listed name without an image raises FileNotFoundError too.
    """
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{what} image folder not found: {image_dir}")
    images = index_files(image_dir, f"*{image_suffix}", lambda p: p.stem)
    labels = index_files(label_dir, "*.png", lambda p: p.stem) if label_dir.is_dir() else None
    split_file = root / f"{split}.txt"
    if split_file.is_file():
        names = read_split_file(split_file)
        absent = [n for n in names if n not in images]
        if absent:
            raise FileNotFoundError(
                f"split file {split_file} lists {len(absent)} samples without an image, "
                f"first: {image_dir / (absent[0] + image_suffix)}"
            )
        wanted = set(names)
        images = {n: p for n, p in images.items() if n in wanted}
        if labels is not None:
            labels = {n: p for n, p in labels.items() if n in wanted}
    elif split != "all":
        raise FileNotFoundError(f"{what} split list not found: {split_file}")
    expected = {name: label_dir / f"{name}.png" for name in images}
    return FileListing(images, labels, expected)


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
        """Label file ``path`` as uint8 H x W train ids; unknown raw ids -> ignore."""
        return self.label_table.map(self.read_raw_label(path))

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
