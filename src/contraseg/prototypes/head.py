"""Nonparametric nearest-prototype segmentation head (ProtoSeg).

Zhou et al., "Rethinking Semantic Segmentation: A Prototype View", CVPR 2022. Replaces
the linear classifier. With ``e_i`` the pixel embedding (unit norm over D), the head
works on ProtoSeg's pixel features::

    f_i = normalise( LayerNorm_D(e_i) )                 (feat_norm, learnable affine)
    s_ikm = f_i . p_km                                  (cosine to every prototype)
    logit_ik = LayerNorm_K( max_m s_ikm )               (mask_norm, learnable affine)

As in the released model (``HRNet_W48_Proto``: ``feat_norm = nn.LayerNorm(D)`` applied to
the ``(b h w) x D`` embeddings before ``l2_normalize``), the same features ``f_i`` are
the ones assigned to prototypes by Sinkhorn and averaged into them by the momentum
update, so the prototypes live where the features do. ``feat_norm=False`` drops the
LayerNorm (``f_i = normalise(e_i)``), the behaviour of contraseg before it was added. ``mask_norm``
sets the scale of the logits for cross-entropy. The two LayerNorms are the head's only
learnable parameters: the prototypes live in a :class:`PrototypeBank` and move only by
momentum, never by gradient.

Deliberate differences from the released code: a segmentor's embedding, the head's
input, is normalised over channels (the release's ``ProjectionHead`` applies
``F.normalize(x, dim=-1)`` to B x C x H x W, i.e. over the image width, before
``feat_norm``); the momentum update uses each pixel's argmax Sinkhorn assignment (the one it is also trained towards by PPC/PPD), where the
release draws the update's assignment by ``gumbel_softmax(Q, tau=0.5, hard=True)``
(its own commented-out line is the argmax one-hot); under ``torch.distributed`` the
Sinkhorn sums and the update's sums are all-reduced (the release clusters per process
and then averages the updated prototypes across processes without renormalising).
Half-precision inputs are computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._labels import resize_labels
from .._validation import check_dim, check_embeddings, check_label_range, check_labels
from ..losses.similarity import normalised_similarity
from .bank import PrototypeBank

__all__ = ["NearestPrototypeHead"]


class NearestPrototypeHead(nn.Module):
    """Nearest-prototype classifier over (LayerNorm-ed, then) L2-normalised embeddings.

    Args:
        num_classes: K.
        num_prototypes: M per class.
        dim: D of the embeddings.
        momentum, sinkhorn_iterations, sinkhorn_epsilon, ignore_index: see
            :class:`PrototypeBank`.
        feat_norm: apply ProtoSeg's ``feat_norm`` (``nn.LayerNorm(D)``, eps 1e-5,
            learnable weight and bias) to the embeddings before normalising them, as the
            released model does (default). False: cosines of the embeddings themselves.

    Shape:
        - input: embed B x D x h x w (unit norm over D in a segmentor; any norm works)
        - output: ``{"logits": B x K x h x w, "prototype_logits": B x (K*M) x h x w}``,
          prototype logits being the cosines of the features to every prototype
          (class-major: index ``k * M + m``). float32 for half inputs, else the input
          dtype.

    Training step::

        out = head(embed)
        targets = head.assign(embed, labels, out["logits"])       # B x h x w, updates the bank
        flat = out["prototype_logits"].permute(0, 2, 3, 1).reshape(-1, K * M)
        loss = ce(out["logits"], labels) + 0.01 * PPCLoss()(flat, targets.flatten()) \
               + 0.001 * PPDLoss()(flat, targets.flatten())

    Loading a state dict saved before ``feat_norm`` existed (no ``feat_norm.weight``)
    into a head built with ``feat_norm=True`` raises a one-line ``ValueError`` saying to
    build it with ``feat_norm=False``; :func:`contraseg.models.segmentor.upgrade_model_config` does
    that for a checkpoint's model config.
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
        feat_norm: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(feat_norm, bool):
            raise ValueError(f"feat_norm must be a bool, got {feat_norm!r}")
        self.bank = PrototypeBank(
            num_classes, num_prototypes, dim, momentum, sinkhorn_iterations, sinkhorn_epsilon, ignore_index
        )
        self.feat_norm = nn.LayerNorm(dim) if feat_norm else None
        self.mask_norm = nn.LayerNorm(num_classes)
        self.ignore_index = int(ignore_index)

    def extra_repr(self) -> str:
        return f"feat_norm={self.feat_norm is not None}"

    def features(self, embed: Tensor) -> Tensor:
        """ProtoSeg's pixel features before the L2 normalisation: B x D x h x w -> B x D x n.

        ``LayerNorm_D(e)`` with ``feat_norm`` (a B x D x n view of a B x n x D tensor),
        else a view of ``embed`` itself; computed in ``promote(embed.dtype, float32)``.
        The normalisation over D is folded into the cosines (:func:`normalised_similarity`)
        and into the bank's update.
        """
        b, d, h, w = embed.shape
        dtype = torch.promote_types(embed.dtype, torch.float32)
        flat = embed.reshape(b, d, h * w).to(dtype)
        if self.feat_norm is None:
            return flat
        weight = self.feat_norm.weight.to(dtype) if self.feat_norm.weight is not None else None
        bias = self.feat_norm.bias.to(dtype) if self.feat_norm.bias is not None else None
        normed = F.layer_norm(flat.transpose(1, 2), (d,), weight, bias, self.feat_norm.eps)  # B x n x D
        return normed.transpose(1, 2)

    def _cosines(self, feats: Tensor) -> Tensor:
        """Cosines of B x D x n features to all K*M prototypes: B x KM x n."""
        k, m, d = self.bank.prototypes.shape
        # Renormalised in the compute dtype (released: l2_normalize(prototypes) every forward).
        protos = F.normalize(self.bank.prototypes.reshape(k * m, d).to(device=feats.device, dtype=feats.dtype), dim=1)
        return normalised_similarity(feats, protos)

    def forward(self, embed: Tensor) -> dict[str, Tensor]:
        check_embeddings(embed, "embed")
        b, d, h, w = embed.shape
        k, m = self.bank.num_classes, self.bank.num_prototypes
        check_dim(d, self.bank.dim, "embed", "prototypes")
        with torch.autocast(embed.device.type, enabled=False):
            sims = self._cosines(self.features(embed))  # B x KM x n
            class_scores = sims.view(b, k, m, h * w).amax(dim=2)  # B x K x n
            norm = self.mask_norm
            weight = norm.weight.to(sims.dtype) if norm.weight is not None else None
            bias = norm.bias.to(sims.dtype) if norm.bias is not None else None
            logits = F.layer_norm(class_scores.transpose(1, 2), (k,), weight, bias, norm.eps).transpose(1, 2)
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
            embed: B x D x h x w embeddings (the head's input, not its features: the
                ``feat_norm`` is applied here as in :meth:`forward`).
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
        check_dim(d, self.bank.dim, "embed", "prototypes")
        flat_labels = resize_labels(labels, (h, w)).reshape(-1)
        check_label_range(flat_labels, k, self.ignore_index)
        with torch.autocast(embed.device.type, enabled=False):
            dense = self.features(embed.detach())  # B x D x n: what the prototypes are made of
            if prototype_logits is None:
                prototype_logits = self._cosines(dense)
        sims = prototype_logits.detach().reshape(b, k, m, n)
        keep = flat_labels != self.ignore_index
        cls = flat_labels.clamp(0, k - 1).view(b, 1, 1, n).expand(b, 1, m, n)
        own = sims.gather(1, cls).squeeze(1).transpose(1, 2).reshape(b * n, m)  # cosines to own class
        targets = self.bank.assign_scores(own[keep], flat_labels[keep], total=b * n, keep=keep)
        if update and self.training:
            correct = logits.detach().argmax(dim=1).reshape(-1) == flat_labels
            used = (keep & correct).nonzero().squeeze(1)
            # Gather only the used pixels' features (no copy of the whole N x D).
            feats = dense[used // n, :, used % n]
            self.bank.update(feats, targets[used], torch.ones_like(used, dtype=torch.bool))
        return targets.reshape(b, h, w)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """Name a ``feat_norm`` mismatch in one line (a checkpoint from before it existed)."""
        has_norm = any(key.startswith(prefix + "feat_norm.") for key in state_dict)
        if strict and prefix + "bank.prototypes" in state_dict:
            where = prefix.rstrip(".") or "NearestPrototypeHead"
            if self.feat_norm is not None and not has_norm:
                raise ValueError(
                    f"{where}: the state dict has no feat_norm weights (saved before ProtoSeg's feature "
                    "LayerNorm was added); build the head with feat_norm=False "
                    "(config key model.prototype_feat_norm: false) to load it"
                )
            if self.feat_norm is None and has_norm:
                raise ValueError(
                    f"{where}: the state dict has feat_norm weights but the head was built with feat_norm=False; "
                    "build it with feat_norm=True (config key model.prototype_feat_norm: true)"
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
