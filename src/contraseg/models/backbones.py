"""Backbones: torchvision ResNets, timm HRNetV2 / MobileNetV3 / Swin / ConvNeXt / any timm
model, and the SegFormer Mix Transformer, behind one registry.

Every backbone gives two views of an image batch ``B x 3 x H x W``:

* ``forward(images) -> B x out_channels x ceil(H/os) x ceil(W/os)``: one feature map for
  the single-map heads (DeepLab, FCN, MLP, OCR); ``os = output_stride``;
* ``forward_pyramid(images) -> [B x C_l x ceil(H/s_l) x ceil(W/s_l)]``: the feature
  pyramid (``pyramid_channels``, ``pyramid_strides``, finest first) for the multi-level
  heads (FPN, SegFormer all-MLP).

**Any input size.** A backbone whose network needs its sides to be multiples of some
number (HRNet's branch fusion adds maps of different sizes otherwise; Swin's patch
embedding and windows; MiT's spatial reduction) has ``size_divisor`` > 1: the images are
zero-padded at the bottom and right to a multiple of it, and every feature map is cropped
back to ``ceil(H / stride) x ceil(W / stride)``, the size a "same"-padded strided
convolution gives (and that ResNet and MobileNetV3 give natively). Zero is the dataset
mean after normalisation.

The library model lives in ``backbone.body``, so its ``state_dict`` keys are torchvision's
/ timm's own and ImageNet checkpoints load into it (:mod:`contraseg.models.weights`).

====================  ==============================  ===========  ===============================
name                  library model                   single map   pyramid channels (strides 4-32)
====================  ==============================  ===========  ===============================
``resnet18``          torchvision resnet18            os 8/16/32   64, 128, 256, 512
``resnet50``          torchvision resnet50            os 8/16/32   256, 512, 1024, 2048
``resnet101``         torchvision resnet101           os 8/16/32   256, 512, 1024, 2048
``hrnet_w18_small``   timm hrnet_w18_small            4: 240       16, 32, 64, 128
``hrnet_w18``         timm hrnet_w18                  4: 270       18, 36, 72, 144
``hrnet_w48``         timm hrnet_w48                  4: 720       48, 96, 192, 384
``mobilenet_v3``      timm mobilenetv3_large_100      os 8/16/32   24, 40, 112, 960
``mobilenet_v3_       timm mobilenetv3_large_100      32: 960      16 (stride 2), 24, 40, 112, 960
pyramid``
``swin_t``            timm swin_tiny_patch4_window7   32: 768      96, 192, 384, 768
``convnext_t``        timm convnext_tiny              32: 768      96, 192, 384, 768
``mit_b0``            :mod:`.mit` (SegFormer MiT-B0)  32: 256      32, 64, 160, 256
``mit_b1``            :mod:`.mit` (SegFormer MiT-B1)  32: 512      64, 128, 320, 512
``mit_b2``            :mod:`.mit` (SegFormer MiT-B2)  32: 512      64, 128, 320, 512
``timm:NAME``         any timm model with             last level   read from timm's feature_info
                      ``features_only``
====================  ==============================  ===========  ===============================

ResNet and MobileNetV3 dilate their last stages for output stride 8 / 16 (the pyramid's
strides then stop at 8 / 16). HRNet's single map is HRNetV2's: the four branches
upsampled to stride 4 and concatenated. The transformer / ConvNeXt entries ignore
``output_stride`` (their single map is the stride-32 last stage; use an FPN or SegFormer
head with them); ``timm:NAME`` passes ``output_stride`` to timm when the model accepts it.

Models are always built without weights; nothing is downloaded unless
``pretrained="hub"`` is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
TIMM_PREFIX = "timm:"
# torchvision ResNets built from BasicBlock, which rejects replace_stride_with_dilation.
_BASIC_BLOCK_RESNETS = ("resnet18", "resnet34")


def pad_to_multiple(images: Tensor, divisor: int) -> Tensor:
    """Zero-pad ``B x C x H x W`` at the bottom and right so both sides are multiples of
    ``divisor`` (returned unchanged when they already are, or ``divisor`` is 1)."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % divisor, (-width) % divisor
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h))


def crop_to_grid(features: Tensor, height: int, width: int, stride: int) -> Tensor:
    """``features[..., :ceil(height/stride), :ceil(width/stride)]``.

    Raises:
        RuntimeError: the map is smaller than that grid (a backbone lost a row or column).
    """
    rows, cols = math.ceil(height / stride), math.ceil(width / stride)
    if features.shape[-2] < rows or features.shape[-1] < cols:
        raise RuntimeError(
            f"feature map {tuple(features.shape[-2:])} at stride {stride} is smaller than the "
            f"{rows} x {cols} grid of a {height} x {width} input"
        )
    return features[..., :rows, :cols]


class Backbone(nn.Module):
    """Base class (see the module docstring for ``forward`` / ``forward_pyramid``).

    Subclasses implement ``_pyramid(padded images) -> list of maps`` and may override
    ``merge(pyramid) -> single map`` (default: the last level).

    Attributes:
        name: registry name.
        body: the torchvision / timm model; pretrained weights load into it.
        out_channels: channels of the single map.
        output_stride: input size / single-map size.
        pyramid_channels: channels of each pyramid level, finest first.
        pyramid_strides: stride of each pyramid level, finest first.
        size_divisor: inputs are zero-padded to a multiple of this (1: no padding).
    """

    name: str = ""
    drop_prefixes: tuple[str, ...] = ()
    size_divisor: int = 1

    def __init__(
        self,
        body: nn.Module,
        out_channels: int,
        output_stride: int,
        pyramid_channels: Sequence[int],
        pyramid_strides: Sequence[int],
    ) -> None:
        super().__init__()
        self.body = body
        self.out_channels = int(out_channels)
        self.output_stride = int(output_stride)
        self.pyramid_channels = tuple(int(c) for c in pyramid_channels)
        self.pyramid_strides = tuple(int(s) for s in pyramid_strides)

    def _pyramid(self, images: Tensor) -> list[Tensor]:
        """The network's pyramid on ``images`` whose sides are multiples of ``size_divisor``."""
        raise NotImplementedError

    def merge(self, pyramid: list[Tensor]) -> Tensor:
        """The single map from the pyramid (default: its last, coarsest level)."""
        return pyramid[-1]

    def forward_pyramid(self, images: Tensor) -> list[Tensor]:
        """``B x 3 x H x W -> [B x C_l x ceil(H/s_l) x ceil(W/s_l)]`` for each level l."""
        height, width = images.shape[-2:]
        levels = self._pyramid(pad_to_multiple(images, self.size_divisor))
        return [crop_to_grid(f, height, width, s) for f, s in zip(levels, self.pyramid_strides)]

    def forward(self, images: Tensor) -> Tensor:
        """``B x 3 x H x W -> B x out_channels x ceil(H/os) x ceil(W/os)``."""
        return self.merge(self.forward_pyramid(images))

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

        _check_output_stride(output_stride)
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

        _check_output_stride(output_stride)
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


class MobileNetV3Backbone(Backbone):
    """timm ``mobilenetv3_large_100`` (5.5 M parameters): single map = the last feature
    map (960 channels), pyramid = timm's feature levels 1-4.

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
            out_indices=(1, 2, 3, 4),
            output_stride=output_stride,
        )
        info = body.feature_info
        super().__init__(body, info.channels()[-1], output_stride, info.channels(), info.reduction())
        self.name = "mobilenet_v3"

    def fetch_hub_state_dict(self) -> StateDict:
        return timm_hub_state_dict(self.timm_name)

    def _pyramid(self, images: Tensor) -> list[Tensor]:
        return list(self.body(images))


def _openseg_hrnet(arch: str, output_stride: int = 8) -> Backbone:
    from .hrnet_openseg import OpensegHRNetBackbone

    return OpensegHRNetBackbone(arch, output_stride)


def _deeplabv2_resnet(output_stride: int = 8) -> Backbone:
    from .deeplabv2_resnet import DeepLabV2ResNetBackbone

    return DeepLabV2ResNetBackbone(output_stride)


def _mit(variant: str, output_stride: int = 8) -> Backbone:
    from .mit import MiTBackbone

    return MiTBackbone(variant, output_stride)


def _timm(model_name: str, registry_name: str, output_stride: int = 8, **kwargs) -> Backbone:
    from .timm_backbone import TimmBackbone

    return TimmBackbone(model_name, output_stride, name=registry_name, **kwargs)


@dataclass(frozen=True)
class _BackboneEntry:
    build: Callable[[int], Backbone]
    description: str


_BACKBONES: dict[str, _BackboneEntry] = {
    "resnet18": _BackboneEntry(partial(ResNetBackbone, "resnet18"), "torchvision ResNet-18"),
    "resnet50": _BackboneEntry(partial(ResNetBackbone, "resnet50"), "torchvision ResNet-50"),
    "resnet101": _BackboneEntry(partial(ResNetBackbone, "resnet101"), "torchvision ResNet-101"),
    "resnet101_deeplabv2": _BackboneEntry(
        lambda output_stride=8: _deeplabv2_resnet(output_stride), "ResNet-101 as in DeepLab-v2 / AdaptSegNet (os 8)"
    ),
    "hrnet_w18_small": _BackboneEntry(partial(HRNetBackbone, "hrnet_w18_small"), "timm HRNetV2-W18-Small, stride 4"),
    "hrnet_w18": _BackboneEntry(partial(HRNetBackbone, "hrnet_w18"), "timm HRNetV2-W18, stride 4"),
    "hrnet_w48": _BackboneEntry(partial(HRNetBackbone, "hrnet_w48"), "timm HRNetV2-W48, stride 4"),
    "hrnet_w48_openseg": _BackboneEntry(
        lambda output_stride=8: _openseg_hrnet("hrnet_w48", output_stride), "HRNetV2-W48 fused as openseg, stride 4"
    ),
    "mobilenet_v3": _BackboneEntry(MobileNetV3Backbone, "timm MobileNetV3-Large 1.0"),
    "mobilenet_v3_pyramid": _BackboneEntry(
        partial(_timm, "mobilenetv3_large_100", "mobilenet_v3_pyramid", min_stride=2),
        "timm MobileNetV3-Large 1.0, all five levels (strides 2-32) for FPN / SegFormer heads",
    ),
    "swin_t": _BackboneEntry(
        partial(_timm, "swin_tiny_patch4_window7_224", "swin_t", strict_img_size=False), "timm Swin-T (patch 4, window 7)"
    ),
    "convnext_t": _BackboneEntry(partial(_timm, "convnext_tiny", "convnext_t"), "timm ConvNeXt-T"),
    "mit_b0": _BackboneEntry(partial(_mit, "mit_b0"), "SegFormer Mix Transformer B0"),
    "mit_b1": _BackboneEntry(partial(_mit, "mit_b1"), "SegFormer Mix Transformer B1"),
    "mit_b2": _BackboneEntry(partial(_mit, "mit_b2"), "SegFormer Mix Transformer B2"),
}


def available_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone` (besides ``"timm:NAME"`` for any timm model)."""
    return list(_BACKBONES)


def backbone_name_error(name: object) -> str | None:
    """None when ``name`` is a registered backbone or ``timm:NAME`` of a timm model, else the
    one-line reason."""
    if isinstance(name, str) and name in _BACKBONES:
        return None
    if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        import timm

        model = name[len(TIMM_PREFIX) :]
        if model and timm.is_model(model):
            return None
        return f"unknown timm model {model!r} in backbone {name!r} (timm.list_models() lists the names)"
    return f"unknown backbone {name!r}; choose one of {', '.join(_BACKBONES)} or timm:NAME"


def build_backbone(name: str, output_stride: int = 8, pretrained: PretrainedSpec = None) -> Backbone:
    """Build backbone ``name`` without downloading anything, then load ``pretrained``.

    Args:
        name: one of :func:`available_backbones`, or ``"timm:NAME"`` for any timm model
            that supports ``features_only``.
        output_stride: 8, 16 or 32 (HRNet is always 4; the transformer / ConvNeXt entries
            ignore it).
        pretrained: None, a local state_dict path, or ``"hub"``
            (see :mod:`contraseg.models.weights`).

    Raises:
        ValueError: unknown name or output stride.
    """
    error = backbone_name_error(name)
    if error is not None:
        raise ValueError(error)
    if name.startswith(TIMM_PREFIX):
        _check_output_stride(output_stride)
        backbone = _timm(name[len(TIMM_PREFIX) :], name, output_stride, pass_output_stride=True)
    else:
        backbone = _BACKBONES[name].build(output_stride)
    backbone.load_pretrained(pretrained)
    return backbone
