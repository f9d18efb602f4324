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
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._labels import resize_labels
from .._validation import check_embeddings, check_label_range, check_labels
from ..sampling.anchor_sampler import AnchorSamples, HardAnchorSampler
from ._pixels import zero_loss

#: The released constants.
TEMPERATURE = 0.1
BASE_TEMPERATURE = 0.07
CROSS_MAX_SAMPLES = 512
INTRA_MAX_SAMPLES = 256
MAX_VIEWS = 20
CROSS_EASY_THRESHOLD = 0.95
INTRA_EASY_THRESHOLD = 0.96
def sampled_prototype_contrast(
    anchors: Tensor,
    anchor_labels: Tensor,
    prototypes: Tensor,
    temperature: float,
    base_temperature: float,
    anchor_domains: Tensor | None = None,
) -> Tensor:
    """Per-anchor WDASS loss ``loss_a`` (module docstring) of already sampled anchors.

    Args:
        anchors: A x D L2-normalised anchor features.
        anchor_labels: A long, classes in [0, K).
        prototypes: K x D (used as given, not normalised).
        temperature, base_temperature: t and t_base.
        anchor_domains: optional A long; given, positives come only from another domain.

    Returns:
        A losses (the released loss is their mean). Cost O(A x K).
    """
    num_classes = prototypes.shape[0]
    counts = torch.bincount(anchor_labels, minlength=num_classes).to(anchors.dtype)  # N_k
    logits = anchors @ prototypes.T / temperature  # A x K
    own = F.one_hot(anchor_labels, num_classes).bool()
    # log of the multiplicity of every prototype in the denominator: N_k for k != y_a, 1 for y_a.
    log_weight = torch.where(own, torch.zeros_like(logits), counts.log()[None, :].expand_as(logits))
    denominator = torch.logsumexp(logits + log_weight, dim=1)
    log_prob = logits.gather(1, anchor_labels[:, None]).squeeze(1) - denominator
    positives = counts[anchor_labels]
    if anchor_domains is not None:
        domains, domain_ids = torch.unique(anchor_domains, return_inverse=True)
        per_domain = torch.zeros(domains.numel(), num_classes, dtype=anchors.dtype, device=anchors.device)
        per_domain.index_put_((domain_ids, anchor_labels), torch.ones_like(positives), accumulate=True)
        positives = positives - per_domain[domain_ids, anchor_labels]
    has_positive = (positives > 0).to(log_prob.dtype)
    return -(temperature / base_temperature) * has_positive * log_prob


class SampledPrototypeContrastLoss(nn.Module):
    """One term of the released WDASS prototype contrast (module docstring).

    Args:
        temperature: t > 0 (released 0.1).
        base_temperature: t_base > 0 (released 0.07).
        max_samples: at most this many anchors (released: 512 cross, 256 intra).
        max_views: at most this many anchors per (image, class) pair (released 20).
        easy_threshold: a correct pixel is easy above this probability (released: 0.95
            cross, 0.96 intra).
        ignore_index: label of pixels that are never anchors.

    Call::

        loss(embeddings, labels, predictions, confidence, prototypes, domains=None, generator=None)

    Shapes:
        embeddings: B x D x h x w (L2-normalised inside); labels: B x H x W integer,
        nearest-resized to h x w (pass them at h x w, e.g. from
        :func:`contraseg.adapt.weak_labels.downsample_labels`, to keep sparse points);
        predictions: B x h x w integer; confidence: B x h x w, the probability of the
        prediction; prototypes: K x D (detached inside); domains: optional B integer
        domain id per image: given, positives are taken only from another domain (the
        cross-domain term); generator: optional ``torch.Generator`` of the sampler.

    Returns:
        The scalar loss; ``0 * embeddings.sum()`` when nothing is sampled.
    """

    def __init__(
        self,
        temperature: float = TEMPERATURE,
        base_temperature: float = BASE_TEMPERATURE,
        max_samples: int = CROSS_MAX_SAMPLES,
        max_views: int = MAX_VIEWS,
        easy_threshold: float = CROSS_EASY_THRESHOLD,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        for name, value in (("temperature", temperature), ("base_temperature", base_temperature)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)
        self.ignore_index = int(ignore_index)
        self.sampler = HardAnchorSampler(
            max_samples, max_views, ignore_index, quota="hard_first", easy_threshold=easy_threshold
        )

    def sample(
        self,
        labels: Tensor,
        predictions: Tensor,
        confidence: Tensor,
        generator: torch.Generator | None = None,
    ) -> AnchorSamples:
        """The anchors of a batch (labels, predictions and confidence on the embedding grid)."""
        return self.sampler(labels, predictions, generator=generator, confidence=confidence)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        predictions: Tensor,
        confidence: Tensor,
        prototypes: Tensor,
        domains: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Return the scalar loss of one term."""
        grid_labels = _grid_labels(embeddings, labels, prototypes, self.ignore_index)
        _check_grid(predictions, embeddings, "predictions", integer=True)
        _check_grid(confidence, embeddings, "confidence", integer=False)
        domain_of_image = _check_domains(domains, embeddings.shape[0], embeddings.device)
        samples = self.sample(grid_labels, predictions, confidence, generator)
        return self.contrast(embeddings, samples, prototypes, domain_of_image)

    def contrast(
        self, embeddings: Tensor, samples: AnchorSamples, prototypes: Tensor, domains: Tensor | None = None
    ) -> Tensor:
        """The loss of given anchors: mean of :func:`sampled_prototype_contrast`."""
        if samples.num_pairs == 0 or samples.num_views == 0:
            return zero_loss(embeddings)
        b, d, h, w = embeddings.shape
        index = samples.index.reshape(-1)
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        with torch.autocast(embeddings.device.type, enabled=False):
            # A x D gathered from the B x D x (h*w) layout (no copy of all pixels).
            anchors = embeddings.reshape(b, d, h * w)[index // (h * w), :, index % (h * w)].to(dtype)
            anchors = F.normalize(anchors, dim=1)
            anchor_domains = None if domains is None else domains[samples.image].repeat_interleave(samples.num_views)
            losses = sampled_prototype_contrast(
                anchors, samples.anchor_labels(), prototypes.detach().to(dtype),
                self.temperature, self.base_temperature, anchor_domains,
            )
            return losses.mean()

    def extra_repr(self) -> str:
        sampler = self.sampler
        return (
            f"temperature={self.temperature}, base_temperature={self.base_temperature}, "
            f"max_samples={sampler.max_samples}, max_views={sampler.max_views}, "
            f"easy_threshold={sampler.easy_threshold}"
        )


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
        s_labels = _grid_labels(source.embeddings, source.labels, source_prototypes, ignore, "source.labels")
        t_labels = _grid_labels(target.embeddings, target.labels, target_prototypes, ignore, "target.labels")
        k_labels = _grid_labels(teacher.embeddings, teacher.labels, target_prototypes, ignore, "teacher_target.labels")
        for view, name in ((source, "source"), (target, "target"), (teacher, "teacher_target")):
            _check_grid(view.predictions, view.embeddings, f"{name}.predictions", integer=True)
            _check_grid(view.confidence, view.embeddings, f"{name}.confidence", integer=False)
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


# ---------------------------------------------------------------------- input checks


def _grid_labels(
    embeddings: Tensor, labels: Tensor, prototypes: Tensor, ignore_index: int, name: str = "labels"
) -> Tensor:
    """Checked labels nearest-resized to the embedding grid (B x h x w long)."""
    check_embeddings(embeddings)
    check_labels(labels, embeddings.shape[0], name)
    if not isinstance(prototypes, Tensor):
        raise TypeError(f"prototypes must be a torch.Tensor, got {type(prototypes).__name__}")
    if prototypes.dim() != 2 or prototypes.shape[1] != embeddings.shape[1] or not prototypes.is_floating_point():
        raise ValueError(
            f"prototypes must be a floating K x D tensor with the D of embeddings "
            f"{tuple(embeddings.shape)}, got shape {tuple(prototypes.shape)} dtype {prototypes.dtype}"
        )
    check_label_range(labels, prototypes.shape[0], ignore_index, name)
    return resize_labels(labels, tuple(embeddings.shape[-2:])).to(embeddings.device)


def _check_grid(tensor: Tensor, embeddings: Tensor, name: str, integer: bool) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    expected = (embeddings.shape[0], *embeddings.shape[-2:])
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{name} must be B x h x w = {expected} like the embeddings, got {tuple(tensor.shape)}")
    if integer and (tensor.is_floating_point() or tensor.dtype == torch.bool):
        raise ValueError(f"{name} must be an integer tensor, got dtype {tensor.dtype}")
    if not integer and not tensor.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {tensor.dtype}")


def _check_domains(domains: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
    if domains is None:
        return None
    if not isinstance(domains, Tensor) or tuple(domains.shape) != (batch,) or domains.is_floating_point():
        shape = tuple(domains.shape) if isinstance(domains, Tensor) else type(domains).__name__
        raise ValueError(f"domains must be an integer tensor of shape ({batch},), one id per image, got {shape}")
    return domains.to(device).long()
