"""OCR: object-contextual representations (Yuan et al., ECCV 2020), the HRNet-OCR head
of ContrastiveSeg's and ProtoSeg's HRNet-W48 results.

For backbone features ``X = B x C_in x h x w`` and K classes::

    M   = soft_region_head(X)                        B x K x h x w   soft object regions ("aux_logits")
    x   = pixel_representation(X)                    B x C x h x w   (3x3 conv-BN-ReLU, C = 512)
    f_k = sum_i softmax_i(M_ki) x_i                  B x C x K       object region representations (Eq. 1)
    w_ik = softmax_k( phi(x_i)^T psi(f_k) / sqrt(C_key) )            pixel-region relation (Eq. 2)
    y_i = rho( sum_k w_ik delta(f_k) )               B x C x h x w   object contextual representation (Eq. 3)
    z_i = g([y_i, x_i])                              B x C x h x w   augmented representation (Eq. 4): decode output
    logits = classifier(z)                           B x K x h x w

``phi`` / ``psi`` are two 1x1 conv-BN-ReLU layers (``pixel_query`` / ``object_key``),
``delta`` / ``rho`` one each (``object_value`` / ``context_up``), ``g`` a 1x1 conv-BN-ReLU
with dropout 0.05 (``fuse``); ``C_key = C / 2``. The soft regions are supervised by an
auxiliary cross-entropy of weight 0.4 (``aux_loss_weight``, as released), which the
training step adds when the segmentor's output holds ``"aux_logits"``.

The embedding for the contrastive losses comes, as in ContrastiveSeg's HRNet-W48-OCR
(``embed_from="backbone"``), from the backbone features ``X``; under a prototype
classifier (``embed_from="decoded"``) it comes from ``z``, which then feeds the prototypes.

Sub-module names are stable (a released-checkpoint converter maps onto them):
``soft_region_head`` (released ``aux_head``), ``pixel_representation`` (``conv3x3``),
``object_context.pixel_query`` / ``object_key`` / ``object_value`` / ``context_up``
(``ocr_distri_head.object_context_block.f_pixel`` / ``f_object`` / ``f_down`` / ``f_up``),
``fuse`` (``ocr_distri_head.conv_bn_dropout``), ``classifier`` (``cls_head``). Their
convolutions keep the released biases (a conv bias before BatchNorm is redundant, but
present in the checkpoints). The released block's optional pooling ``scale`` (1 in
HRNet-OCR) and ground-truth variants are not implemented.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .head_base import HeadOptions, SegHead, check_embed_from, check_positive
from .registry import register_head


def conv_bn_relu_biased(in_channels: int, out_channels: int, kernel_size: int = 1) -> nn.Sequential:
    """``Conv2d (with bias, same padding) -> BatchNorm2d -> ReLU`` (the released layout)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def object_region_representations(pixels: Tensor, region_logits: Tensor) -> Tensor:
    """``f_k = sum_i softmax_i(M_ki) x_i`` (softmax over the h*w positions of each region).

    Args:
        pixels: ``B x C x h x w``.
        region_logits: ``B x K x h x w``.

    Returns:
        ``B x C x K x 1`` (a K x 1 "image", so 1x1 convs apply to it).
    """
    weights = F.softmax(region_logits.flatten(2), dim=2)  # B x K x hw
    regions = torch.bmm(weights.to(pixels.dtype), pixels.flatten(2).transpose(1, 2))  # B x K x C
    return regions.transpose(1, 2).unsqueeze(3)


class ObjectContextBlock(nn.Module):
    """Pixel-region relation and object contextual representation (Eq. 2-3):
    ``y_i = rho( sum_k softmax_k(phi(x_i) . psi(f_k) / sqrt(C_key)) delta(f_k) )``."""

    def __init__(self, channels: int, key_channels: int) -> None:
        super().__init__()
        self.key_channels = key_channels
        self.pixel_query = nn.Sequential(
            conv_bn_relu_biased(channels, key_channels), conv_bn_relu_biased(key_channels, key_channels)
        )
        self.object_key = nn.Sequential(
            conv_bn_relu_biased(channels, key_channels), conv_bn_relu_biased(key_channels, key_channels)
        )
        self.object_value = conv_bn_relu_biased(channels, key_channels)
        self.context_up = conv_bn_relu_biased(key_channels, channels)

    def forward(self, pixels: Tensor, regions: Tensor) -> Tensor:
        """``pixels B x C x h x w``, ``regions B x C x K x 1 -> B x C x h x w``."""
        batch, _, height, width = pixels.shape
        query = self.pixel_query(pixels).flatten(2).transpose(1, 2)  # B x hw x C_key
        key = self.object_key(regions).flatten(2)  # B x C_key x K
        value = self.object_value(regions).flatten(2).transpose(1, 2)  # B x K x C_key
        relation = F.softmax(torch.bmm(query, key) * self.key_channels**-0.5, dim=-1)  # B x hw x K
        context = torch.bmm(relation.to(value.dtype), value)  # B x hw x C_key
        context = context.transpose(1, 2).reshape(batch, self.key_channels, height, width)
        return self.context_up(context)


@register_head("ocr")
class OCRHead(SegHead):
    """The HRNet-OCR head (see the module docstring for the equations and names).

    Args:
        in_channels: backbone channels C_in (720 for HRNet-W48).
        num_classes: K for the classifier, or None (prototype classifier).
        num_regions: K for the soft object regions (always the class count).
        channels: C of the pixel / augmented representations (512 as released).
        key_channels: C_key (default ``channels // 2``, 256 as released).
        dropout: of ``fuse`` (0.05 as released).
        embed_from: ``"backbone"`` or ``"decoded"``: what the projection embeds.
        aux_loss_weight: weight of the soft-region cross-entropy (0.4 as released).
        region_channels: hidden width of ``soft_region_head`` (default ``in_channels``, as
            released; smaller only to make tests fast).
    """

    def __init__(self, in_channels: int, num_classes: int | None, num_regions: int, channels: int = 512,
                 key_channels: int | None = None, dropout: float = 0.05, embed_from: str = "backbone",
                 aux_loss_weight: float = 0.4, region_channels: int | None = None) -> None:
        check_positive("channels", channels)
        check_positive("num_regions", num_regions)
        key_channels = key_channels or max(1, channels // 2)
        check_positive("key_channels", key_channels)
        check_embed_from(embed_from)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        super().__init__(in_channels, channels, num_classes)
        self.num_regions = num_regions
        self.embed_from = embed_from
        self.aux_loss_weight = float(aux_loss_weight)
        hidden = region_channels or in_channels
        check_positive("region_channels", hidden)
        self.soft_region_head = nn.Sequential(
            conv_bn_relu_biased(in_channels, hidden, 3), nn.Conv2d(hidden, num_regions, 1)
        )
        self.pixel_representation = conv_bn_relu_biased(in_channels, channels, 3)
        self.object_context = ObjectContextBlock(channels, key_channels)
        self.fuse = nn.Sequential(conv_bn_relu_biased(2 * channels, channels), nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(channels, num_classes, 1) if num_classes is not None else None

    @classmethod
    def from_options(cls, in_channels: int, num_classes: int | None, options: HeadOptions) -> OCRHead:
        """``channels`` defaults to 512 (HRNet-OCR); the soft regions need ``options.num_regions``
        (or ``num_classes``).

        Raises:
            ValueError: neither ``num_regions`` nor ``num_classes`` is given.
        """
        regions = options.num_regions if options.num_regions is not None else num_classes
        if regions is None:
            raise ValueError("head 'ocr' needs num_regions (the class count K) when num_classes is None")
        channels = 512 if options.channels is None else options.channels
        return cls(in_channels, num_classes, regions, channels=channels, embed_from=options.embed_from)

    @property
    def embed_channels(self) -> int:
        return self.in_channels if self.embed_from == "backbone" else self.out_channels

    def decode_with_extras(self, features: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``B x C_in x h x w -> (z B x C x h x w, {"aux_logits": M B x K x h x w})``."""
        region_logits = self.soft_region_head(features)
        pixels = self.pixel_representation(features)
        regions = object_region_representations(pixels, region_logits)
        context = self.object_context(pixels, regions)
        return self.fuse(torch.cat([context, pixels], dim=1)), {"aux_logits": region_logits}

    def decode(self, features: Tensor) -> Tensor:
        return self.decode_with_extras(features)[0]

    def embedding_input(self, features: Tensor, decoded: Tensor) -> Tensor:
        return features if self.embed_from == "backbone" else decoded

    def classify(self, decoded: Tensor) -> Tensor:
        if self.classifier is None:
            raise self._no_classifier()
        return self.classifier(decoded)
