"""DeepLab decode heads: DeepLabV2's ASPP classifier (``deeplabv2``, the head of the GTA5 ->
Cityscapes adaptation line) and DeepLabV3's ASPP with image pooling (``deeplabv3``).

Both take the backbone's single map ``B x C_in x h x w``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .head_base import DEFAULT_HEAD_CHANNELS, HeadOptions, LinearClassifierHead, SegHead, check_positive, conv_bn_relu
from .registry import register_head

# DeepLab-v2's ASPP-L rates (Chen et al., TPAMI 2017), the default of ``model.aspp_rates``.
DEEPLABV2_RATES = (6, 12, 18, 24)


def check_rates(name: str, rates: Sequence[int]) -> tuple[int, ...]:
    """``rates`` as a tuple of positive ints; ValueError naming ``name`` otherwise (empty too)."""
    if isinstance(rates, (str, bytes)) or not isinstance(rates, Sequence) or not rates or any(
        isinstance(r, bool) or not isinstance(r, int) or r <= 0 for r in rates
    ):
        raise ValueError(f"{name} must be a non-empty list of positive ints, got {rates!r}")
    return tuple(rates)


@register_head("deeplabv2")
class DeepLabV2Head(SegHead):
    """DeepLabV2's ASPP classifier: logits = sum over rates r of ``Conv3x3_r(features)``.

    Parallel 3x3 convolutions with dilation = padding = r for r in ``dilations`` (default
    6, 12, 18, 24), each straight to K classes, summed (ASPP-L of Chen et al., DeepLab, TPAMI
    2017; the standard head of GTA5 -> Cityscapes domain adaptation)::

        logits = sum_r W_r *_r features + b_r        (B x C_in x h x w -> B x K x h x w)

    ``model.aspp_rates`` sets ``dilations``: WDASS's released ``DeepV2R101`` uses 12, 24, 36,
    48 (anurag-198/WDASS@7276a27 network/utils.py:175-179 doubles the default rates because
    ``output_stride=8`` is passed, network/deepv2.py:139-142). There are no penultimate
    features: ``decode`` is the identity and ``out_channels == in_channels``.
    """

    def __init__(
        self, in_channels: int, num_classes: int | None, dilations: Sequence[int] = DEEPLABV2_RATES
    ) -> None:
        super().__init__(in_channels, in_channels, num_classes)
        self.dilations = check_rates("aspp_rates", dilations)
        self.branches = nn.ModuleList()
        if num_classes is not None:
            for rate in self.dilations:
                conv = nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate, bias=True)
                nn.init.normal_(conv.weight, mean=0.0, std=0.01)
                nn.init.zeros_(conv.bias)
                self.branches.append(conv)

    @classmethod
    def from_options(cls, in_channels: int, num_classes: int | None, options: HeadOptions) -> DeepLabV2Head:
        """Always ``in_channels`` wide: ``options.channels`` does not apply; the rates are
        ``options.aspp_rates`` (None: :data:`DEEPLABV2_RATES`)."""
        rates = DEEPLABV2_RATES if options.aspp_rates is None else options.aspp_rates
        return cls(in_channels, num_classes, rates)

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


@register_head("deeplabv3")
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
        check_positive("channels", channels)
        check_positive("output_stride", output_stride)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.aspp = ASPP(in_channels, channels, aspp_rates(output_stride))
        self.bottleneck = conv_bn_relu(channels, channels, 3)

    @classmethod
    def from_options(cls, in_channels: int, num_classes: int | None, options: HeadOptions) -> DeepLabV3Head:
        channels = DEFAULT_HEAD_CHANNELS if options.channels is None else options.channels
        return cls(in_channels, num_classes, channels=channels, output_stride=options.output_stride)

    def decode(self, features: Tensor) -> Tensor:
        return self.bottleneck(self.aspp(features))
