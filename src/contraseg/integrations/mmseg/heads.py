"""mmsegmentation decode heads that give the pixel embedding as well as the logits.

``Embed<Head>`` is mmseg's ``<Head>`` (same arguments, same layers, same logits and
prediction) plus:

- a projection of the features the head classifies (the input of its ``cls_seg``,
  ``B x channels x h x w``) to an L2-normalised embedding ``B x embed_channels x h x w``:
  ``projection="convmlp"`` is ContrastiveSeg's 1x1 conv -> norm -> ReLU -> 1x1 conv,
  with the head's own ``norm_cfg`` (SyncBN in mmseg's multi-GPU configs);
  ``"linear"`` is one 1x1 conv;
- optionally ``prototypes=dict(num_prototypes=M, ...)``: ProtoSeg's classifier. The
  logits are then the nearest-prototype scores of
  :class:`contraseg.prototypes.NearestPrototypeHead` on the embedding (the head's
  ``conv_seg`` and dropout are not used), and every training step assigns pixels to
  prototypes by Sinkhorn and momentum-updates them;
- embedding losses in ``loss_decode`` (:mod:`.losses`: ``ProACLoss``,
  ``PixelContrastLoss``, ``PPCLoss``, ``PPDLoss``) beside mmseg's own
  (``CrossEntropyLoss``, ...). mmseg's losses still run in mmseg's ``loss_by_feat`` on
  the upsampled logits; the embedding losses are added to the same loss dict.

Only training computes the embedding (``loss``); inference (``predict``, ``forward``)
is the base head's, plus the prototype classifier when there is one.

The heads find the classified features by intercepting ``cls_seg``, so any mmseg head
whose ``forward`` ends in one ``self.cls_seg(features)`` call can be given an
embedding the same way::

    @MODELS.register_module()
    class EmbedMyHead(EmbeddingHeadMixin, MyHead):
        pass
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads import (
    ASPPHead,
    DepthwiseSeparableASPPHead,
    FCNHead,
    PSPHead,
    SegformerHead,
    UPerHead,
)
from mmseg.registry import MODELS
from torch import Tensor, nn

from ...models.projection import PROJECTION_KINDS
from ...prototypes import NearestPrototypeHead
from .losses import EmbeddingLoss

__all__ = [
    "EmbeddingHeadMixin",
    "EmbedFCNHead",
    "EmbedASPPHead",
    "EmbedDepthwiseSeparableASPPHead",
    "EmbedPSPHead",
    "EmbedUPerHead",
    "EmbedSegformerHead",
]

_PROTOTYPE_KEYS = ("num_prototypes", "momentum", "sinkhorn_iterations", "sinkhorn_epsilon", "feat_norm")


class _Projection(nn.Module):
    """``B x C x h x w -> B x D x h x w``, unit L2 norm over D (contraseg's
    :class:`~contraseg.models.projection.ProjectionHead` with mmseg's ``norm_cfg``)."""

    def __init__(self, in_channels: int, embed_channels: int, kind: str, norm_cfg: dict | None) -> None:
        super().__init__()
        if kind == "linear":
            self.proj: nn.Module = nn.Conv2d(in_channels, embed_channels, 1)
        elif kind == "convmlp":
            self.proj = nn.Sequential(
                ConvModule(in_channels, in_channels, 1, norm_cfg=norm_cfg, act_cfg=dict(type="ReLU")),
                nn.Conv2d(in_channels, embed_channels, 1),
            )
        else:
            raise ValueError(
                f"decode_head.projection: unknown kind {kind!r}; choose one of {', '.join(PROJECTION_KINDS)}"
            )

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(self.proj(features), dim=1)


class EmbeddingHeadMixin:
    """Adds an embedding, an optional prototype classifier and embedding losses to an
    mmseg decode head (put it before the head in the bases).

    Args:
        embed_channels: D, the embedding size (ContrastiveSeg / ProAC use 256, 128 in small models).
        projection: ``"convmlp"`` or ``"linear"``.
        prototypes: ``None`` or ProtoSeg's classifier settings, a dict with
            ``num_prototypes`` (M, default 10), ``momentum`` (0.999),
            ``sinkhorn_iterations`` (3), ``sinkhorn_epsilon`` (0.05), ``feat_norm``
            (True: ProtoSeg's LayerNorm over D before the cosines); see
            :class:`contraseg.prototypes.NearestPrototypeHead`.
        **kwargs: the base head's arguments (``loss_decode`` may now also list the
            embedding losses of :mod:`contraseg.integrations.mmseg.losses`).

    Attributes:
        projection: the embedding projection.
        prototype_head: the :class:`NearestPrototypeHead` or ``None``.
        loss_decode: mmseg's own losses (called on the logits by mmseg's ``loss_by_feat``).
        embedding_losses: the embedding losses, in ``loss_decode`` order.
    """

    def __init__(
        self,
        *,
        embed_channels: int = 256,
        projection: str = "convmlp",
        prototypes: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__
        if isinstance(embed_channels, bool) or not isinstance(embed_channels, int) or embed_channels < 1:
            raise ValueError(f"{name}: embed_channels must be a positive int, got {embed_channels!r}")
        self.embed_channels = embed_channels
        self.projection = _Projection(self.conv_seg.in_channels, embed_channels, projection, self.norm_cfg)
        self.prototype_head = self._build_prototype_head(prototypes) if prototypes is not None else None
        if self.prototype_head is not None:
            self.conv_seg = nn.Identity()  # unused: no idle parameters under DDP
            self.dropout = None
        self._split_losses()
        self._capture: dict[str, Tensor] | None = None

    def _build_prototype_head(self, settings: dict[str, Any]) -> NearestPrototypeHead:
        name = type(self).__name__
        if not isinstance(settings, dict):
            raise ValueError(f"{name}: prototypes must be None or a dict, got {type(settings).__name__}")
        unknown = sorted(set(settings) - set(_PROTOTYPE_KEYS))
        if unknown:
            raise ValueError(f"{name}: unknown prototypes key {unknown[0]!r}; allowed: {', '.join(_PROTOTYPE_KEYS)}")
        if self.out_channels != self.num_classes:
            raise ValueError(
                f"{name}: prototypes need out_channels == num_classes, got {self.out_channels} and {self.num_classes}"
            )
        options = {"num_prototypes": 10, **settings}
        return NearestPrototypeHead(self.num_classes, dim=self.embed_channels, ignore_index=self.ignore_index, **options)

    def _split_losses(self) -> None:
        """Move the embedding losses out of ``loss_decode`` and tell them K, D, ignore_index."""
        built = list(self.loss_decode) if isinstance(self.loss_decode, nn.ModuleList) else [self.loss_decode]
        embedding = [loss for loss in built if isinstance(loss, EmbeddingLoss)]
        self.loss_decode = nn.ModuleList([loss for loss in built if not isinstance(loss, EmbeddingLoss)])
        self.embedding_losses = nn.ModuleList(embedding)
        for loss in embedding:
            loss.bind(self.num_classes, self.embed_channels, self.ignore_index, self.prototype_head is not None)

    def cls_seg(self, feat: Tensor) -> Tensor:
        """The base head's classifier, or the nearest-prototype one; records what
        :meth:`forward_with_embedding` needs."""
        capture = self._capture
        if capture is not None and capture:
            raise RuntimeError(f"{type(self).__name__}.forward calls cls_seg more than once; cannot attach one embedding")
        if self.prototype_head is None:
            if capture is not None:
                capture["features"] = feat
            return super().cls_seg(feat)
        embed = self.projection(feat)
        out = self.prototype_head(embed)
        if capture is not None:
            capture.update(embed=embed, prototype_logits=out["prototype_logits"])
        return out["logits"]

    def forward_with_embedding(self, inputs: Any) -> dict[str, Tensor]:
        """The head's forward, returning ``{"logits": B x K x h x w, "embed": B x D x h x w}``
        (plus ``"prototype_logits": B x (K*M) x h x w`` with prototypes)."""
        self._capture = {}
        try:
            logits = self.forward(inputs)
        finally:
            captured, self._capture = self._capture, None
        if not captured:
            raise RuntimeError(f"{type(self).__name__}.forward never called cls_seg; cannot attach an embedding")
        if "embed" not in captured:
            captured["embed"] = self.projection(captured.pop("features"))
        return {"logits": logits, **captured}

    def loss(self, inputs: Any, batch_data_samples: list, train_cfg: Any) -> dict[str, Tensor]:
        """mmseg's training entry point: forward with the embedding, then :meth:`loss_by_feat`."""
        return self.loss_by_feat(self.forward_with_embedding(inputs), batch_data_samples)

    def loss_by_feat(self, seg_logits: Tensor | dict[str, Tensor], batch_data_samples: list) -> dict[str, Tensor]:
        """mmseg's ``loss_by_feat`` on the logits, plus the embedding losses.

        Args:
            seg_logits: the output of :meth:`forward_with_embedding` (or bare logits when
                the head has no embedding loss).
            batch_data_samples: mmseg's data samples with ``gt_sem_seg``.

        With prototypes, the Sinkhorn targets are computed here (and the prototypes
        momentum-updated in training) before the embedding losses.
        """
        if not isinstance(seg_logits, dict):
            if len(self.embedding_losses) or self.prototype_head is not None:
                raise ValueError(
                    f"{type(self).__name__}.loss_by_feat needs the dict of forward_with_embedding(), got a tensor"
                )
            return super().loss_by_feat(seg_logits, batch_data_samples)
        outputs = dict(seg_logits)
        losses = super().loss_by_feat(outputs["logits"], batch_data_samples)
        labels = self._stack_batch_gt(batch_data_samples).squeeze(1)
        if self.prototype_head is not None:
            outputs["prototype_targets"] = self.prototype_head.assign(
                outputs["embed"], labels, outputs["logits"], update=self.training,
                prototype_logits=outputs["prototype_logits"],
            )
        for loss in self.embedding_losses:
            value = loss(outputs, labels)
            losses[loss.loss_name] = losses[loss.loss_name] + value if loss.loss_name in losses else value
        return losses


@MODELS.register_module()
class EmbedFCNHead(EmbeddingHeadMixin, FCNHead):
    """mmseg's ``FCNHead`` with an embedding (see :class:`EmbeddingHeadMixin`)."""


@MODELS.register_module()
class EmbedASPPHead(EmbeddingHeadMixin, ASPPHead):
    """mmseg's ``ASPPHead`` (DeepLabV3) with an embedding (see :class:`EmbeddingHeadMixin`)."""


@MODELS.register_module()
class EmbedDepthwiseSeparableASPPHead(EmbeddingHeadMixin, DepthwiseSeparableASPPHead):
    """mmseg's ``DepthwiseSeparableASPPHead`` (DeepLabV3+) with an embedding (see
    :class:`EmbeddingHeadMixin`)."""


@MODELS.register_module()
class EmbedPSPHead(EmbeddingHeadMixin, PSPHead):
    """mmseg's ``PSPHead`` with an embedding (see :class:`EmbeddingHeadMixin`)."""


@MODELS.register_module()
class EmbedUPerHead(EmbeddingHeadMixin, UPerHead):
    """mmseg's ``UPerHead`` with an embedding (see :class:`EmbeddingHeadMixin`)."""


@MODELS.register_module()
class EmbedSegformerHead(EmbeddingHeadMixin, SegformerHead):
    """mmseg's ``SegformerHead`` (all-MLP) with an embedding (see :class:`EmbeddingHeadMixin`)."""
