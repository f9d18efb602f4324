"""WDASS prototype contrast as released: sampled anchors against class prototypes.

Das, Xian, Dai and Schiele, "Weakly-Supervised Domain Adaptive Semantic Segmentation
with Prototypical Contrastive Learning", CVPR 2023; the formula is that of the released
code (``loss/contrast_loss.py`` and ``loss/contrast_loss_intra.py`` of anurag-198/WDASS).

**Anchors.** Sampled per (image, class) pair like ContrastiveSeg's anchors, with the
released caps: :class:`contraseg.sampling.HardAnchorSampler` with ``quota="hard_first"``
and ``easy_threshold``. Candidate classes have more than ``max_views`` (20) pixels in
the image; P pairs, ``n_view = min(max_samples // P, max_views)`` views each; every hard
pixel (label != prediction) first, easy ones (label == prediction with probability
> 0.95, or > 0.96 in the intra terms) top up; a pair with fewer than ``n_view`` of
both is dropped. ``max_samples`` is 512 in the cross-domain term and 256 in the intra
terms.

**Loss of one term.** With the A = P * n_view anchors f_a (L2-normalised), their classes
y_a, the prototypes p_k (K x D, used as given: WDASS's prototypes are not normalised),
s_ak = f_a . p_k / t and N_k = the number of anchors of class k (so every prototype is
counted with the multiplicity of the sampled set, as the released A x A matrix does)::

    log_prob_a = s_a,y_a - log( exp(s_a,y_a) + sum_{k != y_a} N_k exp(s_ak) )
    M_a        = number of positives of a: anchors of class y_a (intra terms, a itself
                 included), or anchors of class y_a from the *other* domain (cross term)
    loss_a     = -(t / t_base) * [M_a > 0] * log_prob_a
    loss       = mean of loss_a over all A anchors

so an anchor without a positive (cross term: its class was not sampled in the other
domain) adds 0 but still counts in the mean, as released. The released code takes the
mean of log_prob over the M_a positives (all equal: every positive stands for the same
prototype) as ``sum / (M_a + 1e-8)`` with ``M_a`` a float32 count, where ``M_a + 1e-8``
rounds to ``M_a`` for any ``M_a >= 1``: the indicator ``[M_a > 0]`` is that value.

**The three terms** (:class:`WDASSContrastLoss`)::

    cross        = L_cross(source student anchors + target anchors, target prototypes)
    intra_source = L_intra(source student anchors, source prototypes)
    intra_target = L_intra(target student anchors, target prototypes)
    total        = cross_weight * cross + intra_weight * (intra_source + intra_target)

The released weights are 0.5 (cross) and 0.25 (each intra term). The target anchors of
the cross term come from the teacher's embeddings, labelled by the weak label or else the
teacher's confident pseudo label; the intra terms label every pixel without a (weak)
label by the student's own prediction, as released.

Deliberate differences from the released code (bugs fixed):

- nothing to sample: the released cross term raises (``_hard_anchor_sampling`` returns
  two values where three are unpacked); here every term returns ``0 * embeddings.sum()``,
  a zero that back-propagates;
- the released intra term (and the cross term on NaN) returns ``torch.tensor(0.0)``, a
  constant without gradient; here the same zero with a gradient path;
- the domain of an anchor: released, "first half of the concatenated batch is source",
  which is wrong for unequal source / target batch sizes; here explicit per-image
  domain ids;
- more pairs than ``max_samples`` (``n_view = 0``): released, a shape error; here
  nothing is sampled (zero loss);
- the released max-logit shift and NaN check are replaced by a log-sum-exp (same value,
  never NaN); losses are computed in at least float32 (float64 for float64 input).

Example::

    >>> loss = WDASSContrastLoss()
    >>> view = PixelView(embed, labels, logits.argmax(1), logits.softmax(1).amax(1))
    >>> terms = loss(view, view, None, source_prototypes, target_prototypes)
    >>> terms["total"].backward()

One term (sampling, the per-anchor loss, the released constants) is
:class:`~.wdass_contrast_term.SampledPrototypeContrastLoss` in :mod:`.wdass_contrast_term`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .wdass_contrast_term import (
    BASE_TEMPERATURE,
    CROSS_EASY_THRESHOLD,
    CROSS_MAX_SAMPLES,
    INTRA_EASY_THRESHOLD,
    INTRA_MAX_SAMPLES,
    MAX_VIEWS,
    TEMPERATURE,
    SampledPrototypeContrastLoss,
    check_grid,
    checked_grid_labels,
)

__all__ = ["PixelView", "SampledPrototypeContrastLoss", "WDASSContrastLoss", "fill_unlabelled"]


class PixelView(NamedTuple):
    """What one term sees of a batch.

    Attributes:
        embeddings: B x D x h x w.
        labels: B x H x W integer (full / weak labels; ``ignore_index`` where unlabelled),
            nearest-resized to h x w.
        predictions: B x h x w integer predicted classes (may hold ``ignore_index``, e.g.
            teacher predictions below the confidence threshold).
        confidence: B x h x w probability of ``predictions``.
    """

    embeddings: Tensor
    labels: Tensor
    predictions: Tensor
    confidence: Tensor


def fill_unlabelled(labels: Tensor, predictions: Tensor, ignore_index: int = 255) -> Tensor:
    """``labels`` where labelled, else ``predictions`` (B x h x w each): the released label
    map of the intra terms and of the target anchors of the cross term."""
    return torch.where(labels == ignore_index, predictions.to(labels.device).long(), labels.long())


class WDASSContrastLoss(nn.Module):
    """The released WDASS prototype contrast: cross-domain + intra-domain (module docstring).

    Args:
        temperature, base_temperature: t and t_base of every term (0.1, 0.07).
        cross_weight, intra_weight: weights of the cross term and of each intra term
            (released 0.5 and 0.25).
        cross_samples, intra_samples: ``max_samples`` of the terms (512, 256).
        max_views: per (image, class) pair (20).
        cross_threshold, intra_threshold: easy-pixel probability thresholds (0.95, 0.96).
        ignore_index: unlabelled pixels.

    Call::

        loss(source, target, teacher_target, source_prototypes, target_prototypes, generator=None)

    with ``source`` / ``target`` the student's :class:`PixelView` of the source / target
    batch (source labels: ground truth; target labels: the weak labels, ``ignore_index``
    elsewhere, all ``ignore_index`` for image-level labels) and ``teacher_target`` the
    teacher's view of the target batch (predictions = confident pseudo labels, else
    ``ignore_index``; labels = the weak labels); ``None`` uses ``target`` instead.
    Source and target embeddings must share D x h x w.

    Returns:
        dict of scalars ``total``, ``cross``, ``intra_source``, ``intra_target``.
    """

    def __init__(
        self,
        temperature: float = TEMPERATURE,
        base_temperature: float = BASE_TEMPERATURE,
        cross_weight: float = 0.5,
        intra_weight: float = 0.25,
        cross_samples: int = CROSS_MAX_SAMPLES,
        intra_samples: int = INTRA_MAX_SAMPLES,
        max_views: int = MAX_VIEWS,
        cross_threshold: float = CROSS_EASY_THRESHOLD,
        intra_threshold: float = INTRA_EASY_THRESHOLD,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        for name, value in (("cross_weight", cross_weight), ("intra_weight", intra_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        self.cross = SampledPrototypeContrastLoss(
            temperature, base_temperature, cross_samples, max_views, cross_threshold, ignore_index)
        self.intra = SampledPrototypeContrastLoss(
            temperature, base_temperature, intra_samples, max_views, intra_threshold, ignore_index)
        self.cross_weight = float(cross_weight)
        self.intra_weight = float(intra_weight)
        self.ignore_index = int(ignore_index)

    def forward(
        self,
        source: PixelView,
        target: PixelView,
        teacher_target: PixelView | None,
        source_prototypes: Tensor,
        target_prototypes: Tensor,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Return ``{"total", "cross", "intra_source", "intra_target"}``."""
        if tuple(source_prototypes.shape) != tuple(target_prototypes.shape):
            raise ValueError(
                f"source_prototypes {tuple(source_prototypes.shape)} and target_prototypes "
                f"{tuple(target_prototypes.shape)} must have the same K x D shape"
            )
        ignore = self.ignore_index
        teacher = teacher_target if teacher_target is not None else target
        s_labels = checked_grid_labels(source.embeddings, source.labels, source_prototypes, ignore, "source.labels")
        t_labels = checked_grid_labels(target.embeddings, target.labels, target_prototypes, ignore, "target.labels")
        k_labels = checked_grid_labels(
            teacher.embeddings, teacher.labels, target_prototypes, ignore, "teacher_target.labels"
        )
        for view, name in ((source, "source"), (target, "target"), (teacher, "teacher_target")):
            check_grid(view.predictions, view.embeddings, f"{name}.predictions", integer=True)
            check_grid(view.confidence, view.embeddings, f"{name}.confidence", integer=False)
        if source.embeddings.shape[1:] != teacher.embeddings.shape[1:]:
            raise ValueError(
                f"source embeddings {tuple(source.embeddings.shape)} and target embeddings "
                f"{tuple(teacher.embeddings.shape)} must share D x h x w"
            )

        # Cross term: source anchors (labels as given) and target anchors (weak label, else
        # the teacher's confident pseudo label), positives only from the other domain.
        b_s, b_t = source.embeddings.shape[0], teacher.embeddings.shape[0]
        device = source.embeddings.device
        teacher_embed = teacher.embeddings.to(device=device, dtype=source.embeddings.dtype)
        domains = torch.cat([torch.zeros(b_s, dtype=torch.long), torch.ones(b_t, dtype=torch.long)]).to(device)
        cross = self.cross(
            torch.cat([source.embeddings, teacher_embed]),
            torch.cat([s_labels, fill_unlabelled(k_labels, teacher.predictions, ignore).to(device)]),
            torch.cat([source.predictions.long(), teacher.predictions.long().to(device)]),
            torch.cat([source.confidence, teacher.confidence.to(device=device, dtype=source.confidence.dtype)]),
            target_prototypes, domains, generator,
        )
        intra_source = self.intra(
            source.embeddings, fill_unlabelled(s_labels, source.predictions, ignore),
            source.predictions, source.confidence, source_prototypes, None, generator,
        )
        intra_target = self.intra(
            target.embeddings, fill_unlabelled(t_labels, target.predictions, ignore),
            target.predictions, target.confidence, target_prototypes, None, generator,
        )
        total = self.cross_weight * cross + self.intra_weight * (intra_source + intra_target)
        return {"total": total, "cross": cross, "intra_source": intra_source, "intra_target": intra_target}

    def extra_repr(self) -> str:
        return f"cross_weight={self.cross_weight}, intra_weight={self.intra_weight}"
