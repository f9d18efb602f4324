"""timm HRNets as HRNetV2 backbones (``hrnet_w18_small``, ``hrnet_w18``, ``hrnet_w48``):
pyramid = the four branches (strides 4-32), single map = their concatenation at stride 4
(240 / 270 / 720 channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .backbone_base import Backbone, check_output_stride
from .registry import register_backbone_family
from .weights import StateDict, timm_hub_state_dict


class HRNetBackbone(Backbone):
    """timm HRNet as HRNetV2 for segmentation: the four branches (the pyramid, strides
    4-32), and as single map the lower-resolution branches bilinearly upsampled to the
    stride-4 grid and concatenated.

    timm's branch fusion adds maps of different sizes unless both sides are multiples of
    32, so ``size_divisor = 32``. The output stride is always 4; the ``output_stride``
    argument is accepted for a uniform factory signature and checked, but does not
    change the network.
    """

    drop_prefixes = ("classifier.", "incre_modules.", "downsamp_modules.", "final_layer.")
    size_divisor = 32

    def __init__(self, arch: str, output_stride: int = 8) -> None:
        import timm

        check_output_stride(output_stride)
        body = timm.create_model(
            arch, pretrained=False, features_only=True, feature_location="", out_indices=(1, 2, 3, 4)
        )
        channels = body.feature_info.channels()
        super().__init__(body, sum(channels), 4, channels, body.feature_info.reduction())
        self.name = arch

    def fetch_hub_state_dict(self) -> StateDict:
        return timm_hub_state_dict(self.name)

    def _pyramid(self, images: Tensor) -> list[Tensor]:
        return list(self.body(images))

    def merge(self, pyramid: list[Tensor]) -> Tensor:
        """``[B x C_l x h_l x w_l] -> B x (C1+C2+C3+C4) x h_1 x w_1``."""
        size = pyramid[0].shape[-2:]
        upsampled = [pyramid[0]] + [
            F.interpolate(b, size=size, mode="bilinear", align_corners=False) for b in pyramid[1:]
        ]
        return torch.cat(upsampled, dim=1)


register_backbone_family(HRNetBackbone, {
    "hrnet_w18_small": "timm HRNetV2-W18-Small, stride 4",
    "hrnet_w18": "timm HRNetV2-W18, stride 4",
    "hrnet_w48": "timm HRNetV2-W48, stride 4",
})
