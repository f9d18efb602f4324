"""Photometric augmentation of the ClassMix images (DACS' strong transform, used by WDASS).

The released WDASS code (``transforms/dacs_transforms.py``) passes every mixed image
through colour jitter and Gaussian blur after mixing. Its draws, reproduced here:

- two uniform numbers per *step* (shared by the batch): colour jitter is applied when the
  first exceeds 0.2 (probability 0.8), blur when the second exceeds 0.5 (probability 0.5);
- colour jitter: brightness, contrast, saturation and hue, all of strength s = 0.25
  (factors uniform in [1 - s, 1 + s], hue shift uniform in [-s, s]), drawn per image and
  applied in a random order per image, on the de-normalised image in [0, 1], which is
  then normalised again;
- Gaussian blur: sigma uniform in [0.15, 1.15] per image, kernel size ``ceil(0.1 * side)``
  rounded down to an odd number, per axis (:func:`blur_kernel_size`), reflected borders.

The four colour adjustments are torchvision's (``torchvision.transforms.v2.functional``);
the released code calls kornia's ``ColorJitter`` with the same strengths. All draws come
from one ``torch.Generator``, so a run is reproducible and resumable.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

JITTER_PROBABILITY = 0.8
JITTER_STRENGTH = 0.25
BLUR_PROBABILITY = 0.5
BLUR_SIGMA = (0.15, 1.15)


def blur_kernel_size(side: int) -> int:
    """The released kernel size for an image side: ``c = ceil(0.1 * side)``, made odd by ``c - 1`` if even."""
    if side < 1:
        raise ValueError(f"side must be a positive int, got {side}")
    c = math.ceil(0.1 * side)
    return c if c % 2 == 1 else c - 1


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


class MixPhotometric:
    """Colour jitter and Gaussian blur of mixed images with the released probabilities.

    Args:
        mean, std: the per-channel normalisation of the images (RGB, on [0, 1] images).
        jitter_probability, strength: colour jitter (0.8, 0.25).
        blur_probability, sigma: Gaussian blur (0.5, (0.15, 1.15)).

    Call: ``augment(images B x 3 x H x W normalised, generator) -> images`` (same shape,
    dtype and device; the input is not modified).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        jitter_probability: float = JITTER_PROBABILITY,
        strength: float = JITTER_STRENGTH,
        blur_probability: float = BLUR_PROBABILITY,
        sigma: tuple[float, float] = BLUR_SIGMA,
    ) -> None:
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError(f"mean and std must be 3 values with std > 0, got mean={tuple(mean)} std={tuple(std)}")
        for name, value in (("jitter_probability", jitter_probability), ("blur_probability", blur_probability)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if not 0.0 <= strength <= 0.5:
            raise ValueError(f"strength must be in [0, 0.5] (the hue shift is at most 0.5), got {strength!r}")
        if not 0.0 < sigma[0] <= sigma[1]:
            raise ValueError(f"sigma must be (low, high) with 0 < low <= high, got {tuple(sigma)}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.jitter_probability = float(jitter_probability)
        self.strength = float(strength)
        self.blur_probability = float(blur_probability)
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __repr__(self) -> str:
        return (f"MixPhotometric(jitter_probability={self.jitter_probability}, strength={self.strength}, "
                f"blur_probability={self.blur_probability}, sigma={self.sigma})")

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images must be a floating B x 3 x H x W tensor, got shape {tuple(images.shape)}")
        # One draw each per step, as released (strong_parameters of train.py).
        jitter = float(torch.rand((), generator=generator)) > 1.0 - self.jitter_probability
        blur = float(torch.rand((), generator=generator)) > 1.0 - self.blur_probability
        out = images
        if jitter:
            out = self.jitter(out, generator)
        if blur:
            out = self.blur(out, generator)
        return out

    def jitter(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Colour jitter of every image (per-image factors and order), in normalised space."""
        from torchvision.transforms.v2 import functional as TF

        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        plain = (images * std + mean).clamp(0.0, 1.0)
        s = self.strength
        adjust = (
            lambda x: TF.adjust_brightness(x, _uniform(1 - s, 1 + s, generator)),
            lambda x: TF.adjust_contrast(x, _uniform(1 - s, 1 + s, generator)),
            lambda x: TF.adjust_saturation(x, _uniform(1 - s, 1 + s, generator)),
            lambda x: TF.adjust_hue(x, _uniform(-s, s, generator)),
        )
        result = []
        for image in plain:
            image = image[None]
            for step in torch.randperm(4, generator=generator).tolist():
                image = adjust[step](image)
            result.append(image)
        return (torch.cat(result) - mean) / std

    def blur(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Gaussian blur of every image with its own sigma and the released kernel size."""
        from torchvision.transforms.v2 import functional as TF

        kernel = [blur_kernel_size(images.shape[3]), blur_kernel_size(images.shape[2])]  # (x, y)
        result = []
        for image in images:
            sigma = _uniform(*self.sigma, generator)
            result.append(TF.gaussian_blur(image[None], kernel_size=kernel, sigma=[sigma, sigma]))
        return torch.cat(result)
