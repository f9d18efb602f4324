"""Plain convolutional decode heads on the backbone's single map: ``fcn`` (two 3x3
conv-BN-ReLU) and ``mlp`` (one 1x1 conv-BN-ReLU, HRNetV2's head).
"""

from __future__ import annotations

from torch import Tensor, nn

from .head_base import LinearClassifierHead, check_positive, conv_bn_relu
from .registry import register_head


@register_head("fcn")
class FCNHead(LinearClassifierHead):
    """FCN head: two 3x3 conv-BN-ReLU (``decode``) -> dropout -> 1x1 classifier."""

    def __init__(
        self, in_channels: int, num_classes: int | None, channels: int = 256, dropout: float = 0.1
    ) -> None:
        check_positive("channels", channels)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.convs = nn.Sequential(
            conv_bn_relu(in_channels, channels, 3), conv_bn_relu(channels, channels, 3)
        )

    def decode(self, features: Tensor) -> Tensor:
        return self.convs(features)


@register_head("mlp")
class MLPHead(LinearClassifierHead):
    """Light head: 1x1 conv-BN-ReLU (``decode``) -> dropout -> 1x1 classifier
    (HRNetV2's segmentation head)."""

    def __init__(
        self, in_channels: int, num_classes: int | None, channels: int = 256, dropout: float = 0.1
    ) -> None:
        check_positive("channels", channels)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.mlp = conv_bn_relu(in_channels, channels, 1)

    def decode(self, features: Tensor) -> Tensor:
        return self.mlp(features)
