"""``adapt.method: dacs``: DACS / DAFormer self-training, the standard UDA baseline.

DACS (Tranheden et al., WACV 2021; github:vikolss/DACS @ cc6a87f) and DAFormer's DACS
(Hoyer et al., CVPR 2022; github:lhoyer/DAFormer @ e6f6e04, mmseg/models/uda/dacs.py).
One step, with source batch (x_s, y_s) and unlabeled target batch x_t::

    teacher (EMA of the student, adapt.teacher.momentum) on x_t -> p_t = argmax, c_t = max softmax
    q = #{pixels of the batch with c_t >= tau} / #{pixels of the batch}        (tau = adapt.teacher.threshold)
    ClassMix: M = half of the source classes of x_s; x_m = M x_s + (1 - M) x_t [+ colour jitter, blur]
              y_m = M y_s + (1 - M) p_t,  w_m = M * 1 + (1 - M) * q
    loss = CE(student(x_s), y_s) + mean_pixels(w_m * CE(student(x_m), y_m))
    optimiser step, then the teacher's EMA update

``q`` is DACS's ``threshold_uniform`` weight (trainUDA.py:466-468; configs/configUDA.json:28)
and DAFormer's ``pseudo_weight`` (dacs.py:274-278): one number for every pseudo-labelled
pixel, not a per-pixel mask. The pasted source pixels get weight 1 as in DAFormer
(dacs.py:287-301; DACS gives them q too). Released values: tau 0.968 (trainUDA.py:467,
configs/_base_/uda/dacs.py:10), teacher momentum 0.99 (configs/_base_/uda/dacs.py:9; set
``adapt.teacher.momentum: 0.99``, whose default 0.999 is WDASS's), colour-jitter strength
0.2 applied with probability 0.8 and blur with probability 0.5 (dacs.py:222-231,
configs/_base_/uda/dacs.py:17-19; :class:`~contraseg.adapt.photometric.MixPhotometric`).
Source images come from rare-class sampling (:mod:`contraseg.adapt.rare_class`) when
``adapt.dacs.rare_class_sampling`` is on. Each part is switchable (:class:`~contraseg.adapt.dacs_config.DACSConfig`).
Deliberate difference: source and mixed images go through one forward pass and one backward
(DAFormer: two backward passes); the sum of the losses, hence the gradient, is the same
except for BatchNorm seeing both halves together.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..engine.sampling import SeededDataset, ignore_sigint, sample_seed
from .losses import masked_cross_entropy, weighted_cross_entropy
from .mean_teacher import MeanTeacher
from .mixing import class_mix_masks, mix
from .trainer import AdaptTrainer

MIX_SEED_OFFSET = 104729  # as the WDASS trainer: sample_seed(train.seed + this, iteration * world + rank)


def confident_fraction(confidence: Tensor, threshold: float) -> Tensor:
    """DACS's pseudo-label weight ``q``: the fraction of all pixels of the batch
    (B x H x W ``confidence``) whose confidence is ``>= threshold`` (a 0-d tensor)."""
    return (confidence >= threshold).float().mean()


class DACSTrainer(AdaptTrainer):
    """The DACS step (module docstring); each part switchable under ``adapt.dacs``."""

    method = "dacs"
    target_kind = "none"
    has_adapt_state = True

    def setup(self) -> None:
        """Teacher, photometric augmentation, rare-class sampling tables."""
        from .photometric import MixPhotometric
        from .rare_class import class_pixel_counts, images_with_class, rare_class_probabilities

        options = self.adapt.dacs
        if options.mix and self.adapt.target_batch(self.cfg) != self.cfg.data.batch_size:
            raise ValueError(f"adapt.target_batch_size {self.adapt.target_batch_size} must equal data.batch_size "
                             f"{self.cfg.data.batch_size}: ClassMix pairs source and target images")
        teacher = self.adapt.teacher
        self.teacher = MeanTeacher(self.model, teacher.momentum, teacher.buffers, teacher.warm_start,
                                   teacher.batch_norm).to(self.device) \
            if options.teacher else None
        self.photometric = MixPhotometric(IMAGENET_MEAN, IMAGENET_STD, strength=options.jitter_strength) \
            if options.photometric else None
        self.rcs = None
        if options.rare_class_sampling:
            counts = class_pixel_counts(self.train_set, self.num_classes, self.ignore_index)
            classes, probs = rare_class_probabilities(counts.sum(0), options.rcs_temperature)
            self.rcs = (classes, probs, images_with_class(counts, classes, options.rcs_min_pixels))
            if self.ctx.is_main:
                shown = ", ".join(f"{c}: {float(p):.3f}" for c, p in zip(classes, probs))
                print(f"rare-class sampling (T {options.rcs_temperature}): class probabilities {shown}", flush=True)

    def adapt_state_dict(self) -> dict[str, Any]:
        """``{"teacher": EMA weights and buffers}`` (empty without a teacher)."""
        return {"teacher": self.teacher.state_dict()} if self.teacher is not None else {}

    def load_adapt_state(self, state: dict[str, Any]) -> None:
        """Restore the teacher of a checkpoint."""
        if self.teacher is not None:
            if "teacher" not in state:
                raise ValueError("checkpoint adapt_state lacks 'teacher': not a dacs checkpoint with a teacher")
            self.teacher.load_state_dict(state["teacher"])

    def _loader(self) -> Any:
        """The source stream (rare-class sampled when on), zipped with the target stream."""
        if self.rcs is None:
            return super()._loader()
        from .rare_class import RareClassSampler

        classes, probs, images = self.rcs
        sampler = RareClassSampler(classes, probs, images, self.cfg.train.seed, self.ctx.rank, self.ctx.world_size,
                                   self._position())
        workers = self.cfg.data.num_workers
        source = DataLoader(SeededDataset(self.train_set), batch_size=self.cfg.data.batch_size, sampler=sampler,
                            num_workers=workers, drop_last=True, pin_memory=self.device.type == "cuda",
                            persistent_workers=workers > 0, worker_init_fn=ignore_sigint if workers > 0 else None,
                            generator=torch.Generator().manual_seed(self.cfg.train.seed))
        return zip(source, self._target_loader())

    def _generator(self) -> torch.Generator:
        position = self.iteration * self.ctx.world_size + self.ctx.rank
        return torch.Generator().manual_seed(sample_seed(self.cfg.train.seed + MIX_SEED_OFFSET, position))

    @torch.no_grad()
    def pseudo_labels(self, images_t: Tensor) -> tuple[Tensor, Tensor]:
        """``(pseudo label, confidence)`` B x H x W of the teacher (or the student) on ``images_t``."""
        net = self.teacher if self.teacher is not None else self.model
        was_training = net.training
        net.eval()
        with self.precision.autocast():
            logits = net(images_t)["logits"].float()
        net.train(was_training)
        logits = F.interpolate(logits, size=images_t.shape[-2:], mode="bilinear", align_corners=False)
        confidence, pseudo = logits.softmax(dim=1).max(dim=1)
        return pseudo, confidence

    def train_step(self, batch: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Tensor]:
        """One DACS step on ``(source batch, target batch)``; returns the detached terms."""
        source, target = batch
        options, ignore = self.adapt.dacs, self.ignore_index
        images_s, labels_s = self.to_device(source, "image"), self.to_device(source, "label")
        images_t = self.to_device(target, "image")
        pseudo, confidence = self.pseudo_labels(images_t)
        share = confident_fraction(confidence, self.adapt.teacher.threshold)
        weight_t = (share if options.confidence_weight else torch.ones_like(share)) * torch.ones_like(confidence)
        if options.mix:
            generator = self._generator()
            masks = class_mix_masks(labels_s, generator, ignore)
            images_m = mix(masks, images_s, images_t)
            labels_m = mix(masks, labels_s, pseudo)
            weights_m = mix(masks, torch.ones_like(weight_t), weight_t)
        else:
            generator = self._generator()
            images_m, labels_m, weights_m = images_t, pseudo, weight_t
        if self.photometric is not None:
            images_m = self.photometric(images_m, generator)
        n = images_s.shape[0]
        out = self.forward_parts([images_s, images_m])
        ce_source = masked_cross_entropy(out["logits"][:n], labels_s, ignore)
        ce_mix = weighted_cross_entropy(out["logits"][n:], labels_m, weights_m, ignore)
        source_out = {name: value[:n] for name, value in out.items()}
        terms = self.regulariser(source_out, labels_s, self.iteration, self.model)
        loss = ce_source + ce_mix + (sum(terms.values()) if terms else 0.0)
        self.optimise(loss)
        self.regulariser.after_step(source_out, labels_s)
        if self.teacher is not None:
            self.teacher.update(self.model, self.iteration + 1)
        return {"loss": loss.detach(), "ce_source": ce_source.detach(), "ce_mix": ce_mix.detach(),
                "confident": share.detach(), **{name: value.detach() for name, value in terms.items()}}
