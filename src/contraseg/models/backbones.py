"""Backbones: torchvision ResNets, timm HRNetV2 and timm MobileNetV3, behind one registry.

Every backbone maps ``images B x 3 x H x W`` to its final feature map
``B x out_channels x H/os x W/os`` and exposes ``out_channels`` and ``output_stride``.
The library model lives in ``backbone.body``, so its ``state_dict`` keys are torchvision's
/ timm's own and ImageNet checkpoints load into it (:mod:`contraseg.models.weights`).

=================  ==========================  ===============  =====================
name               library model               output stride    out_channels
=================  ==========================  ===============  =====================
``resnet18``       torchvision resnet18        8, 16 or 32      512
``resnet50``       torchvision resnet50        8, 16 or 32      2048
``resnet101``      torchvision resnet101       8, 16 or 32      2048
``hrnet_w18``      timm hrnet_w18              4 (fixed)        270 (18+36+72+144)
``hrnet_w48``      timm hrnet_w48              4 (fixed)        720 (48+96+192+384)
``mobilenet_v3``   timm mobilenetv3_large_100  8, 16 or 32      960
=================  ==========================  ===============  =====================

Models are always built without weights; nothing is downloaded unless
``pretrained="hub"`` is asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .weights import (
    LoadReport,
    PretrainedSpec,
    StateDict,
    load_pretrained,
    timm_hub_state_dict,
    torchvision_hub_state_dict,
)

OUTPUT_STRIDES = (8, 16, 32)
# torchvision ResNets built from BasicBlock, which rejects replace_stride_with_dilation.
_BASIC_BLOCK_RESNETS = ("resnet18", "resnet34")


class Backbone(nn.Module):
    """Base class: ``forward(images B x 3 x H x W) -> B x out_channels x H/os x W/os``.

    Attributes:
        name: registry name.
        body: the torchvision / timm model; pretrained weights load into it.
        out_channels: channels of the returned feature map.
        output_stride: input size / feature size.
    """

    name: str = ""
    drop_prefixes: tuple[str, ...] = ()

    def __init__(self, body: nn.Module, out_channels: int, output_stride: int) -> None:
        super().__init__()
        self.body = body
        self.out_channels = int(out_channels)
        self.output_stride = int(output_stride)

    def fetch_hub_state_dict(self) -> StateDict:
        """Download the library's ImageNet weights for this backbone."""
        raise NotImplementedError(f"{type(self).__name__} has no hub weights")

    def load_pretrained(self, pretrained: PretrainedSpec) -> LoadReport | None:
        """Load ``None`` / a local state_dict path / ``"hub"`` into ``self.body``."""
        return load_pretrained(
            self.body,
            pretrained,
            arch=self.name,
            fetch_hub=self.fetch_hub_state_dict,
            drop_prefixes=self.drop_prefixes,
        )


def _check_output_stride(output_stride: int) -> None:
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")


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


class ResNetBackbone(Backbone):
    """A torchvision ResNet without pooling and ``fc``; returns the ``layer4`` output.

    ``output_stride`` 8 / 16 dilates layer3+4 / layer4 (DeepLab). ResNet-18's
    ``BasicBlock`` has no dilation in torchvision, so it is dilated by :func:`dilate_resnet`.
    """

    drop_prefixes = ("fc.",)

    def __init__(self, arch: str, output_stride: int = 8) -> None:
        import torchvision

        _check_output_stride(output_stride)
        flags = _stride_to_dilation(output_stride)
        factory = getattr(torchvision.models, arch)
        if arch in _BASIC_BLOCK_RESNETS:
            net = factory(weights=None)
            dilate_resnet(net, flags)
        else:
            net = factory(weights=None, replace_stride_with_dilation=list(flags))
        out_channels = net.fc.in_features
        del net.fc, net.avgpool
        super().__init__(net, out_channels, output_stride)
        self.name = arch

    def fetch_hub_state_dict(self) -> StateDict:
        return torchvision_hub_state_dict(self.name)

    def forward(self, images: Tensor) -> Tensor:
        """``B x 3 x H x W -> B x out_channels x H/os x W/os`` (``layer4`` output)."""
        net = self.body
        x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))


class HRNetBackbone(Backbone):
    """timm HRNet as HRNetV2 for segmentation: the four branches, the lower-resolution ones
    bilinearly upsampled to the 1/4 grid, concatenated along channels.

    The output stride is always 4; the ``output_stride`` argument is accepted for a
    uniform factory signature and checked, but does not change the network.
    """

    drop_prefixes = ("classifier.", "incre_modules.", "downsamp_modules.", "final_layer.")

    def __init__(self, arch: str, output_stride: int = 8) -> None:
        import timm

        _check_output_stride(output_stride)
        body = timm.create_model(
            arch, pretrained=False, features_only=True, feature_location="", out_indices=(1, 2, 3, 4)
        )
        super().__init__(body, sum(body.feature_info.channels()), 4)
        self.name = arch

    def fetch_hub_state_dict(self) -> StateDict:
        return timm_hub_state_dict(self.name)

    def forward(self, images: Tensor) -> Tensor:
        """``B x 3 x H x W -> B x (C1+C2+C3+C4) x H/4 x W/4``."""
        branches = self.body(images)
        size = branches[0].shape[-2:]
        upsampled = [branches[0]] + [
            F.interpolate(b, size=size, mode="bilinear", align_corners=False) for b in branches[1:]
        ]
        return torch.cat(upsampled, dim=1)


class MobileNetV3Backbone(Backbone):
    """timm ``mobilenetv3_large_100`` (5.5 M parameters), last feature map (960 channels).

    Native output stride 32; 16 and 8 dilate the last stages (timm's ``output_stride``).
    """

    drop_prefixes = ("classifier.", "conv_head.")
    timm_name = "mobilenetv3_large_100"

    def __init__(self, output_stride: int = 8) -> None:
        import timm

        _check_output_stride(output_stride)
        body = timm.create_model(
            self.timm_name,
            pretrained=False,
            features_only=True,
            out_indices=(4,),
            output_stride=output_stride,
        )
        super().__init__(body, body.feature_info.channels()[-1], output_stride)
        self.name = "mobilenet_v3"

    def fetch_hub_state_dict(self) -> StateDict:
        return timm_hub_state_dict(self.timm_name)

    def forward(self, images: Tensor) -> Tensor:
        """``B x 3 x H x W -> B x 960 x H/os x W/os``."""
        return self.body(images)[-1]


@dataclass(frozen=True)
class _BackboneEntry:
    build: Callable[[int], Backbone]
    description: str


_BACKBONES: dict[str, _BackboneEntry] = {
    "resnet18": _BackboneEntry(partial(ResNetBackbone, "resnet18"), "torchvision ResNet-18"),
    "resnet50": _BackboneEntry(partial(ResNetBackbone, "resnet50"), "torchvision ResNet-50"),
    "resnet101": _BackboneEntry(partial(ResNetBackbone, "resnet101"), "torchvision ResNet-101"),
    "hrnet_w18": _BackboneEntry(partial(HRNetBackbone, "hrnet_w18"), "timm HRNetV2-W18, stride 4"),
    "hrnet_w48": _BackboneEntry(partial(HRNetBackbone, "hrnet_w48"), "timm HRNetV2-W48, stride 4"),
    "mobilenet_v3": _BackboneEntry(MobileNetV3Backbone, "timm MobileNetV3-Large 1.0"),
}


def available_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone`."""
    return list(_BACKBONES)


def build_backbone(name: str, output_stride: int = 8, pretrained: PretrainedSpec = None) -> Backbone:
    """Build backbone ``name`` without downloading anything, then load ``pretrained``.

    Args:
        name: one of :func:`available_backbones`.
        output_stride: 8, 16 or 32 (HRNet is always 4).
        pretrained: None, a local state_dict path, or ``"hub"``
            (see :mod:`contraseg.models.weights`).

    Raises:
        ValueError: unknown name or output stride.
    """
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(_BACKBONES)}")
    backbone = _BACKBONES[name].build(output_stride)
    backbone.load_pretrained(pretrained)
    return backbone
