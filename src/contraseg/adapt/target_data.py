"""The target-domain training stream of an adaptation run: images plus what the method may see.

The target set is built like the source set (same crop, rescale, flip and jitter;
``adapt.target_base_size`` for the rescale base) and wrapped so that each sample holds
only what the method is allowed to use:

=========  =====================================================================
``none``   ``{"image", "name"}``: unlabeled target images
``dense``  ``{"image", "label", "name"}``: ``label`` read from a label folder (pseudo
           labels for self-training, point / coarse weak labels for WDASS) through
           the dataset's ``pseudo_label_dir``, so it is cropped and flipped with the image
``image``  ``{"image", "presence", "name"}``: ``presence`` K bool from ``image_labels.json``
=========  =====================================================================

The dataset's own full labels never leave the wrapper. Two extras, for WDASS's
image-level loss on crops (:mod:`contraseg.adapt.wdass_trainer`):

* ``image_classes=True`` (``dense``): ``"image_classes"`` K bool, the classes of the
  sample's *uncropped* weak label;
* ``full_image=True``: ``"full_image"``, the whole (uncropped, unflipped, unjittered)
  image resized to the crop's size and normalised like the crop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .weak_labels import presence_vector

KINDS = ("none", "dense", "image")


class TargetDataset(Dataset):
    """Wrap a target dataset (see the module table).

    Args:
        dataset: a contraseg dataset (with ``info``); for ``dense`` it must have been
            built with ``pseudo_label_dir`` (its ``label`` is then the folder's label).
        kind: ``none``, ``dense`` or ``image``.
        image_labels: ``{name: [class ids]}`` for ``image``.
        image_classes: add ``"image_classes"`` (``dense`` only; see the module docstring).
        full_image: add ``"full_image"`` (see the module docstring).
    """

    def __init__(self, dataset: Any, kind: str, image_labels: dict[str, list[int]] | None = None,
                 image_classes: bool = False, full_image: bool = False) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "dense" and getattr(dataset, "pseudo_labels", None) is None:
            raise ValueError("kind 'dense' needs a dataset built with pseudo_label_dir (the label folder)")
        if kind == "image" and image_labels is None:
            raise ValueError("kind 'image' needs image_labels ({name: [class ids]})")
        if image_classes and kind != "dense":
            raise ValueError(f"image_classes needs kind 'dense' (a label folder), got {kind!r}")
        self.dataset = dataset
        self.kind = kind
        self.image_labels = image_labels
        self.info = dataset.info
        self.image_classes = bool(image_classes)
        self.full_image = bool(full_image)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        out = {"image": sample["image"], "name": sample["name"]}
        if self.kind == "dense":
            out["label"] = sample["label"]
        elif self.kind == "image":
            assert self.image_labels is not None
            out["presence"] = presence_vector(self.image_labels[sample["name"]], len(self.info.classes))
        if self.image_classes:
            full = self.dataset.pseudo_labels.load(sample["name"])
            classes = [int(c) for c in np.unique(full) if c != self.info.ignore_index]
            out["image_classes"] = presence_vector(classes, len(self.info.classes))
        if self.full_image:
            out["full_image"] = self._full_image(index, tuple(sample["image"].shape[-2:]))
        return out

    def _full_image(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        """The uncropped image, resized to ``size`` and normalised with the transform's statistics."""
        from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize

        raw = np.ascontiguousarray(self.dataset.load_image(index % len(self.dataset)))
        image = torch.from_numpy(raw).permute(2, 0, 1)[None].float()
        image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)[0].clamp(0, 255)
        transform = getattr(self.dataset, "transform", None)
        mean = getattr(transform, "mean", IMAGENET_MEAN)
        std = getattr(transform, "std", IMAGENET_STD)
        return normalize(image, mean, std)


def _sample_names(dataset: Any) -> list[str]:
    return [dataset.sample_name(i) for i in range(len(dataset))]


def check_label_folder(dataset: Any, folder: str | Path) -> None:
    """Every sample of ``dataset`` must have ``folder/<name>.png``; one-line FileNotFoundError otherwise."""
    from ..data.pseudo_labels import PseudoLabelDir

    present = set(PseudoLabelDir(folder).names())
    missing = [name for name in _sample_names(dataset) if name not in present]
    if missing:
        raise FileNotFoundError(f"label folder {folder} has no label for {len(missing)} of {len(dataset)} "
                                f"target samples, first: {Path(folder) / (missing[0] + '.png')}")


def check_image_labels(dataset: Any, image_labels: dict[str, list[int]], source: str | Path) -> None:
    """Every sample must be listed and every id be a class; one-line errors naming ``source``."""
    names = _sample_names(dataset)
    missing = [name for name in names if name not in image_labels]
    if missing:
        raise ValueError(f"image-level labels {source} lack {len(missing)} of {len(names)} target samples, "
                         f"first: {missing[0]!r}")
    num_classes = len(dataset.info.classes)
    for name in names:
        bad = [c for c in image_labels[name] if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"image-level labels {source}: sample {name!r} has class ids {bad} "
                             f"outside [0, {num_classes})")
