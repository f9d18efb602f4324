"""Joint image + mask transforms for segmentation.

A transform is called as ``transform(image, mask, *extra_masks)`` with

* ``image``: uint8 H x W x 3 RGB numpy array (or a PIL image),
* ``mask`` (and each extra mask, e.g. the ground truth kept next to a pseudo label):
  integer H x W numpy array / tensor / PIL image with values in [0, 255],

and returns ``(image float32 3 x H' x W' normalised, mask int64 H' x W', *extra)``.
Every geometric step is applied identically to the image and all masks; images are
resized bilinearly (with antialiasing), masks always by nearest neighbour
(``NEAREST_EXACT``: pixel-centre aligned like the bilinear image resize), so a mask
never holds a value that was not in the input or the ``ignore_index`` used for padding.

Randomness: ``generator=`` in the call, else the transform's own generator when it was
built with ``seed=``, else torch's global RNG (which DataLoader seeds per worker).
Note that a seeded transform copied into several DataLoader workers repeats the same
draws in every worker; leave ``seed=None`` for multi-worker training.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .photometric_transforms import brightness_shift, check_brightness_shift, check_hue_jitter, colour_jitter
from .resize_draws import check_aspect_range, draw_train_size

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalTransform",
    "TrainTransform",
    "denormalize",
    "image_to_tensor",
    "mask_to_tensor",
    "normalize",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def image_to_tensor(image: object) -> Tensor:
    """An RGB image (uint8 H x W x 3 numpy array or PIL image) as a uint8 3 x H x W tensor."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    elif not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array or PIL image, got {type(image).__name__}")
    array = image
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3, got shape {tuple(array.shape)}")
    if array.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {array.dtype}")
    return torch.from_numpy(np.require(array, requirements=("C", "W"))).permute(2, 0, 1).contiguous()


def mask_to_tensor(mask: object, name: str = "mask") -> Tensor:
    """An integer H x W mask (numpy, tensor or PIL) with values in [0, 255] as uint8 1 x H x W."""
    if isinstance(mask, Tensor):
        array = mask.detach().cpu().numpy()
    elif isinstance(mask, np.ndarray):
        array = mask
    else:
        try:
            array = np.asarray(mask)
        except Exception as err:  # noqa: BLE001 - reported as a TypeError below
            raise TypeError(f"{name} must be a numpy array, tensor or PIL image, got {type(mask).__name__}") from err
    if array.ndim != 2:
        raise ValueError(f"{name} must be H x W, got shape {tuple(array.shape)}")
    if array.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer labels, got dtype {array.dtype}")
    if array.dtype != np.uint8 and array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{name} values must be in [0, 255], got range [{array.min()}, {array.max()}]")
    return torch.from_numpy(np.require(array.astype(np.uint8, copy=False), requirements=("C", "W"))).unsqueeze(0)


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std must have 3 values (RGB), got mean={tuple(mean)} std={tuple(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be > 0, got {tuple(std)}")
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def normalize(image: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """uint8 (..., 3, H, W) -> float32 ``(image / 255 - mean) / std``."""
    mean, std = _check_stats(mean, std)
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ValueError(f"image must be (..., 3, H, W), got shape {tuple(image.shape)}")
    scaled = image.to(torch.float32) / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32, device=image.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=image.device).view(3, 1, 1)
    return (scaled - mean_t) / std_t


def denormalize(image: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """Invert :func:`normalize` for visualisation: float (..., 3, H, W) -> uint8, same shape.

    Values are clamped to [0, 255] and rounded; ``image.permute(1, 2, 0).numpy()``
    gives an H x W x 3 array for plotting.
    """
    mean, std = _check_stats(mean, std)
    if not isinstance(image, Tensor) or not image.is_floating_point():
        raise TypeError("image must be a floating point tensor")
    if image.dim() < 3 or image.shape[-3] != 3:
        raise ValueError(f"image must be (..., 3, H, W), got shape {tuple(image.shape)}")
    mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    pixels = (image * std_t + mean_t) * 255.0
    return pixels.round().clamp(0, 255).to(torch.uint8)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f"{name} must be a positive int or (height, width), got {value}")
    return value  # type: ignore[return-value]


def _prepare(image: object, masks: Sequence[object]) -> tuple[Tensor, list[Tensor]]:
    """Convert inputs and require all masks to have the image's H x W."""
    image_t = image_to_tensor(image)
    masks_t = [mask_to_tensor(m, "mask" if i == 0 else f"mask {i}") for i, m in enumerate(masks)]
    for i, mask in enumerate(masks_t):
        if mask.shape[1:] != image_t.shape[1:]:
            raise ValueError(
                f"mask {i} is {mask.shape[1]}x{mask.shape[2]} but image is {image_t.shape[1]}x{image_t.shape[2]}"
            )
    return image_t, masks_t


def _resize(image: Tensor, masks: list[Tensor], size: tuple[int, int],
            interpolation: str = "bilinear") -> tuple[Tensor, list[Tensor]]:
    """Resize the uint8 image (``bilinear``: antialiased; ``bicubic``: cubic a = -0.75 without
    antialiasing, as OpenCV's INTER_CUBIC that openseg uses) and the masks by nearest neighbour."""
    if tuple(image.shape[1:]) == size:
        return image, masks
    if interpolation == "bicubic":  # in float: torchvision's uint8 bicubic is another kernel
        cubic = torch.nn.functional.interpolate(image[None].float(), size=tuple(size), mode="bicubic",
                                                align_corners=False)
        image = cubic[0].round_().clamp_(0, 255).to(torch.uint8)
    else:
        image = F.resize(image, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    masks = [F.resize(m, list(size), interpolation=InterpolationMode.NEAREST_EXACT) for m in masks]
    return image, masks


def _randint(high: int, generator: torch.Generator | None) -> int:
    """An integer in [0, high] inclusive."""
    return int(torch.randint(0, high + 1, (), generator=generator))


class TrainTransform:
    """Random scale, pad, crop, horizontal flip and colour jitter; then normalise.

    Steps (geometry shared by image and masks):

    1. scale factor ``s ~ U(scale_range)``; resize to ``round(s * base)`` where base is
       ``base_size`` (H, W) or the input's own size; with ``aspect_range`` /
       ``scale_to_width`` the size of :func:`contraseg.data.resize_draws.draw_train_size`
       (openseg aspect jitter, ProAC scale-to-width); masks by nearest neighbour;
    2. pad bottom/right to at least ``crop_size`` (image with 0, masks with ``ignore_index``;
       ``pad_fill="mean"``: the padded image pixels are 0 after step 7, i.e. the mean colour,
       and untouched by steps 5-6, as openseg pads in its collate after normalising);
    3. crop ``crop_size`` at a uniformly random position;
    4. horizontal flip with probability 0.5 when ``flip``;
    5. image only: additive brightness ``d ~ U{-brightness_shift..brightness_shift}`` (openseg;
       :mod:`contraseg.data.photometric_transforms`);
    6. image only: brightness, contrast and saturation factors each ``~ U(1 - jitter, 1 + jitter)``,
       then a hue shift ``~ U(-hue_jitter, hue_jitter)``;
    7. image only: ``(x / 255 - mean) / std``.

    Args:
        crop_size: output (H, W) (an int for a square).
        scale_range: (low, high) of the scale factor, 0 < low <= high.
        flip: random horizontal flip.
        jitter: colour-jitter strength in [0, 1); 0 disables it.
        mean, std: RGB normalisation statistics (ImageNet by default).
        ignore_index: mask value used for padding.
        base_size: optional (H, W) the scale factor is relative to (e.g. (720, 1280)
            for GTA5); None uses each input's own size.
        seed: when given, the transform owns a ``torch.Generator`` seeded with it.
        aspect_range: optional [lo, hi] of openseg's aspect ratio a (w x sqrt(a), h / sqrt(a)).
        brightness_shift: whole number v >= 0 of 0-255 units (0 disables it).
        hue_jitter: hue-shift strength in [0, 0.5] (fraction of the hue circle; 0 disables it).
        scale_to_width: optional width T: the base is rescaled to width ``int(s T)``, aspect kept.
        resize_interpolation: ``bilinear`` (antialiased) or ``bicubic`` (openseg's INTER_CUBIC).
        pad_fill: ``black`` (0 before normalising) or ``mean`` (0 after, openseg's collate).

    With all four at their defaults the draws are exactly those of earlier versions.

    Call: ``transform(image, mask, *extra_masks, generator=None)`` ->
    ``(image float32 3 x h x w, mask int64 h x w, *extra int64 h x w)``.
    """

    def __init__(
        self,
        crop_size: int | Sequence[int],
        scale_range: Sequence[float] = (0.5, 2.0),
        flip: bool = True,
        jitter: float = 0.2,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        ignore_index: int = 255,
        base_size: Sequence[int] | None = None,
        seed: int | None = None,
        aspect_range: Sequence[float] | None = None,
        brightness_shift: float = 0,
        hue_jitter: float = 0.0,
        scale_to_width: int | None = None,
        resize_interpolation: str = "bilinear",
        pad_fill: str = "black",
    ) -> None:
        if resize_interpolation not in ("bilinear", "bicubic"):
            raise ValueError(f"resize_interpolation must be 'bilinear' or 'bicubic', got {resize_interpolation!r}")
        if pad_fill not in ("black", "mean"):
            raise ValueError(f"pad_fill must be 'black' or 'mean', got {pad_fill!r}")
        self.resize_interpolation = resize_interpolation
        self.pad_fill = pad_fill
        self.aspect_range = check_aspect_range(aspect_range)
        self.brightness_shift = check_brightness_shift(brightness_shift)
        self.hue_jitter = check_hue_jitter(hue_jitter)
        if scale_to_width is not None and int(scale_to_width) <= 0:
            raise ValueError(f"scale_to_width must be a positive width in pixels, got {scale_to_width}")
        self.scale_to_width = None if scale_to_width is None else int(scale_to_width)
        self.crop_size = _pair(crop_size, "crop_size")
        low, high = (float(v) for v in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {tuple(scale_range)}")
        self.scale_range = (low, high)
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        if not 0 <= ignore_index <= 255:
            raise ValueError(f"ignore_index must be in [0, 255] for uint8 masks, got {ignore_index}")
        self.flip = bool(flip)
        self.jitter = float(jitter)
        self.mean, self.std = _check_stats(mean, std)
        self.ignore_index = int(ignore_index)
        self.base_size = None if base_size is None else _pair(tuple(base_size), "base_size")
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def __call__(self, image: object, mask: object, *extra_masks: object,
                 generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        gen = generator if generator is not None else self.generator
        image_t, masks = _prepare(image, (mask, *extra_masks))

        size = draw_train_size(self.base_size or tuple(image_t.shape[1:]), self.scale_range,
                               self.aspect_range, self.scale_to_width, gen)
        image_t, masks = _resize(image_t, masks, size, self.resize_interpolation)

        crop_h, crop_w = self.crop_size
        pad_h, pad_w = max(crop_h - size[0], 0), max(crop_w - size[1], 0)
        padded = pad_h > 0 or pad_w > 0
        if padded:
            padding = [0, 0, pad_w, pad_h]  # left, top, right, bottom
            image_t = F.pad(image_t, padding, fill=0)
            masks = [F.pad(m, padding, fill=self.ignore_index) for m in masks]
            if self.pad_fill == "mean":  # the image's own pixels, carried through crop and flip
                masks.append(F.pad(torch.ones(1, *size, dtype=torch.uint8), padding, fill=0))

        top = _randint(image_t.shape[1] - crop_h, gen)
        left = _randint(image_t.shape[2] - crop_w, gen)
        image_t = image_t[:, top:top + crop_h, left:left + crop_w]
        masks = [m[:, top:top + crop_h, left:left + crop_w] for m in masks]

        if self.flip and float(torch.rand((), generator=gen)) < 0.5:
            image_t = image_t.flip(-1)
            masks = [m.flip(-1) for m in masks]

        image_t = brightness_shift(image_t, self.brightness_shift, gen)
        image_t = colour_jitter(image_t, self.jitter, self.hue_jitter, gen)

        image_f = normalize(image_t.contiguous(), self.mean, self.std)
        if padded and self.pad_fill == "mean":
            image_f = image_f * masks.pop()  # padded pixels: 0 after normalising, the mean colour
        return (image_f, *(m[0].to(torch.int64) for m in masks))

    def __getstate__(self) -> dict:
        # A torch.Generator pickles as a tensor that spawn-started DataLoader workers
        # receive through shared memory; plain bytes travel everywhere.
        state = self.__dict__.copy()
        if self.generator is not None:
            state["generator"] = bytes(self.generator.get_state().numpy())
        return state

    def __setstate__(self, state: dict) -> None:
        generator_state = state.get("generator")
        if generator_state is not None:
            generator = torch.Generator()
            generator.set_state(torch.frombuffer(bytearray(generator_state), dtype=torch.uint8))
            state = {**state, "generator": generator}
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size={self.crop_size}, scale_range={self.scale_range}, flip={self.flip}, "
            f"jitter={self.jitter}, base_size={self.base_size}, ignore_index={self.ignore_index}, "
            f"aspect_range={self.aspect_range}, brightness_shift={self.brightness_shift}, "
            f"hue_jitter={self.hue_jitter}, scale_to_width={self.scale_to_width}, "
            f"resize_interpolation={self.resize_interpolation!r}, pad_fill={self.pad_fill!r})"
        )


class EvalTransform:
    """Optional deterministic resize, then normalise.

    Args:
        resize: None (keep the size), an int (resize so the SHORT side has this length,
            keeping the aspect ratio) or (H, W).
        mean, std: RGB normalisation statistics (ImageNet by default).
        resize_label: also resize the masks (nearest neighbour). Default False: the
            label stays at its native resolution and evaluation upsamples the logits to
            it (the usual protocol), so the returned image and label may differ in size.

    Call: ``transform(image, mask, *extra_masks)`` ->
    ``(image float32 3 x H' x W', mask int64, *extra int64)``.
    """

    def __init__(
        self,
        resize: int | Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        resize_label: bool = False,
    ) -> None:
        if resize is not None and not isinstance(resize, int):
            resize = _pair(tuple(resize), "resize")
        elif isinstance(resize, int) and resize <= 0:
            raise ValueError(f"resize must be a positive int or (height, width), got {resize}")
        self.resize = resize
        self.mean, self.std = _check_stats(mean, std)
        self.resize_label = bool(resize_label)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (H, W) an input of ``height`` x ``width`` is resized to."""
        if self.resize is None:
            return height, width
        if isinstance(self.resize, int):
            scale = self.resize / min(height, width)
            return max(1, round(height * scale)), max(1, round(width * scale))
        return self.resize

    def __call__(self, image: object, mask: object, *extra_masks: object) -> tuple[Tensor, ...]:
        image_t, masks = _prepare(image, (mask, *extra_masks))
        size = self.output_size(image_t.shape[1], image_t.shape[2])
        if self.resize_label:
            image_t, masks = _resize(image_t, masks, size)
        else:
            image_t, _ = _resize(image_t, [], size)
        image_f = normalize(image_t, self.mean, self.std)
        return (image_f, *(m[0].to(torch.int64) for m in masks))

    def __repr__(self) -> str:
        return f"EvalTransform(resize={self.resize}, resize_label={self.resize_label})"
