"""contraseg's losses as mmsegmentation losses on a decode head's embedding.

mmseg calls every entry of a head's ``loss_decode`` as
``loss(seg_logits, seg_label, weight=..., ignore_index=...)``: logits only. The losses
here need the head's embedding too, so they are *embedding losses*: an ``Embed*Head``
(:mod:`.heads`) takes them out of ``loss_decode`` when it is built, tells them the
number of classes, the embedding size and ``ignore_index`` (:meth:`EmbeddingLoss.bind`),
and calls them from its ``loss_by_feat`` with

- ``outputs``: ``{"logits": B x K x h x w, "embed": B x D x h x w (unit norm)}``, plus
  ``"prototype_logits": B x (K*M) x h x w`` and ``"prototype_targets": B x h x w`` when
  the head is ProtoSeg's nearest-prototype classifier;
- ``seg_label``: B x H x W ground truth (resized to h x w with nearest neighbour inside).

Every loss returns ``loss_weight * contraseg_loss(...)`` under its ``loss_name`` (which
starts with ``loss_`` so that mmengine adds it to the total). The computation is
contraseg's own (:mod:`contraseg.losses`), so the value is the same as contraseg's on the
same embedding. The default loss weights are those of contraseg's regulariser table
(:data:`contraseg.engine.regularisers.REGULARISERS`), the other defaults the losses' own.

=====================  ======================  =========================================
registered as          default ``loss_name``   contraseg loss, default ``loss_weight``
=====================  ======================  =========================================
``ProACLoss``          ``loss_proac``          :class:`contraseg.losses.ProACLoss`, 0.1
``PixelContrastLoss``  ``loss_pixel_contrast`` :class:`contraseg.losses.PixelContrastLoss`
                                               (optional :class:`PixelMemoryBank`), 0.1
``PPCLoss``            ``loss_ppc``            :class:`contraseg.losses.PPCLoss`, 0.01
``PPDLoss``            ``loss_ppd``            :class:`contraseg.losses.PPDLoss`, 0.001
=====================  ======================  =========================================
"""

from __future__ import annotations

from typing import Any

from mmseg.registry import MODELS
from torch import Tensor, nn

from ...engine.config_schema import default_of
from ...engine.regularisers import REGULARISERS
from ...losses import PixelContrastLoss as _PixelContrast
from ...losses import PPCLoss as _PPC
from ...losses import PPDLoss as _PPD
from ...losses import ProACLoss as _ProAC
from ...prototypes import hyperspherical_prototypes, load_prototypes
from ...sampling import PixelMemoryBank

__all__ = ["EmbeddingLoss", "ProACLoss", "PixelContrastLoss", "PPCLoss", "PPDLoss"]

_MEMORY_KEYS = ("pixel_size", "segment_size", "pixels_per_image")

# Default loss weights and settings: the regulariser table's and the losses' own (released) defaults.
_PROAC, _PIXEL, _PROTOSEG = REGULARISERS["proac"], REGULARISERS["pixel_contrast"], REGULARISERS["protoseg"]


class EmbeddingLoss(nn.Module):
    """Base of the losses an ``Embed*Head`` computes on its embedding.

    Args:
        loss_weight: the loss is multiplied by it (as every mmseg loss is).
        loss_name: key of the loss in mmseg's loss dict; must start with ``loss_``.

    A subclass builds its contraseg loss in :meth:`_build`, once the head has called
    :meth:`bind`, and computes it in :meth:`compute`.
    """

    needs_prototypes = False  # True: needs the head's nearest-prototype classifier

    def __init__(self, loss_weight: float, loss_name: str) -> None:
        super().__init__()
        if not isinstance(loss_name, str) or not loss_name.startswith("loss_"):
            raise ValueError(f"{type(self).__name__}: loss_name must start with 'loss_', got {loss_name!r}")
        self.loss_weight = float(loss_weight)
        self._loss_name = loss_name
        self.num_classes: int | None = None
        self.embed_dim: int | None = None
        self.ignore_index: int | None = None

    @property
    def loss_name(self) -> str:
        """The key of this loss in the loss dict (mmseg's convention)."""
        return self._loss_name

    @property
    def bound(self) -> bool:
        return self.ignore_index is not None

    def bind(self, num_classes: int, embed_dim: int, ignore_index: int, has_prototypes: bool) -> None:
        """Called once by the head: K, D, the ignored label and its classifier kind."""
        name = type(self).__name__
        if self.needs_prototypes and not has_prototypes:
            raise ValueError(
                f"loss_decode {name} needs the head's nearest-prototype classifier: "
                f"add prototypes=dict(num_prototypes=10) to the decode head"
            )
        self.num_classes = int(num_classes)
        self.embed_dim = int(embed_dim)
        self.ignore_index = int(ignore_index)
        self._build()

    def _build(self) -> None:
        """Create the contraseg loss once K, D and ``ignore_index`` are known."""

    def forward(self, outputs: dict[str, Tensor], seg_label: Tensor) -> Tensor:
        """``loss_weight * loss`` on the head's outputs (see the module docstring)."""
        if not self.bound:
            raise RuntimeError(
                f"{type(self).__name__} is computed by an Embed*Head: list it in that head's loss_decode"
            )
        return self.loss_weight * self.compute(outputs, seg_label)

    def compute(self, outputs: dict[str, Tensor], seg_label: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"loss_name={self.loss_name!r}, loss_weight={self.loss_weight}"


@MODELS.register_module(name="ProACLoss")
class ProACLoss(EmbeddingLoss):
    """ProAC, prototype-anchor contrast (Ren et al., TCSVT 2024), on the head's embedding.

    Args:
        temperature: t (0.1 in the paper).
        anchor: ``"prototype"`` (the method) or ``"pixel"`` (the paper's ablation).
        prototypes: path of a K x D prototype file (``contraseg prototypes make``);
            default ``hyperspherical_prototypes(K, D, seed=prototype_seed)``.
        prototype_seed: seed of the default prototypes' random rotation.
        loss_weight, loss_name: see :class:`EmbeddingLoss`.

    The fixed prototypes are a buffer of the inner :class:`contraseg.losses.ProACLoss`,
    so they are saved in mmseg's checkpoints.
    """

    def __init__(
        self,
        temperature: float = default_of(_ProAC, "temperature"),
        anchor: str = "prototype",
        prototypes: str | None = None,
        prototype_seed: int = _PROAC.option("prototype_seed").default,
        loss_weight: float = _PROAC.weight,
        loss_name: str = "loss_proac",
    ) -> None:
        super().__init__(loss_weight, loss_name)
        if temperature <= 0:
            raise ValueError(f"ProACLoss: temperature must be > 0, got {temperature}")
        if anchor not in ("prototype", "pixel"):
            raise ValueError(f"ProACLoss: anchor must be 'prototype' or 'pixel', got {anchor!r}")
        self.temperature = float(temperature)
        self.anchor = anchor
        self.prototypes_file = prototypes
        self.prototype_seed = int(prototype_seed)
        self.loss: _ProAC | None = None

    def _build(self) -> None:
        if self.prototypes_file is not None:
            protos = load_prototypes(self.prototypes_file)
            if tuple(protos.shape) != (self.num_classes, self.embed_dim):
                raise ValueError(
                    f"ProACLoss prototypes={self.prototypes_file}: prototypes are {tuple(protos.shape)}, "
                    f"the head needs num_classes x embed_channels = {self.num_classes} x {self.embed_dim}"
                )
        else:
            protos = hyperspherical_prototypes(self.num_classes, self.embed_dim, seed=self.prototype_seed)
        self.loss = _ProAC(protos, self.temperature, self.ignore_index, self.anchor)

    def compute(self, outputs: dict[str, Tensor], seg_label: Tensor) -> Tensor:
        return self.loss(outputs["embed"], seg_label)


@MODELS.register_module(name="PixelContrastLoss")
class PixelContrastLoss(EmbeddingLoss):
    """ContrastiveSeg's pixel-to-pixel contrast (Wang et al., ICCV 2021) on the embedding.

    Anchors are sampled half hard, half easy against the head's own prediction
    (``argmax`` of its logits at the embedding's resolution).

    Args:
        temperature, base_temperature, max_samples, max_views: as in
            :class:`contraseg.losses.PixelContrastLoss` (defaults are ContrastiveSeg's
            Cityscapes config: 0.1, 0.07, 1024, 100).
        memory: ``None`` (contrast the batch's anchors with each other) or a dict of
            :class:`PixelMemoryBank` sizes, ``pixel_size``, ``segment_size``,
            ``pixels_per_image`` (ContrastiveSeg: 5000, 5000, 10); ``dict()`` takes
            those defaults. The bank is a buffer of this loss (saved in checkpoints) and
            each training batch is enqueued after its loss is computed.
        loss_weight, loss_name: see :class:`EmbeddingLoss`.
    """

    def __init__(
        self,
        temperature: float = default_of(_PixelContrast, "temperature"),
        base_temperature: float = default_of(_PixelContrast, "base_temperature"),
        max_samples: int = default_of(_PixelContrast, "max_samples"),
        max_views: int = default_of(_PixelContrast, "max_views"),
        memory: dict[str, Any] | None = None,
        loss_weight: float = _PIXEL.weight,
        loss_name: str = "loss_pixel_contrast",
    ) -> None:
        super().__init__(loss_weight, loss_name)
        if memory is not None:
            if not isinstance(memory, dict):
                raise ValueError(f"PixelContrastLoss: memory must be None or a dict, got {type(memory).__name__}")
            unknown = sorted(set(memory) - set(_MEMORY_KEYS))
            if unknown:
                raise ValueError(
                    f"PixelContrastLoss: unknown memory key {unknown[0]!r}; allowed: {', '.join(_MEMORY_KEYS)}"
                )
        self.settings = dict(
            temperature=temperature, base_temperature=base_temperature, max_samples=max_samples, max_views=max_views
        )
        self.memory_cfg = None if memory is None else dict(memory)
        self.loss: _PixelContrast | None = None

    def _build(self) -> None:
        bank = None
        if self.memory_cfg is not None:
            bank = PixelMemoryBank(self.num_classes, self.embed_dim, ignore_index=self.ignore_index, **self.memory_cfg)
        self.loss = _PixelContrast(**self.settings, ignore_index=self.ignore_index, memory=bank)

    @property
    def memory(self) -> PixelMemoryBank | None:
        return None if self.loss is None else self.loss.memory

    def compute(self, outputs: dict[str, Tensor], seg_label: Tensor) -> Tensor:
        predictions = outputs["logits"].detach().argmax(dim=1)
        enqueue = self.memory is not None and self.training
        return self.loss(outputs["embed"], seg_label, predictions, enqueue=enqueue)


class _PrototypeLoss(EmbeddingLoss):
    """PPC / PPD: read the head's prototype cosines and Sinkhorn targets."""

    needs_prototypes = True

    def compute(self, outputs: dict[str, Tensor], seg_label: Tensor) -> Tensor:
        return self.loss(outputs["prototype_logits"], outputs["prototype_targets"])


@MODELS.register_module(name="PPCLoss")
class PPCLoss(_PrototypeLoss):
    """ProtoSeg's pixel-prototype contrast (Zhou et al., CVPR 2022): cross-entropy over
    all K*M prototypes against the pixel's Sinkhorn-assigned one. Needs a head with
    ``prototypes=dict(...)``.

    Args:
        temperature: divides the cosines (1.0 in ProtoSeg).
        loss_weight: 0.01 in ProtoSeg.
    """

    def __init__(self, temperature: float = default_of(_PPC, "temperature"),
                 loss_weight: float = _PROTOSEG.option("ppc_weight").default, loss_name: str = "loss_ppc") -> None:
        super().__init__(loss_weight, loss_name)
        if temperature <= 0:
            raise ValueError(f"PPCLoss: temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.loss: _PPC | None = None

    def _build(self) -> None:
        self.loss = _PPC(self.temperature, self.ignore_index)


@MODELS.register_module(name="PPDLoss")
class PPDLoss(_PrototypeLoss):
    """ProtoSeg's pixel-prototype distance: mean ``(1 - cos to the assigned prototype)^2``.
    Needs a head with ``prototypes=dict(...)``.

    Args:
        loss_weight: 0.001 in ProtoSeg.
    """

    def __init__(self, loss_weight: float = _PROTOSEG.option("ppd_weight").default,
                 loss_name: str = "loss_ppd") -> None:
        super().__init__(loss_weight, loss_name)
        self.loss: _PPD | None = None

    def _build(self) -> None:
        self.loss = _PPD(self.ignore_index)
