"""From dense B x D x h x w embeddings and B x H x W labels to a flat list of pixels.

All dense losses share this first step: resize the labels to the embedding grid with
nearest-neighbour (the convention of ContrastiveSeg and ProAC), move D last, and drop
the pixels whose label is ``ignore_index``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_embeddings, check_labels


def nearest_indices(size_in: int, size_out: int, device: torch.device | None = None) -> Tensor:
    """Source index of every output position under ``F.interpolate(mode="nearest")``.

    ``floor(i * size_in / size_out)`` computed in float32 like PyTorch's kernel, so the
    result matches ``F.interpolate`` exactly (tested over many size pairs).
    """
    scale = torch.tensor(size_in, dtype=torch.float32) / size_out
    index = (torch.arange(size_out, dtype=torch.float32) * scale).floor().long()
    return index.clamp_(max=size_in - 1).to(device)


def resize_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of B x H x W integer labels to B x h x w.

    Labels are not interpolated: each output pixel takes the label of the input pixel
    that ``F.interpolate(mode="nearest")`` maps it to. The rows and columns are picked
    by index, so the cost is that of the output, not of the (often 8x larger) input.
    Returned as ``torch.long``.
    """
    h, w = size
    if tuple(labels.shape[-2:]) == (h, w):
        return labels.long()
    rows = nearest_indices(labels.shape[-2], h, labels.device)
    cols = nearest_indices(labels.shape[-1], w, labels.device)
    return labels[..., rows[:, None], cols[None, :]].long()


def dense_to_pixels(
    embeddings: Tensor, labels: Tensor, ignore_index: int = 255
) -> tuple[Tensor, Tensor, Tensor]:
    """Flatten dense embeddings and labels to the kept pixels.

    Args:
        embeddings: B x D x h x w.
        labels: B x H x W integer labels (resized to h x w inside).
        ignore_index: label of pixels to drop.

    Returns:
        ``(features N x D, labels N, keep B*h*w bool)`` where N is the number of pixels
        whose label is not ``ignore_index``; ``keep`` indexes the flattened B*h*w grid.
    """
    check_embeddings(embeddings)
    check_labels(labels, embeddings.shape[0])
    b, d, h, w = embeddings.shape
    flat_labels = resize_labels(labels, (h, w)).reshape(-1)
    flat_feats = embeddings.permute(0, 2, 3, 1).reshape(b * h * w, d)
    keep = flat_labels != ignore_index
    return flat_feats[keep], flat_labels[keep], keep


def zero_loss(reference: Tensor) -> Tensor:
    """A zero scalar that still carries a gradient path to ``reference``.

    Returned by every loss when nothing is left to contrast (all pixels ignored, one
    class, empty memory), so that ``loss.backward()`` works and gives zero gradients.
    """
    return reference.sum() * 0.0
