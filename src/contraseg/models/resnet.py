"""torchvision ResNets as backbones (``resnet18``, ``resnet50``, ``resnet101``), dilated
for output stride 8 / 16 as in DeepLab.

Single map: ``layer4``; pyramid: ``layer1..layer4`` (strides 4, 8, 16, 32, which stop
growing at the output stride). Channels 64, 128, 256, 512 (ResNet-18) or 256, 512, 1024,
2048 (ResNet-50 / 101).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .backbone_base import Backbone, check_output_stride
from .registry import register_backbone_family
from .weights import StateDict, torchvision_hub_state_dict

# torchvision ResNets built from BasicBlock, which rejects replace_stride_with_dilation.
_BASIC_BLOCK_RESNETS = ("resnet18", "resnet34")


def dilated_strides(nominal: Sequence[int], output_stride: int) -> tuple[int, ...]:
    """Strides of pyramid levels whose nominal strides stop growing at ``output_stride``."""
    return tuple(min(int(s), output_stride) for s in nominal)


def dilate_resnet(net: nn.Module, replace_stride_with_dilation: tuple[bool, bool, bool]) -> None:
    """Turn the strides of ``layer2..4`` of a torchvision ResNet into dilations, in place.

    Mirrors torchvision's ``replace_stride_with_dilation`` (which ``BasicBlock`` refuses):
    a replaced layer loses its stride 2 (the block's strided 3x3 conv and the downsample
    1x1), its first block keeps the previous dilation and the following blocks use the
    doubled one; every 3x3 conv gets ``padding = dilation`` so sizes are preserved.
    """
    dilation = 1
    for layer, dilate in zip((net.layer2, net.layer3, net.layer4), replace_stride_with_dilation):
        previous = dilation
        if dilate:
            dilation *= 2
            for conv in layer[0].modules():
                if isinstance(conv, nn.Conv2d) and conv.stride == (2, 2):
                    conv.stride = (1, 1)
        for index, block in enumerate(layer):
            rate = previous if index == 0 else dilation
            for conv in block.modules():
                if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                    conv.dilation = (rate, rate)
                    conv.padding = (rate, rate)


def _stride_to_dilation(output_stride: int) -> tuple[bool, bool, bool]:
    """``replace_stride_with_dilation`` flags of layer2..4 for an output stride."""
    return {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}[output_stride]


def _block_out_channels(block: nn.Module) -> int:
    """Output channels of a torchvision ``Bottleneck`` (conv3) or ``BasicBlock`` (conv2)."""
    return int(getattr(block, "conv3", block.conv2).out_channels)


class ResNetBackbone(Backbone):
    """A torchvision ResNet without pooling and ``fc``; single map = ``layer4``, pyramid =
    ``layer1..layer4``.

    ``output_stride`` 8 / 16 dilates layer3+4 / layer4 (DeepLab). ResNet-18's
    ``BasicBlock`` has no dilation in torchvision, so it is dilated by :func:`dilate_resnet`.
    Any input size works without padding (every strided layer gives ``ceil(H/2)``).
    """

    drop_prefixes = ("fc.",)

    def __init__(self, arch: str, output_stride: int = 8) -> None:
        import torchvision

        check_output_stride(output_stride)
        flags = _stride_to_dilation(output_stride)
        factory = getattr(torchvision.models, arch)
        if arch in _BASIC_BLOCK_RESNETS:
            net = factory(weights=None)
            dilate_resnet(net, flags)
        else:
            net = factory(weights=None, replace_stride_with_dilation=list(flags))
        out_channels = net.fc.in_features
        channels = [_block_out_channels(layer[-1]) for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]
        del net.fc, net.avgpool
        super().__init__(net, out_channels, output_stride, channels, dilated_strides((4, 8, 16, 32), output_stride))
        self.name = arch

    def fetch_hub_state_dict(self) -> StateDict:
        return torchvision_hub_state_dict(self.name)

    def _pyramid(self, images: Tensor) -> list[Tensor]:
        net = self.body
        x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        levels = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            x = layer(x)
            levels.append(x)
        return levels


register_backbone_family(ResNetBackbone, {
    "resnet18": "torchvision ResNet-18",
    "resnet50": "torchvision ResNet-50",
    "resnet101": "torchvision ResNet-101",
})
