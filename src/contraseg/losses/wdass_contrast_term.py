"""One term of WDASS's released prototype contrast: :class:`SampledPrototypeContrastLoss`
(sample anchors, then :func:`sampled_prototype_contrast` against the prototypes), the
released constants, and the input checks the terms share.

The formula, the anchor rule and the differences from the released code are in
:mod:`contraseg.losses.wdass_contrast`, which combines three such terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._labels import resize_labels
from .._validation import check_embeddings, check_label_range, check_labels
from ..sampling.anchor_sampler import HardAnchorSampler
from ..sampling.anchor_samples import AnchorSamples
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
    """Per-anchor WDASS loss ``loss_a`` (:mod:`.wdass_contrast`'s docstring) of already sampled anchors.

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
    """One term of the released WDASS prototype contrast (:mod:`.wdass_contrast`'s docstring).

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
        grid_labels = checked_grid_labels(embeddings, labels, prototypes, self.ignore_index)
        check_grid(predictions, embeddings, "predictions", integer=True)
        check_grid(confidence, embeddings, "confidence", integer=False)
        domain_of_image = check_domains(domains, embeddings.shape[0], embeddings.device)
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


# ---------------------------------------------------------------------- input checks


def checked_grid_labels(
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


def check_grid(tensor: Tensor, embeddings: Tensor, name: str, integer: bool) -> None:
    """``tensor`` is B x h x w like the embeddings, integer (``integer``) or floating point."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    expected = (embeddings.shape[0], *embeddings.shape[-2:])
    if tuple(tensor.shape) != expected:
        raise ValueError(f"{name} must be B x h x w = {expected} like the embeddings, got {tuple(tensor.shape)}")
    if integer and (tensor.is_floating_point() or tensor.dtype == torch.bool):
        raise ValueError(f"{name} must be an integer tensor, got dtype {tensor.dtype}")
    if not integer and not tensor.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {tensor.dtype}")


def check_domains(domains: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
    """None, or the B integer domain ids of the images as a long tensor on ``device``."""
    if domains is None:
        return None
    if not isinstance(domains, Tensor) or tuple(domains.shape) != (batch,) or domains.is_floating_point():
        shape = tuple(domains.shape) if isinstance(domains, Tensor) else type(domains).__name__
        raise ValueError(f"domains must be an integer tensor of shape ({batch},), one id per image, got {shape}")
    return domains.to(device).long()
