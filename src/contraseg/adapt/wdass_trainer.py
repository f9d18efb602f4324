"""WDASS: weakly-supervised domain adaptation with prototypical contrast (Das et al., CVPR 2023).

One step, with source batch (x_s, y_s) and target batch x_t with weak labels w_t (point /
coarse pixels, 255 elsewhere) or image-level presence vectors z_t::

    teacher (EMA of the student, eval mode) on x_t -> pseudo label p_t, confidence c_t
        (image resolution, for ClassMix) and, on the embedding grid, pseudo labels /
        confidences and embeddings (for the prototypes and the contrast); p_t <- w_t
        where weakly labelled
    confident = c_t >= tau (0.968); q = fraction of confident pixels in the batch
    ClassMix: M = half of the source classes of x_s; x_m = M x_s + (1 - M) x_t,
        y_m = M y_s + (1 - M) p_t, pixel weights M + (1 - M) q [confident];
        x_m <- colour jitter / Gaussian blur (``wdass.photometric``, released probabilities)
    student on concat(x_s, x_m, x_t [, full target images]) -> logits / embeddings
    prototypes: source from (f_s, y_s); target from the teacher's embeddings, the weak
        labels and the teacher's confident pseudo labels
    pixel weights of the target part: 0 in the teacher.ignore_rows [top, bottom] rows
    loss = CE(s, y_s) + weighted CE(m, y_m) + weak_weight * partial CE(t, w_t)
         + edge_weight * EdgeLoss(s, y_s)
         + gate * image_weight * ( ImageLevelLoss(t) [+ ImageLevelLoss(<f_t, target prototypes>)] )
         + gate * contrast_weight * contrast
    optimiser step, then the teacher's EMA update

``gate`` (:meth:`WDASSTrainer.ramp`) is 0 before ``wdass.start_iter`` and then rises linearly
to 1 over ``wdass.warmup_iters`` (full weight at once when 0). The released recipe is a hard
start: ``start_iter`` 10001, no ramp (the official code switches the image-level and contrast
terms on when its 0-based ``itern > 10000``; :class:`~contraseg.adapt.config.WDASSConfig`
cites the lines). The edge term (:class:`contraseg.losses.WDASSEdgeLoss`) and the prototype
image term (``wdass.prototype_image_loss``, :func:`contraseg.losses.prototype_logits`, on the
same embeddings / presence as the image term) are the released ones.

**Contrast** (``wdass.contrast``):

- ``released`` (default): the released code's loss and estimator,
  :class:`contraseg.losses.WDASSContrastLoss` and
  :class:`contraseg.prototypes.WDASSPrototypeEstimator`. Anchors are sampled from the
  student's source embeddings (ground truth, student predictions), the teacher's target
  embeddings in the cross term (weak label, else the teacher's pseudo label of confidence
  >= ``prototype_threshold``; teacher predictions below it count as no prediction, as the
  released code's in-place thresholding makes them) and the student's target embeddings
  in the intra term (weak label, else the student's prediction). Prototypes replace the
  previous ones every step; point labels give their centres from the bilinearly upsampled
  embeddings at the points, as released.
- ``prototype-softmax``: contraseg's earlier formulation,
  :class:`contraseg.losses.WDASSSoftmaxContrastLoss` with the EMA prototypes of
  :class:`contraseg.prototypes.WeakLabelPrototypeEstimator`; target anchors are the
  weakly or confidently pseudo-labelled student target pixels (of a class present in the
  image label, for image-level labels).

**Weak labels on the embedding grid.** Every weak label brought to the 1/8 grid goes
through :func:`contraseg.adapt.weak_labels.downsample_labels`: a cell is labelled where any
of its pixels is (majority class, ties to the smallest id), so point labels survive. The
source ground truth is nearest-resized, as released.

**Image-level loss on crops.** The student sees crops, the weak label describes the whole
image. Point / coarse: a class is present where the crop has a labelled pixel of it,
absent where the whole image's weak label lacks it, and left out of the loss otherwise
(:func:`contraseg.adapt.weak_labels.crop_presence`). Image-level labels say nothing about
a crop, so the term is computed on the whole target image (resized to the crop size, an
extra student forward). The released code derives a crop's classes from its dense ground
truth instead, which a weakly-supervised run does not have.

Other differences from the official code, kept for simplicity: for image-level labels the
``prototype-softmax`` variant keeps only pseudo labels of classes in the image label (the
released code keeps all). The released edge loss's Gumbel noise is drawn here from a seeded
CPU generator (reproducible runs) rather than ``torch.rand(...).cuda()``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .._labels import resize_labels
from ..engine.sampling import sample_seed
from .losses import masked_cross_entropy, weighted_cross_entropy
from .mean_teacher import MeanTeacher
from .mixing import class_mix_masks, mix
from .trainer import AdaptTrainer
from .weak_labels import crop_presence, downsample_labels

MIX_SEED_OFFSET = 104729  # ClassMix / photometric draws: sample_seed(train.seed + this, iteration * world + rank)
CONTRAST_SEED_OFFSET = 130363  # anchor sampling of the released contrast
EDGE_SEED_OFFSET = 155921  # Gumbel noise of the edge loss


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

    @property
    def released(self) -> bool:
        """Whether the released contrast and estimator are used (``wdass.contrast``)."""
        return self.adapt.wdass.contrast == "released"

    def label_source(self) -> str | None:
        """The weak-label folder (``image_labels.json`` inside it for image labels)."""
        return self.adapt.wdass.weak_labels

    def build_target_set(self):  # type: ignore[no-untyped-def]
        """The target set, with what the image-level loss on crops needs (module docstring)."""
        target_set = super().build_target_set()
        if self.weak_kind == "image":
            target_set.full_image = True
        else:
            target_set.image_classes = True
        return target_set

    def setup(self) -> None:
        """Mean teacher (a copy of the initial student), prototype estimator, losses, augmentation."""
        from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
        from ..losses import ImageLevelLoss, WDASSContrastLoss, WDASSEdgeLoss, WDASSSoftmaxContrastLoss
        from ..prototypes import WDASSPrototypeEstimator, WeakLabelPrototypeEstimator
        from .photometric import MixPhotometric

        options = self.adapt.wdass
        if options.mix and self.adapt.target_batch(self.cfg) != self.cfg.data.batch_size:
            raise ValueError(f"adapt.target_batch_size {self.adapt.target_batch_size} must equal data.batch_size "
                             f"{self.cfg.data.batch_size}: ClassMix pairs source and target images")
        if self.cfg.model.projection is None:
            raise ValueError("model.projection: WDASS prototypes need a projection of dimension model.embed_dim")
        teacher = self.adapt.teacher
        self.teacher = MeanTeacher(self.model, teacher.momentum, teacher.buffers, teacher.warm_start,
                                   teacher.batch_norm).to(self.device)
        domains = ("source", "target")
        if self.released:
            self.estimator = WDASSPrototypeEstimator(
                self.num_classes, self.cfg.model.embed_dim, domains, options.prototype_threshold,
                self.ignore_index).to(self.device)
            self.contrast = WDASSContrastLoss(
                options.temperature, options.base_temperature, options.cross_weight, options.intra_weight,
                options.cross_samples, options.intra_samples, options.max_views, options.cross_threshold,
                options.intra_threshold, self.ignore_index)
        else:
            self.estimator = WeakLabelPrototypeEstimator(
                self.num_classes, self.cfg.model.embed_dim, domains, momentum=options.prototype_momentum,
                temperature=options.prototype_temperature, ignore_index=self.ignore_index).to(self.device)
            self.contrast = WDASSSoftmaxContrastLoss(options.temperature, options.cross_weight,
                                                     options.intra_weight, self.ignore_index)
        self.image_loss = ImageLevelLoss()
        self.edge_loss = WDASSEdgeLoss(ignore_index=self.ignore_index)
        self.photometric = MixPhotometric(IMAGENET_MEAN, IMAGENET_STD) if options.photometric else None

    def adapt_state_dict(self) -> dict[str, Any]:
        """``{"teacher": EMA weights and buffers, "estimator": per-domain prototypes}``."""
        return {"teacher": self.teacher.state_dict(), "estimator": self.estimator.state_dict()}

    def load_adapt_state(self, state: dict[str, Any]) -> None:
        """Restore the teacher and the prototypes of a checkpoint (ValueError if absent)."""
        for key in ("teacher", "estimator"):
            if key not in state:
                raise ValueError(f"checkpoint adapt_state lacks {key!r}: not a wdass checkpoint")
        self.teacher.load_state_dict(state["teacher"])
        try:
            self.estimator.load_state_dict(state["estimator"])
        except RuntimeError as err:
            raise ValueError(f"checkpoint adapt_state estimator does not fit adapt.wdass.contrast "
                             f"{self.adapt.wdass.contrast!r}: {str(err).splitlines()[0]}") from None

    def ramp(self) -> float:
        """Weight of the image-level and contrast terms at the current 0-based iteration i:
        0 for ``i < wdass.start_iter``, else ``min(1, (i - start_iter) / wdass.warmup_iters)``
        (1 without warm-up)."""
        options = self.adapt.wdass
        since = self.iteration - options.start_iter
        if since < 0:
            return 0.0
        return 1.0 if options.warmup_iters <= 0 else min(1.0, since / options.warmup_iters)

    def _generator(self, offset: int) -> torch.Generator:
        position = self.iteration * self.ctx.world_size + self.ctx.rank
        return torch.Generator().manual_seed(sample_seed(self.cfg.train.seed + offset, position))

    @torch.no_grad()
    def _teacher_view(self, images: Tensor, grid: tuple[int, int] | None = None) -> dict[str, Tensor]:
        """Teacher pseudo labels / confidence at image resolution and on the embedding grid, and embeddings."""
        with self.precision.autocast():
            out = self.teacher(images)
        raw, embed = out["logits"].float(), out["embed"].float()
        logits = F.interpolate(raw, size=images.shape[-2:], mode="bilinear", align_corners=False)
        confidence, pseudo = logits.softmax(dim=1).max(dim=1)
        grid_conf, grid_pseudo = _grid_predictions(raw, tuple(embed.shape[-2:]))
        return {"pseudo": pseudo, "confidence": confidence, "embed": embed,
                "grid_pseudo": grid_pseudo, "grid_confidence": grid_conf}

    def train_step(self, batch: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Tensor]:
        """One WDASS step on ``(source batch, target batch)``; returns the detached terms."""
        source, target = batch
        options, ignore = self.adapt.wdass, self.ignore_index
        images_s, labels_s = self.to_device(source, "image"), self.to_device(source, "label")
        images_t = self.to_device(target, "image")
        teacher = self._teacher_view(images_t)
        pseudo, confidence = teacher["pseudo"], teacher["confidence"]
        if self.weak_kind == "image":
            weak = None
            presence = self.to_device(target, "presence")
            presence_mask = None
        else:
            weak = self.to_device(target, "label")
            presence, presence_mask = crop_presence(weak, self.to_device(target, "image_classes"), ignore)
            pseudo = torch.where(weak != ignore, weak, pseudo)
        confident = confidence >= self.adapt.teacher.threshold
        confident_share = confident.float().mean()
        target_weight = ignore_rows(confident_share * confident.float(), *self.adapt.teacher.ignore_rows)

        generator = self._generator(MIX_SEED_OFFSET)
        parts = [images_s]
        if options.mix:
            masks = class_mix_masks(labels_s, generator, ignore)
            images_m = mix(masks, images_s, images_t)
            if self.photometric is not None:
                images_m = self.photometric(images_m, generator)
            parts.append(images_m)
            labels_m = mix(masks, labels_s, pseudo)
            weights_m = mix(masks, torch.ones_like(target_weight), target_weight)
        parts.append(images_t)
        if weak is None:
            parts.append(self.to_device(target, "full_image"))
        out = self.forward_parts(parts)
        sizes = [part.shape[0] for part in parts]
        logits = out["logits"].split(sizes)
        embeds = out["embed"].split(sizes)
        t_index = 2 if options.mix else 1
        logits_s, logits_t, embed_s, embed_t = logits[0], logits[t_index], embeds[0], embeds[t_index]
        image_logits = logits[-1] if weak is None else logits_t
        image_embed = embeds[-1] if weak is None else embed_t

        terms: dict[str, Tensor] = {"ce_source": masked_cross_entropy(logits_s, labels_s, ignore)}
        if options.mix:
            terms["ce_mix"] = weighted_cross_entropy(logits[1], labels_m, weights_m, ignore, over=options.mix_normalise)
        if weak is not None:
            terms["weak"] = options.weak_weight * masked_cross_entropy(logits_t, weak, ignore)
        if options.edge_weight > 0:
            upsampled = F.interpolate(logits_s, size=labels_s.shape[-2:], mode="bilinear", align_corners=False)
            terms["edge"] = options.edge_weight * self.edge_loss(
                upsampled, labels_s, generator=self._generator(EDGE_SEED_OFFSET))

        grid = tuple(embed_s.shape[-2:])
        weak_grid = None if weak is None else downsample_labels(weak, grid, ignore)
        if self.released:
            contrast, target_valid = self._released_contrast(
                labels_s, weak, weak_grid, teacher, logits_s, logits_t, embed_s, embed_t)
        else:
            contrast, target_valid = self._softmax_contrast(
                labels_s, weak_grid, presence, pseudo, confidence, confident, teacher, embed_s, embed_t)
        ramp = self.ramp()
        terms["image"] = ramp * options.image_weight * self.image_loss(image_logits, presence, presence_mask)
        if options.prototype_image_loss:
            from ..losses import prototype_logits

            target_protos = self.estimator.get("target")[0].detach()
            terms["image_proto"] = ramp * options.image_weight * self.image_loss(
                prototype_logits(image_embed, target_protos), presence, presence_mask)
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

    def _released_contrast(self, labels_s: Tensor, weak: Tensor | None, weak_grid: Tensor | None,
                           teacher: dict[str, Tensor], logits_s: Tensor, logits_t: Tensor, embed_s: Tensor,
                           embed_t: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Prototypes and contrast as released (module docstring)."""
        from ..losses import PixelView

        ignore, grid = self.ignore_index, tuple(embed_s.shape[-2:])
        labels_s_grid = resize_labels(labels_s, grid)
        self.estimator.update("source", embed_s, labels_s_grid)
        pseudo_grid = resize_labels(teacher["grid_pseudo"], grid)
        conf_grid = F.interpolate(teacher["grid_confidence"][:, None], size=grid, mode="nearest")[:, 0]
        points = weak if self.weak_kind == "point" else None
        self.estimator.update("target", teacher["embed"], weak_grid, pseudo_grid, conf_grid, points)
        source_protos, _ = self.estimator.get("source")
        target_protos, target_valid = self.estimator.get("target")

        target_labels = weak_grid if weak_grid is not None else torch.full_like(pseudo_grid, ignore)
        teacher_preds = torch.where(conf_grid >= self.adapt.wdass.prototype_threshold, pseudo_grid,
                                    torch.full_like(pseudo_grid, ignore))
        prob_s, pred_s = _grid_predictions(logits_s.detach(), grid)
        prob_t, pred_t = _grid_predictions(logits_t.detach(), grid)
        contrast = self.contrast(
            PixelView(embed_s, labels_s_grid, pred_s, prob_s),
            PixelView(embed_t, target_labels, pred_t, prob_t),
            PixelView(teacher["embed"], target_labels, teacher_preds, conf_grid),
            source_protos, target_protos, self._generator(CONTRAST_SEED_OFFSET),
        )
        return contrast, target_valid

    def _softmax_contrast(self, labels_s: Tensor, weak_grid: Tensor | None, presence: Tensor, pseudo: Tensor,
                          confidence: Tensor, confident: Tensor, teacher: dict[str, Tensor], embed_s: Tensor,
                          embed_t: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The ``prototype-softmax`` variant: EMA prototypes, every labelled pixel an anchor."""
        ignore, grid = self.ignore_index, tuple(embed_s.shape[-2:])
        threshold = self.adapt.teacher.threshold
        self.estimator.update("source", embed_s, labels_s)
        if weak_grid is None:
            self.estimator.update_from_image_labels("target", teacher["embed"], presence, pseudo, confidence,
                                                    threshold)
            allowed = presence.gather(1, pseudo.reshape(pseudo.shape[0], -1)).reshape(pseudo.shape)
            labels_t = torch.where(confident & allowed, pseudo, torch.full_like(pseudo, ignore))
        else:
            self.estimator.update("target", teacher["embed"], weak_grid, pseudo, confidence, threshold)
            confident_pseudo = torch.where(confident, pseudo, torch.full_like(pseudo, ignore))
            labels_t = torch.where(weak_grid != ignore, weak_grid, resize_labels(confident_pseudo, grid))
        source_protos, source_valid = self.estimator.get("source")
        target_protos, target_valid = self.estimator.get("target")
        contrast = self.contrast(embed_s, labels_s, embed_t, labels_t, source_protos, target_protos,
                                 source_valid, target_valid)
        return contrast, target_valid


def ignore_rows(weights: Tensor, top: int, bottom: int) -> Tensor:
    """``weights`` (B x H x W) with rows ``[:top]`` and ``[H - bottom:]`` set to 0 (a copy when changed)."""
    if top <= 0 and bottom <= 0:
        return weights
    weights = weights.clone()
    weights[:, :top] = 0
    if bottom > 0:
        weights[:, weights.shape[1] - bottom:] = 0
    return weights


def _grid_predictions(logits: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``(confidence, class)`` of softmax(logits) on ``grid`` (logits bilinearly resized if needed)."""
    if tuple(logits.shape[-2:]) != tuple(grid):
        logits = F.interpolate(logits, size=grid, mode="bilinear", align_corners=False)
    return logits.softmax(dim=1).max(dim=1)


