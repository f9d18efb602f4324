"""Decode heads by name: DeepLabV2's ASPP classifier, DeepLabV3, FCN, a light MLP, OCR,
openseg's HRNet head, and for feature pyramids FPN, FPN's top-down pathway and SegFormer's
all-MLP head.

This module imports every built-in head file, each of which registers its class with
:func:`~.registry.register_head`, and builds them by name. The contract every head keeps
(``decode`` / ``classify``, ``multi_level``, the extras hooks) is in :mod:`.head_base`.

===============  ==========================  =================================================
name             file                        decoded width (``channels``) by default
===============  ==========================  =================================================
``deeplabv2``    :mod:`.deeplab_heads`       ``in_channels`` (no penultimate features)
``deeplabv3``    :mod:`.deeplab_heads`       256
``fcn``          :mod:`.conv_heads`          256
``mlp``          :mod:`.conv_heads`          256
``ocr``          :mod:`.ocr`                 512 (HRNet-OCR)
``fpn``          :mod:`.pyramid_heads`       256 (pyramid)
``fpn_topdown``  :mod:`.pyramid_heads`       256 (pyramid)
``segformer``    :mod:`.pyramid_heads`       256 (pyramid; the segmentor gives MiT's width)
``hrnet``        :mod:`.hrnet_head`          ``in_channels`` (as released)
===============  ==========================  =================================================
"""

from __future__ import annotations

from collections.abc import Sequence

# The built-in heads register themselves on import, in this order (the listing order).
from . import deeplab_heads, conv_heads, ocr, pyramid_heads, hrnet_head  # noqa: F401
from .head_base import HeadOptions, SegHead
from .registry import head_class, head_names, register_head  # noqa: F401

# register_head is re-exported (contraseg.models.register_head) so that importing it
# registers the built-ins first.


def available_heads() -> list[str]:
    """Names accepted by :func:`build_head`."""
    return head_names()


def is_multi_level_head(name: str) -> bool:
    """True when head ``name`` decodes the backbone's pyramid (its ``in_channels`` is then
    the list of ``pyramid_channels``).

    Raises:
        ValueError: unknown name.
    """
    return head_class(name).multi_level


def build_head(
    name: str,
    in_channels: int | Sequence[int],
    num_classes: int | None,
    output_stride: int = 8,
    channels: int | None = None,
    num_regions: int | None = None,
    embed_from: str = "backbone",
    aspp_rates: Sequence[int] | None = None,
) -> SegHead:
    """Build head ``name`` on ``in_channels`` backbone channels.

    Args:
        name: one of :func:`available_heads`.
        in_channels: backbone ``out_channels``; for a multi-level head
            (:func:`is_multi_level_head`: ``fpn`` / ``fpn_topdown`` / ``segformer``) the
            list of ``pyramid_channels``.
        num_classes: K, or None for no classifier.
        output_stride: backbone output stride (sets DeepLabV3's ASPP rates).
        channels: decoded width of deeplabv3 / fcn / mlp / fpn / segformer (default 256)
            and ocr (default 512, as HRNet-OCR); deeplabv2 keeps ``in_channels``, hrnet
            (openseg's HRNet head, :mod:`.hrnet_head`) defaults to ``in_channels``.
        num_regions: OCR's soft object regions (K; given even when ``num_classes`` is
            None, i.e. under a prototype classifier).
        embed_from: OCR and hrnet only: ``"backbone"`` (ContrastiveSeg: the projection
            embeds the backbone features) or ``"decoded"`` (the head's decoded features).
        aspp_rates: deeplabv2 only: its ASPP dilations (None: 6, 12, 18, 24).

    Raises:
        ValueError: unknown name or non-positive sizes.
    """
    options = HeadOptions(output_stride=output_stride, channels=channels, num_regions=num_regions,
                          embed_from=embed_from, aspp_rates=None if aspp_rates is None else tuple(aspp_rates))
    return head_class(name).from_options(in_channels, num_classes, options)
