"""The decode-head contract: :class:`SegHead`, :class:`LinearClassifierHead`, the options
``build_head`` hands a head (:class:`HeadOptions`) and the conv-BN-ReLU block heads share.

Every head splits into two steps so that the projection / prototype classifier can read
the penultimate features:

* ``decode(features) -> B x out_channels x h x w``;
* ``classify(decoded) -> logits B x K x h x w``.

``features`` is the backbone's single map ``B x C_in x h x w``, or for a head with
``multi_level = True`` (FPN, SegFormer) the backbone's pyramid, a list of maps finest
first (``in_channels`` is then the list of their channels) and ``h x w`` is the finest
level's grid. ``forward`` is ``classify(decode(features))``. A head built with
``num_classes=None`` has no classifier (used when a prototype classifier replaces it);
its ``classify`` raises.

Two hooks let a head give the segmentor more than logits (defaults in :class:`SegHead`):
``decode_with_extras`` returns extra outputs (OCR: ``{"aux_logits"}``, its soft object
regions, trained with an auxiliary cross-entropy of weight ``aux_loss_weight``), and
``embedding_input`` chooses what the projection embeds (default: the decoded features).

A head class is made buildable by name with :func:`contraseg.models.registry.register_head`;
``build_head`` then calls its :meth:`SegHead.from_options`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

DEFAULT_HEAD_CHANNELS = 256
EMBED_SOURCES = ("backbone", "decoded")


@dataclass(frozen=True)
class HeadOptions:
    """What ``build_head`` knows besides ``in_channels`` and ``num_classes``; each head
    class's :meth:`SegHead.from_options` reads the fields it uses.

    Attributes:
        output_stride: the backbone's output stride (DeepLabV3's ASPP rates).
        channels: the decoded width asked for; None: the head's own default.
        num_regions: the class count K, given even when ``num_classes`` is None (OCR's
            soft object regions under a prototype classifier).
        embed_from: ``"backbone"`` or ``"decoded"``: what the projection embeds (OCR, hrnet).
        aspp_rates: DeepLab-v2's ASPP dilations (``deeplabv2``); None: the head's default.
    """

    output_stride: int = 8
    channels: int | None = None
    num_regions: int | None = None
    embed_from: str = "backbone"
    aspp_rates: tuple[int, ...] | None = None


def check_positive(name: str, value: int | None, allow_none: bool = False) -> None:
    """ValueError unless ``value`` is a positive int (or None when ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_embed_from(embed_from: str) -> None:
    """ValueError unless ``embed_from`` is one of :data:`EMBED_SOURCES`."""
    if embed_from not in EMBED_SOURCES:
        raise ValueError(f"embed_from must be one of {', '.join(EMBED_SOURCES)}, got {embed_from!r}")


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1
) -> nn.Sequential:
    """``Conv2d (no bias, same padding) -> BatchNorm2d -> ReLU``."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SegHead(nn.Module):
    """Base class of decode heads.

    Attributes:
        in_channels: backbone channels C_in (a list, finest first, for a multi-level head).
        out_channels: channels of ``decode``'s output (the penultimate features).
        num_classes: K, or None for a head without classifier.
        multi_level: True when ``decode`` takes the backbone's pyramid.
        embed_channels: channels of :meth:`embedding_input` (default ``out_channels``).
        aux_loss_weight: weight of the cross-entropy on ``"aux_logits"`` (heads that give them).
    """

    multi_level = False
    aux_loss_weight = 0.0

    def __init__(self, in_channels: Any, out_channels: int, num_classes: int | None) -> None:
        super().__init__()
        if self.multi_level:
            if isinstance(in_channels, (str, bytes)) or not isinstance(in_channels, Sequence) or not in_channels:
                raise ValueError(f"in_channels of a multi-level head must be a list of ints, got {in_channels!r}")
            for value in in_channels:
                check_positive("in_channels", value)
            in_channels = [int(c) for c in in_channels]
        else:
            check_positive("in_channels", in_channels)
        check_positive("num_classes", num_classes, allow_none=True)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_classes = num_classes

    @classmethod
    def from_options(cls, in_channels: Any, num_classes: int | None, options: HeadOptions) -> SegHead:
        """The head ``build_head`` makes: ``cls(in_channels, num_classes, channels=C)`` with
        C = ``options.channels``, or 256 when None. A head whose constructor takes other
        arguments overrides this."""
        channels = DEFAULT_HEAD_CHANNELS if options.channels is None else options.channels
        return cls(in_channels, num_classes, channels=channels)

    @property
    def embed_channels(self) -> int:
        """Channels of :meth:`embedding_input` (the projection's input)."""
        return self.out_channels

    def decode(self, features: Any) -> Tensor:
        """``B x C_in x h x w`` (or the pyramid) ``-> B x out_channels x h x w``."""
        raise NotImplementedError

    def decode_with_extras(self, features: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """``decode`` plus extra outputs for the segmentor's dict (default: none)."""
        return self.decode(features), {}

    def embedding_input(self, features: Any, decoded: Tensor) -> Tensor:
        """What the projection embeds: the decoded features by default."""
        return decoded

    def classify(self, decoded: Tensor) -> Tensor:
        """``B x out_channels x h x w -> logits B x K x h x w``."""
        raise NotImplementedError

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``B x K x h x w`` from backbone features ``B x C_in x h x w``."""
        return self.classify(self.decode(features))

    def _no_classifier(self) -> RuntimeError:
        return RuntimeError(f"{type(self).__name__} was built with num_classes=None and has no classifier")


class LinearClassifierHead(SegHead):
    """A head whose classifier is ``Dropout2d -> 1x1 conv`` on the decoded features."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: int | None, dropout: float) -> None:
        super().__init__(in_channels, out_channels, num_classes)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.classifier: nn.Module | None = None
        if num_classes is not None:
            self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(out_channels, num_classes, 1))

    def classify(self, decoded: Tensor) -> Tensor:
        if self.classifier is None:
            raise self._no_classifier()
        return self.classifier(decoded)
