"""ProtoSeg's pixel-prototype losses on top of the nearest-prototype head.

Zhou et al., "Rethinking Semantic Segmentation: A Prototype View", CVPR 2022.

Given the cosines ``s_i`` of pixel i to all K*M prototypes and its assigned prototype
``a_i`` (Sinkhorn within its class, :meth:`NearestPrototypeHead.assign`):

* PPC, pixel-prototype contrast: ``-log softmax(s_i / t)[a_i]``, a cross-entropy over
  all prototypes of all classes (t = 1 in the published code).
* PPD, pixel-prototype distance: ``(1 - s_i[a_i])^2``, pulling each pixel onto its
  prototype.

Both are averaged over the pixels whose target is not ``ignore_index``; with none, they
return a zero that still has a gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_label_range
from ._pixels import zero_loss

__all__ = ["PPCLoss", "PPDLoss"]


def _compute_dtype(logits: Tensor) -> torch.dtype:
    """Half inputs are computed (and returned) in float32, float64 stays float64."""
    return torch.promote_types(logits.dtype, torch.float32)


def _check_flat(logits: Tensor, targets: Tensor, ignore_index: int) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be N x (K*M), got shape {tuple(logits.shape)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must be N = {logits.shape[0]} prototype indices, got shape {tuple(targets.shape)}"
        )
    if targets.is_floating_point():
        raise ValueError(f"targets must be an integer tensor, got dtype {targets.dtype}")
    check_label_range(targets, logits.shape[1], ignore_index, name="targets")


class PPCLoss(nn.Module):
    """Pixel-prototype contrast: cross-entropy over all K*M prototypes.

    Args:
        temperature: divides the cosines (1.0 as in ProtoSeg).
        ignore_index: target value of pixels to skip.

    Shape:
        - logits: N x (K*M) cosines to every prototype
        - targets: N assigned prototype indices
        - output: scalar
    """

    def __init__(self, temperature: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.ignore_index = int(ignore_index)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        _check_flat(logits, targets, self.ignore_index)
        keep = targets != self.ignore_index
        if not bool(keep.any()):
            return zero_loss(logits)
        scaled = logits[keep].to(_compute_dtype(logits)) / self.temperature
        return F.cross_entropy(scaled, targets[keep].long())


class PPDLoss(nn.Module):
    """Pixel-prototype distance: mean of ``(1 - cosine to the assigned prototype)^2``.

    Shape:
        - logits: N x (K*M) cosines to every prototype
        - targets: N assigned prototype indices
        - output: scalar
    """

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        _check_flat(logits, targets, self.ignore_index)
        keep = targets != self.ignore_index
        if not bool(keep.any()):
            return zero_loss(logits)
        assigned = logits[keep].to(_compute_dtype(logits)).gather(1, targets[keep].long()[:, None])[:, 0]
        return (1.0 - assigned).pow(2).mean()
