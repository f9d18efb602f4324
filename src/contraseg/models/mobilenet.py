"""timm MobileNetV3-Large as a backbone (``mobilenet_v3``); the five-level variant for
pyramid heads, ``mobilenet_v3_pyramid``, is a :class:`~.timm_backbone.TimmBackbone`.
"""

from __future__ import annotations

from torch import Tensor

from .backbone_base import Backbone, check_output_stride
from .registry import register_backbone
from .weights import StateDict, timm_hub_state_dict


@register_backbone("mobilenet_v3", "timm MobileNetV3-Large 1.0")
class MobileNetV3Backbone(Backbone):
    """timm ``mobilenetv3_large_100`` (5.5 M parameters): single map = the last feature
    map (960 channels), pyramid = timm's feature levels 1-4.

    Native output stride 32; 16 and 8 dilate the last stages (timm's ``output_stride``).
    """

    drop_prefixes = ("classifier.", "conv_head.")
    timm_name = "mobilenetv3_large_100"

    def __init__(self, output_stride: int = 8) -> None:
        import timm

        check_output_stride(output_stride)
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
