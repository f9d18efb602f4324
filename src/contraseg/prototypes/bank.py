"""Multi-prototype class bank of ProtoSeg: M non-learnable prototypes per class.

Zhou et al., "Rethinking Semantic Segmentation: A Prototype View", CVPR 2022. Each class
k has M unit prototypes ``p_km``. Pixels of class k are assigned to its prototypes by
Sinkhorn (equipartition within the class), and each prototype follows the mean of the
correctly predicted pixels assigned to it::

    p_km <- normalise( g * p_km + (1 - g) * normalise(sum of assigned correct f_i) )

with momentum ``g`` (0.999). Prototypes are buffers, never touched by the optimiser.

The published code lets prototypes of a class collapse onto one another;
:meth:`PrototypeBank.diversity` reports the mean pairwise cosine of each class's
prototypes so a run can watch for it (1.0 means collapsed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_dim, check_label_range
from ..distributed import all_reduce_sum, is_distributed
from .sinkhorn_knopp import grouped_sinkhorn

__all__ = ["PrototypeBank"]


class PrototypeBank(nn.Module):
    """K classes x M prototypes x D, with Sinkhorn assignment and momentum update.

    Args:
        num_classes: K.
        num_prototypes: M prototypes per class (ProtoSeg: 10).
        dim: D.
        momentum: g in the update above.
        sinkhorn_iterations, sinkhorn_epsilon: see :func:`grouped_sinkhorn`.
        ignore_index: label of pixels to leave out.
        seed: seeds the random initial prototypes.

    Buffers:
        prototypes: K x M x D unit vectors, in the module's dtype (float32 unless moved
            with ``.double()`` / ``.to``). Every use casts them to the compute dtype (the
            features' dtype, at least float32) and renormalises them there.
    """

    def __init__(
        self,
        num_classes: int,
        num_prototypes: int,
        dim: int,
        momentum: float = 0.999,
        sinkhorn_iterations: int = 3,
        sinkhorn_epsilon: float = 0.05,
        ignore_index: int = 255,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("num_prototypes", num_prototypes), ("dim", dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        gen = torch.Generator().manual_seed(seed)
        init = torch.randn(num_classes, num_prototypes, dim, generator=gen)
        self.register_buffer("prototypes", F.normalize(init, dim=-1))
        self.momentum = float(momentum)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.sinkhorn_epsilon = float(sinkhorn_epsilon)
        self.ignore_index = int(ignore_index)

    @property
    def num_classes(self) -> int:
        return self.prototypes.shape[0]

    @property
    def num_prototypes(self) -> int:
        return self.prototypes.shape[1]

    @property
    def dim(self) -> int:
        return self.prototypes.shape[2]

    def extra_repr(self) -> str:
        k, m, d = self.prototypes.shape
        return f"num_classes={k}, num_prototypes={m}, dim={d}, momentum={self.momentum}"

    def similarities(self, features: Tensor) -> Tensor:
        """Cosine of N x D features to every prototype: N x K x M."""
        check_dim(features.shape[-1], self.dim, "features", "prototypes")
        dtype = torch.promote_types(features.dtype, torch.float32)
        protos = F.normalize(self.prototypes.to(device=features.device, dtype=dtype), dim=-1)
        return torch.einsum("nd,kmd->nkm", F.normalize(features.to(dtype), dim=-1), protos)

    @torch.no_grad()
    def assign(self, features: Tensor, labels: Tensor, similarities: Tensor | None = None) -> Tensor:
        """Sinkhorn-assign each pixel to one prototype of its own class.

        Args:
            features: N x D embeddings.
            labels: N class ids (``ignore_index`` allowed).
            similarities: optional precomputed N x K x M cosines (from the head).

        Returns:
            N long targets ``k * M + m`` into the K*M prototypes, ``ignore_index`` for
            ignored pixels. All classes are solved in one grouped Sinkhorn call.
        """
        check_label_range(labels, self.num_classes, self.ignore_index)
        sims = self.similarities(features) if similarities is None else similarities
        keep = labels != self.ignore_index
        cls = labels[keep].long()
        own = sims[keep].gather(1, cls[:, None, None].expand(-1, 1, self.num_prototypes))[:, 0]  # n x M
        return self.assign_scores(own, cls, total=labels.shape[0], keep=keep)

    @torch.no_grad()
    def assign_scores(self, own: Tensor, classes: Tensor, total: int, keep: Tensor) -> Tensor:
        """Targets from the kept pixels' cosines to their own class's M prototypes.

        Args:
            own: n x M cosines of the kept pixels to the prototypes of their class.
            classes: n class ids of the kept pixels.
            total: N, all pixels; keep: N bool marking the n kept ones.

        Returns:
            N long targets ``k * M + m``, ``ignore_index`` where not kept.
        """
        targets = torch.full((total,), self.ignore_index, dtype=torch.long, device=own.device)
        if own.shape[0] == 0 and not is_distributed():
            return targets
        _, index = grouped_sinkhorn(own, classes, self.num_classes, self.sinkhorn_iterations, self.sinkhorn_epsilon)
        targets[keep] = classes * self.num_prototypes + index
        return targets

    @torch.no_grad()
    def update(self, features: Tensor, targets: Tensor, correct: Tensor) -> None:
        """Momentum update of each prototype from its assigned, correctly predicted pixels.

        Args:
            features: N x D embeddings.
            targets: N prototype indices from :meth:`assign` (``ignore_index`` skipped).
            correct: N bool, pixel predicted as its label.

        Sums and counts are all-reduced under torch.distributed, so all ranks keep
        identical prototypes.

        Computed in the widest of the features' dtype, the prototypes' dtype and float32
        (a float64 run is float64 throughout; half features are averaged in float32);
        the result is stored back in the prototypes' own dtype.
        """
        k, m, d = self.prototypes.shape
        dtype = torch.promote_types(torch.promote_types(features.dtype, self.prototypes.dtype), torch.float32)
        use = (targets != self.ignore_index) & correct
        feats = F.normalize(features[use].to(dtype), dim=-1)
        idx = targets[use]
        sums = torch.zeros(k * m, d, device=feats.device, dtype=dtype).index_add_(0, idx, feats)
        counts = torch.bincount(idx, minlength=k * m).to(dtype)
        all_reduce_sum(sums)
        all_reduce_sum(counts)
        has = counts > 0
        if not bool(has.any()):
            return
        # A new tensor, not an in-place write: this step's forward graph saved the old one.
        # Renormalised in the compute dtype first, as the released forward does every step
        # (a float32 bank used in float64 is then unit to float64 precision).
        flat = F.normalize(self.prototypes.reshape(k * m, d).to(dtype), dim=-1)
        mean_dir = F.normalize(sums[has], dim=-1)
        flat[has] = F.normalize(self.momentum * flat[has] + (1.0 - self.momentum) * mean_dir, dim=-1)
        self.prototypes = flat.view(k, m, d).to(self.prototypes.dtype)

    def diversity(self) -> Tensor:
        """Mean pairwise cosine among each class's M prototypes: K values.

        1.0 means the class's prototypes have collapsed into one; NaN when M = 1.
        """
        k, m, _ = self.prototypes.shape
        if m < 2:
            return torch.full((k,), float("nan"), device=self.prototypes.device)
        unit = F.normalize(self.prototypes.float(), dim=-1)
        cos = unit @ unit.transpose(1, 2)  # K x M x M
        off = ~torch.eye(m, dtype=torch.bool, device=cos.device)
        return cos[:, off].mean(dim=1)
