"""What an anchor sampler returns: :class:`AnchorSamples`, P (image, class) pairs of V
pixels each, as indices into the flattened batch grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class AnchorSamples:
    """The anchors picked by a sampler: P (image, class) pairs with V views each.

    Attributes:
        index: P x V long, indices into the flattened B*h*w grid (``b * h * w + y * w + x``).
            Row p holds the hard views first, then the easy ones.
        labels: P long, the class of every pair (every view of row p has this label).
        image: P long, the image of every pair (every view of row p lies in this image).
    """

    index: Tensor
    labels: Tensor
    image: Tensor

    @property
    def num_pairs(self) -> int:
        """P, the number of sampled (image, class) pairs."""
        return int(self.index.shape[0])

    @property
    def num_views(self) -> int:
        """V, the number of views (pixels) per pair."""
        return int(self.index.shape[1])

    def anchor_labels(self) -> Tensor:
        """The label of every anchor, P*V long, in the row-major order of ``index``."""
        return self.labels.repeat_interleave(self.num_views)


def empty_samples(device: torch.device) -> AnchorSamples:
    """No candidate pair in the batch: P = V = 0."""
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return AnchorSamples(index=empty.reshape(0, 0), labels=empty, image=empty)
