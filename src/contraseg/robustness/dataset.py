"""A dataset whose images are perturbed at test time (``contraseg eval --perturb``)."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .perturbations import Perturbation, apply_perturbation


class PerturbedDataset(Dataset):
    """``dataset`` with :func:`~.perturbations.apply_perturbation` applied to each sample's
    ``"image"`` (index ``i`` seeded with ``(perturbation.seed, i)``); labels and every other
    key are passed through untouched. The normalisation statistics are the dataset
    transform's ``mean`` / ``std`` (ImageNet when it has none). Other attributes
    (``info``, ``root``, ``split`` ...) are the wrapped dataset's."""

    def __init__(self, dataset: Any, perturbation: Perturbation) -> None:
        self.dataset = dataset
        self.perturbation = perturbation
        transform = getattr(dataset, "transform", None)
        self.mean = tuple(getattr(transform, "mean", IMAGENET_MEAN))
        self.std = tuple(getattr(transform, "std", IMAGENET_STD))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = dict(self.dataset[index])
        sample["image"] = apply_perturbation(sample["image"], self.perturbation, index, self.mean, self.std)
        return sample

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "perturbation", "mean", "std"):  # not yet set (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)
