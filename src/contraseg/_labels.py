"""Nearest-neighbour resizing of integer label maps, shared by every layer.

Losses, samplers, memory banks, prototype estimators and the data pipeline all bring
B x H x W labels down to the B x D x h x w embedding grid the same way, the convention
of ContrastiveSeg and ProAC: each output pixel takes the label of the input pixel that
``F.interpolate(mode="nearest")`` maps it to (labels are never interpolated). This module
sits below all of them, so none imports another layer just to resize labels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def nearest_indices(size_in: int, size_out: int, device: torch.device | None = None) -> Tensor:
    """Source index of every output position under ``F.interpolate(mode="nearest")``.

    ``floor(i * size_in / size_out)`` computed in float32 like PyTorch's kernel, so the
    result matches ``F.interpolate`` exactly (tested over many size pairs).
    """
    scale = torch.tensor(size_in, dtype=torch.float32) / size_out
    index = (torch.arange(size_out, dtype=torch.float32) * scale).floor().long()
    return index.clamp_(max=size_in - 1).to(device)


def resize_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of B x H x W (or H x W) integer labels to B x h x w.

    The rows and columns are picked by index, so the cost is that of the output, not of
    the (often 8x larger) input. Returned as ``torch.long``.
    """
    h, w = size
    if tuple(labels.shape[-2:]) == (h, w):
        return labels.long()
    rows = nearest_indices(labels.shape[-2], h, labels.device)
    cols = nearest_indices(labels.shape[-1], w, labels.device)
    return labels[..., rows[:, None], cols[None, :]].long()
