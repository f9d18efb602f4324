"""Weak target labels for WDASS, made from full labels, and reading them back.

Three kinds (Das et al., CVPR 2023), all deterministic functions of the full label, the
seed and the sample name:

* ``image``: the classes present in the image (every value but ``ignore_index``).
* ``point``: for each class k, the connected components of the mask ``label == k``
  (8- or 4-connectivity); every component of at least ``min_size`` pixels gets
  ``points`` pixels of class k drawn uniformly at random inside it; every other pixel
  is ``ignore_index``.
* ``coarse``: each class region eroded by a (2r + 1) x (2r + 1) square: a pixel keeps its
  class only when its whole window (clipped at the image border, which is no region
  boundary) has that class, so a band of width r along every boundary is dropped.
  Thin classes (pole, traffic light, traffic sign by default) are dropped altogether,
  as coarse polygon annotations skip them. The result never contradicts the full
  label. Cityscapes' own ``gtCoarse`` can be written unchanged instead (``as_is``).

The random draws of a sample come from ``numpy.random.default_rng([seed, crc32(name)])``,
so a sample's weak label does not depend on the order of the samples or on the other
samples. Files: ``<name>.png`` per sample (the pseudo-label naming, so a dataset built
with ``pseudo_label_dir=`` returns them as its label) for point / coarse, one
``image_labels.json`` ({name: [class ids]}) for image, and ``summary.json``.

In training (:mod:`contraseg.adapt.wdass_trainer`): :func:`downsample_labels` brings weak
labels to the embedding grid without losing points, :func:`crop_presence` gives the
image-level targets a crop's point / coarse labels can vouch for.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from .._io import atomic_write

IMAGE_LABELS_FILE = "image_labels.json"
SUMMARY_FILE = "summary.json"
DEFAULT_THIN_CLASSES = ("pole", "traffic light", "traffic sign")


def sample_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of sample ``name``'s random draws: ``default_rng([seed, crc32(name)])``."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _check_label(label: np.ndarray) -> np.ndarray:
    array = np.asarray(label)
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise ValueError(f"label must be an H x W integer array, got shape {array.shape} dtype {array.dtype}")
    return array


def _present(label: np.ndarray, ignore_index: int) -> list[int]:
    values = np.unique(label)
    return [int(v) for v in values if v != ignore_index]


def image_level_classes(label: np.ndarray, ignore_index: int = 255) -> list[int]:
    """Sorted class ids present in ``label`` (H x W), ``ignore_index`` left out."""
    return _present(_check_label(label), ignore_index)


def point_labels(label: np.ndarray, rng: np.random.Generator, min_size: int = 16, points: int = 1,
                 connectivity: int = 8, ignore_index: int = 255) -> np.ndarray:
    """Point labels of ``label`` (H x W): ``points`` random pixels per component >= ``min_size``.

    A component smaller than ``points`` pixels (but >= ``min_size``) gets all its
    pixels. Returns uint8 H x W, ``ignore_index`` everywhere else.
    """
    import cv2

    label = _check_label(label)
    if min_size < 1 or points < 1:
        raise ValueError(f"min_size and points must be >= 1, got {min_size} and {points}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    out = np.full(label.shape, ignore_index, dtype=np.uint8)
    flat_out = out.reshape(-1)
    for k in _present(label, ignore_index):
        count, components = cv2.connectedComponents((label == k).astype(np.uint8), connectivity=connectivity)
        flat = components.reshape(-1)
        order = np.argsort(flat, kind="stable")  # pixel indices grouped by component, ascending
        sizes = np.bincount(flat, minlength=count)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        for component in range(1, count):  # 0 is the background of this class's mask
            size = int(sizes[component])
            if size < min_size:
                continue
            chosen = rng.choice(size, size=min(points, size), replace=False)
            flat_out[order[starts[component] + chosen]] = k
    return out


def erode_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Erosion of a bool H x W ``mask`` by a (2r + 1)^2 square; the image border does not erode."""
    import cv2

    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if radius == 0:
        return mask.astype(bool)
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), dtype=np.uint8)
    return cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)


def coarse_labels(label: np.ndarray, radius: int = 2, drop: Iterable[int] = (),
                  ignore_index: int = 255) -> np.ndarray:
    """Coarse labels of ``label`` (H x W): each class eroded by ``radius``, classes ``drop`` removed.

    Returns uint8 H x W, a subset of ``label`` (``ignore_index`` elsewhere).
    """
    label = _check_label(label)
    dropped = set(int(d) for d in drop)
    out = np.full(label.shape, ignore_index, dtype=np.uint8)
    for k in _present(label, ignore_index):
        if k not in dropped:
            out[erode_mask(label == k, radius)] = k
    return out


def class_ids(names: Sequence[str], classes: Sequence[str]) -> list[int]:
    """Train ids of the class ``names``; ValueError naming an unknown one and the known names."""
    ids = []
    for name in names:
        if name not in classes:
            raise ValueError(f"unknown class {name!r}; classes are: {', '.join(classes)}")
        ids.append(list(classes).index(name))
    return ids


def make_weak_labels(dataset: Any, kind: str, out: str | Path, *, seed: int = 0, min_size: int = 16,
                     points: int = 1, connectivity: int = 8, radius: int = 2,
                     drop: Sequence[str] = DEFAULT_THIN_CLASSES, as_is: bool = False) -> dict[str, Any]:
    """Write the weak labels of every sample of ``dataset`` under ``out``; return the summary.

    ``dataset`` is a :class:`contraseg.data.SegmentationDataset` (its full labels are
    read with ``load_ground_truth``, names with ``sample_name``). See the module
    docstring for the kinds and files; ``as_is`` (coarse only) writes the dataset's own
    labels unchanged, e.g. Cityscapes built with ``mode="coarse"``.
    """
    from ..data.pseudo_labels import PseudoLabelDir

    if kind not in ("image", "point", "coarse"):
        raise ValueError(f"kind must be image, point or coarse, got {kind!r}")
    if as_is and kind != "coarse":
        raise ValueError(f"as_is writes the dataset's own coarse labels; it needs kind coarse, got {kind!r}")
    info = dataset.info
    ignore = int(info.ignore_index)
    dropped = class_ids(drop, info.classes) if kind == "coarse" and not as_is else []
    folder = PseudoLabelDir(out, create=True)
    for stale in (folder.path / SUMMARY_FILE, folder.path / IMAGE_LABELS_FILE):
        if stale.exists():
            stale.unlink()
    labelled = np.zeros(len(info.classes), dtype=np.int64)
    image_labels: dict[str, list[int]] = {}
    for index in range(len(dataset)):
        name = dataset.sample_name(index)
        full = dataset.load_ground_truth(index)
        if full is None:
            raise ValueError(f"sample {name} has no label: weak labels are made from full labels")
        if kind == "image":
            image_labels[name] = image_level_classes(full, ignore)
            labelled[image_labels[name]] += 1
            continue
        if kind == "point":
            weak = point_labels(full, sample_rng(seed, name), min_size, points, connectivity, ignore)
        elif as_is:
            weak = np.asarray(full).astype(np.uint8)
        else:
            weak = coarse_labels(full, radius, dropped, ignore)
        kept = weak[weak != ignore]
        labelled += np.bincount(kept, minlength=len(info.classes))[: len(info.classes)]
        folder.write(name, weak)
    if kind == "image":
        text = json.dumps(image_labels, indent=0)
        atomic_write(folder.path / IMAGE_LABELS_FILE, lambda handle: handle.write(text.encode()))
    options: dict[str, Any] = {
        "image": {},
        "point": {"seed": seed, "min_size": min_size, "points": points, "connectivity": connectivity},
        "coarse": {"as_is": True} if as_is else {"radius": radius, "drop": list(drop)},
    }[kind]
    unit = "images" if kind == "image" else "pixels"
    summary = {
        "kind": kind, "images": len(dataset), "options": options,
        "labelled": {"unit": unit, **{name: int(labelled[k]) for k, name in enumerate(info.classes)}},
    }
    text = json.dumps(summary, indent=1)
    atomic_write(folder.path / SUMMARY_FILE, lambda handle: handle.write(text.encode()))
    return summary


def read_image_labels(path: str | Path) -> dict[str, list[int]]:
    """``{sample name: [class ids]}`` from ``image_labels.json`` (or the folder holding it).

    Raises:
        FileNotFoundError / ValueError: one line naming the file.
    """
    file = Path(path)
    if file.is_dir():
        file = file / IMAGE_LABELS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"image-level labels not found: {file}")
    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{file}: not a readable JSON file ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in v) for v in data.values()
    ):
        raise ValueError(f"{file}: expected a mapping of sample name -> list of class ids")
    return data


def presence_vector(class_list: Sequence[int], num_classes: int) -> Tensor:
    """K bool: True for the classes in ``class_list`` (ValueError for ids outside [0, K))."""
    bad = [c for c in class_list if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class ids {bad} outside [0, {num_classes})")
    presence = torch.zeros(num_classes, dtype=torch.bool)
    presence[list(class_list)] = True
    return presence


def presence_from_labels(labels: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """B x K bool: the classes present in each of the B x H x W ``labels`` (ignore left out)."""
    b = labels.shape[0]
    flat = labels.reshape(b, -1).long()
    index = torch.where(flat != ignore_index, flat, torch.full_like(flat, num_classes))  # ignore -> spare column
    presence = torch.zeros(b, num_classes + 1, dtype=torch.bool, device=labels.device)
    presence.scatter_(1, index, True)
    return presence[:, :num_classes]


def downsample_labels(labels: Tensor, size: tuple[int, int], ignore_index: int = 255) -> Tensor:
    """Sparse-label downsampling: B x H x W weak labels to the B x h x w embedding grid.

    Output cell (i, j) covers the input rows ``floor(y * h / H) == i`` and columns
    ``floor(x * w / W) == j`` (a partition of the input, so every pixel belongs to one
    cell; the cell's first pixel is the one nearest-neighbour resizing would pick). A cell
    is labelled wherever *any* of its pixels is labelled, with the majority class of its
    labelled pixels; ties go to the smallest class id. Unlabelled cells are
    ``ignore_index``.

    Nearest-neighbour resizing keeps one pixel in (H / h) x (W / w): a single-pixel point
    label survives the 1/8 grid with probability 1/64 (the released WDASS code loses most
    of its points this way); here every point survives. An axis that is enlarged
    (h > H) is resized by nearest neighbour.

    Args:
        labels: B x H x W integer labels (classes >= 0; ``ignore_index`` unlabelled).
        size: (h, w).

    Returns:
        B x h x w long.
    """
    from .._labels import resize_labels

    if not isinstance(labels, Tensor) or labels.dim() != 3 or labels.is_floating_point():
        raise ValueError(f"labels must be an integer B x H x W tensor, got "
                         f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}")
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be two positive ints, got {tuple(size)}")
    b, big_h, big_w = labels.shape
    if h > big_h or w > big_w:  # enlarged axis: reduce the other one, then nearest (one pixel per cell)
        return resize_labels(downsample_labels(labels, (min(h, big_h), min(w, big_w)), ignore_index), (h, w))
    labels = labels.long()
    labelled = labels != ignore_index
    out = torch.full((b, h, w), ignore_index, dtype=torch.long, device=labels.device)
    if not bool(labelled.any()):
        return out
    image, rows, cols = labelled.nonzero(as_tuple=True)
    classes = labels[image, rows, cols]
    if int(classes.min()) < 0:
        raise ValueError(f"labels must be >= 0 or ignore_index={ignore_index}, got {int(classes.min())}")
    num_classes = int(classes.max()) + 1
    cell = (image * h + rows * h // big_h) * w + cols * w // big_w
    votes = torch.bincount(cell * num_classes + classes, minlength=b * h * w * num_classes)
    votes = votes.reshape(b * h * w, num_classes)
    winner = votes.argmax(dim=1)  # the first maximum: the smallest class id on ties
    has_label = votes.sum(dim=1) > 0
    out.view(-1)[has_label] = winner[has_label]
    return out


def crop_presence(weak_labels: Tensor, image_classes: Tensor, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Image-level targets of a *crop* from its point / coarse labels, with the unknowns masked.

    A class with a labelled pixel in the crop is present (1). A class absent from the whole
    image (``image_classes``: the classes of the image's full weak label) is absent from
    the crop (0). A class of the image without a labelled pixel in the crop may or may not
    be in the crop: it is left out of the loss (mask False).

    Args:
        weak_labels: B x H x W cropped weak labels.
        image_classes: B x K bool, the classes of each uncropped image's weak label.

    Returns:
        ``(presence B x K float, mask B x K bool)``.
    """
    num_classes = image_classes.shape[1]
    in_crop = presence_from_labels(weak_labels, num_classes, ignore_index).to(image_classes.device)
    known = in_crop | ~image_classes.bool()
    return in_crop.float(), known
