"""WDASS: weakly-supervised domain adaptation with prototypical contrast (Das et al., CVPR 2023).

One step, with source batch (x_s, y_s) and target batch x_t with weak labels w_t (point /
coarse pixels, 255 elsewhere) or image-level presence vectors z_t::

    teacher (EMA of the student, eval mode) on x_t -> probabilities, pseudo label p_t,
        confidence c_t; p_t <- w_t where weakly labelled
    confident = c_t >= tau (0.968); q = fraction of confident pixels in the batch
    ClassMix: M = half of the source classes of x_s; x_m = M x_s + (1 - M) x_t,
        y_m = M y_s + (1 - M) p_t, pixel weights M + (1 - M) q [confident]
    student on concat(x_s, x_m, x_t) -> logits / embeddings of the three parts
    prototypes (EMA, WeakLabelPrototypeEstimator): source from (f_s, y_s); target
        from the teacher's target embeddings with the weak labels + confident pseudo
        labels (point / coarse) or the confident pseudo labels of present classes (image)
    loss = CE(s, y_s) + weighted CE(m, y_m) + weak_weight * partial CE(t, w_t)
         + ramp * ( image_weight * ImageLevelLoss(t, z_t)
                    + contrast_weight * [cross_weight * PC(f_s, y_s; target prototypes)
                                         + intra_weight * (PC(f_s, y_s; source prototypes)
                                                           + PC(f_t, y~_t; target prototypes))] )
    optimiser step, then the teacher's EMA update

where PC is :class:`contraseg.losses.PrototypeContrastLoss` (prototypes detached, so the
source-to-target alignment is asymmetric), y~_t the weak label where there is one, else
the confident pseudo label (of a present class for image labels), and z_t the image
label (image) or the classes of w_t (point / coarse: the official code adds the
image-level loss for every kind). ``ramp`` rises linearly from 0 to 1 over
``wdass.warmup_iters`` (the official code switches both terms on at iteration 10000).
Differences from the official code, kept for simplicity: no colour-jitter / blur on the
mixed image, no Cityscapes-specific ignored image borders, no edge loss, and the
image-level loss on prototype logits (``--improto``) is left out.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.sampling import sample_seed
from .losses import masked_cross_entropy, weighted_cross_entropy
from .mean_teacher import MeanTeacher
from .mixing import class_mix_masks, mix
from .trainer import AdaptTrainer
from .weak_labels import presence_from_labels

MIX_SEED_OFFSET = 104729  # ClassMix draws: sample_seed(train.seed + this, iteration * world + rank)


class WDASSTrainer(AdaptTrainer):
    """The WDASS step (module docstring) for image, point or coarse weak labels."""

    method = "wdass"
    has_adapt_state = True

    @property
    def weak_kind(self) -> str:
        """``image``, ``point`` or ``coarse`` (``adapt.wdass.weak_kind``)."""
        return self.adapt.wdass.weak_kind

    @property
    def target_kind(self) -> str:  # type: ignore[override]
        """Image labels travel as presence vectors, point / coarse labels as label maps."""
        return "image" if self.adapt.wdass.weak_kind == "image" else "dense"

    def label_source(self) -> str | None:
        """The weak-label folder (``image_labels.json`` inside it for image labels)."""
        return self.adapt.wdass.weak_labels

    def setup(self) -> None:
        """Mean teacher (a copy of the initial student), prototype estimator and losses."""
        from ..losses import ImageLevelLoss, WDASSContrastLoss
        from ..prototypes import WeakLabelPrototypeEstimator

        options = self.adapt.wdass
        if options.mix and self.adapt.target_batch(self.cfg) != self.cfg.data.batch_size:
            raise ValueError(f"adapt.target_batch_size {self.adapt.target_batch_size} must equal data.batch_size "
                             f"{self.cfg.data.batch_size}: ClassMix pairs source and target images")
        if self.cfg.model.projection is None:
            raise ValueError("model.projection: WDASS prototypes need a projection of dimension model.embed_dim")
        teacher = self.adapt.teacher
        self.teacher = MeanTeacher(self.model, teacher.momentum, teacher.buffers).to(self.device)
        self.estimator = WeakLabelPrototypeEstimator(
            self.num_classes, self.cfg.model.embed_dim, ("source", "target"), momentum=options.prototype_momentum,
            temperature=options.prototype_temperature, ignore_index=self.ignore_index).to(self.device)
        self.contrast = WDASSContrastLoss(options.temperature, options.cross_weight, options.intra_weight,
                                          self.ignore_index)
        self.image_loss = ImageLevelLoss()

    def adapt_state_dict(self) -> dict[str, Any]:
        """``{"teacher": EMA weights and buffers, "estimator": per-domain prototypes}``."""
        return {"teacher": self.teacher.state_dict(), "estimator": self.estimator.state_dict()}

    def load_adapt_state(self, state: dict[str, Any]) -> None:
        """Restore the teacher and the prototypes of a checkpoint (ValueError if absent)."""
        for key in ("teacher", "estimator"):
            if key not in state:
                raise ValueError(f"checkpoint adapt_state lacks {key!r}: not a wdass checkpoint")
        self.teacher.load_state_dict(state["teacher"])
        self.estimator.load_state_dict(state["estimator"])

    def ramp(self) -> float:
        """``min(1, iteration / wdass.warmup_iters)`` (1 without warm-up)."""
        warmup = self.adapt.wdass.warmup_iters
        return 1.0 if warmup <= 0 else min(1.0, self.iteration / warmup)

    def _mix_generator(self) -> torch.Generator:
        position = self.iteration * self.ctx.world_size + self.ctx.rank
        return torch.Generator().manual_seed(sample_seed(self.cfg.train.seed + MIX_SEED_OFFSET, position))

    @torch.no_grad()
    def _teacher_view(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher ``(pseudo labels B x H x W, confidence B x H x W, embeddings B x D x h x w)``."""
        with self.precision.autocast():
            out = self.teacher(images)
        logits = F.interpolate(out["logits"].float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
        confidence, pseudo = logits.softmax(dim=1).max(dim=1)
        return pseudo, confidence, out["embed"].float()

    def train_step(self, batch: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Tensor]:
        """One WDASS step on ``(source batch, target batch)``; returns the detached terms."""
        source, target = batch
        options, ignore = self.adapt.wdass, self.ignore_index
        images_s, labels_s = self.to_device(source, "image"), self.to_device(source, "label")
        images_t = self.to_device(target, "image")
        pseudo, confidence, teacher_embed = self._teacher_view(images_t)
        if self.weak_kind == "image":
            weak = None
            presence = self.to_device(target, "presence")
        else:
            weak = self.to_device(target, "label")
            presence = presence_from_labels(weak, self.num_classes, ignore)
            pseudo = torch.where(weak != ignore, weak, pseudo)
        confident = confidence >= self.adapt.teacher.threshold
        confident_share = confident.float().mean()
        target_weight = confident_share * confident.float()

        parts = [images_s]
        if options.mix:
            masks = class_mix_masks(labels_s, self._mix_generator(), ignore)
            parts.append(mix(masks, images_s, images_t))
            labels_m = mix(masks, labels_s, pseudo)
            weights_m = mix(masks, torch.ones_like(target_weight), target_weight)
        parts.append(images_t)
        out = self.forward_float(torch.cat(parts))
        sizes = [part.shape[0] for part in parts]
        logits = out["logits"].split(sizes)
        embeds = out["embed"].split(sizes)
        logits_s, logits_t, embed_s, embed_t = logits[0], logits[-1], embeds[0], embeds[-1]

        terms: dict[str, Tensor] = {"ce_source": masked_cross_entropy(logits_s, labels_s, ignore)}
        if options.mix:
            terms["ce_mix"] = weighted_cross_entropy(logits[1], labels_m, weights_m, ignore)
        if weak is not None:
            terms["weak"] = options.weak_weight * masked_cross_entropy(logits_t, weak, ignore)

        self.estimator.update("source", embed_s, labels_s)
        if weak is None:
            self.estimator.update_from_image_labels("target", teacher_embed, presence, pseudo, confidence,
                                                    self.adapt.teacher.threshold)
            allowed = presence.gather(1, pseudo.reshape(pseudo.shape[0], -1)).reshape(pseudo.shape)
            labels_t = torch.where(confident & allowed, pseudo, torch.full_like(pseudo, ignore))
        else:
            self.estimator.update("target", teacher_embed, weak, pseudo, confidence, self.adapt.teacher.threshold)
            labels_t = torch.where((weak != ignore) | confident, pseudo, torch.full_like(pseudo, ignore))
        source_protos, source_valid = self.estimator.get("source")
        target_protos, target_valid = self.estimator.get("target")
        contrast = self.contrast(embed_s, labels_s, embed_t, labels_t, source_protos, target_protos,
                                 source_valid, target_valid)
        ramp = self.ramp()
        terms["image"] = ramp * options.image_weight * self.image_loss(logits_t, presence)
        terms["contrast"] = ramp * options.contrast_weight * contrast["total"]
        loss = sum(terms.values())
        self.optimise(loss)
        self.teacher.update(self.model, self.iteration + 1)
        logged = {"loss": loss.detach(), **{name: value.detach() for name, value in terms.items()}}
        for name in ("cross", "intra_source", "intra_target"):
            logged[name] = contrast[name].detach()
        logged["confident"] = confident_share.detach()
        logged["target_prototypes"] = target_valid.float().sum()
        return logged
