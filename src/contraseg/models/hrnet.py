"""timm HRNets as HRNetV2 backbones (``hrnet_w18_small``, ``hrnet_w18``, ``hrnet_w48``):
pyramid = the four branches (strides 4-32), single map = their concatenation at stride 4
(240 / 270 / 720 channels).

Branch fusion at any input size (``fusion``, the ``model.hrnet_fusion`` config key):

* ``"pad"`` (default): timm's fusion upsamples a lower-resolution branch by ``2**k``, which
  only fits the target branch when both sides are multiples of 32, so the input is
  zero-padded to a multiple of 32 and every level is cropped back to ``ceil(H/s)``;
* ``"interpolate"``: no padding; a lower-resolution branch (after its 1x1 conv + BN) is
  interpolated to the target branch's exact size, as the released openseg HRNet does
  (ContrastiveSeg@287e5d3 / ProtoSeg@1c4a778
  lib/models/backbones/hrnet/hrnet_backbone.py:275-283). Branch sizes are then the
  ``ceil(./2)`` chain of the strided convs, i.e. ``ceil(H/s) x ceil(W/s)``.

Both are the same map when the sides are multiples of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from timm.models.hrnet import HighResolutionModule

from .backbone_base import Backbone, check_output_stride
from .registry import register_backbone_family
from .weights import StateDict, timm_hub_state_dict

HRNET_FUSIONS = ("pad", "interpolate")


class SizedFusionModule(HighResolutionModule):
    """timm's ``HighResolutionModule`` whose fusion resizes each lower-resolution branch to
    the target branch's size (``F.interpolate(size=...)`` with the fuse ``Upsample``'s own
    mode and ``align_corners``) instead of scaling it by ``2**k``. Same parameters; only
    ``forward`` differs. Installed by :meth:`HRNetBackbone.set_fusion` (class swap, so the
    state dict and ``copy.deepcopy`` are unaffected)."""

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        x = [branch(t) for branch, t in zip(self.branches, x)]
        fused = []
        for i, fuse_outer in enumerate(self.fuse_layers):
            y = None
            for j, f in enumerate(fuse_outer):
                if j > i:  # Sequential(1x1 conv, BN, Upsample): resize to branch i instead
                    up = f[-1]
                    z = F.interpolate(f[:-1](x[j]), size=x[i].shape[-2:], mode=up.mode, align_corners=up.align_corners)
                else:
                    z = f(x[j])
                y = z if y is None else y + z
            fused.append(self.fuse_act(y))
        return fused


class HRNetBackbone(Backbone):
    """timm HRNet as HRNetV2 for segmentation: the four branches (the pyramid, strides
    4-32), and as single map the lower-resolution branches bilinearly upsampled to the
    stride-4 grid and concatenated.

    ``fusion`` (see the module docstring): ``"pad"`` pads the input to a multiple of 32
    (``size_divisor = 32``), ``"interpolate"`` resizes branches to each other's sizes
    (``size_divisor = 1``). The output stride is always 4; the ``output_stride`` argument
    is accepted for a uniform factory signature and checked, but does not change the
    network.
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
        self.fusion = "pad"

    def set_fusion(self, fusion: str) -> None:
        """Switch the branch fusion to ``"pad"`` or ``"interpolate"`` (in place; no
        parameter changes). ValueError for another value."""
        if fusion not in HRNET_FUSIONS:
            raise ValueError(f"unknown hrnet_fusion {fusion!r}; choose one of {', '.join(HRNET_FUSIONS)}")
        cls = SizedFusionModule if fusion == "interpolate" else HighResolutionModule
        for module in self.body.modules():
            if isinstance(module, HighResolutionModule):
                module.__class__ = cls
        self.fusion = fusion
        self.size_divisor = 32 if fusion == "pad" else 1

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
