"""The segmentor: backbone -> head -> {logits, embed}, and its factory ``build_segmentor``.

Contract (docs/architecture.md)::

    model(images B x 3 x H x W) -> {"logits": B x K x h x w, "embed": B x D x h x w}

``h x w`` is the grid ``ceil(H / output_stride) x ceil(W / output_stride)`` for any H x W
(except ``resnet101_deeplabv2``, which keeps the released ceil-mode grid, see :mod:`.deeplabv2_resnet`)
(``model.output_stride``: the backbone's single-map stride, or the finest pyramid stride
for the multi-level heads ``fpn`` / ``segformer``); the engine upsamples the logits. A head
may add outputs: OCR adds ``"aux_logits": B x K x h x w`` (its soft object regions), which
the training step supervises with weight ``model.aux_loss_weight``.
``embed`` has unit L2 norm over D. With ``classifier="prototype"`` (ProtoSeg) the
classifier is a :class:`contraseg.prototypes.NearestPrototypeHead` on ``embed``; the output
then also holds ``"prototype_logits": B x (K*M) x h x w`` and the head is exposed as
``model.prototype_head``.

A checkpoint stores the :func:`build_segmentor` keyword arguments; one saved before a
keyword existed is completed by :func:`upgrade_model_config` with the value that rebuilds
the model it was saved from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .backbone_base import Backbone
from .backbones import backbone_name_error, build_backbone
from .deeplab_heads import DEEPLABV2_RATES, check_rates
from .head_base import SegHead
from .heads import available_heads, build_head, is_multi_level_head
from .hrnet import HRNET_FUSIONS, HRNetBackbone
from .projection import PROJECTION_KINDS, PROJECTION_NORMS, ProjectionHead
from .weights import PretrainedSpec

CLASSIFIERS = ("linear", "prototype")

# build_segmentor keywords added after checkpoints were first written, with the value that
# rebuilds a model saved before the keyword existed (only for the classifier that uses it).
_LEGACY_PROTOTYPE_DEFAULTS = {"prototype_feat_norm": False}


class Segmentor(nn.Module):
    """Backbone, decode head, optional projection and optional prototype classifier.

    Args:
        backbone: features ``B x C x h x w``.
        head: ``decode`` gives the penultimate features ``B x C_dec x h x w``; its
            ``classify`` gives the logits unless a prototype head is given.
        projection: maps decoded features to ``embed``; None: ``embed`` is the decoded
            features L2-normalised over channels.
        prototype_head: nearest-prototype classifier on ``embed`` (replaces ``head.classify``).
        config: the :func:`build_segmentor` keyword arguments, kept so that a checkpoint can
            rebuild the model with ``build_segmentor(**model.config)``.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: SegHead,
        projection: nn.Module | None = None,
        prototype_head: nn.Module | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.projection = projection
        self.prototype_head = prototype_head
        self.config: dict[str, Any] = dict(config or {})

    @property
    def output_stride(self) -> int:
        """Input size / output grid size."""
        if self.head.multi_level:
            return self.backbone.pyramid_strides[0]
        return self.backbone.output_stride

    @property
    def aux_loss_weight(self) -> float:
        """Weight of the cross-entropy on ``"aux_logits"`` (0 when the head gives none)."""
        return float(getattr(self.head, "aux_loss_weight", 0.0))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """``images B x 3 x H x W -> {"logits": B x K x h x w, "embed": B x D x h x w}``
        (plus ``"prototype_logits": B x (K*M) x h x w`` with a prototype classifier)."""
        if images.dim() != 4:
            raise ValueError(f"images must be B x 3 x H x W, got shape {tuple(images.shape)}")
        if self.head.multi_level:
            features = self.backbone.forward_pyramid(images)
        else:
            features = self.backbone(images)
        decoded, extras = self.head.decode_with_extras(features)
        source = self.head.embedding_input(features, decoded)
        embed = self.projection(source) if self.projection is not None else F.normalize(source, dim=1)
        if self.prototype_head is not None:
            out = dict(self.prototype_head(embed))
            out["embed"] = embed
            return {**out, **extras}
        return {"logits": self.head.classify(decoded), "embed": embed, **extras}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters split for separate learning rates: ``{"backbone": [...], "head": [...]}``.

        Every parameter appears exactly once; everything outside the backbone (decode head,
        projection, prototype head) is in ``"head"``.
        """
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        return {
            "backbone": list(self.backbone.parameters()),
            "head": [p for p in self.parameters() if id(p) not in backbone_ids],
        }


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_choice(what: str, value: Any, choices: list[str] | tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(map(str, choices))}")


def _default_head_channels(head: str, backbone: Backbone) -> int | None:
    """The SegFormer head takes its width from a MiT backbone (768 for B2); else the head's default."""
    if head == "segformer":
        return getattr(backbone, "head_channels", None)
    return None


def build_segmentor(
    backbone: str = "resnet18",
    head: str = "deeplabv2",
    num_classes: int = 19,
    embed_dim: int = 256,
    projection: str | None = "convmlp",
    classifier: str = "linear",
    num_prototypes: int = 10,
    output_stride: int = 8,
    pretrained: PretrainedSpec = None,
    prototype_feat_norm: bool = True,
    head_channels: int | None = None,
    projection_norm: str = "channels",
    hrnet_fusion: str = "pad",
    aspp_rates: Sequence[int] = DEEPLABV2_RATES,
) -> Segmentor:
    """Build a :class:`Segmentor` (never downloads unless ``pretrained="hub"``).

    Args:
        backbone: one of :func:`contraseg.models.available_backbones`, or ``"timm:NAME"``.
        head: one of :func:`contraseg.models.available_heads`.
        num_classes: K.
        embed_dim: D of ``embed`` (ignored when ``projection`` is None: D = C_dec).
        projection: ``"convmlp"``, ``"linear"`` or None (then ``classifier`` must be linear).
        classifier: ``"linear"`` (the head's own) or ``"prototype"`` (ProtoSeg's
            nearest-prototype head with ``num_prototypes`` per class).
        num_prototypes: M, used by the prototype classifier.
        prototype_feat_norm: the prototype classifier applies ProtoSeg's ``feat_norm``
            LayerNorm to ``embed`` before its cosines (the released model; default).
            Recorded in ``Segmentor.config`` only for ``classifier="prototype"``.
        output_stride: 8, 16 or 32 (HRNet: always 4; Swin / ConvNeXt / MiT: ignored).
        pretrained: backbone weights: None, a local state_dict path, or ``"hub"``.
        head_channels: decoded width of the head; None: the head's default (256; OCR 512;
            SegFormer the MiT variant's, 768 for B2). Recorded in ``Segmentor.config``
            only when given.
        projection_norm: ``"channels"`` (default) or ``"width"``: the axis over which the
            projection head L2-normalises (``"width"``: ProtoSeg's released
            ``F.normalize(dim=-1)``, see :class:`~.projection.ProjectionHead`).
        hrnet_fusion: ``"pad"`` (default) or ``"interpolate"``: how an HRNet backbone fuses
            branches at sides that are not multiples of 32 (``"interpolate"``: as the
            released openseg HRNet, see :mod:`.hrnet`).
        aspp_rates: the ``deeplabv2`` head's ASPP dilations (default 6, 12, 18, 24; WDASS's
            released model 12, 24, 36, 48, see :class:`~.deeplab_heads.DeepLabV2Head`).
        (``projection_norm`` / ``hrnet_fusion`` / ``aspp_rates`` are recorded in
        ``Segmentor.config`` only when not the default, so older checkpoints rebuild as saved.)

    Raises:
        ValueError: unknown name (the message lists the choices) or bad size.
    """
    config = dict(
        backbone=backbone,
        head=head,
        num_classes=num_classes,
        embed_dim=embed_dim,
        projection=projection,
        classifier=classifier,
        num_prototypes=num_prototypes,
        output_stride=output_stride,
        pretrained=None if pretrained is None else str(pretrained),
    )
    if not isinstance(prototype_feat_norm, bool):
        raise ValueError(f"prototype_feat_norm must be a bool, got {prototype_feat_norm!r}")
    if classifier == "prototype":
        config["prototype_feat_norm"] = prototype_feat_norm
    if head_channels is not None:
        _check_positive_int("head_channels", head_channels)
        config["head_channels"] = head_channels
    for key, value, default in (("projection_norm", projection_norm, "channels"), ("hrnet_fusion", hrnet_fusion, "pad")):
        if value != default:
            config[key] = value
    rates = check_rates("aspp_rates", aspp_rates)
    if rates != DEEPLABV2_RATES:
        if head != "deeplabv2":
            raise ValueError(f"aspp_rates={list(rates)} applies to the deeplabv2 head only, got head {head!r}")
        config["aspp_rates"] = list(rates)
    _check_choice("projection_norm", projection_norm, PROJECTION_NORMS)
    _check_choice("hrnet_fusion", hrnet_fusion, HRNET_FUSIONS)
    if projection_norm != "channels" and projection is None:
        raise ValueError(f"projection_norm={projection_norm!r} needs a projection head, got projection=None")
    error = backbone_name_error(backbone)
    if error is not None:
        raise ValueError(error)
    _check_choice("head", head, available_heads())
    _check_choice("projection", projection, (*PROJECTION_KINDS, None))
    _check_choice("classifier", classifier, CLASSIFIERS)
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("embed_dim", embed_dim)
    _check_positive_int("num_prototypes", num_prototypes)
    if projection is None and classifier == "prototype":
        raise ValueError(
            "classifier='prototype' needs a projection ('convmlp' or 'linear'), got projection=None"
        )

    body = build_backbone(backbone, output_stride=output_stride, pretrained=pretrained)
    if hrnet_fusion != "pad":
        if not isinstance(body, HRNetBackbone):
            raise ValueError(f"hrnet_fusion={hrnet_fusion!r} applies to HRNet backbones only, got backbone {backbone!r}")
        body.set_fusion(hrnet_fusion)
    decode_head = build_head(
        head,
        list(body.pyramid_channels) if is_multi_level_head(head) else body.out_channels,
        num_classes if classifier == "linear" else None,
        output_stride=body.output_stride,
        channels=_default_head_channels(head, body) if head_channels is None else head_channels,
        num_regions=num_classes,
        embed_from="decoded" if classifier == "prototype" else "backbone",
        aspp_rates=rates if head == "deeplabv2" else None,
    )
    proj = None
    if projection is not None:
        proj = ProjectionHead(decode_head.embed_channels, embed_dim, projection, norm=projection_norm)
    prototype_head = None
    if classifier == "prototype":
        from ..prototypes import NearestPrototypeHead

        prototype_head = NearestPrototypeHead(num_classes, num_prototypes, embed_dim, feat_norm=prototype_feat_norm)
    return Segmentor(body, decode_head, proj, prototype_head, config)


def upgrade_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``build_segmentor`` keywords, completed for this version of contraseg.

    A prototype-classifier model saved before ``prototype_feat_norm`` existed had no
    ``feat_norm``: its config gets ``prototype_feat_norm=False``, so it is rebuilt (and
    predicts) exactly as it was trained. Anything else is returned unchanged (a copy).
    """
    upgraded = dict(config)
    if upgraded.get("classifier") == "prototype":
        for key, value in _LEGACY_PROTOTYPE_DEFAULTS.items():
            upgraded.setdefault(key, value)
    return upgraded
