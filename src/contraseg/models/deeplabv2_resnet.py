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

The output grid is the released one, **not** contraseg's usual ``ceil(H/8) x ceil(W/8)``:
nothing is cropped, so the ceil-mode pool's extra row / column stays,

    h = ceil((ceil((ceil(H/2) - 1) / 2) + 1) / 2)     (17 x 33 at 128 x 256, 65 x 129 at
                                                       512 x 1024, 13 x 18 at 100 x 140)

(AdaptSegNet / FDA ``model/deeplab.py:119`` ceil-mode pool, ProAC@084d77d
UDA/models/deeplabv2plus.py:224). Cropping it before the ASPP classifier would change more
than the last row / column: the dilated 3x3 taps (rates 6-24) of every cell within 24
cells of the border read the cropped row / column (measured: 92 of 512 logit cells differ
in argmax at 128 x 256). The logits are upsampled to the input by the engine as for any
model (``eval.align_corners: true`` as the released testers).
"""

from __future__ import annotations

from torch import Tensor

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

    def forward_pyramid(self, images: Tensor) -> list[Tensor]:
        """The levels at the released ceil-mode grid (uncropped; see the module docstring)."""
        return self._pyramid(images)
