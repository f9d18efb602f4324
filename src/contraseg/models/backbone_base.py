"""The backbone contract: the :class:`Backbone` base class and its padding / cropping.

Every backbone gives two views of an image batch ``B x 3 x H x W``:

* ``forward(images) -> B x out_channels x ceil(H/os) x ceil(W/os)``: one feature map for
  the single-map heads (DeepLab, FCN, MLP, OCR); ``os = output_stride``;
* ``forward_pyramid(images) -> [B x C_l x ceil(H/s_l) x ceil(W/s_l)]``: the feature
  pyramid (``pyramid_channels``, ``pyramid_strides``, finest first) for the multi-level
  heads (FPN, SegFormer all-MLP).

**Any input size.** A backbone whose network needs its sides to be multiples of some
number (HRNet's branch fusion adds maps of different sizes otherwise; Swin's patch
embedding and windows; MiT's spatial reduction) has ``size_divisor`` > 1: the images are
zero-padded at the bottom and right to a multiple of it, and every feature map is cropped
back to ``ceil(H / stride) x ceil(W / stride)``, the size a "same"-padded strided
convolution gives (and that ResNet and MobileNetV3 give natively). Zero is the dataset
mean after normalisation. Two released-behaviour exceptions: an HRNet built with
``hrnet_fusion="interpolate"`` does not pad (its levels are ``ceil(H/s)`` natively), and
``resnet101_deeplabv2`` keeps the released ceil-mode grid (no crop).

The library model lives in ``backbone.body``, so its ``state_dict`` keys are torchvision's
/ timm's own and ImageNet checkpoints load into it (:mod:`contraseg.models.weights`).
A backbone is made buildable by name with :func:`contraseg.models.registry.register_backbone`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .weights import LoadReport, PretrainedSpec, StateDict, load_pretrained

OUTPUT_STRIDES = (8, 16, 32)


def pad_to_multiple(images: Tensor, divisor: int) -> Tensor:
    """Zero-pad ``B x C x H x W`` at the bottom and right so both sides are multiples of
    ``divisor`` (returned unchanged when they already are, or ``divisor`` is 1)."""
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % divisor, (-width) % divisor
    if pad_h == 0 and pad_w == 0:
        return images
    return F.pad(images, (0, pad_w, 0, pad_h))


def crop_to_grid(features: Tensor, height: int, width: int, stride: int) -> Tensor:
    """``features[..., :ceil(height/stride), :ceil(width/stride)]``.

    Raises:
        RuntimeError: the map is smaller than that grid (a backbone lost a row or column).
    """
    rows, cols = math.ceil(height / stride), math.ceil(width / stride)
    if features.shape[-2] < rows or features.shape[-1] < cols:
        raise RuntimeError(
            f"feature map {tuple(features.shape[-2:])} at stride {stride} is smaller than the "
            f"{rows} x {cols} grid of a {height} x {width} input"
        )
    return features[..., :rows, :cols]


class Backbone(nn.Module):
    """Base class (see the module docstring for ``forward`` / ``forward_pyramid``).

    Subclasses implement ``_pyramid(padded images) -> list of maps`` and may override
    ``merge(pyramid) -> single map`` (default: the last level).

    Attributes:
        name: registry name.
        body: the torchvision / timm model; pretrained weights load into it.
        out_channels: channels of the single map.
        output_stride: input size / single-map size.
        pyramid_channels: channels of each pyramid level, finest first.
        pyramid_strides: stride of each pyramid level, finest first.
        size_divisor: inputs are zero-padded to a multiple of this (1: no padding).
    """

    name: str = ""
    drop_prefixes: tuple[str, ...] = ()
    size_divisor: int = 1

    def __init__(
        self,
        body: nn.Module,
        out_channels: int,
        output_stride: int,
        pyramid_channels: Sequence[int],
        pyramid_strides: Sequence[int],
    ) -> None:
        super().__init__()
        self.body = body
        self.out_channels = int(out_channels)
        self.output_stride = int(output_stride)
        self.pyramid_channels = tuple(int(c) for c in pyramid_channels)
        self.pyramid_strides = tuple(int(s) for s in pyramid_strides)

    def _pyramid(self, images: Tensor) -> list[Tensor]:
        """The network's pyramid on ``images`` whose sides are multiples of ``size_divisor``."""
        raise NotImplementedError

    def merge(self, pyramid: list[Tensor]) -> Tensor:
        """The single map from the pyramid (default: its last, coarsest level)."""
        return pyramid[-1]

    def forward_pyramid(self, images: Tensor) -> list[Tensor]:
        """``B x 3 x H x W -> [B x C_l x ceil(H/s_l) x ceil(W/s_l)]`` for each level l."""
        height, width = images.shape[-2:]
        levels = self._pyramid(pad_to_multiple(images, self.size_divisor))
        return [crop_to_grid(f, height, width, s) for f, s in zip(levels, self.pyramid_strides)]

    def forward(self, images: Tensor) -> Tensor:
        """``B x 3 x H x W -> B x out_channels x ceil(H/os) x ceil(W/os)``."""
        return self.merge(self.forward_pyramid(images))

    def fetch_hub_state_dict(self) -> StateDict:
        """Download the library's ImageNet weights for this backbone."""
        raise NotImplementedError(f"{type(self).__name__} has no hub weights")

    def load_pretrained(self, pretrained: PretrainedSpec) -> LoadReport | None:
        """Load ``None`` / a local state_dict path / ``"hub"`` into ``self.body``."""
        return load_pretrained(
            self.body,
            pretrained,
            arch=self.name,
            fetch_hub=self.fetch_hub_state_dict,
            drop_prefixes=self.drop_prefixes,
        )


def check_output_stride(output_stride: int) -> None:
    """ValueError unless ``output_stride`` is one of :data:`OUTPUT_STRIDES`."""
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
