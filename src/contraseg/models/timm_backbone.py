"""Any timm model with ``features_only`` as a contraseg backbone (``backbone: timm:NAME``).

The pyramid is timm's feature levels at stride 4 and coarser (a stride-2 stem level, as
ResNets and ConvNeXt-free CNNs have, is dropped); channels and strides are read from
timm's ``feature_info``. Channels-last outputs (Swin's ``NHWC``) are permuted to
``B x C x h x w``. The input is zero-padded to a multiple of the coarsest stride and the
maps are cropped back to ``ceil(H / stride)`` (see :mod:`contraseg.models.backbone_base`),
so models that need divisible sides (Swin: patch size 4 and its stage merges) take any
size.

timm's ``features_only`` wrapper renames flattened sequential modules (``stages.0`` ->
``stages_0``, ``layers.0`` -> ``layers_0``); a local ImageNet checkpoint of the timm
classifier is renamed the same way before it is loaded.

Three named backbones are timm models read this way: ``mobilenet_v3_pyramid`` (all five
MobileNetV3 levels, strides 2-32), ``swin_t`` and ``convnext_t``.
"""

from __future__ import annotations

import logging

from torch import Tensor

from .backbone_base import Backbone
from .registry import register_backbone
from .weights import LoadReport, PretrainedSpec, StateDict, load_pretrained, strip_wrapper_prefixes, timm_hub_state_dict

logger = logging.getLogger(__name__)

MIN_STRIDE = 4  # by default, finer levels (a stride-2 stem) are left out of the pyramid


def _create(model_name: str, **kwargs):
    import timm

    return timm.create_model(model_name, pretrained=False, features_only=True, **kwargs)


class TimmBackbone(Backbone):
    """A timm ``features_only`` model; single map = its coarsest level.

    Args:
        model_name: a timm model name (``timm.list_models()``).
        output_stride: 8, 16 or 32; passed to timm only when ``pass_output_stride`` and the
            model's constructor accepts it (CNNs), otherwise the model keeps its native
            stride (a warning says so for ``pass_output_stride``).
        name: the registry name (``"swin_t"``, ``"timm:convnext_atto"``).
        pass_output_stride: try to build the model dilated to ``output_stride``.
        min_stride: the finest level kept in the pyramid (default 4; 2 keeps the stem's
            stride-2 level, which small inputs need for thin objects).
        **timm_kwargs: extra ``timm.create_model`` arguments (Swin: ``strict_img_size=False``;
            tests: narrower widths).
    """

    drop_prefixes = ("head.", "fc.", "classifier.", "conv_head.", "norm.", "global_pool.", "pre_logits.")

    def __init__(self, model_name: str, output_stride: int = 32, *, name: str | None = None,
                 pass_output_stride: bool = False, min_stride: int = MIN_STRIDE, **timm_kwargs) -> None:
        body = None
        if pass_output_stride and output_stride != 32:
            try:
                body = _create(model_name, output_stride=output_stride, **timm_kwargs)
            except TypeError as err:
                if "output_stride" not in str(err):
                    raise
                logger.warning("timm model %s does not take output_stride; built at its native stride", model_name)
        if body is None:
            body = _create(model_name, **timm_kwargs)
        info = body.feature_info
        reductions = [int(r) for r in info.reduction()]
        keep = [i for i, r in enumerate(reductions) if r >= min_stride] or list(range(len(reductions)))
        channels = [int(info.channels()[i]) for i in keep]
        strides = [reductions[i] for i in keep]
        super().__init__(body, channels[-1], strides[-1], channels, strides)
        self.name = name or f"timm:{model_name}"
        self.timm_name = model_name
        self.levels = tuple(keep)
        self.size_divisor = max(strides)
        fmt = getattr(body, "output_fmt", "NCHW")
        self.channels_last = str(getattr(fmt, "value", fmt)) == "NHWC"

    def _pyramid(self, images: Tensor) -> list[Tensor]:
        outputs = self.body(images)
        levels = [outputs[i] for i in self.levels]
        if self.channels_last:
            levels = [f.permute(0, 3, 1, 2) for f in levels]
        return levels

    def to_feature_keys(self, state: StateDict) -> StateDict:
        """Rename a timm classifier's keys (``stages.0.x``) to the ``features_only`` model's
        (``stages_0.x``) where the model has such a flattened child."""
        state = strip_wrapper_prefixes(state, self.body.state_dict().keys())
        children = {child for child, _ in self.body.named_children()}
        renamed = {}
        for key, value in state.items():
            parts = key.split(".")
            if parts[0] not in children and len(parts) > 1 and f"{parts[0]}_{parts[1]}" in children:
                key = ".".join([f"{parts[0]}_{parts[1]}", *parts[2:]])
            renamed[key] = value
        return renamed

    def fetch_hub_state_dict(self) -> StateDict:
        return timm_hub_state_dict(self.timm_name)

    def load_pretrained(self, pretrained: PretrainedSpec) -> LoadReport | None:
        """Load ``None`` / a local timm checkpoint / ``"hub"`` into ``self.body`` (keys renamed)."""
        return load_pretrained(self.body, pretrained, arch=self.name, fetch_hub=self.fetch_hub_state_dict,
                               drop_prefixes=self.drop_prefixes, transform=self.to_feature_keys)


@register_backbone("mobilenet_v3_pyramid",
                   "timm MobileNetV3-Large 1.0, all five levels (strides 2-32) for FPN / SegFormer heads")
def mobilenet_v3_pyramid(output_stride: int = 8) -> TimmBackbone:
    return TimmBackbone("mobilenetv3_large_100", output_stride, name="mobilenet_v3_pyramid", min_stride=2)


@register_backbone("swin_t", "timm Swin-T (patch 4, window 7)")
def swin_t(output_stride: int = 8) -> TimmBackbone:
    return TimmBackbone("swin_tiny_patch4_window7_224", output_stride, name="swin_t", strict_img_size=False)


@register_backbone("convnext_t", "timm ConvNeXt-T")
def convnext_t(output_stride: int = 8) -> TimmBackbone:
    return TimmBackbone("convnext_tiny", output_stride, name="convnext_t")
