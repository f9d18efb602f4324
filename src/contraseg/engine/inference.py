"""Test-time inference: whole-image or sliding-window, multi-scale and flip averaging.

The result is the average of softmax probabilities (mmsegmentation's convention):

    P(x) = 1 / (|S| * |F|) * sum over scales s in S, flips f in F of
           resize_to_HxW( f^-1( infer( f( resize_s(x) ) ) ) )

where ``infer`` is either one forward pass upsampled to the input size (``"whole"``) or
the sliding-window average ``sum_windows softmax(window logits) / count`` (``"slide"``),
``count`` being how many windows cover each pixel.

Every resize is bilinear with ``align_corners`` (default False; True reproduces the
openseg / ProAC / AdaptSegNet testers, e.g. ContrastiveSeg@287e5d3
segmentor/tester.py:305,326 and ProAC@084d77d UDA/train.py:200).

Neither function changes ``model.train()`` / ``model.eval()``: put the model in eval
mode first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

MODES = ("whole", "slide")
SizeArg = int | Sequence[int] | None


def _pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """``int`` or ``(h, w)`` of positive ints -> ``(h, w)``; ValueError naming ``name``."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise ValueError(f"{name} must be a positive int or (h, w) of positive ints, got {value!r}")
    return pair  # type: ignore[return-value]


def _model_logits(model: Callable[[Tensor], Any], images: Tensor) -> Tensor:
    """Run ``model`` and take its logits: a ``{"logits": ...}`` dict (a Segmentor) or a tensor."""
    out = model(images)
    if isinstance(out, Mapping):
        if "logits" not in out:
            raise ValueError(f"model output has no 'logits' key: keys {sorted(out)}")
        out = out["logits"]
    if not isinstance(out, Tensor) or out.dim() != 4:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"model must return B x K x h x w logits, got {shape}")
    return out


def _whole(model: Callable[[Tensor], Any], images: Tensor, softmax: bool, align_corners: bool = False) -> Tensor:
    """One forward pass, logits bilinearly upsampled to the input size, then softmax.

    ``B x C x H x W -> B x K x H x W``.
    """
    logits = _model_logits(model, images)
    if logits.shape[-2:] != images.shape[-2:]:
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=align_corners)
    return logits.softmax(dim=1) if softmax else logits


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of sliding windows along one axis of length ``size >= crop``.

    Windows start every ``stride`` pixels; the last one is moved back so that it ends
    exactly at ``size`` (mmsegmentation's grid), so every pixel is covered.
    """
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [min(i * stride, size - crop) for i in range(count)]


def _slide(
    model: Callable[[Tensor], Any],
    images: Tensor,
    crop: tuple[int, int],
    stride: tuple[int, int],
    softmax: bool,
    align_corners: bool = False,
) -> Tensor:
    """Sliding-window inference, ``B x C x H x W -> B x K x H x W``.

    An image smaller than the crop is zero-padded at the bottom / right to the crop size
    and the padding is cut off the result.
    """
    height, width = images.shape[-2:]
    pad_h, pad_w = max(crop[0] - height, 0), max(crop[1] - width, 0)
    padded = F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images
    full_h, full_w = padded.shape[-2:]
    total: Tensor | None = None
    count = images.new_zeros((1, 1, full_h, full_w))
    for top in window_starts(full_h, crop[0], stride[0]):
        for left in window_starts(full_w, crop[1], stride[1]):
            window = padded[:, :, top : top + crop[0], left : left + crop[1]]
            probs = _whole(model, window, softmax, align_corners)
            if total is None:
                total = probs.new_zeros((padded.shape[0], probs.shape[1], full_h, full_w))
            total[:, :, top : top + crop[0], left : left + crop[1]] += probs
            count[:, :, top : top + crop[0], left : left + crop[1]] += 1
    assert total is not None  # window_starts always yields at least one window
    return (total / count.to(total.dtype))[:, :, :height, :width]


@torch.no_grad()
def predict_logits(
    model: Callable[[Tensor], Any],
    images: Tensor,
    mode: str = "whole",
    crop_size: SizeArg = None,
    stride: SizeArg = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    softmax: bool = True,
    align_corners: bool = False,
) -> Tensor:
    """Class probabilities ``B x K x H x W`` for ``images B x C x H x W``.

    Args:
        model: a :class:`contraseg.models.Segmentor` or any module returning
            ``B x K x h x w`` logits (or a dict with ``"logits"``).
        images: normalised images ``B x C x H x W``.
        mode: ``"whole"`` (one pass per scale) or ``"slide"`` (windows of ``crop_size``).
        crop_size: window ``(h, w)`` or one int; required for ``"slide"``.
        stride: window step ``(h, w)`` or one int, at most ``crop_size``; defaults to two
            thirds of the crop (mmsegmentation's 512 / 341).
        scales: resize factors of the input; the outputs are resized back to H x W.
        flip: also infer on the horizontally flipped image and flip the result back.
        softmax: average softmax probabilities (default) or, if False, raw logits.
        align_corners: of every bilinear resize (logits to the input, input to a scale
            and back); True as the released openseg / ProAC testers.

    Returns:
        ``B x K x H x W``, the mean over scales, flips and overlapping windows.

    Raises:
        ValueError: bad ``images`` shape, ``mode``, ``crop_size``, ``stride`` or ``scales``.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a floating B x C x H x W tensor, got {shape}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    scales = tuple(scales)
    if not scales or not all(isinstance(s, (int, float)) and s > 0 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales!r}")
    crop = step = None
    if mode == "slide":
        if crop_size is None:
            raise ValueError("mode='slide' needs crop_size, got None")
        crop = _pair("crop_size", crop_size)
        if stride is None:
            step = (max(1, 2 * crop[0] // 3), max(1, 2 * crop[1] // 3))
        else:
            step = _pair("stride", stride)
        if step[0] > crop[0] or step[1] > crop[1]:
            raise ValueError(f"stride {step} is larger than crop_size {crop}: windows would leave gaps")

    height, width = images.shape[-2:]
    total: Tensor | None = None
    flips = (False, True) if flip else (False,)
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = images if size == (height, width) else F.interpolate(
            images, size=size, mode="bilinear", align_corners=align_corners
        )
        for flipped in flips:
            batch = scaled.flip(-1) if flipped else scaled
            if mode == "whole":
                out = _whole(model, batch, softmax, align_corners)
            else:
                out = _slide(model, batch, crop, step, softmax, align_corners)  # type: ignore[arg-type]
            if flipped:
                out = out.flip(-1)
            if out.shape[-2:] != (height, width):
                out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=align_corners)
            total = out if total is None else total + out
    assert total is not None
    return total / (len(scales) * len(flips))


def predict_labels(model: Callable[[Tensor], Any], images: Tensor, **kwargs: Any) -> Tensor:
    """Predicted labels ``B x H x W`` (long): argmax of :func:`predict_logits` (same kwargs)."""
    return predict_logits(model, images, **kwargs).argmax(dim=1)
