"""Decode heads on the backbone's feature pyramid (``multi_level = True``): ``fpn`` (FPN with
Panoptic FPN's fusion), ``fpn_topdown`` (FPN's top-down pathway read at its finest level)
and ``segformer`` (SegFormer's all-MLP decoder).

``decode`` takes ``[B x C_l x h_l x w_l]``, finest first, and returns
``B x channels x h_0 x w_0`` at the finest level's grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .head_base import LinearClassifierHead, SegHead, check_positive, conv_bn_relu
from .registry import register_head


def resize_to(features: Tensor, size: torch.Size) -> Tensor:
    """Bilinear resize to ``size`` (``align_corners=False``); no-op when already that size."""
    if features.shape[-2:] == size:
        return features
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


def check_levels(head: SegHead, features: Sequence[Tensor]) -> None:
    """ValueError unless ``features`` is a list of as many maps as ``head.in_channels``."""
    if isinstance(features, Tensor) or len(features) != len(head.in_channels):
        got = f"a tensor of shape {tuple(features.shape)}" if isinstance(features, Tensor) else f"{len(features)} maps"
        raise ValueError(f"{type(head).__name__} needs the backbone pyramid of {len(head.in_channels)} maps, got {got}")


@register_head("fpn")
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
        check_positive("channels", channels)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.lateral_convs = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in self.in_channels)
        self.output_convs = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in self.in_channels)
        self.fuse = conv_bn_relu(channels * len(self.in_channels), channels, 3)

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        check_levels(self, features)
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, features)]
        for level in range(len(laterals) - 1, 0, -1):
            laterals[level - 1] = laterals[level - 1] + resize_to(laterals[level], laterals[level - 1].shape[-2:])
        outputs = [conv(p) for conv, p in zip(self.output_convs, laterals)]
        size = outputs[0].shape[-2:]
        return self.fuse(torch.cat([resize_to(o, size) for o in outputs], dim=1))


@register_head("fpn_topdown")
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
        check_positive("channels", channels)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in self.in_channels)
        self.output_conv = conv_bn_relu(channels, channels, 3)

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        check_levels(self, features)
        top = self.lateral_convs[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):
            top = self.lateral_convs[level](features[level]) + resize_to(top, features[level].shape[-2:])
        return self.output_conv(top)


@register_head("segformer")
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
        check_positive("channels", channels)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.level_projections = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in self.in_channels)
        self.fuse = conv_bn_relu(channels * len(self.in_channels), channels, 1)

    def decode(self, features: Sequence[Tensor]) -> Tensor:
        check_levels(self, features)
        size = features[0].shape[-2:]
        projected = [resize_to(proj(f), size) for proj, f in zip(self.level_projections, features)]
        return self.fuse(torch.cat(projected[::-1], dim=1))
