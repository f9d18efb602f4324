"""Class prototypes from weak labels as the released WDASS code computes them.

Das, Xian, Dai and Schiele, "Weakly-Supervised Domain Adaptive Semantic Segmentation
with Prototypical Contrastive Learning", CVPR 2023; ``utils/prototypes.py`` of the
released code (anurag-198/WDASS) is the reference.

For one batch, with f_i the L2-normalised pixel embeddings on the h x w grid:

- the *labels* L: the weak (point / coarse) or full (source) labels on the grid; for
  image-level labels there are none and L is the assignment A below;
- the *assignment* A: L where labelled, else the pseudo label where its confidence is
  >= ``threshold`` (0.95), else nothing;
- for every class k present in L (only those; the other prototypes stay as they are):

      c_k = mean of f_i over the pixels with L_i = k          (centre)
      w_i = f_i . c_k  for the pixels with A_i = k             (linear similarity weights)
      p_k = sum_i w_i f_i / sum_i w_i                          (not normalised)

  and p_k *replaces* the stored prototype (no moving average). With point labels the
  released centre is the mean of the embeddings bilinearly upsampled to the label's
  resolution at the labelled pixels (``point_labels``), so no point is lost.

Prototypes start at zero: a class never seen keeps the zero vector, which the
released contrast uses as it is.

Deliberate differences from the released code (bugs fixed):

- a class of L with no pixel in A (released: point labels vanish when the assignment
  is nearest-downsampled) or with a total weight sum_i w_i <= 0 keeps its previous
  prototype; released, it is overwritten with the zero vector (empty sum) or divided by
  a vanishing / negative total;
- labels are brought to the grid by the caller (the WDASS trainer uses
  :func:`contraseg.adapt.weak_labels.downsample_labels`, which keeps every point);
  labels of another size are nearest-resized here, as released;
- under ``torch.distributed`` the sums are all-reduced, so every rank holds the
  prototypes of the whole batch (released: each process its own).

Computed in float32, or float64 for float64 embeddings; the result is stored in the
buffers' dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_label_range, check_labels
from ..distributed import all_reduce_sum
from .domain_prototypes import _NONE, DomainPrototypes, _class_sums


class WDASSPrototypeEstimator(DomainPrototypes):
    """Per-domain WDASS prototypes as released (module docstring).

    Args:
        num_classes: K.
        dim: embedding dimension D.
        domains: names of the domains, each with its own K x D prototypes.
        threshold: a pseudo label joins the assignment where its confidence >= threshold
            (released 0.95).
        ignore_index: label of unlabelled pixels.

    Buffers (follow ``.to()``, saved in ``state_dict``):
        prototypes: num_domains x K x D (zero until a class is first seen; not normalised).
        initialised: num_domains x K bool.

    Example::

        >>> est = WDASSPrototypeEstimator(num_classes=3, dim=8)
        >>> est.update("source", embed, labels)                       # full labels
        >>> est.update("target", teacher_embed, weak_on_grid, pseudo, confidence)
        >>> protos, seen = est.get("target")                         # K x D, K bool
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        domains: tuple[str, ...] | list[str] = ("source", "target"),
        threshold: float = 0.95,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(num_classes, dim, domains, ignore_index)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        self.threshold = float(threshold)

    @torch.no_grad()
    def estimate(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        pseudo_labels: Tensor | None = None,
        confidence: Tensor | None = None,
        point_labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The prototypes of one batch.

        Args:
            embeddings: B x D x h x w (detached and L2-normalised inside).
            labels: B x H x W weak or full labels (nearest-resized to h x w; pass them on
                the grid to keep sparse points), or None for image-level labels.
            pseudo_labels: optional B x H' x W' pseudo labels (nearest-resized to h x w).
            confidence: B x H' x W' confidence of ``pseudo_labels`` (required with them).
            point_labels: optional B x H'' x W'' point labels at image resolution: the
                centres are then the bilinearly upsampled embeddings at their points and
                the classes are those of ``point_labels`` (released point mode).

        Returns:
            ``(prototypes K x D, updated K bool)``; rows of classes not updated are zero.
            Under torch.distributed this is a collective (every rank must call it).
        """
        features = self._flat_features(embeddings)
        b, _, h, w = embeddings.shape
        grid = None if labels is None else self._flat_labels(labels, b, (h, w), "labels")
        if pseudo_labels is not None and confidence is None:
            raise ValueError("pseudo_labels need their confidence (the released threshold is applied to it)")
        pseudo = self._confident_pseudo(pseudo_labels, confidence, self.threshold, b, (h, w))
        if grid is None and pseudo is None:
            raise ValueError("estimate needs labels, pseudo_labels or both, got neither")
        if grid is None:
            assigned = pseudo
        elif pseudo is None:
            assigned = grid
        else:
            assigned = torch.where(grid == _NONE, pseudo, grid)
        k, d = self.num_classes, features.shape[1]
        if point_labels is not None:
            centre_sum, centre_count = self._point_sums(embeddings, point_labels)
        else:
            centre_sum, centre_count = _class_sums(features, assigned if grid is None else grid, k)
        stats = all_reduce_sum(torch.cat([centre_sum, centre_count[:, None]], 1))
        centre_sum, centre_count = stats[:, :d], stats[:, d]
        centres = centre_sum / centre_count.clamp_min(1.0)[:, None]

        kept = assigned != _NONE
        feats, cls = features[kept], assigned[kept]
        weights = (feats * centres[cls]).sum(dim=1)
        weighted = features.new_zeros(k, d).index_add_(0, cls, weights[:, None] * feats)
        total = features.new_zeros(k).index_add_(0, cls, weights)
        members = features.new_zeros(k).index_add_(0, cls, torch.ones_like(weights))
        second = all_reduce_sum(torch.cat([weighted, total[:, None], members[:, None]], 1))
        weighted, total, members = second[:, :d], second[:, d], second[:, d + 1]
        updated = (centre_count > 0) & (members > 0) & (total > 0)
        safe = torch.where(updated, total, torch.ones_like(total))
        prototypes = torch.where(updated[:, None], weighted / safe[:, None], torch.zeros_like(weighted))
        return prototypes, updated

    @torch.no_grad()
    def update(
        self,
        domain: str,
        embeddings: Tensor,
        labels: Tensor | None = None,
        pseudo_labels: Tensor | None = None,
        confidence: Tensor | None = None,
        point_labels: Tensor | None = None,
    ) -> Tensor:
        """:meth:`estimate`, then replace the updated classes' prototypes of ``domain``.

        Returns the K bool mask of the classes updated by this batch.
        """
        index = self._domain_index(domain)
        new, updated = self.estimate(embeddings, labels, pseudo_labels, confidence, point_labels)
        updated = updated.to(self.initialised.device)
        old = self.prototypes[index]
        self.prototypes[index] = torch.where(updated[:, None], new.to(old), old)
        self.initialised[index] |= updated
        return updated

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold}"

    # ------------------------------------------------------------------ internals

    def _point_sums(self, embeddings: Tensor, point_labels: Tensor) -> tuple[Tensor, Tensor]:
        """Per-class sums (K x D) and counts (K) of the bilinear embeddings at the labelled points."""
        b, d, h, w = embeddings.shape
        check_labels(point_labels, b, "point_labels")
        check_label_range(point_labels, self.num_classes, self.ignore_index, "point_labels")
        image, rows, cols = (point_labels != self.ignore_index).nonzero(as_tuple=True)
        classes = point_labels[image, rows, cols].long()
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        unit = F.normalize(embeddings.detach().to(dtype), dim=1)
        values = bilinear_at(unit, image, rows, cols, tuple(point_labels.shape[-2:]))
        return _class_sums(values, classes.to(values.device), self.num_classes)


def bilinear_at(embeddings: Tensor, image: Tensor, rows: Tensor, cols: Tensor, size: tuple[int, int]) -> Tensor:
    """Rows of ``F.interpolate(embeddings, size, mode="bilinear", align_corners=False)`` at given pixels.

    Args:
        embeddings: B x D x h x w.
        image, rows, cols: N long, the pixels of the upsampled B x D x H x W map.
        size: (H, W).

    Returns:
        N x D, without building the H x W map.
    """
    b, d, h, w = embeddings.shape
    device = embeddings.device
    image, rows, cols = image.to(device), rows.to(device), cols.to(device)

    def axis(position: Tensor, size_in: int, size_out: int) -> tuple[Tensor, Tensor, Tensor]:
        scale = size_in / size_out
        source = ((position.to(embeddings.dtype) + 0.5) * scale - 0.5).clamp_min(0.0)
        low = source.floor().long().clamp(max=size_in - 1)
        high = (low + 1).clamp(max=size_in - 1)
        return low, high, source - low.to(source.dtype)

    y0, y1, ly = axis(rows, h, size[0])
    x0, x1, lx = axis(cols, w, size[1])
    flat = embeddings.reshape(b, d, h * w)

    def at(y: Tensor, x: Tensor) -> Tensor:
        return flat[image, :, y * w + x]

    ly, lx = ly[:, None], lx[:, None]
    return (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) + ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1))
