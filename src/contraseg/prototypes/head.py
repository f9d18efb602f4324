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

from .._validation import check_dim, check_embeddings, check_label_range, check_labels
from ..losses._pixels import resize_labels
from ..losses._similarity import normalised_similarity
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
        check_dim(d, self.bank.dim, "embed", "prototypes")
        protos = self.bank.prototypes.reshape(k * m, d).to(embed.dtype)
        # Cosines to all K*M prototypes on the embeddings' own B x D x n layout.
        sims = normalised_similarity(embed.reshape(b, d, h * w), protos)  # B x KM x n
        class_scores = sims.view(b, k, m, h * w).amax(dim=2)  # B x K x n
        logits = self.mask_norm(class_scores.transpose(1, 2)).transpose(1, 2)
        return {"logits": logits.reshape(b, k, h, w), "prototype_logits": sims.view(b, k * m, h, w)}

    @torch.no_grad()
    def assign(
        self,
        embed: Tensor,
        labels: Tensor,
        logits: Tensor,
        update: bool = True,
        prototype_logits: Tensor | None = None,
    ) -> Tensor:
        """Prototype targets for PPC/PPD, updating the bank when ``update`` and training.

        Args:
            embed: B x D x h x w embeddings.
            labels: B x H x W labels (nearest-resized to h x w).
            logits: B x K x h x w class logits (their argmax marks correct pixels).
            update: momentum-update the bank (only in training mode).
            prototype_logits: the forward's B x (K*M) x h x w cosines, to save
                recomputing them.

        Returns:
            B x h x w long targets ``k * M + m`` or ``ignore_index``.
        """
        check_embeddings(embed, "embed")
        check_labels(labels, embed.shape[0])
        b, d, h, w = embed.shape
        n = h * w
        k, m = self.bank.num_classes, self.bank.num_prototypes
        flat_labels = resize_labels(labels, (h, w)).reshape(-1)
        check_label_range(flat_labels, k, self.ignore_index)
        dense = embed.detach().reshape(b, d, n)
        if prototype_logits is None:
            protos = self.bank.prototypes.reshape(k * m, d).to(embed.dtype)
            prototype_logits = normalised_similarity(dense, protos)
        sims = prototype_logits.detach().reshape(b, k, m, n)
        keep = flat_labels != self.ignore_index
        cls = flat_labels.clamp(0, k - 1).view(b, 1, 1, n).expand(b, 1, m, n)
        own = sims.gather(1, cls).squeeze(1).transpose(1, 2).reshape(b * n, m)  # cosines to own class
        targets = self.bank.assign_scores(own[keep], flat_labels[keep], total=b * n, keep=keep)
        if update and self.training:
            correct = logits.detach().argmax(dim=1).reshape(-1) == flat_labels
            used = (keep & correct).nonzero().squeeze(1)
            # Gather only the used pixels' embeddings (no copy of the whole N x D).
            feats = dense[used // n, :, used % n]
            self.bank.update(feats, targets[used], torch.ones_like(used, dtype=torch.bool))
        return targets.reshape(b, h, w)
