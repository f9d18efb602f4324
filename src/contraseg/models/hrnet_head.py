"""The segmentation head of openseg's HRNet-W48 models (ContrastiveSeg, ProtoSeg).

ContrastiveSeg (Wang et al., ICCV 2021) and ProtoSeg (Zhou et al., CVPR 2022) put one
layer on HRNetV2's concatenated features ``X = B x C_in x h x w`` (C_in = 720 for W48)::

    z = ReLU(BN(Conv3x3(X)))          B x C x h x w   ``decode`` (C = C_in as released)
    logits = Conv1x1(Dropout2d(z))    B x K x h x w   ``classify`` (dropout 0.1)

The embedding for the contrastive losses is taken, as released, from the backbone
features ``X`` for the linear classifier (``HRNet_W48_CONTRAST``: ``proj_head(feats)``),
and from ``z`` under a prototype classifier (``HRNet_W48_Proto``: ``proj_head(cls_head(feats))``);
``embed_from`` says which.

Sub-module names are what the released-checkpoint converter
(:mod:`contraseg.models.convert`) maps onto: ``conv`` (released ``cls_head.0`` / ``.1.0``)
and ``classifier.1`` (released ``cls_head.3``). The 3x3 conv keeps the released bias.
Deliberate difference: the released 1x1 classifier has no bias; here it has one (the
converter sets it to zero), like every other contraseg head. In the released prototype
model (``embed_from="decoded"``) the dropout sits before the projection
(tfzhou/ProtoSeg@1c4a778 lib/models/nets/hrnet.py:71-75, 150-152: ``cls_head`` ends with
``Dropout2d(0.10)``), and so it does here: the embedding's input is ``Dropout2d(z)`` (a module
without parameters, active in training only).
"""

from __future__ import annotations

from torch import Tensor, nn

from .head_base import HeadOptions, LinearClassifierHead, check_embed_from, check_positive
from .registry import register_head


@register_head("hrnet")
class HRNetHead(LinearClassifierHead):
    """One 3x3 conv-BN-ReLU (``decode``), dropout and a 1x1 classifier.

    Args:
        in_channels: backbone channels C_in (720 for HRNet-W48).
        num_classes: K, or None (prototype classifier).
        channels: C of the decoded features; None keeps C_in (as released).
        dropout: before the classifier (0.1 as released).
        embed_from: ``"backbone"`` (the projection embeds X) or ``"decoded"`` (it embeds z).
    """

    def __init__(self, in_channels: int, num_classes: int | None, channels: int | None = None,
                 dropout: float = 0.1, embed_from: str = "backbone") -> None:
        channels = in_channels if channels is None else channels
        check_positive("channels", channels)
        check_embed_from(embed_from)
        super().__init__(in_channels, channels, num_classes, dropout)
        self.embed_from = embed_from
        self.embed_dropout = nn.Dropout2d(dropout) if embed_from == "decoded" else nn.Identity()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=True),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    @classmethod
    def from_options(cls, in_channels: int, num_classes: int | None, options: HeadOptions) -> HRNetHead:
        """``channels`` defaults to ``in_channels`` (as released)."""
        return cls(in_channels, num_classes, channels=options.channels, embed_from=options.embed_from)

    @property
    def embed_channels(self) -> int:
        return self.in_channels if self.embed_from == "backbone" else self.out_channels

    def decode(self, features: Tensor) -> Tensor:
        """``B x C_in x h x w -> B x C x h x w``."""
        return self.conv(features)

    def embedding_input(self, features: Tensor, decoded: Tensor) -> Tensor:
        return features if self.embed_from == "backbone" else self.embed_dropout(decoded)
