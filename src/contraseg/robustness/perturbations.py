"""Test-time perturbations for ProAC's three robustness cases (resolution, illumination,
masking), seeded per image.

ProAC (Ren et al., TCSVT 2024) reports gains "in more challenging cases, including
different resolutions, diverse illuminations and masked scenarios"; its released code has
no tool for them, so the definitions below are contraseg's own, written down here:

* ``resolution:S`` -- the input image (3 x H x W) is resized by the factor ``S`` > 0
  (bilinear, antialiased when shrinking) to ``round(S H) x round(S W)``; the label stays at
  full size and evaluation resizes the class scores back to it (so the mIoU is always
  measured on the original label grid).
* ``illumination:MODE:S`` -- applied in pixel space ``x`` in [0, 1] (the dataset's
  normalisation undone with its own mean / std, re-applied afterwards), clipped to [0, 1]:

  - ``brightness``: ``x' = x + S`` (``S`` in [-1, 1]; 0.1 = 25.5 grey levels brighter),
  - ``gamma``: ``x' = x ** S`` (``S`` > 0; ``S`` > 1 darkens the mid-tones),
  - ``night``: ``x' = (1 - 0.8 S) * x ** (1 + S) + n``, ``n ~ N(0, (0.05 S)^2)`` per pixel
    and channel (``S`` in [0, 1]): darker, more contrast in the shadows, sensor noise.

* ``mask:F[:P]`` -- square ``P`` x ``P`` patches (default 16 px) of a grid over the image
  are occluded, in random order until they cover the fraction ``F`` in [0, 1) of the image
  (to within half a patch); occluded pixels get the dataset's mean colour, i.e. 0 in the
  normalised input (the Cutout convention).

Each image ``i`` draws its randomness from a generator seeded with ``(seed, i)``, so a
perturbed image does not depend on the batch size, the worker count or the process
sharding, and the same seed gives the same images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD

ILLUMINATION_MODES = ("brightness", "gamma", "night")
NIGHT_DARKEN, NIGHT_NOISE = 0.8, 0.05  # night: x' = (1 - 0.8 S) x^(1 + S) + N(0, (0.05 S)^2)
DEFAULT_PATCH = 16
SYNTAX = ("resolution:S (S > 0, e.g. 0.5) | illumination:brightness:S (S in [-1, 1]) | "
          "illumination:gamma:S (S > 0) | illumination:night:S (S in [0, 1]) | mask:F[:P] (F in [0, 1), "
          f"patch P px, default {DEFAULT_PATCH})")


class PerturbationError(ValueError):
    """A ``--perturb`` value that cannot be read (the message names the value)."""


@dataclass(frozen=True)
class Perturbation:
    """One perturbation: ``name`` resolution | illumination | mask, the illumination
    ``mode``, its ``strength``, the mask ``patch`` size and the base ``seed``."""

    name: str
    strength: float
    mode: str | None = None
    patch: int | None = None
    seed: int = 0

    @property
    def spec(self) -> str:
        """The ``--perturb`` text that gives this perturbation."""
        parts = [self.name] + ([self.mode] if self.mode else []) + [f"{self.strength:g}"]
        if self.patch is not None:
            parts.append(str(self.patch))
        return ":".join(parts)

    def record(self) -> dict[str, Any]:
        """What the eval JSON stores."""
        return {"name": self.name, "mode": self.mode, "strength": self.strength, "patch": self.patch,
                "seed": self.seed, "spec": self.spec}

    def generator(self, index: int) -> torch.Generator:
        """The generator of image ``index``: seeded with ``(seed, index)``."""
        state = np.random.SeedSequence([self.seed, int(index)]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _number(text: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PerturbationError(f"--perturb {spec!r}: {text!r} is not a number; expected {SYNTAX}") from None


def parse_perturbation(spec: str, seed: int = 0) -> Perturbation:
    """``"illumination:night:0.5"`` -> :class:`Perturbation` (see the module doc for the syntax).

    Raises:
        PerturbationError: an unknown name or mode, a missing or out-of-range strength.
    """
    parts = [p.strip() for p in spec.split(":")]
    name = parts[0].lower()
    if name == "resolution" and len(parts) == 2:
        s = _number(parts[1], spec)
        if s <= 0:
            raise PerturbationError(f"--perturb {spec!r}: the resolution factor must be > 0")
        return Perturbation("resolution", s, seed=seed)
    if name == "illumination" and len(parts) == 3:
        mode, s = parts[1].lower(), _number(parts[2], spec)
        if mode not in ILLUMINATION_MODES:
            raise PerturbationError(f"--perturb {spec!r}: illumination mode must be one of {ILLUMINATION_MODES}")
        ok = {"brightness": -1 <= s <= 1, "gamma": s > 0, "night": 0 <= s <= 1}[mode]
        if not ok:
            raise PerturbationError(f"--perturb {spec!r}: strength out of range; expected {SYNTAX}")
        return Perturbation("illumination", s, mode=mode, seed=seed)
    if name == "mask" and len(parts) in (2, 3):
        f = _number(parts[1], spec)
        patch = DEFAULT_PATCH if len(parts) == 2 else _number(parts[2], spec)
        if not 0 <= f < 1 or patch != int(patch) or patch < 1:
            raise PerturbationError(f"--perturb {spec!r}: expected mask:F[:P] with F in [0, 1) and P a positive int")
        return Perturbation("mask", f, patch=int(patch), seed=seed)
    raise PerturbationError(f"--perturb {spec!r}: expected {SYNTAX}")


# -- the perturbations themselves ------------------------------------------------------

def rescale(image: Tensor, factor: float) -> Tensor:
    """3 x H x W -> 3 x round(factor H) x round(factor W) (bilinear; antialiased when shrinking)."""
    h, w = image.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    if size == (h, w):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False,
                         antialias=factor < 1)[0]


def brightness(pixels: Tensor, shift: float) -> Tensor:
    """Pixels in [0, 1] -> ``clip(x + shift, 0, 1)``."""
    return (pixels + shift).clamp(0, 1)


def gamma(pixels: Tensor, exponent: float) -> Tensor:
    """Pixels in [0, 1] -> ``x ** exponent``."""
    return pixels.clamp(0, 1).pow(exponent)


def night(pixels: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Pixels in [0, 1] -> ``clip((1 - 0.8 s) x^(1 + s) + N(0, (0.05 s)^2), 0, 1)``."""
    dark = (1 - NIGHT_DARKEN * strength) * pixels.clamp(0, 1).pow(1 + strength)
    noise = torch.randn(pixels.shape, generator=generator, dtype=pixels.dtype) * (NIGHT_NOISE * strength)
    return (dark + noise).clamp(0, 1)


def occlusion_mask(height: int, width: int, fraction: float, patch: int, generator: torch.Generator) -> Tensor:
    """Bool H x W: grid cells of ``patch`` px, taken in random order while the covered area
    stays within half a cell of ``fraction * H * W`` (border cells are smaller)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    target = fraction * height * width
    rows, cols = -(-height // patch), -(-width // patch)
    covered = 0
    for cell in torch.randperm(rows * cols, generator=generator).tolist():
        if covered >= target:
            break
        r, c = divmod(cell, cols)
        h = min(patch, height - r * patch)
        w = min(patch, width - c * patch)
        if covered + h * w <= target + h * w / 2:
            mask[r * patch:r * patch + h, c * patch:c * patch + w] = True
            covered += h * w
    return mask


def apply_perturbation(image: Tensor, perturbation: Perturbation, index: int,
                       mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Perturb one normalised image 3 x H x W (``(x - mean) / std``, x in [0, 1]) of
    dataset index ``index``; returns a normalised image (resolution: of the new size)."""
    p = perturbation
    if p.name == "resolution":
        return rescale(image, p.strength)
    if p.name == "mask":
        mask = occlusion_mask(image.shape[-2], image.shape[-1], p.strength, p.patch or DEFAULT_PATCH,
                              p.generator(index))
        return image.masked_fill(mask, 0.0)
    mean_t = torch.tensor(mean, dtype=image.dtype).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype).view(3, 1, 1)
    pixels = image * std_t + mean_t
    if p.mode == "brightness":
        pixels = brightness(pixels, p.strength)
    elif p.mode == "gamma":
        pixels = gamma(pixels, p.strength)
    else:
        pixels = night(pixels, p.strength, p.generator(index))
    return (pixels - mean_t) / std_t
