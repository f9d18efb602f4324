"""Contrastive and prototype losses for dense prediction, one method per module.

================================  ==========================================================================
``ProACLoss``                     prototype-anchor contrast with fixed prototypes (ProAC)
``PixelContrastLoss``             cross-image pixel-to-pixel contrast (ContrastiveSeg)
``PPCLoss``                       pixel-prototype contrast (ProtoSeg)
``PPDLoss``                       pixel-prototype distance (ProtoSeg)
``ImageLevelLoss``                image-level weak-label loss (WDASS)
``prototype_logits``              pixel-prototype logits of WDASS's prototype image loss (``--improto``)
``WDASSEdgeLoss``                 WDASS's edge loss on source images, as released
``PrototypeContrastLoss``         pixel-to-prototype softmax contrast (WDASS, prototype-softmax variant)
``WDASSContrastLoss``             WDASS prototype contrast as released: sampled anchors, cross + intra terms
``SampledPrototypeContrastLoss``  one term of it
================================  ==========================================================================
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "ProACLoss": "proac",
    "PixelContrastLoss": "pixel_contrast",
    "PPCLoss": "protoseg",
    "PPDLoss": "protoseg",
    "ImageLevelLoss": "wdass",
    "prototype_logits": "wdass",
    "WDASSEdgeLoss": "wdass_edge",
    "PrototypeContrastLoss": "wdass",
    "WDASSContrastLoss": "wdass_contrast",
    "WDASSSoftmaxContrastLoss": "wdass",
    "SampledPrototypeContrastLoss": "wdass_contrast",
    "PixelView": "wdass_contrast",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
