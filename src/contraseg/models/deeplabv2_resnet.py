"""ResNet-101 laid out as in DeepLab-v2 and the UDA models built on it (AdaptSegNet,
CAG-UDA, ProDA, ProAC, WDASS's baselines): the backbone of their released checkpoints.

It has exactly torchvision's parameters (same names and shapes: ``conv1``, ``bn1``,
``layer1..4`` with ``downsample.0/1``), so it is torchvision's ``resnet101`` at output
stride 8 with three parameter-free changes, each taken from the released DeepLab-v2
``ResNet`` / ``Bottleneck``:

1. the stride of ``layer2``'s first block sits on its 1x1 ``conv1`` (Caffe ResNet, "v1"),
   not on the 3x3 ``conv2`` (torchvision, "v1.5");
2. the stem's 3x3 max-pool uses ``ceil_mode=True``;
3. every block of ``layer3`` / ``layer4`` is dilated 2 / 4, the first block included
   (torchvision keeps the first block of a dilated layer at the previous rate).

Like every contraseg backbone, the output grid is ``ceil(H/8) x ceil(W/8)``: the extra
row / column that the ceil-mode pool adds for even sizes (65 x 129 for 512 x 1024 in the
released network) is cropped, so the converted model differs from the released one in
that last row / column of its logit grid (and so in the geometry of the final upsampling).
"""

from __future__ import annotations

from .registry import register_backbone
from .resnet import ResNetBackbone


@register_backbone("resnet101_deeplabv2", "ResNet-101 as in DeepLab-v2 / AdaptSegNet (os 8)")
class DeepLabV2ResNetBackbone(ResNetBackbone):
    """DeepLab-v2's ResNet-101 (output stride 8 only); see the module docstring.

    Args:
        output_stride: must be 8 (the released layout).
    """

    def __init__(self, output_stride: int = 8) -> None:
        if output_stride != 8:
            raise ValueError(f"resnet101_deeplabv2 has output stride 8 only, got output_stride={output_stride!r}")
        super().__init__("resnet101", 8)
        net = self.body
        net.maxpool.ceil_mode = True
        first = net.layer2[0]
        first.conv1.stride, first.conv2.stride = (2, 2), (1, 1)
        for layer, rate in ((net.layer3, 2), (net.layer4, 4)):
            for block in layer:
                block.conv2.dilation, block.conv2.padding = (rate, rate), (rate, rate)
        self.name = "resnet101_deeplabv2"
