"""ProAC: prototype-anchor contrast with fixed hyperspherical prototypes.

Ren, Lu, Mao and Dong, "Exploring Prototype-Anchor Contrast for Semantic Segmentation",
TCSVT 2024.

Each class prototype ``p_k`` (fixed, see
:func:`contraseg.prototypes.hyperspherical_prototypes`) is an anchor; the pixels of its
class are its positives and every other pixel of the batch a negative. With
``f_i`` the L2-normalised pixel embeddings and ``s_ki = p_k . f_i / t``::

    loss_k = mean_{i: y_i = k} [ log( exp(s_ki) + sum_{j: y_j != k} exp(s_kj) ) - s_ki ]
    loss   = sum_{k present} loss_k / #classes present

The ``anchor="pixel"`` ablation swaps the roles: each pixel is an anchor against all
prototypes, ``log(exp(s_iy) + sum_{k != y} exp(s_ik)) - s_iy``, averaged over pixels.

Cost: one batched matmul of the prototypes with the embeddings in their own
B x D x (h*w) layout, then work on the B x K x (h*w) similarities only: no N x N
matrix, and no copy of the N x D embeddings (the normalisation is folded into the
similarities), so time and memory stay close to one matmul of the same size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_dim, check_embeddings, check_label_range, check_labels
from .._labels import resize_labels
from ._pixels import zero_loss
from .similarity import normalised_similarity

# Similarities of positives are replaced by (-1/t - _GAP) when the negatives' log-sum-exp
# is taken: since |s| <= 1/t, their exp is exactly 0 in float32, and unlike -inf they
# give no NaN gradient when a class has no negatives at all.
_GAP = 1.0e4


class ProACLoss(nn.Module):
    """Prototype-anchor contrast loss (ProAC).

    Args:
        prototypes: K x D class prototypes (normalised inside; kept as a buffer in their
            own precision, at least float32, and never updated; cast to the embeddings'
            device and compute dtype at use, so float64 embeddings with float64
            prototypes are float64 throughout).
        temperature: t in ``s = p . f / t``; the paper uses 0.1.
        ignore_index: label of pixels to leave out.
        anchor: ``"prototype"`` (the method) or ``"pixel"`` (the ablation).

    Shape:
        - embeddings: B x D x h x w (any float dtype; half inputs are computed in float32)
        - labels: B x H x W integer, resized to h x w with nearest neighbour
        - output: scalar (float32 for half inputs, else the input dtype)

    Example:
        >>> protos = hyperspherical_prototypes(19, 256)
        >>> proac = ProACLoss(protos)
        >>> loss = ce + 0.1 * proac(outputs["embed"], labels)
    """

    def __init__(
        self,
        prototypes: Tensor,
        temperature: float = 0.1,
        ignore_index: int = 255,
        anchor: str = "prototype",
    ) -> None:
        super().__init__()
        if not isinstance(prototypes, Tensor) or prototypes.dim() != 2:
            shape = tuple(prototypes.shape) if isinstance(prototypes, Tensor) else type(prototypes).__name__
            raise ValueError(f"prototypes must be a K x D tensor, got {shape}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if anchor not in ("prototype", "pixel"):
            raise ValueError(f"anchor must be 'prototype' or 'pixel', got {anchor!r}")
        storage = torch.promote_types(prototypes.dtype, torch.float32) if prototypes.is_floating_point() else torch.float32
        self.register_buffer("prototypes", F.normalize(prototypes.detach().to(storage), dim=1))
        self.temperature = float(temperature)
        self.ignore_index = int(ignore_index)
        self.anchor = anchor

    @property
    def num_classes(self) -> int:
        return self.prototypes.shape[0]

    def extra_repr(self) -> str:
        k, d = self.prototypes.shape
        return f"num_classes={k}, dim={d}, temperature={self.temperature}, anchor={self.anchor!r}"

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        check_embeddings(embeddings)
        check_labels(labels, embeddings.shape[0])
        check_dim(embeddings.shape[1], self.prototypes.shape[1], "embeddings", "prototypes")
        b, d, h, w = embeddings.shape
        targets = resize_labels(labels, (h, w)).reshape(b, h * w)
        check_label_range(targets, self.num_classes, self.ignore_index)
        keep = targets != self.ignore_index
        if not bool(keep.any()):
            return zero_loss(embeddings)
        compute_dtype = torch.promote_types(embeddings.dtype, torch.float32)
        with torch.autocast(embeddings.device.type, enabled=False):
            sims = self._similarities(embeddings.reshape(b, d, h * w).to(compute_dtype))
            if self.anchor == "pixel":
                return F.cross_entropy(sims, targets, ignore_index=self.ignore_index)
            return self._prototype_anchor(sims, targets, keep)

    def _similarities(self, feats: Tensor) -> Tensor:
        """``s = p . f / (|f| t)`` on the native layout: B x D x n in, B x K x n out.

        Normalising f would copy the B x D x n embeddings (and again in backward); the
        per-pixel norm is folded into the small B x K x n result instead, with a
        closed-form gradient (:func:`normalised_similarity`).
        """
        # Renormalised in the compute dtype (a K x D op): a float32 buffer used in float64
        # is then unit to float64 precision, not just to float32's.
        protos = F.normalize(self.prototypes.to(device=feats.device, dtype=feats.dtype), dim=1)
        return normalised_similarity(feats, protos, self.temperature)

    def _prototype_anchor(self, sims: Tensor, targets: Tensor, keep: Tensor) -> Tensor:
        k = sims.shape[1]
        labels = torch.where(keep, targets, 0)
        classes = torch.arange(k, device=sims.device).view(1, k, 1)
        # Each anchor's negatives: kept pixels of other classes. Positives and ignored
        # pixels get a similarity whose exp is exactly 0.
        excluded = (targets.unsqueeze(1) == classes) | ~keep.unsqueeze(1)  # B x K x n
        masked = sims.masked_fill(excluded, -1.0 / self.temperature - _GAP)
        negative_lse = torch.logsumexp(masked.transpose(0, 1).reshape(k, -1), dim=1)  # K
        own = sims.gather(1, labels.unsqueeze(1)).reshape(-1)  # s_{y_i, i}
        # log(exp(s) + exp(neg)) - s == softplus(neg - s), stable for any magnitude.
        flat_labels = labels.reshape(-1)
        weight = keep.reshape(-1).to(sims.dtype)  # ignored pixels count for nothing
        per_pixel = F.softplus(negative_lse[flat_labels] - own) * weight
        per_class = sims.new_zeros(k).index_add_(0, flat_labels, per_pixel)
        counts = sims.new_zeros(k).index_add_(0, flat_labels, weight)
        present = counts > 0
        return (per_class[present] / counts[present]).mean()
