"""Helpers shared by the dense losses.

Every dense loss resizes its B x H x W labels to the B x D x h x w embedding grid with
nearest neighbour (:func:`contraseg._labels.resize_labels`, the convention of
ContrastiveSeg and ProAC) and returns :func:`zero_loss` when nothing is left to
contrast. The losses then work on the embeddings' own B x D x (h*w) layout, masking
ignored pixels instead of copying the kept ones out.
"""

from __future__ import annotations

from torch import Tensor

# Label resizing lives in contraseg._labels (below losses, sampling and data); the names
# stay importable from here for code written before the move.
from .._labels import nearest_indices, resize_labels

__all__ = ["nearest_indices", "resize_labels", "zero_loss"]


def zero_loss(reference: Tensor) -> Tensor:
    """A zero scalar that still carries a gradient path to ``reference``.

    Returned by every loss when nothing is left to contrast (all pixels ignored, one
    class, empty memory), so that ``loss.backward()`` works and gives zero gradients.
    """
    return reference.sum() * 0.0
