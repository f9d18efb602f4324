"""Fourier domain adaptation (FDA; Yang & Soatto, CVPR 2020): the low-frequency amplitude
swap, the robust (Charbonnier-penalised) entropy and multi-band averaging.

Released code: github:YanchaoYang/FDA @ b9a0cdf0bcc9b787c00e39df73eda5673706f219.

* Amplitude swap (paper eq. 1-2, ``x^{s->t} = F^-1([M_beta o A(x^t) + (1 - M_beta) o A(x^s), P(x^s)])``):
  per image and channel, the 2-D FFT of the source image keeps its phase and takes the
  target's amplitude in the low-frequency window ``M_beta``. As the training script uses it
  (``FDA_source_to_target``, utils/__init__.py:38-62, with ``low_freq_mutate``
  utils/__init__.py:11-18), the window is the four ``b x b`` corners of the *unshifted*
  spectrum, ``b = floor(min(H, W) * beta)`` (frequencies ``-b .. b-1`` on each axis);
  the result is the real part of the inverse FFT. It works on raw pixel values (0-255),
  before mean subtraction (train.py:77-82; README: "use the original images for FDA,
  then do mean subtraction"), and the result is not clipped (as released).
  Released numpy variant ``FDA_source_to_target_np`` (utils/__init__.py:20-36, 64-89)
  uses a centred ``2b+1`` window instead; it is not the one training calls, so it is not
  the one here.
* Robust entropy (paper eq. 3 with the Charbonnier penalty ``rho(x) = (x^2 + 1e-8)^eta``;
  model/deeplab.py:169-177): per pixel ``E = -sum_k p_k log p_k / log K`` (released:
  ``/ 2.9444`` = ``ln 19``, "change when classes is not 19"), the loss is
  ``mean over pixels of (E^2 + 1e-8)^eta`` at the logits' own resolution. Released
  values: weight ``entW`` 0.005, ``eta`` (``--ita``) 2.0 (README.md:29,
  options/train_options.py:10-11).
* Multi-band transfer (MBT; paper eq. 5): the mean of the softmax predictions of the
  models trained with beta 0.01, 0.05 and 0.09 (evaluation_multi.py:132-142,
  getSudoLabel_multi.py:58-68, weights 1/3 each).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RELEASED_BETA = 0.01  # README.md:29 --LB=0.01 (options/train_options.py:8 default 0.1)
RELEASED_ENTROPY_WEIGHT = 0.005  # README.md:29 --entW, options/train_options.py:10
RELEASED_ETA = 2.0  # README.md:29 --ita, options/train_options.py:11
MBT_BETAS = (0.01, 0.05, 0.09)  # README.md:47-49 (gta2city_LB_0_01 / 0_05 / 0_09)
CHARBONNIER_EPS = 1e-8  # model/deeplab.py:175


def low_frequency_window(height: int, width: int, beta: float) -> int:
    """``b = floor(min(H, W) * beta)``, the side of each corner block (utils/__init__.py:13)."""
    if not 0 <= beta <= 0.5:
        raise ValueError(f"beta must be in [0, 0.5], got {beta}")
    return int(math.floor(min(height, width) * beta))


def amplitude_swap(source: Tensor, target: Tensor, beta: float) -> Tensor:
    """Source images with the target's low-frequency amplitude (FDA, see the module doc).

    Args:
        source: B x C x H x W source images in pixel units (0-255, not normalised).
        target: B x C x H x W target images (same size; pair i with i).
        beta: window size as a fraction of ``min(H, W)`` (0: the source unchanged).

    Returns:
        B x C x H x W float32, the real part of the inverse FFT (not clipped).
    """
    if source.shape != target.shape or source.dim() != 4:
        raise ValueError(f"source and target must be B x C x H x W of one shape, got {tuple(source.shape)} "
                         f"and {tuple(target.shape)}")
    h, w = source.shape[-2:]
    b = low_frequency_window(h, w, beta)
    fft_s = torch.fft.fft2(source.float())
    if b == 0:
        return source.float()
    amp_s, pha_s = fft_s.abs(), fft_s.angle()
    amp_t = torch.fft.fft2(target.float()).abs()
    window = torch.zeros(h, w, dtype=torch.bool, device=source.device)
    rows = torch.cat([torch.arange(b), torch.arange(h - b, h)]).to(source.device)
    cols = torch.cat([torch.arange(b), torch.arange(w - b, w)]).to(source.device)
    window[rows[:, None], cols[None, :]] = True
    amp = torch.where(window, amp_t, amp_s)
    return torch.fft.ifft2(torch.polar(amp, pha_s)).real


def robust_entropy(logits: Tensor, eta: float = RELEASED_ETA) -> Tensor:
    """``mean over pixels of (E^2 + 1e-8)^eta``, ``E = -sum_k p_k log p_k / log K``.

    Args:
        logits: B x K x h x w (K >= 2).
    """
    k = logits.shape[1]
    if k < 2:
        raise ValueError(f"the entropy needs K >= 2 classes, got {k}")
    log_p = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=1)
    entropy = -(log_p.exp() * log_p).sum(1) / math.log(k)
    return (entropy.pow(2) + CHARBONNIER_EPS).pow(eta).mean()


class MultiBandEnsemble(nn.Module):
    """Models as one segmentor whose ``logits`` are ``log`` of the MBT mean probabilities,
    so anything that takes a softmax of the logits (``predict_logits``, pseudo-labelling)
    gets exactly :func:`multiband_probabilities` (``softmax(log p) = p`` as ``p`` sums to 1)."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise ValueError("multi-band averaging needs at least one model")
        self.members = nn.ModuleList(models)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        probs = multiband_probabilities(list(self.members), images)
        return {"logits": probs.clamp_min(torch.finfo(probs.dtype).tiny).log()}


@torch.no_grad()
def multiband_probabilities(models: Sequence[nn.Module], images: Tensor) -> Tensor:
    """MBT: the mean of the models' softmax class probabilities, B x K x h x w
    (``model(images)["logits"]``; every model must predict on one grid)."""
    if not models:
        raise ValueError("multi-band averaging needs at least one model")
    probs = [F.softmax(model(images)["logits"].float(), dim=1) for model in models]
    if len({tuple(p.shape) for p in probs}) != 1:
        raise ValueError(f"the models predict on different grids: {[tuple(p.shape) for p in probs]}")
    return torch.stack(probs).mean(0)
