"""Decode heads: DeepLabV2 ASPP classifier, DeepLabV3 ASPP, FCN, a light MLP, OCR
(:mod:`.ocr`), and for feature pyramids an FPN head and SegFormer's all-MLP head.

Every head splits into two steps so that the projection / prototype classifier can read
the penultimate features:

* ``decode(features) -> B x out_channels x h x w``;
* ``classify(decoded) -> logits B x K x h x w``.

``features`` is the backbone's single map ``B x C_in x h x w``, or for a head with
``multi_level = True`` (FPN, SegFormer) the backbone's pyramid, a list of maps finest
first (``in_channels`` is then the list of their channels) and ``h x w`` is the finest
level's grid. ``forward`` is ``classify(decode(features))``. A head built with
``num_classes=None`` has no classifier (used when a prototype classifier replaces it);
its ``classify`` raises.

Two hooks let a head give the segmentor more than logits (defaults in :class:`SegHead`):
``decode_with_extras`` returns extra outputs (OCR: ``{"aux_logits"}``, its soft object
regions, trained with an auxiliary cross-entropy of weight ``aux_loss_weight``), and
``embedding_input`` chooses what the projection embeds (default: the decoded features).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1
) -> nn.Sequential:
    """``Conv2d (no bias, same padding) -> BatchNorm2d -> ReLU``."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _check_channels(name: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class SegHead(nn.Module):
    """Base class of decode heads.

    Attributes:
        in_channels: backbone channels C_in (a list, finest first, for a multi-level head).
        out_channels: channels of ``decode``'s output (the penultimate features).
        num_classes: K, or None for a head without classifier.
        multi_level: True when ``decode`` takes the backbone's pyramid.
        embed_channels: channels of :meth:`embedding_input` (default ``out_channels``).
        aux_loss_weight: weight of the cross-entropy on ``"aux_logits"`` (heads that give them).
    """

    multi_level = False
    aux_loss_weight = 0.0

    def __init__(self, in_channels: Any, out_channels: int, num_classes: int | None) -> None:
        super().__init__()
        if self.multi_level:
            if isinstance(in_channels, (str, bytes)) or not isinstance(in_channels, Sequence) or not in_channels:
                raise ValueError(f"in_channels of a multi-level head must be a list of ints, got {in_channels!r}")
            for value in in_channels:
                _check_channels("in_channels", value)
            in_channels = [int(c) for c in in_channels]
        else:
            _check_channels("in_channels", in_channels)
        _check_channels("num_classes", num_classes, allow_none=True)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_classes = num_classes

    @property
    def embed_channels(self) -> int:
        """Channels of :meth:`embedding_input` (the projection's input)."""
        return self.out_channels

    def decode(self, features: Any) -> Tensor:
        """``B x C_in x h x w`` (or the pyramid) ``-> B x out_channels x h x w``."""
        raise NotImplementedError

    def decode_with_extras(self, features: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """``decode`` plus extra outputs for the segmentor's dict (default: none)."""
        return self.decode(features), {}

    def embedding_input(self, features: Any, decoded: Tensor) -> Tensor:
        """What the projection embeds: the decoded features by default."""
        return decoded

    def classify(self, decoded: Tensor) -> Tensor:
        """``B x out_channels x h x w -> logits B x K x h x w``."""
        raise NotImplementedError

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``B x K x h x w`` from backbone features ``B x C_in x h x w``."""
        return self.classify(self.decode(features))

    def _no_classifier(self) -> RuntimeError:
        return RuntimeError(f"{type(self).__name__} was built with num_classes=None and has no classifier")


class LinearClassifierHead(SegHead):
    """A head whose classifier is ``Dropout2d -> 1x1 conv`` on the decoded features."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int | None, dropout: float) -> None:
        super().__init__(in_channels, out_channels, num_classes)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.classifier: nn.Module | None = None
        if num_classes is not None:
            self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(out_channels, num_classes, 1))

    def classify(self, decoded: Tensor) -> Tensor:
        if self.classifier is None:
            raise self._no_classifier()
        return self.classifier(decoded)


class DeepLabV2Head(SegHead):
    """DeepLabV2's ASPP classifier: logits = sum over rates r of ``Conv3x3_r(features)``.

    Four parallel 3x3 convolutions with dilation 6, 12, 18, 24, each straight to K classes,
    summed (ASPP-L of Chen et al., DeepLab, TPAMI 2017; the standard head of GTA5 ->
    Cityscapes domain adaptation). There are no penultimate features: ``decode`` is the
    identity and ``out_channels == in_channels``.
    """

    def __init__(
        self, in_channels: int, num_classes: int | None, dilations: Sequence[int] = (6, 12, 18, 24)
    ) -> None:
        super().__init__(in_channels, in_channels, num_classes)
        self.dilations = tuple(int(d) for d in dilations)
        self.branches = nn.ModuleList()
        if num_classes is not None:
            for rate in self.dilations:
                conv = nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate, bias=True)
                nn.init.normal_(conv.weight, mean=0.0, std=0.01)
                nn.init.zeros_(conv.bias)
                self.branches.append(conv)

    def decode(self, features: Tensor) -> Tensor:
        return features

    def classify(self, decoded: Tensor) -> Tensor:
        if self.num_classes is None:
            raise self._no_classifier()
        logits = self.branches[0](decoded)
        for branch in self.branches[1:]:
            logits = logits + branch(decoded)
        return logits


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """DeepLabV3's dilation rates: (6, 12, 18) at output stride 16, (12, 24, 36) at 8,
    scaled as ``rate * 16 / output_stride`` for other strides (at least 1)."""
    return tuple(max(1, round(r * 16 / output_stride)) for r in (6, 12, 18))  # type: ignore[return-value]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling of DeepLabV3.

    Five branches, each ``channels`` wide: 1x1 conv, three 3x3 convs dilated by ``rates``,
    and image pooling (global average -> 1x1 conv -> ReLU -> broadcast; without the paper's
    BN there, so a batch of one image trains); concatenated and fused by a 1x1 conv-BN-ReLU.
    ``B x C_in x h x w -> B x channels x h x w``.
    """

    def __init__(self, in_channels: int, channels: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(in_channels, channels, 1)])
        self.branches.extend(conv_bn_relu(in_channels, channels, 3, dilation=r) for r in rates)
        # No BatchNorm on the pooled 1 x 1 vector: it would fail to train on one image per batch.
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True)
        )
        self.fuse = conv_bn_relu(channels * (len(self.branches) + 1), channels, 1)

    def forward(self, features: Tensor) -> Tensor:
        outs = [branch(features) for branch in self.branches]
        pooled = self.image_pool(features).expand(-1, -1, *features.shape[-2:])
        return self.fuse(torch.cat(outs + [pooled], dim=1))


class DeepLabV3Head(LinearClassifierHead):
    """DeepLabV3: ASPP -> 3x3 conv-BN-ReLU (``decode``) -> dropout -> 1x1 classifier.

    Rates follow :func:`aspp_rates` (``output_stride`` of the backbone).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int | None,
        channels: int = 256,
        output_stride: int = 8,
        dropout: float = 0.1,
    ) -> None:
        _check_channels("channels", channels)
        _check_channels("output_stride", output_stride)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.aspp = ASPP(in_channels, channels, aspp_rates(output_stride))
        self.bottleneck = conv_bn_relu(channels, channels, 3)

    def decode(self, features: Tensor) -> Tensor:
        return self.bottleneck(self.aspp(features))


class FCNHead(LinearClassifierHead):
    """FCN head: two 3x3 conv-BN-ReLU (``decode``) -> dropout -> 1x1 classifier."""

    def __init__(
        self, in_channels: int, num_classes: int | None, channels: int = 256, dropout: float = 0.1
    ) -> None:
        _check_channels("channels", channels)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.convs = nn.Sequential(
            conv_bn_relu(in_channels, channels, 3), conv_bn_relu(channels, channels, 3)
        )

    def decode(self, features: Tensor) -> Tensor:
        return self.convs(features)


class MLPHead(LinearClassifierHead):
    """Light head: 1x1 conv-BN-ReLU (``decode``) -> dropout -> 1x1 classifier
    (HRNetV2's segmentation head)."""

    def __init__(
        self, in_channels: int, num_classes: int | None, channels: int = 256, dropout: float = 0.1
    ) -> None:
        _check_channels("channels", channels)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.mlp = conv_bn_relu(in_channels, channels, 1)

    def decode(self, features: Tensor) -> Tensor:
        return self.mlp(features)


def _resize_to(features: Tensor, size: torch.Size) -> Tensor:
    """Bilinear resize to ``size`` (``align_corners=False``); no-op when already that size."""
    if features.shape[-2:] == size:
        return features
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


class FPNHead(LinearClassifierHead):
    """Feature pyramid decoder (Lin et al., CVPR 2017; fused as in Kirillov et al.'s
    Panoptic FPN semantic branch) on a backbone pyramid ``[B x C_l x h_l x w_l]``:

    * ``lateral_convs[l]``: 1x1 conv-BN-ReLU ``C_l -> channels``;
    * top-down: ``P_l = lateral_l + upsample(P_{l+1})`` from the coarsest level down;
    * ``output_convs[l]``: 3x3 conv-BN-ReLU on each ``P_l``;
    * ``fuse``: all levels upsampled to the finest grid, concatenated, 3x3 conv-BN-ReLU
      ``L * channels -> channels`` (``decode``'s output, at the finest level's stride);

    then dropout and a 1x1 classifier.
    """

    multi_level = True

    def __init__(self, in_channels: Sequence[int], num_classes: int | None, channels: int = 256,
                 dropout: float = 0.1) -> None:
        _check_channels("channels", channels)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.lateral_convs = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in self.in_channels)
        self.output_convs = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in self.in_channels)
        self.fuse = conv_bn_relu(channels * len(self.in_channels), channels, 3)

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        _check_levels(self, features)
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        for level in range(len(laterals) - 1, 0, -1):
            laterals[level - 1] = laterals[level - 1] + _resize_to(laterals[level], laterals[level - 1].shape[-2:])
        outputs = [conv(p) for conv, p in zip(self.output_convs, laterals)]
        size = outputs[0].shape[-2:]
        return self.fuse(torch.cat([_resize_to(o, size) for o in outputs], dim=1))


class TopDownFPNHead(LinearClassifierHead):
    """FPN's top-down pathway read at its finest level (Lin et al., CVPR 2017, Fig. 3),
    the light decoder for small inputs and CPUs (``head: fpn_topdown``):

    * ``lateral_convs[l]``: 1x1 conv ``C_l -> channels`` (with bias, as in the paper);
    * top-down: ``P_l = lateral_l + upsample(P_{l+1})`` from the coarsest level down;
    * ``output_conv``: one 3x3 conv-BN-ReLU on the finest ``P_0`` (``decode``'s output, at
      the finest level's stride);

    then dropout and a 1x1 classifier. Unlike :class:`FPNHead` there is no 3x3 conv per
    level and no concatenation of all levels at the finest grid, which at stride 2 cost
    most of a small model's step (measured 0.58 s vs 0.27 s per CPU step for MobileNetV3
    at 64 x 128 with 64 channels: docs/demo_regime.md).
    """

    multi_level = True

    def __init__(self, in_channels: Sequence[int], num_classes: int | None, channels: int = 256,
                 dropout: float = 0.1) -> None:
        _check_channels("channels", channels)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in self.in_channels)
        self.output_conv = conv_bn_relu(channels, channels, 3)

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        _check_levels(self, features)
        top = self.lateral_convs[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):
            top = self.lateral_convs[level](features[level]) + _resize_to(top, features[level].shape[-2:])
        return self.output_conv(top)


class SegFormerHead(LinearClassifierHead):
    """SegFormer's all-MLP decoder (Xie et al., NeurIPS 2021, Eq. 4) on a pyramid:

    ``F_l = Linear(C_l -> channels)(level l)`` (a 1x1 conv, ``level_projections``), each
    upsampled to the finest grid; ``fuse``: the concatenation (coarsest first, as released)
    through a 1x1 conv-BN-ReLU ``4 * channels -> channels`` (``decode``'s output); then
    dropout 0.1 and a 1x1 classifier. ``channels`` is 256 for MiT-B0/B1 and 768 for B2+.
    """

    multi_level = True

    def __init__(self, in_channels: Sequence[int], num_classes: int | None, channels: int = 256,
                 dropout: float = 0.1) -> None:
        _check_channels("channels", channels)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.level_projections = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in self.in_channels)
        self.fuse = conv_bn_relu(channels * len(self.in_channels), channels, 1)

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        _check_levels(self, features)
        size = features[0].shape[-2:]
        projected = [_resize_to(proj(f), size) for proj, f in zip(self.level_projections, features)]
        return self.fuse(torch.cat(projected[::-1], dim=1))


def _check_levels(head: SegHead, features: Sequence[Tensor]) -> None:
    if isinstance(features, Tensor) or len(features) != len(head.in_channels):
        got = f"a tensor of shape {tuple(features.shape)}" if isinstance(features, Tensor) else f"{len(features)} maps"
        raise ValueError(f"{type(head).__name__} needs the backbone pyramid of {len(head.in_channels)} maps, got {got}")


_HEADS = ("deeplabv2", "deeplabv3", "fcn", "mlp", "ocr", "fpn", "fpn_topdown", "segformer", "hrnet")
MULTI_LEVEL_HEADS = ("fpn", "fpn_topdown", "segformer")


def available_heads() -> list[str]:
    """Names accepted by :func:`build_head`."""
    return list(_HEADS)


def build_head(
    name: str,
    in_channels: int | Sequence[int],
    num_classes: int | None,
    output_stride: int = 8,
    channels: int | None = None,
    num_regions: int | None = None,
    embed_from: str = "backbone",
) -> SegHead:
    """Build head ``name`` on ``in_channels`` backbone channels.

    Args:
        name: one of :func:`available_heads`.
        in_channels: backbone ``out_channels``; for ``fpn`` / ``fpn_topdown`` / ``segformer`` the list of
            ``pyramid_channels``.
        num_classes: K, or None for no classifier.
        output_stride: backbone output stride (sets DeepLabV3's ASPP rates).
        channels: decoded width of deeplabv3 / fcn / mlp / fpn / segformer (default 256)
            and ocr (default 512, as HRNet-OCR); deeplabv2 keeps ``in_channels``, hrnet
            (openseg's HRNet head, :mod:`.hrnet_head`) defaults to ``in_channels``.
        num_regions: OCR's soft object regions (K; given even when ``num_classes`` is
            None, i.e. under a prototype classifier).
        embed_from: OCR and hrnet only: ``"backbone"`` (ContrastiveSeg: the projection
            embeds the backbone features) or ``"decoded"`` (the head's decoded features).

    Raises:
        ValueError: unknown name or non-positive sizes.
    """
    if name == "ocr":
        from .ocr import OCRHead

        regions = num_regions if num_regions is not None else num_classes
        if regions is None:
            raise ValueError("head 'ocr' needs num_regions (the class count K) when num_classes is None")
        return OCRHead(in_channels, num_classes, regions, channels=512 if channels is None else channels,
                       embed_from=embed_from)
    if name == "hrnet":
        from .hrnet_head import HRNetHead

        return HRNetHead(in_channels, num_classes, channels=channels, embed_from=embed_from)
    channels = 256 if channels is None else channels
    if name == "fpn":
        return FPNHead(in_channels, num_classes, channels=channels)
    if name == "fpn_topdown":
        return TopDownFPNHead(in_channels, num_classes, channels=channels)
    if name == "segformer":
        return SegFormerHead(in_channels, num_classes, channels=channels)
    if name == "deeplabv2":
        return DeepLabV2Head(in_channels, num_classes)
    if name == "deeplabv3":
        return DeepLabV3Head(in_channels, num_classes, channels=channels, output_stride=output_stride)
    if name == "fcn":
        return FCNHead(in_channels, num_classes, channels=channels)
    if name == "mlp":
        return MLPHead(in_channels, num_classes, channels=channels)
    raise ValueError(f"unknown head {name!r}; choose one of {', '.join(_HEADS)}")
