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

The dataset's own full labels never leave the wrapper.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    """

    def __init__(self, dataset: Any, kind: str, image_labels: dict[str, list[int]] | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if kind == "dense" and getattr(dataset, "pseudo_labels", None) is None:
            raise ValueError("kind 'dense' needs a dataset built with pseudo_label_dir (the label folder)")
        if kind == "image" and image_labels is None:
            raise ValueError("kind 'image' needs image_labels ({name: [class ids]})")
        self.dataset = dataset
        self.kind = kind
        self.image_labels = image_labels
        self.info = dataset.info

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
        return out


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
