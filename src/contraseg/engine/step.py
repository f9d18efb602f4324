"""One optimisation step of a segmentor with cross-entropy + a regulariser.

Shared by :class:`contraseg.engine.trainer.Trainer` and the ``train-step`` benchmark::

    out   = forward(images)                      # under autocast when enabled
    ce    = CE(bilinear-upsample(out["logits"]) to H x W, labels), ignore_index skipped
            (or the ``loss:`` section's SegmentationLoss: class weights, OHEM; the
            auxiliary logits get its weighted CE, never OHEM, as openseg does)
    terms = regulariser(out, labels, iteration, model)
          (+ "aux_ce": aux_weight * CE(out["aux_logits"]) when the head gives auxiliary
            logits: OCR's soft object regions; aux_weight = loss.aux_weight, or when
            null model.aux_loss_weight, 0.4 as released)
    loss  = ce + sum(terms)
    backward (scaled for fp16), optional grad-norm clipping, optimiser step
    regulariser.after_step(out, labels)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from .precision import Precision
from .regulariser_terms import Regulariser


def segmentation_loss(logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """Cross-entropy of B x K x h x w logits upsampled (bilinear) to the B x H x W labels."""
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)


@dataclass
class StepParts:
    """What a step needs: ``forward`` is the model or its DDP wrapper, ``model`` the bare
    model (its ``prototype_head`` and parameters)."""

    forward: nn.Module
    model: nn.Module
    regulariser: Regulariser
    optimizer: object
    precision: Precision
    ignore_index: int = 255
    grad_clip: float | None = None
    seg_loss: nn.Module | None = None  # loss(logits, labels); None: plain cross-entropy
    aux_weight: float | None = None  # None: model.aux_loss_weight


def training_step(parts: StepParts, images: Tensor, labels: Tensor, iteration: int) -> dict[str, Tensor]:
    """Run one step on ``images`` B x 3 x H x W and ``labels`` B x H x W (on the model's
    device); returns the detached terms ``{"loss", "ce", <regulariser terms>}``."""
    with parts.precision.autocast():
        raw = parts.forward(images)
    out = {name: value.float() for name, value in raw.items()}  # losses in float32
    def supervised(logits: Tensor, auxiliary: bool = False) -> Tensor:
        if parts.seg_loss is None:
            return segmentation_loss(logits, labels, parts.ignore_index)
        if auxiliary and hasattr(parts.seg_loss, "auxiliary"):  # weighted CE even under OHEM, as released
            return parts.seg_loss.auxiliary(logits, labels)
        return parts.seg_loss(logits, labels)

    ce = supervised(out["logits"])
    terms = parts.regulariser(out, labels, iteration, parts.model)
    if "aux_logits" in out:
        weight = parts.aux_weight if parts.aux_weight is not None else getattr(parts.model, "aux_loss_weight", 0.4)
        terms = {**terms, "aux_ce": float(weight) * supervised(out["aux_logits"], auxiliary=True)}
    loss = ce + sum(terms.values()) if terms else ce
    parts.optimizer.zero_grad(set_to_none=True)
    scaler = parts.precision.scaler
    scaler.scale(loss).backward()
    if parts.grad_clip is not None:
        scaler.unscale_(parts.optimizer)
        nn.utils.clip_grad_norm_(parts.model.parameters(), parts.grad_clip)
    scaler.step(parts.optimizer)
    scaler.update()
    parts.regulariser.after_step(out, labels)
    return {"loss": loss.detach(), "ce": ce.detach(), **{name: value.detach() for name, value in terms.items()}}
