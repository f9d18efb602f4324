"""Nonparametric nearest-prototype segmentation head (ProtoSeg).

Replaces the linear classifier: the score of class k at a pixel is its cosine to the
nearest of the class's M prototypes, ``max_m cos(f_i, p_km)``, followed by a LayerNorm
over classes (ProtoSeg's ``mask_norm``, the head's only learnable parameters, which
sets the scale of the logits for cross-entropy). The prototypes live in a
:class:`PrototypeBank` and move only by momentum, never by gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._validation import check_embeddings, check_labels
from ..losses._pixels import resize_labels
from .bank import PrototypeBank

__all__ = ["NearestPrototypeHead"]


class NearestPrototypeHead(nn.Module):
    """Nearest-prototype classifier over L2-normalised embeddings.

    Args:
        num_classes: K.
        num_prototypes: M per class.
        dim: D of the embeddings.
        momentum, sinkhorn_iterations, sinkhorn_epsilon, ignore_index: see
            :class:`PrototypeBank`.

    Shape:
        - input: embed B x D x h x w (unit norm over D)
        - output: ``{"logits": B x K x h x w, "prototype_logits": B x (K*M) x h x w}``,
          prototype logits being the cosines to every prototype (class-major: index
          ``k * M + m``).

    Training step::

        out = head(embed)
        targets = head.assign(embed, labels, out["logits"])       # B x h x w, updates the bank
        flat = out["prototype_logits"].permute(0, 2, 3, 1).reshape(-1, K * M)
        loss = ce(out["logits"], labels) + 0.01 * PPCLoss()(flat, targets.flatten()) \
               + 0.001 * PPDLoss()(flat, targets.flatten())
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
    ) -> None:
        super().__init__()
        self.bank = PrototypeBank(
            num_classes, num_prototypes, dim, momentum, sinkhorn_iterations, sinkhorn_epsilon, ignore_index
        )
        self.mask_norm = nn.LayerNorm(num_classes)
        self.ignore_index = int(ignore_index)

    def forward(self, embed: Tensor) -> dict[str, Tensor]:
        check_embeddings(embed, "embed")
        b, d, h, w = embed.shape
        k, m = self.bank.num_classes, self.bank.num_prototypes
        flat = embed.permute(0, 2, 3, 1).reshape(-1, d)
        sims = self.bank.similarities(flat)  # N x K x M
        class_scores = self.mask_norm(sims.amax(dim=2))  # N x K
        logits = class_scores.reshape(b, h, w, k).permute(0, 3, 1, 2)
        proto_logits = sims.reshape(b, h, w, k * m).permute(0, 3, 1, 2)
        return {"logits": logits, "prototype_logits": proto_logits}

    @torch.no_grad()
    def assign(self, embed: Tensor, labels: Tensor, logits: Tensor, update: bool = True) -> Tensor:
        """Prototype targets for PPC/PPD, updating the bank when ``update`` and training.

        Args:
            embed: B x D x h x w embeddings.
            labels: B x H x W labels (nearest-resized to h x w).
            logits: B x K x h x w class logits (their argmax marks correct pixels).
            update: momentum-update the bank (only in training mode).

        Returns:
            B x h x w long targets ``k * M + m`` or ``ignore_index``.
        """
        check_embeddings(embed, "embed")
        check_labels(labels, embed.shape[0])
        b, d, h, w = embed.shape
        flat_labels = resize_labels(labels, (h, w)).reshape(-1)
        flat = embed.detach().permute(0, 2, 3, 1).reshape(-1, d)
        targets = self.bank.assign(flat, flat_labels)
        if update and self.training:
            correct = logits.detach().argmax(dim=1).reshape(-1) == flat_labels
            self.bank.update(flat, targets, correct)
        return targets.reshape(b, h, w)
