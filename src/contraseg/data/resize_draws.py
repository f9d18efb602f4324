"""The random output size of :class:`contraseg.data.transforms.TrainTransform`'s rescale.

For a base of ``H x W`` (``base_size`` or the input's own size) and a scale
``s ~ U(scale_range)`` (drawn first), the rescaled size ``(h, w)`` is:

* default (neither option): ``(round(s H), round(s W))`` - contraseg's rescale.
* ``aspect_range = [lo, hi]`` (openseg ``RandomResize``): ``a ~ U(lo, hi)`` drawn after
  ``s``, ``w = int(W sqrt(a) s)``, ``h = int(H s / sqrt(a))`` (truncation, as released):
  tfzhou/ContrastiveSeg@287e5d3069ce lib/datasets/tools/cv2_aug_transforms.py:358
  (``scale_ratio = random.uniform(...)``), :428 (``aspect_ratio =
  random.uniform(*self.aspect_range)``), :429-430 (``w_scale_ratio = sqrt(a) * s``,
  ``h_scale_ratio = sqrt(1 / a) * s``), :436-437 (``int(width * w_scale_ratio),
  int(height * h_scale_ratio)``); released ``[0.9, 1.1]`` with ``ratio`` 1.0 (always)
  in configs/cityscapes/H_48_D_4.json:51-54. The area changes by ``s^2`` only.
* ``scale_to_width = T`` (ProAC ``RandomSized``): ``w = int(s T)``, ``h = int(w / (W / H))``,
  the base's aspect ratio kept: renqinghuaha/ProAC_TCSVT2024@084d77d372b7
  UDA/augmentations/augmentations.py:369-371 (``prop = img.size[0] / img.size[1]``,
  ``w = int(random.uniform(0.5, 1.5) * self.size)``, ``h = int(w / prop)``) with
  ``rsize: 2200`` in UDA/configs/ssl.yml:74 (applied to every UDA image by
  UDA/data/cityscapes_dataset.py:182 and UDA/data/gta5_dataset.py:174). The released factor range is
  fixed at (0.5, 1.5); contraseg takes it from ``scale_range``.
* both: the ``scale_to_width`` size, then the aspect factors ``w sqrt(a)``, ``h / sqrt(a)``.

Every side is at least 1. Interpolation stays contraseg's (image bilinear with antialiasing,
labels nearest): a deliberate difference from openseg's ``cv2.INTER_CUBIC`` image resize
(cv2_aug_transforms.py:373; labels ``INTER_NEAREST``, :376) and equal in kind to ProAC's PIL
``BILINEAR`` / ``NEAREST`` (augmentations.py:375-376).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["check_aspect_range", "draw_train_size"]


def check_aspect_range(aspect_range: Sequence[float] | None) -> tuple[float, float] | None:
    """``(lo, hi)`` with ``0 < lo <= hi``, or None (ValueError otherwise)."""
    if aspect_range is None:
        return None
    values = tuple(float(v) for v in aspect_range)
    if len(values) != 2 or not 0 < values[0] <= values[1]:
        raise ValueError(f"aspect_range must be [lo, hi] with 0 < lo <= hi, got {list(aspect_range)}")
    return values  # type: ignore[return-value]


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def draw_train_size(base: Sequence[int], scale_range: Sequence[float],
                    aspect_range: Sequence[float] | None = None, scale_to_width: int | None = None,
                    generator: torch.Generator | None = None) -> tuple[int, int]:
    """The rescaled ``(h, w)`` for a base ``(H, W)`` (module docstring for the formulas).

    Draws ``s`` (always), then ``a`` (only with ``aspect_range``) from ``generator``.
    """
    base_h, base_w = (int(v) for v in base)
    scale = _uniform(float(scale_range[0]), float(scale_range[1]), generator)
    if aspect_range is None and scale_to_width is None:
        return max(1, round(base_h * scale)), max(1, round(base_w * scale))
    if scale_to_width is not None:
        width = int(scale * scale_to_width)
        height = int(width / (base_w / base_h))
        w_factor = h_factor = 1.0
    else:
        height, width = base_h, base_w
        w_factor = h_factor = scale
    if aspect_range is not None:
        aspect = _uniform(float(aspect_range[0]), float(aspect_range[1]), generator)
        w_factor *= math.sqrt(aspect)
        h_factor *= math.sqrt(1.0 / aspect)
    return max(1, int(height * h_factor)), max(1, int(width * w_factor))
