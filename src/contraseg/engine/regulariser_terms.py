"""The modules that compute a regulariser's loss terms, one small class per method.

Every regulariser is an ``nn.Module`` (so its buffers, e.g. a memory bank, go into
the checkpoint through ``state_dict``) with one call shape::

    terms = regulariser(outputs, labels, iteration, model)   # {"proac": tensor, ...}
    loss = ce + sum(terms.values())
    ...optimiser step...
    regulariser.after_step(outputs, labels)                   # e.g. memory enqueue

``outputs`` is the segmentor's dict (``embed`` B x D x h x w, ``logits`` B x K x h x w,
``prototype_logits`` B x (K*M) x h x w), ``labels`` B x H x W. Each returned term is
already multiplied by the regulariser weight at the 0-based ``iteration`` i:
0 for ``i < start_iter`` (a hard start), then ``weight * min(1, (i - start_iter) /
warmup_iters)`` (a linear ramp from 0; full weight at once when ``warmup_iters`` is 0).
ContrastiveSeg's release is ``start_iter: 5000`` with no ramp: the contrast is added when
the 0-based counter ``iters`` (tfzhou/ContrastiveSeg@287e5d3,
segmentor/tools/module_runner.py:32 ``add(['iters'], 0)``; incremented after the step,
segmentor/trainer_contrastive.py:267) is ``>= warmup_iters`` (trainer_contrastive.py:209),
and before that the loss is ``ce + 0 * contrast`` (lib/loss/loss_contrast.py:189). As
there, the term is still computed before the start (weight 0) and the memory bank is
still filled after every step: the released memory model returns ``key`` / ``lb_key``
whenever it trains (lib/models/nets/hrnet.py:182-188), and the trainer enqueues them
whatever ``with_embed`` is (trainer_contrastive.py:247-252).

A class here is built as ``cls(cfg, context, weight)`` from the ``regulariser:`` config
section, the model's :class:`RegulariserContext` and the resolved weight; which class a
name builds, its default weight and its config keys are the regulariser table
(:mod:`contraseg.engine.regularisers`). A regulariser that is one loss on the embedding
needs no class of its own: the table wraps its loss in :class:`LossRegulariser`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass(frozen=True)
class RegulariserContext:
    """What a regulariser knows of the model and the labels: K classes, D-dimensional
    embeddings, the ignored label."""

    num_classes: int
    embed_dim: int
    ignore_index: int = 255


def _unwrap(model: nn.Module | None) -> nn.Module | None:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


class Regulariser(nn.Module):
    """Base class: weight with linear warm-up; subclasses implement :meth:`terms`.
    The base class itself is the ``none`` regulariser (no term).

    Args:
        weight: the weight after warm-up.
        warmup_iters: iterations of the linear ramp from 0 (0 = no ramp).
        start_iter: the first (0-based) iteration with a non-zero weight; the ramp
            starts there.
    """

    name = "none"
    uses_embedding = False

    def __init__(self, weight: float = 0.0, warmup_iters: int = 0, start_iter: int = 0) -> None:
        super().__init__()
        if weight < 0 or warmup_iters < 0 or start_iter < 0:
            raise ValueError(f"weight, warmup_iters and start_iter must be >= 0, got {weight}, {warmup_iters} "
                             f"and {start_iter}")
        self.weight = float(weight)
        self.warmup_iters = int(warmup_iters)
        self.start_iter = int(start_iter)

    def weight_at(self, iteration: int) -> float:
        """0 before ``start_iter``, then ``weight * min(1, (iteration - start_iter) /
        warmup_iters)`` (just ``weight`` without warm-up)."""
        if iteration < self.start_iter:
            return 0.0
        if self.warmup_iters <= 0:
            return self.weight
        return self.weight * min(1.0, (iteration - self.start_iter) / self.warmup_iters)

    def terms(self, outputs: dict[str, Tensor], labels: Tensor, model: nn.Module | None) -> dict[str, Tensor]:
        """Unweighted (but relatively scaled) loss terms; none for the base class."""
        return {}

    def forward(self, outputs: dict[str, Tensor], labels: Tensor, iteration: int,
                model: nn.Module | None = None) -> dict[str, Tensor]:
        """The named terms multiplied by :meth:`weight_at` ``(iteration)``."""
        scale = self.weight_at(iteration)
        return {name: scale * value for name, value in self.terms(outputs, labels, _unwrap(model)).items()}

    def after_step(self, outputs: dict[str, Tensor], labels: Tensor) -> None:
        """Hook run after the optimiser step (memory enqueue); nothing by default."""

    def extra_repr(self) -> str:
        return f"weight={self.weight}, warmup_iters={self.warmup_iters}, start_iter={self.start_iter}"


class LossRegulariser(Regulariser):
    """One loss on the embedding: the term ``{name: loss(embed, labels)}`` (embeddings
    B x D x h x w in float32, labels B x H x W).

    Args:
        name: the regulariser's name, also the name of its term in the log.
        loss: ``loss(embeddings, labels) -> scalar`` (a ``contraseg.losses`` module).
        weight, warmup_iters, start_iter: see :class:`Regulariser`.
    """

    uses_embedding = True

    def __init__(self, name: str, loss: nn.Module, weight: float, warmup_iters: int = 0, start_iter: int = 0) -> None:
        super().__init__(weight, warmup_iters, start_iter)
        self.name = name
        self.loss = loss

    def terms(self, outputs: dict[str, Tensor], labels: Tensor, model: nn.Module | None) -> dict[str, Tensor]:
        """``{name: loss(embed, labels)}``."""
        return {self.name: self.loss(outputs["embed"].float(), labels)}


class ProACRegulariser(Regulariser):
    """ProAC: prototype-anchor contrast against K fixed hyperspherical prototypes (K x D):
    ``hyperspherical_prototypes(K, D, seed=cfg.prototype_seed)``, or the K x D prototypes
    of ``cfg.prototypes_file``."""

    name = "proac"
    uses_embedding = True

    def __init__(self, cfg: Any, context: RegulariserContext, weight: float) -> None:
        super().__init__(weight, cfg.warmup_iters, cfg.start_iter)
        from ..losses import ProACLoss
        from ..prototypes import hyperspherical_prototypes, load_prototypes

        k, d = context.num_classes, context.embed_dim
        if cfg.prototypes_file:
            prototypes = load_prototypes(cfg.prototypes_file)
            if tuple(prototypes.shape) != (k, d):
                raise ValueError(f"regulariser.prototypes_file {cfg.prototypes_file}: prototypes are "
                                 f"{tuple(prototypes.shape)}, the model needs {k} x {d}")
        else:
            prototypes = hyperspherical_prototypes(k, d, seed=cfg.prototype_seed)
        self.loss = ProACLoss(prototypes, temperature=cfg.temperature, ignore_index=context.ignore_index)

    def terms(self, outputs: dict[str, Tensor], labels: Tensor, model: nn.Module | None) -> dict[str, Tensor]:
        """``{"proac": ProACLoss(embed, labels)}``."""
        return {"proac": self.loss(outputs["embed"].float(), labels)}


class PixelContrastRegulariser(Regulariser):
    """ContrastiveSeg pixel-to-pixel contrast among the batch's sampled anchors."""

    name = "pixel_contrast"
    uses_embedding = True
    memory = False  # True: contrast against a pixel / segment memory bank

    def __init__(self, cfg: Any, context: RegulariserContext, weight: float) -> None:
        super().__init__(weight, cfg.warmup_iters, cfg.start_iter)
        from ..losses import PixelContrastLoss

        bank = None
        if self.memory:
            from ..sampling import PixelMemoryBank

            bank = PixelMemoryBank(context.num_classes, context.embed_dim, pixel_size=cfg.memory_pixel_size,
                                   segment_size=cfg.memory_segment_size,
                                   pixels_per_image=cfg.memory_pixels_per_update, ignore_index=context.ignore_index,
                                   enqueue_ranks=cfg.memory_enqueue_ranks)
        self.loss = PixelContrastLoss(temperature=cfg.temperature, base_temperature=cfg.base_temperature,
                                      max_samples=cfg.max_samples, max_views=cfg.max_views, memory=bank,
                                      ignore_index=context.ignore_index, memory_impl="streaming",
                                      **_sampling_options(cfg) if self.memory else {})

    def terms(self, outputs: dict[str, Tensor], labels: Tensor, model: nn.Module | None) -> dict[str, Tensor]:
        """``{"contrast": PixelContrastLoss(embed, labels, argmax of the logits)}``."""
        predictions = outputs["logits"].detach().argmax(1)
        return {"contrast": self.loss(outputs["embed"].float(), labels, predictions)}

    def after_step(self, outputs: dict[str, Tensor], labels: Tensor) -> None:
        """Enqueue the batch's pixels and segments into the memory bank (if any)."""
        memory = getattr(self.loss, "memory", None)
        if memory is None:
            return
        memory.enqueue(outputs["embed"].detach().float(), labels)  # gathers from all ranks itself


def _sampling_options(cfg: Any) -> dict[str, Any]:
    """The memory bank's per-anchor example sampling keys (``regulariser.memory_sampling`` ...)."""
    return {key: getattr(cfg, key) for key in ("memory_sampling", "memory_positives", "memory_negatives",
                                               "memory_semi_hard_fraction")}


class MemoryPixelContrastRegulariser(PixelContrastRegulariser):
    """Pixel contrast whose contrast set is a pixel / segment memory bank, filled after
    each step with the batch of every rank.

    The memory path uses the streaming loss (``PixelContrastLoss``'s default
    ``memory_impl="streaming"``): the bank is read in place, block by block, and is
    enqueued in :meth:`after_step`, after backward, so no copy of it is kept."""

    name = "pixel_contrast_memory"
    memory = True


class ProtoSegRegulariser(Regulariser):
    """ProtoSeg: Sinkhorn assignment of pixels to their class's prototypes (momentum
    update of the bank inside ``model.prototype_head.assign``), then PPC and PPD.

    ``regulariser.prototype_momentum``, ``sinkhorn_iters`` and ``sinkhorn_epsilon`` are set
    on the model's :class:`~contraseg.prototypes.PrototypeBank` (``prototype_head.bank``)
    at each call, so they follow the config on resume too."""

    name = "protoseg"
    uses_embedding = True

    def __init__(self, cfg: Any, context: RegulariserContext, weight: float) -> None:
        super().__init__(weight, cfg.warmup_iters, cfg.start_iter)
        from ..losses import PPCLoss, PPDLoss

        self.ppc = PPCLoss(ignore_index=context.ignore_index)
        self.ppd = PPDLoss(ignore_index=context.ignore_index)
        self.ppc_weight = cfg.ppc_weight
        self.ppd_weight = cfg.ppd_weight
        self.ignore_index = context.ignore_index
        self.bank_settings = {"momentum": float(cfg.prototype_momentum),
                              "sinkhorn_iterations": int(cfg.sinkhorn_iters),
                              "sinkhorn_epsilon": float(cfg.sinkhorn_epsilon)}

    def terms(self, outputs: dict[str, Tensor], labels: Tensor, model: nn.Module | None) -> dict[str, Tensor]:
        """``{"ppc": ppc_weight * PPC, "ppd": ppd_weight * PPD}`` against the Sinkhorn targets."""
        head = getattr(model, "prototype_head", None)
        if head is None or "prototype_logits" not in outputs:
            raise ValueError("regulariser protoseg needs a segmentor built with classifier='prototype'")
        for name, value in self.bank_settings.items():
            setattr(head.bank, name, value)
        plogits = outputs["prototype_logits"]  # B x (K*M) x h x w, used as is (no flattening copy)
        targets = head.assign(outputs["embed"], labels, outputs["logits"], update=self.training,
                              prototype_logits=plogits)
        return {"ppc": self.ppc_weight * self.ppc(plogits, targets),
                "ppd": self.ppd_weight * self.ppd(plogits, targets)}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ppc_weight={self.ppc_weight}, ppd_weight={self.ppd_weight}"
