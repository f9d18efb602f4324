"""Finding a split's files on disk for :class:`~contraseg.data.base.FileSegmentationDataset`:
the :class:`FileListing` a format's ``scan`` returns, and the helpers formats build it with
(:func:`index_files`, :func:`read_split_file`, :func:`scan_paired_folders`, :func:`check_root`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .files import one_line


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
        raise ValueError(f"cannot read split file {path}: {one_line(err)}") from None
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
