"""Photometric steps of :class:`contraseg.data.transforms.TrainTransform` (image only).

Both act on a uint8 ``3 x H x W`` RGB tensor (0-255 values) before normalisation and
return one of the same shape and dtype; labels are never touched.

* :func:`brightness_shift` - openseg's ``RandomBrightness`` (ContrastiveSeg / ProtoSeg):
  one integer ``d ~ U{-v, ..., v}`` added to every channel of every pixel, then clipped
  to [0, 255]::

      x' = clip(x + d, 0, 255)

  Released: tfzhou/ContrastiveSeg@287e5d3069ce lib/datasets/tools/cv2_aug_transforms.py:312
  (``shift = random.randint(-self.shift_value, self.shift_value)``, inclusive ends),
  :313 (added to all channels), :314-315 (round, clip to uint8); ``shift_value`` 10 and
  ``ratio`` 1.0 in configs/cityscapes/H_48_D_4.json:43-44. openseg skips a transform when
  ``random.random() > ratio`` (:323), so ratio 1.0 means *always* applied, which is
  what contraseg does (there is no probability key; the class default 0.5 of :306 is
  overridden by every released config).
* :func:`colour_jitter` - brightness, contrast and saturation factors ``U(1 - j, 1 + j)``
  (``data.jitter``, unchanged) followed by a hue shift ``h ~ U(-hue, hue)`` in turns
  (``data.hue_jitter``; torchvision ``adjust_hue``). Released hue: ProAC UDA 0.2
  (renqinghuaha/ProAC_TCSVT2024@084d77d372b7 UDA/configs/ssl.yml:78, drawn as
  ``random.uniform(-hue, hue)`` in UDA/augmentations/augmentations.py:95) with
  brightness / contrast / saturation 0.5 (ssl.yml:79-81); WDASS 0.25 for all four
  (anurag-198/WDASS@7276a27d916b command_line/arguments.py:54, datasets/__init__.py:108-112;
  hue drawn ``np.random.uniform(-hue, hue)`` at transforms/transforms.py:353).
  Deliberate difference: the order is fixed (b, c, s, then hue) so that a config without
  hue jitter draws exactly what it drew before; ProAC applies hue first
  (ssl.yml:77-81), WDASS shuffles the order each call (transforms/transforms.py:357).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as F

__all__ = ["brightness_shift", "check_brightness_shift", "check_hue_jitter", "colour_jitter"]


def check_brightness_shift(value: float) -> int:
    """``value`` as the whole number of 0-255 units it must be (ValueError otherwise)."""
    if value < 0 or float(value) != int(value):
        raise ValueError(f"brightness_shift must be a whole number >= 0 of 0-255 pixel units, got {value}")
    return int(value)


def check_hue_jitter(value: float) -> float:
    """``value`` if it is a valid hue-jitter strength in [0, 0.5] (ValueError otherwise)."""
    if not 0 <= value <= 0.5:
        raise ValueError(f"hue_jitter must be in [0, 0.5] (a fraction of the hue circle), got {value}")
    return float(value)


def brightness_shift(image: Tensor, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """``clip(image + d, 0, 255)`` with one integer ``d ~ U{-max_shift, ..., max_shift}``.

    Args:
        image: uint8 ``3 x H x W`` (or ``... x 3 x H x W``) tensor.
        max_shift: ``v`` >= 0; 0 returns ``image`` without a draw.
        generator: torch generator of the draw (global RNG when None).
    """
    if max_shift <= 0:
        return image
    shift = int(torch.randint(-max_shift, max_shift + 1, (), generator=generator))
    return (image.to(torch.int16) + shift).clamp(0, 255).to(torch.uint8)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def colour_jitter(image: Tensor, jitter: float, hue: float = 0.0,
                  generator: torch.Generator | None = None) -> Tensor:
    """Brightness, contrast, saturation factors ``U(1 - jitter, 1 + jitter)``, then hue ``U(-hue, hue)``.

    Draws (in this order, only for the enabled parts): brightness, contrast, saturation
    factors when ``jitter > 0``; the hue shift when ``hue > 0``. Shapes: uint8 ``3 x H x W``
    in and out.
    """
    if jitter > 0:
        low, high = 1.0 - jitter, 1.0 + jitter
        image = F.adjust_brightness(image, _uniform(low, high, generator))
        image = F.adjust_contrast(image, _uniform(low, high, generator))
        image = F.adjust_saturation(image, _uniform(low, high, generator))
    if hue > 0:
        image = F.adjust_hue(image, _uniform(-hue, hue, generator))
    return image
