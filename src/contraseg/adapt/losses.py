"""Pixel-wise cross-entropies of the adaptation pipelines (logits upsampled to the labels).

Both are averages over pixels that stay finite when every pixel is ignored (a target
crop with no confident pseudo label or no weak label): they then return
``0 * logits.sum()``, a zero with a gradient path, instead of the NaN of
``F.cross_entropy(reduction="mean")`` over zero pixels.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _upsampled(logits: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(logits.shape[-2:]) != tuple(size):
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits


def masked_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
    """Mean CE over the labelled pixels (partial CE for sparse weak / pseudo labels).

    ``logits`` B x K x h x w are bilinearly upsampled to the B x H x W ``labels``;
    ``sum over labelled pixels of -log softmax(logit)_y / #labelled``, 0 if none.
    """
    logits = _upsampled(logits, tuple(labels.shape[-2:]))
    labelled = labels != ignore_index
    count = int(labelled.sum())
    if count == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum") / count


def weighted_cross_entropy(logits: Tensor, labels: Tensor, weights: Tensor, ignore_index: int = 255) -> Tensor:
    """DACS's pixel-weighted CE: ``mean over all B*H*W pixels of w_i * CE_i`` (ignored pixels count 0).

    Args:
        logits: B x K x h x w (upsampled to the labels).
        labels: B x H x W; weights: B x H x W floating, e.g. the confidence weight of
            pseudo-labelled pixels and 1 for ground-truth pixels.
    """
    if weights.shape != labels.shape:
        raise ValueError(f"weights {tuple(weights.shape)} must have the shape of labels {tuple(labels.shape)}")
    logits = _upsampled(logits, tuple(labels.shape[-2:]))
    per_pixel = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    return (per_pixel * weights.to(per_pixel.dtype)).mean()
