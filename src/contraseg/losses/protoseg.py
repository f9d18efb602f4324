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


def _check_logits_targets(logits: Tensor, targets: Tensor, ignore_index: int) -> None:
    """Flat (N x C, N) or dense (B x C x h x w, B x h x w) logits and prototype targets."""
    if logits.dim() not in (2, 4):
        raise ValueError(f"logits must be N x (K*M) or B x (K*M) x h x w, got shape {tuple(logits.shape)}")
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(targets.shape) != expected:
        raise ValueError(
            f"targets must have shape {expected} to match logits {tuple(logits.shape)}, got {tuple(targets.shape)}"
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
        - logits: N x (K*M) cosines to every prototype, or dense B x (K*M) x h x w
          (the head's ``prototype_logits`` as they are, no flattening copy)
        - targets: N (or B x h x w) assigned prototype indices
        - output: scalar
    """

    def __init__(self, temperature: float = 1.0, ignore_index: int = 255) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.ignore_index = int(ignore_index)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        _check_logits_targets(logits, targets, self.ignore_index)
        if not bool((targets != self.ignore_index).any()):
            return zero_loss(logits)
        scaled = logits.to(_compute_dtype(logits)) / self.temperature
        return F.cross_entropy(scaled, targets.long(), ignore_index=self.ignore_index)


class PPDLoss(nn.Module):
    """Pixel-prototype distance: mean of ``(1 - cosine to the assigned prototype)^2``.

    Shape:
        - logits: N x (K*M) cosines to every prototype, or dense B x (K*M) x h x w
        - targets: N (or B x h x w) assigned prototype indices
        - output: scalar
    """

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        _check_logits_targets(logits, targets, self.ignore_index)
        keep = targets != self.ignore_index
        if not bool(keep.any()):
            return zero_loss(logits)
        index = torch.where(keep, targets, 0).long().unsqueeze(1)
        assigned = logits.gather(1, index).squeeze(1).to(_compute_dtype(logits))
        return ((1.0 - assigned).pow(2) * keep).sum() / keep.sum()
