"""Backbones by name: torchvision ResNets, timm HRNetV2 / MobileNetV3 / Swin / ConvNeXt / any
timm model, and the SegFormer Mix Transformer.

This module imports every built-in backbone file, each of which registers its names with
:func:`~.registry.register_backbone`, and builds them by name. The contract every backbone
keeps (a single map, a pyramid, any input size) is in :mod:`.backbone_base`.

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
Three released layouts are registered as well: ``resnet101_deeplabv2`` (AdaptSegNet / FDA),
``resnet101_proac`` (ProAC's UDA DeepLab) and ``hrnet_w48_openseg``.

Where each name is registered: :mod:`.resnet` (``resnet*``), :mod:`.deeplabv2_resnet`,
:mod:`.proac_resnet`, :mod:`.hrnet` (``hrnet_w*``), :mod:`.hrnet_openseg`, :mod:`.mobilenet` (``mobilenet_v3``),
:mod:`.timm_backbone` (``mobilenet_v3_pyramid``, ``swin_t``, ``convnext_t``, ``timm:NAME``),
:mod:`.mit` (``mit_b*``).

Models are always built without weights; nothing is downloaded unless
``pretrained="hub"`` is asked for.
"""

from __future__ import annotations

# The built-in backbones register themselves on import, in this order (the listing order).
from . import resnet, deeplabv2_resnet, proac_resnet, hrnet, hrnet_openseg, mobilenet, timm_backbone, mit  # noqa: F401
from .backbone_base import Backbone, check_output_stride
from .registry import backbone_entry, backbone_names, register_backbone, unknown_name  # noqa: F401
from .timm_backbone import TimmBackbone
from .weights import PretrainedSpec

TIMM_PREFIX = "timm:"
# register_backbone is re-exported (contraseg.models.register_backbone) so that importing it
# registers the built-ins first.


def available_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone` (besides ``"timm:NAME"`` for any timm model)."""
    return backbone_names()


def backbone_name_error(name: object) -> str | None:
    """None when ``name`` is a registered backbone or ``timm:NAME`` of a timm model, else the
    one-line reason."""
    if isinstance(name, str) and name in backbone_names():
        return None
    if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        import timm

        model = name[len(TIMM_PREFIX) :]
        if model and timm.is_model(model):
            return None
        return f"unknown timm model {model!r} in backbone {name!r} (timm.list_models() lists the names)"
    return unknown_name("backbone", name, backbone_names()) + " or timm:NAME"


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
        check_output_stride(output_stride)
        backbone = TimmBackbone(name[len(TIMM_PREFIX) :], output_stride, name=name, pass_output_stride=True)
    else:
        backbone = backbone_entry(name).build(output_stride)
    backbone.load_pretrained(pretrained)
    return backbone
