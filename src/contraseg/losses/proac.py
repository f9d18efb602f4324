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

Cost: one K x N matrix of similarities (never N x N), so time and memory grow
linearly with the number of pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_dim, check_label_range
from ._pixels import dense_to_pixels, zero_loss

# Similarities of positives are replaced by (-1/t - _GAP) when the negatives' log-sum-exp
# is taken: since |s| <= 1/t, their exp is exactly 0 in float32, and unlike -inf they
# give no NaN gradient when a class has no negatives at all.
_GAP = 1.0e4


class ProACLoss(nn.Module):
    """Prototype-anchor contrast loss (ProAC).

    Args:
        prototypes: K x D class prototypes (normalised inside; kept as a buffer and
            never updated; follows the embeddings' device).
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
        self.register_buffer("prototypes", F.normalize(prototypes.detach().float(), dim=1))
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
        feats, targets, _ = dense_to_pixels(embeddings, labels, self.ignore_index)
        check_dim(embeddings.shape[1], self.prototypes.shape[1], "embeddings", "prototypes")
        check_label_range(targets, self.num_classes, self.ignore_index)
        if targets.numel() == 0:
            return zero_loss(embeddings)
        compute_dtype = torch.promote_types(embeddings.dtype, torch.float32)
        with torch.autocast(embeddings.device.type, enabled=False):
            feats = F.normalize(feats.to(compute_dtype), dim=1)
            protos = self.prototypes.to(device=feats.device, dtype=compute_dtype)
            if self.anchor == "pixel":
                return F.cross_entropy(feats @ protos.T / self.temperature, targets)
            return self._prototype_anchor(feats, targets, protos)

    def _prototype_anchor(self, feats: Tensor, targets: Tensor, protos: Tensor) -> Tensor:
        k = protos.shape[0]
        sims = protos @ feats.T / self.temperature  # K x N
        positive = F.one_hot(targets, k).T.bool()  # K x N
        # log sum_{j: y_j != k} exp(s_kj), one value per anchor k.
        masked = sims.masked_fill(positive, -1.0 / self.temperature - _GAP)
        negative_lse = torch.logsumexp(masked, dim=1)  # K
        own = sims.gather(0, targets[None]).squeeze(0)  # s_{y_i, i}: N
        # log(exp(s) + exp(neg)) - s == softplus(neg - s), stable for any magnitude.
        per_pixel = F.softplus(negative_lse[targets] - own)
        counts = torch.bincount(targets, minlength=k)
        per_class = torch.zeros(k, dtype=per_pixel.dtype, device=per_pixel.device).index_add_(0, targets, per_pixel)
        present = counts > 0
        return (per_class[present] / counts[present]).mean()
