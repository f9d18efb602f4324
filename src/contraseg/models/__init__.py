"""Segmentation models: backbones (torchvision / timm / any ``timm:NAME`` / SegFormer MiT in
:mod:`.mit`), decode heads (DeepLab, FCN, MLP, OCR in :mod:`.ocr`, FPN and SegFormer's
all-MLP head for feature pyramids), projection and ``build_segmentor``. Every model takes
any input size (see :mod:`.backbone_base`). Backbones and heads are registered by name in
:mod:`.registry`; each plug-in file registers itself with a decorator.

========================  ===========================================================
``build_segmentor``       backbone + head + projection (+ prototype classifier) factory
``Segmentor``             ``model(images) -> {"logits", "embed"[, "prototype_logits", "aux_logits"]}``
``ProjectionHead``        1x1 conv / ContrastiveSeg conv-MLP, L2-normalised output
``build_backbone``        one backbone by name, optional pretrained weights
``build_head``            one decode head by name
``available_backbones``   names of the backbones
``available_heads``       names of the heads
``register_backbone``     decorator: a builder ``(output_stride) -> Backbone`` under a new name
``register_head``         class decorator: a ``SegHead`` subclass under a new name
``Backbone``              base class of backbones (:mod:`.backbone_base`)
``SegHead``               base class of heads; ``LinearClassifierHead``, ``HeadOptions`` (:mod:`.head_base`)
``load_pretrained``       load ``None`` / a local file / ``"hub"`` into a module
========================  ===========================================================

Example::

    model = build_segmentor("resnet50", "deeplabv3", num_classes=19, embed_dim=256)
    out = model(images)  # {"logits": B x 19 x H/8 x W/8, "embed": B x 256 x H/8 x W/8}
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "build_segmentor": "segmentor",
    "Segmentor": "segmentor",
    "ProjectionHead": "projection",
    "Backbone": "backbone_base",
    "build_backbone": "backbones",
    "available_backbones": "backbones",
    "SegHead": "head_base",
    "LinearClassifierHead": "head_base",
    "HeadOptions": "head_base",
    "build_head": "heads",
    "available_heads": "heads",
    "register_backbone": "backbones",
    "register_head": "heads",
    "load_pretrained": "weights",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
