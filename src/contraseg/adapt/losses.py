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


def weighted_cross_entropy(logits: Tensor, labels: Tensor, weights: Tensor, ignore_index: int = 255,
                           over: str = "all") -> Tensor:
    """Pixel-weighted CE: ``sum_i w_i * CE_i / n`` with ``n`` every one of the B*H*W pixels
    (``over="all"``, DACS's release; ignored pixels add 0) or only the labelled ones
    (``over="labelled"``, WDASS's release: anurag-198/WDASS@7276a27 loss/edgeloss.py:270-273
    averages ``seg_loss[gts != 255]``; 0 when none is labelled).

    Args:
        logits: B x K x h x w (upsampled to the labels).
        labels: B x H x W; weights: B x H x W floating, e.g. the confidence weight of
            pseudo-labelled pixels and 1 for ground-truth pixels.
    """
    if weights.shape != labels.shape:
        raise ValueError(f"weights {tuple(weights.shape)} must have the shape of labels {tuple(labels.shape)}")
    if over not in ("all", "labelled"):
        raise ValueError(f"over must be 'all' or 'labelled', got {over!r}")
    logits = _upsampled(logits, tuple(labels.shape[-2:]))
    per_pixel = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")
    weighted = per_pixel * weights.to(per_pixel.dtype)
    if over == "all":
        return weighted.mean()
    return weighted.sum() / (labels != ignore_index).sum().clamp(min=1)
