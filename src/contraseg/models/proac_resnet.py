"""ResNet-101 as ProAC's UDA ``DeepLab`` builds it (``resnet101_proac``): the backbone of
``UDA/models/deeplab.py`` (ProAC_TCSVT2024@084d77d), what ``UDA/train.py`` trains.

Its parameters are torchvision's (names and shapes), and it computes torchvision's
``resnet101`` at output stride 8 ("v1.5", as contraseg's ``resnet101``): the stride of
``layer2``'s first block sits on the 3x3 ``conv2`` (UDA/models/backbone/resnet.py:14-15)
and the stem's max-pool has no ``ceil_mode`` (:70), as in torchvision. One
parameter-free change: **every** block of ``layer3`` / ``layer4`` is dilated 2 / 4, the first block included
  (:58-60 and :94 pass the layer's dilation to its first block), where torchvision's
  ``replace_stride_with_dilation`` keeps a dilated layer's first block at the previous
  rate (1 / 2).

Compare ``resnet101_deeplabv2`` (AdaptSegNet / FDA / ProDA, Caffe "v1"): stride on the
1x1 ``conv1`` and a ceil-mode pool. The grid is ``ceil(H/8) x ceil(W/8)`` for every input
size (each strided layer gives ``ceil(n/2)``), so nothing is padded or cropped.
"""

from __future__ import annotations

from .registry import register_backbone
from .resnet import ResNetBackbone


class ProACResNetBackbone(ResNetBackbone):
    """ProAC's ResNet-101 (output stride 8 only); see the module docstring.

    Args:
        output_stride: must be 8 (the released layout, ``output_stride=8`` at
            UDA/models/adaptation_model.py:36-42).
    """

    def __init__(self, output_stride: int = 8) -> None:
        if output_stride != 8:
            raise ValueError(f"resnet101_proac has output stride 8 only, got output_stride={output_stride!r}")
        super().__init__("resnet101", 8)
        net = self.body
        for layer, rate in ((net.layer3, 2), (net.layer4, 4)):
            conv = layer[0].conv2
            conv.dilation, conv.padding = (rate, rate), (rate, rate)
        self.name = "resnet101_proac"


@register_backbone("resnet101_proac", "ResNet-101 as in ProAC's UDA DeepLab (os 8)")
def resnet101_proac(output_stride: int = 8) -> ProACResNetBackbone:
    return ProACResNetBackbone(output_stride)
