"""Input checks shared by losses, prototypes and samplers.

Every check raises a one-line ``ValueError`` that names the argument and the shapes,
so a caller sees at once which tensor is wrong.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_embeddings(embeddings: Tensor, name: str = "embeddings") -> None:
    """Require a floating B x D x h x w tensor."""
    if not isinstance(embeddings, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.dim() != 4:
        raise ValueError(f"{name} must be B x D x h x w, got shape {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {embeddings.dtype}")


def check_labels(labels: Tensor, batch: int, name: str = "labels") -> None:
    """Require an integer B x H x W tensor whose batch size matches the embeddings."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 3:
        raise ValueError(f"{name} must be B x H x W, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape[0] != batch:
        raise ValueError(
            f"{name} has batch size {labels.shape[0]} but embeddings have {batch}: shapes must agree"
        )


def check_label_range(labels: Tensor, num_classes: int, ignore_index: int, name: str = "labels") -> None:
    """Require every label to be in [0, num_classes) or equal to ``ignore_index``."""
    if labels.numel() == 0:
        return
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        value = int(labels[bad].flatten()[0])
        raise ValueError(
            f"{name} contains {value}, outside [0, {num_classes}) and not ignore_index={ignore_index}"
        )


def check_dim(actual: int, expected: int, what: str, against: str) -> None:
    """Require two feature dimensions to agree."""
    if actual != expected:
        raise ValueError(f"{what} has dimension {actual} but {against} has {expected}")
