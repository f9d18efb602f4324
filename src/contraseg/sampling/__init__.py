"""Anchor samplers (miners) and memory banks for pixel-to-pixel contrast."""

from .._lazy import lazy_exports

_EXPORTS = {
    "HardAnchorSampler": "anchor_sampler",
    "LoopAnchorSampler": "loop_anchor_sampler",
    "AnchorSamples": "anchor_samples",
    "AnchorSampler": "sampler_base",
    "PixelMemoryBank": "memory_bank",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
