"""Integrity check of a dataset on disk (``contraseg datasets check``).

:func:`check_dataset` lists a split, reads every image and label, and collects

* images without a label and labels without an image,
* unreadable or truncated files,
* images whose size differs from their label's,
* raw label values outside the dataset's id table (not a defined id, not its void id),
* the class histogram: pixel count per train id, plus ignored pixels,
* a split with no image, no label folder, or (when every sample was read) no
  labelled pixel at all: nothing to train or evaluate on (a misnamed label folder
  reads as an unlabeled split).

It never raises for a problem in the data; a missing root or split folder raises a
one-line FileNotFoundError from the dataset's own listing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .base import FileSegmentationDataset, read_rgb_image
from .registry import dataset_options, get_dataset_class

__all__ = ["CheckReport", "check_dataset"]


@dataclass
class CheckReport:
    """The result of :func:`check_dataset`.

    Attributes:
        dataset, split, root: what was checked.
        classes: the train-id class names (K).
        num_images, num_labels: files found for the split.
        unlabeled: True when the split has no label folder at all.
        problems: one line per problem, each naming its file.
        histogram: int64 (K,) pixel counts per train id over the readable labels.
        ignored_pixels: pixels mapped to the ignore index.
        checked: samples read.
    """

    dataset: str
    split: str
    root: Path
    classes: tuple[str, ...]
    num_images: int = 0
    num_labels: int = 0
    unlabeled: bool = False
    problems: list[str] = field(default_factory=list)
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ignored_pixels: int = 0
    checked: int = 0

    @property
    def clean(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def histogram_table(self) -> str:
        """The class histogram as text: train id, class name, pixels, % of all label pixels (ignored included)."""
        total = int(self.histogram.sum()) + self.ignored_pixels
        width = max([len(c) for c in self.classes] + [len("ignored")])
        lines = [f"{'id':>3}  {'class':<{width}}  {'pixels':>12}  {'%':>6}"]
        for train_id, (name, count) in enumerate(zip(self.classes, self.histogram.tolist())):
            lines.append(f"{train_id:>3}  {name:<{width}}  {count:>12}  {_percent(count, total):>6}")
        lines.append(f"{'':>3}  {'ignored':<{width}}  {self.ignored_pixels:>12}  {_percent(self.ignored_pixels, total):>6}")
        return "\n".join(lines)


def _percent(count: int, total: int) -> str:
    return f"{100.0 * count / total:.2f}" if total else "0.00"


def check_dataset(
    name: str,
    root: str | Path,
    split: str | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> CheckReport:
    """Check the files of dataset ``name`` under ``root``.

    Args:
        name: a registered dataset name stored as files (cityscapes, gta5, synthia, ade20k,
            pascal-context, coco-stuff).
        root: the dataset root.
        split: the split (the dataset's default when None).
        limit: read at most this many samples (None: all); listing checks cover all.
        progress: called as ``progress(done, total)`` after each sample.
        options: further constructor arguments (``mode="coarse"`` for Cityscapes).

    Returns a :class:`CheckReport`. Raises ValueError for an unknown dataset or one
    not stored as files, FileNotFoundError (one line) for a missing root or folder.
    """
    cls = get_dataset_class(name)
    if not (isinstance(cls, type) and issubclass(cls, FileSegmentationDataset)):
        raise ValueError(f"dataset {name!r} is not stored as files; nothing to check")
    allowed = dataset_options(cls)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"dataset {name!r} has no option {unknown[0]!r}; options: {', '.join(sorted(allowed)) or 'none'}")
    kwargs = dict(options)
    if split is not None:
        kwargs["split"] = split
    dataset = cls(root=root, missing_labels="unlabeled", **kwargs)
    listing = dataset.listing
    info = dataset.info
    report = CheckReport(
        dataset=name,
        split=dataset.split,
        root=dataset.root,
        classes=info.classes,
        num_images=len(listing.images),
        num_labels=0 if listing.labels is None else len(listing.labels),
        unlabeled=listing.labels is None,
        histogram=np.zeros(info.num_classes, dtype=np.int64),
    )
    for missing in listing.missing_labels():
        report.problems.append(f"image without label: {listing.images[missing]} (expected {listing.expected_labels[missing]})")
    labels = listing.labels or {}
    for orphan in listing.orphan_labels():
        report.problems.append(f"label without image: {labels[orphan]}")

    if not listing.images:
        report.problems.append(f"no images: split {dataset.split} of {name} under {dataset.root} lists 0 images")
    elif listing.labels is None:
        report.problems.append(f"no label folder: split {dataset.split} of {name} under {dataset.root} has no labels, "
                               "so nothing to train or evaluate on (is the label folder misnamed?)")

    samples = dataset.samples if limit is None else dataset.samples[: max(0, limit)]
    for done, sample in enumerate(samples, start=1):
        _check_sample(dataset, sample.image, sample.label, report)
        report.checked = done
        if progress is not None:
            progress(done, len(samples))
    labelled = int(report.histogram.sum())
    if listing.labels and report.checked == len(dataset.samples) and report.checked and labelled == 0:
        report.problems.append(f"no labelled pixel: every pixel of the {report.checked} labels of split "
                               f"{dataset.split} under {dataset.root} is ignored")
    return report


def _check_sample(dataset: FileSegmentationDataset, image_path: Path, label_path: Path | None, report: CheckReport) -> None:
    """Read one image / label pair and add its problems and pixel counts to ``report``."""
    try:
        image = read_rgb_image(image_path)
    except ValueError as err:
        report.problems.append(f"unreadable image: {err}")
        image = None
    if label_path is None:
        return
    try:
        raw = dataset.read_raw_label(label_path)
    except ValueError as err:
        report.problems.append(f"unreadable label: {err}")
        return
    if image is not None and image.shape[:2] != raw.shape:
        report.problems.append(
            f"size mismatch: image {image_path} is {image.shape[0]}x{image.shape[1]} "
            f"but label {label_path} is {raw.shape[0]}x{raw.shape[1]}"
        )
    table = dataset.label_table
    unknown = table.unknown_values(raw)
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        report.problems.append(f"label values outside the {report.dataset} id table in {label_path}: {shown}")
    train_ids = table.map(raw)
    counts = np.bincount(train_ids.ravel(), minlength=256)
    k = report.histogram.size
    report.histogram += counts[:k].astype(np.int64)
    report.ignored_pixels += int(counts[k:].sum())
