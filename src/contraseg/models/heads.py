"""Decode heads: DeepLabV2 ASPP classifier, DeepLabV3 ASPP, FCN and a light MLP.

Every head splits into two steps so that the projection / prototype classifier can read
the penultimate features:

* ``decode(features B x C_in x h x w) -> B x out_channels x h x w``;
* ``classify(decoded) -> logits B x K x h x w``.

``forward`` is ``classify(decode(features))``. A head built with ``num_classes=None`` has
no classifier (used when a prototype classifier replaces it); its ``classify`` raises.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
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
        in_channels: backbone channels C_in.
        out_channels: channels of ``decode``'s output (the penultimate features).
        num_classes: K, or None for a head without classifier.
    """

    def __init__(self, in_channels: int, out_channels: int, num_classes: int | None) -> None:
        super().__init__()
        _check_channels("in_channels", in_channels)
        _check_channels("num_classes", num_classes, allow_none=True)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_classes = num_classes

    def decode(self, features: Tensor) -> Tensor:
        """``B x C_in x h x w -> B x out_channels x h x w``."""
        raise NotImplementedError

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


_HEADS = ("deeplabv2", "deeplabv3", "fcn", "mlp")


def available_heads() -> list[str]:
    """Names accepted by :func:`build_head`."""
    return list(_HEADS)


def build_head(
    name: str,
    in_channels: int,
    num_classes: int | None,
    output_stride: int = 8,
    channels: int = 256,
) -> SegHead:
    """Build head ``name`` on ``in_channels`` backbone channels.

    Args:
        name: one of :func:`available_heads`.
        in_channels: backbone ``out_channels``.
        num_classes: K, or None for no classifier.
        output_stride: backbone output stride (sets DeepLabV3's ASPP rates).
        channels: decoded width of deeplabv3 / fcn / mlp (deeplabv2 keeps ``in_channels``).

    Raises:
        ValueError: unknown name or non-positive sizes.
    """
    if name == "deeplabv2":
        return DeepLabV2Head(in_channels, num_classes)
    if name == "deeplabv3":
        return DeepLabV3Head(in_channels, num_classes, channels=channels, output_stride=output_stride)
    if name == "fcn":
        return FCNHead(in_channels, num_classes, channels=channels)
    if name == "mlp":
        return MLPHead(in_channels, num_classes, channels=channels)
    raise ValueError(f"unknown head {name!r}; choose one of {', '.join(_HEADS)}")
