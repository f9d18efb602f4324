"""HRNetV2-W48 fused as in openseg (the backbone of ContrastiveSeg's and ProtoSeg's models).

openseg's ``HighResolutionNet`` and timm's ``hrnet_w48`` have the same 1,830 parameters
(names and shapes), but two parameter-free steps differ:

* branch fusion: a lower-resolution branch is brought to a higher one by bilinear
  interpolation with ``align_corners=True`` to the target size in openseg, by
  ``nn.Upsample(scale_factor=2**k, mode="nearest")`` in timm;
* HRNetV2's concatenation of the four branches: bilinear with ``align_corners=True`` in
  openseg, ``align_corners=False`` in contraseg's :class:`~.hrnet.HRNetBackbone`.

:class:`OpensegHRNetBackbone` is timm's network with its fusion upsamplers switched to
bilinear ``align_corners=True`` and openseg's concatenation: with the same weights its
features equal the released backbone's exactly whenever both sides of the input are
multiples of 32 (then ``scale_factor`` upsampling and resizing to the target size are the
same map; measured: max abs difference 0 at 128 x 256). At other sizes it pads to a
multiple of 32 and crops back, like every contraseg HRNet (``hrnet_fusion="pad"``), unless
built with ``hrnet_fusion="interpolate"`` (:meth:`~.hrnet.HRNetBackbone.set_fusion`): then it
interpolates between unequal branch sizes as openseg does, and equals the released backbone
at any size (measured: max abs difference 0 at 100 x 140; docs/checkpoints.md). Converted
openseg / ProtoSeg checkpoints use that. Same parameters, same ImageNet weights as ``hrnet_w48``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hrnet import HRNetBackbone
from .registry import register_backbone
from .weights import StateDict, timm_hub_state_dict


class OpensegHRNetBackbone(HRNetBackbone):
    """timm HRNet with openseg's bilinear (``align_corners=True``) fusion and concatenation.

    Args:
        arch: the timm HRNet (``"hrnet_w48"``).
        output_stride: accepted and checked; HRNet always runs at stride 4.
    """

    def __init__(self, arch: str = "hrnet_w48", output_stride: int = 8) -> None:
        super().__init__(arch, output_stride)
        self.arch = arch
        self.name = f"{arch}_openseg"
        for module in self.body.modules():
            if isinstance(module, nn.Upsample):
                module.mode, module.align_corners = "bilinear", True

    def fetch_hub_state_dict(self) -> StateDict:
        return timm_hub_state_dict(self.arch)

    def merge(self, pyramid: list[Tensor]) -> Tensor:
        """``[B x C_l x h_l x w_l] -> B x (C1+C2+C3+C4) x h_1 x w_1`` (``align_corners=True``)."""
        size = pyramid[0].shape[-2:]
        return torch.cat(
            [pyramid[0]] + [F.interpolate(b, size=size, mode="bilinear", align_corners=True) for b in pyramid[1:]],
            dim=1,
        )


@register_backbone("hrnet_w48_openseg", "HRNetV2-W48 fused as openseg, stride 4")
def hrnet_w48_openseg(output_stride: int = 8) -> OpensegHRNetBackbone:
    return OpensegHRNetBackbone("hrnet_w48", output_stride)
