"""Class prototypes from weak labels: the "learning better prototypes" step of WDASS.

Das, Xian, Dai and Schiele, "Weakly-Supervised Domain Adaptive Semantic Segmentation
with Prototypical Contrastive Learning", CVPR 2023.

Two steps, for every class k at once (f_i are L2-normalised pixel embeddings):

1. centre: c_k = normalise( sum of f_i over the pixels weakly labelled k ) (point or
   coarse labels). A class with no weakly labelled pixel takes its centre from its
   confident pseudo-labelled pixels instead.
2. prototype: over A_k, the pixels labelled k by the weak label or, where there is no
   weak label, by a confident pseudo label (confidence >= threshold),

       w_i = softmax_{i in A_k}( f_i . c_k / t ),      p_k = normalise( sum_{i in A_k} w_i f_i ).

   A class with an empty A_k has no prototype (``valid[k] = False``).

Distributed form. Everything that is reduced over ranks is a *sum*: the per-class
feature sums and counts of step 1, then the weighted sums sum_i e_i f_i and weights
sum_i e_i of step 2 (each reduced with :func:`contraseg.distributed.all_reduce_sum`,
so every rank computes the same centres and prototypes). The softmax therefore cannot
subtract a per-class maximum, which would need another reduction; it uses the fixed
shift e_i = exp((s_i - 1) / t) instead. s_i = f_i . c_k is a cosine in [-1, 1], so e_i
lies in [exp(-2/t), 1]: it never overflows, and for t >= 0.05 it stays above
exp(-40) ~ 4e-18, far from float32 underflow, so every non-empty class has a positive
total weight. The constant shift cancels in the softmax, w_i = e_i / sum_j e_j.
Accumulation is done in float32 (float64 for float64 input), also for bf16 input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_dim, check_embeddings, check_label_range, check_labels
from ..distributed import all_reduce_sum
from ..losses._pixels import resize_labels

MIN_TEMPERATURE = 0.05
_NONE = -1  # "no class" in the flat assignment vectors


class WeakLabelPrototypeEstimator(nn.Module):
    """Per-domain class prototypes estimated from weak labels, kept as an EMA.

    Args:
        num_classes: K.
        dim: embedding dimension D.
        domains: names of the domains, each with its own K x D prototypes.
        momentum: EMA factor m in p <- m p + (1 - m) p_new, in [0, 1).
        temperature: t of the similarity weights, >= 0.05 (see the module docstring).
        ignore_index: label of unlabelled pixels in weak and pseudo labels.

    Buffers (follow ``.to()``, saved in ``state_dict``):
        prototypes: num_domains x K x D, L2-normalised rows (zero until initialised).
        initialised: num_domains x K bool.

    Example::

        >>> est = WeakLabelPrototypeEstimator(num_classes=3, dim=8)
        >>> embed = torch.randn(2, 8, 4, 4)
        >>> weak = torch.full((2, 16, 16), 255); weak[:, 0, 0] = 1
        >>> est.update("target", embed, weak)
        >>> protos, valid = est.get("target")   # 3 x 8, valid = [False, True, False]
    """

    prototypes: Tensor
    initialised: Tensor

    def __init__(
        self,
        num_classes: int,
        dim: int,
        domains: tuple[str, ...] | list[str] = ("source", "target"),
        momentum: float = 0.99,
        temperature: float = 0.1,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("dim", dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        domains = tuple(domains)
        if not domains or len(set(domains)) != len(domains) or not all(isinstance(d, str) for d in domains):
            raise ValueError(f"domains must be distinct strings, got {domains!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not temperature >= MIN_TEMPERATURE:
            raise ValueError(
                f"temperature must be >= {MIN_TEMPERATURE} so exp(cosine / t) stays in float32 range, "
                f"got {temperature!r}"
            )
        self.num_classes = num_classes
        self.dim = dim
        self.domains = domains
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.ignore_index = int(ignore_index)
        self.register_buffer("prototypes", torch.zeros(len(domains), num_classes, dim))
        self.register_buffer("initialised", torch.zeros(len(domains), num_classes, dtype=torch.bool))

    # ------------------------------------------------------------------ estimates

    @torch.no_grad()
    def estimate(
        self,
        embeddings: Tensor,
        weak_labels: Tensor,
        pseudo_labels: Tensor | None = None,
        confidence: Tensor | None = None,
        threshold: float = 0.9,
    ) -> tuple[Tensor, Tensor]:
        """Two-step prototypes of one batch from pixel-level weak labels.

        Args:
            embeddings: B x D x h x w (detached and L2-normalised inside).
            weak_labels: B x H x W point / coarse labels, ``ignore_index`` where unlabelled.
            pseudo_labels: optional B x H' x W' pseudo labels (e.g. of a teacher).
            confidence: optional B x H' x W' confidence of ``pseudo_labels``; without it
                every pseudo label (not ``ignore_index``) counts as confident.
            threshold: a pseudo label counts where confidence >= threshold.

        Labels and confidence are nearest-resized to h x w. Under torch.distributed this
        is a collective: every rank must call it, and all get the same result.

        Returns:
            ``(prototypes K x D, valid K bool)``; rows of invalid classes are zero.
        """
        features = self._flat_features(embeddings)
        b, _, h, w = embeddings.shape
        weak = self._flat_labels(weak_labels, b, (h, w), "weak_labels")
        assigned = weak.clone()
        pseudo = self._confident_pseudo(pseudo_labels, confidence, threshold, b, (h, w))
        if pseudo is not None:
            assigned = torch.where(weak == _NONE, pseudo, weak)
        return self._two_step(features, weak, assigned)

    @torch.no_grad()
    def estimate_from_image_labels(
        self,
        embeddings: Tensor,
        presence: Tensor,
        pseudo_labels: Tensor,
        confidence: Tensor | None = None,
        threshold: float = 0.9,
    ) -> tuple[Tensor, Tensor]:
        """Two-step prototypes when the weak label is an image-level class list.

        No pixel carries a weak label, so step 1 and step 2 both use the confident
        pseudo-labelled pixels, keeping only those whose pseudo class is present in
        their image's label (``presence[b, pseudo] = 1``).

        Args:
            embeddings: B x D x h x w.
            presence: B x K multi-hot (bool, or float where > 0.5 means present).
            pseudo_labels, confidence, threshold: as in :meth:`estimate`.

        Returns:
            ``(prototypes K x D, valid K bool)``.
        """
        features = self._flat_features(embeddings)
        b, _, h, w = embeddings.shape
        present = self._check_presence(presence, b, embeddings.device)
        pseudo = self._confident_pseudo(pseudo_labels, confidence, threshold, b, (h, w))
        if pseudo is None:
            raise ValueError("pseudo_labels is required by estimate_from_image_labels, got None")
        image_of_pixel = torch.arange(b, device=pseudo.device).repeat_interleave(h * w)
        allowed = present[image_of_pixel, pseudo.clamp_min(0)] & (pseudo != _NONE)
        assigned = torch.where(allowed, pseudo, torch.full_like(pseudo, _NONE))
        return self._two_step(features, torch.full_like(pseudo, _NONE), assigned)

    # ------------------------------------------------------------------ EMA state

    @torch.no_grad()
    def update(
        self,
        domain: str,
        embeddings: Tensor,
        weak_labels: Tensor,
        pseudo_labels: Tensor | None = None,
        confidence: Tensor | None = None,
        threshold: float = 0.9,
    ) -> None:
        """:meth:`estimate`, then EMA-update the valid classes of ``domain``.

        p <- normalise(m p + (1 - m) p_new) for initialised classes, p <- p_new the
        first time a class is seen. Classes without a new estimate are left as they are.
        """
        index = self._domain_index(domain)
        new, valid = self.estimate(embeddings, weak_labels, pseudo_labels, confidence, threshold)
        self._blend(index, new, valid)

    @torch.no_grad()
    def update_from_image_labels(
        self,
        domain: str,
        embeddings: Tensor,
        presence: Tensor,
        pseudo_labels: Tensor,
        confidence: Tensor | None = None,
        threshold: float = 0.9,
    ) -> None:
        """:meth:`estimate_from_image_labels`, then the EMA update of :meth:`update`."""
        index = self._domain_index(domain)
        new, valid = self.estimate_from_image_labels(
            embeddings, presence, pseudo_labels, confidence, threshold
        )
        self._blend(index, new, valid)

    def get(self, domain: str) -> tuple[Tensor, Tensor]:
        """``(prototypes K x D, valid K bool)`` of ``domain`` (copies, no gradient)."""
        index = self._domain_index(domain)
        return self.prototypes[index].detach().clone(), self.initialised[index].clone()

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, domains={self.domains}, "
            f"momentum={self.momentum}, temperature={self.temperature}"
        )

    # ------------------------------------------------------------------ internals

    def _domain_index(self, domain: str) -> int:
        if domain not in self.domains:
            raise ValueError(f"unknown domain {domain!r}; domains are {', '.join(self.domains)}")
        return self.domains.index(domain)

    def _blend(self, index: int, new: Tensor, valid: Tensor) -> None:
        new = new.to(self.prototypes)
        valid = valid.to(self.initialised.device)
        old = self.prototypes[index]
        seen = self.initialised[index]
        moved = torch.where(seen[:, None], self.momentum * old + (1.0 - self.momentum) * new, new)
        self.prototypes[index] = torch.where(valid[:, None], F.normalize(moved, dim=1), old)
        self.initialised[index] = seen | valid

    def _flat_features(self, embeddings: Tensor) -> Tensor:
        """B x D x h x w -> (B*h*w) x D, detached, L2-normalised, at least float32."""
        check_embeddings(embeddings)
        check_dim(embeddings.shape[1], self.dim, "embeddings", "the estimator")
        b, d, h, w = embeddings.shape
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        flat = embeddings.detach().permute(0, 2, 3, 1).reshape(b * h * w, d).to(dtype)
        return F.normalize(flat, dim=1)

    def _flat_labels(self, labels: Tensor, batch: int, size: tuple[int, int], name: str) -> Tensor:
        """B x H x W labels -> B*h*w long, ``_NONE`` where ``ignore_index``."""
        check_labels(labels, batch, name)
        check_label_range(labels, self.num_classes, self.ignore_index, name)
        flat = resize_labels(labels, size).reshape(-1)
        return torch.where(flat == self.ignore_index, torch.full_like(flat, _NONE), flat)

    def _confident_pseudo(
        self,
        pseudo_labels: Tensor | None,
        confidence: Tensor | None,
        threshold: float,
        batch: int,
        size: tuple[int, int],
    ) -> Tensor | None:
        """Flat pseudo labels with ``_NONE`` where absent or below ``threshold``."""
        if pseudo_labels is None:
            if confidence is not None:
                raise ValueError("confidence was given without pseudo_labels")
            return None
        pseudo = self._flat_labels(pseudo_labels, batch, size, "pseudo_labels")
        if confidence is None:
            return pseudo
        if not isinstance(confidence, Tensor) or tuple(confidence.shape) != tuple(pseudo_labels.shape):
            shape = tuple(confidence.shape) if isinstance(confidence, Tensor) else type(confidence).__name__
            raise ValueError(
                f"confidence must have the shape of pseudo_labels {tuple(pseudo_labels.shape)}, got {shape}"
            )
        dtype = torch.promote_types(confidence.dtype, torch.float32)
        conf = F.interpolate(confidence[:, None].to(dtype), size=size, mode="nearest").reshape(-1)
        return torch.where(conf >= threshold, pseudo, torch.full_like(pseudo, _NONE))

    def _check_presence(self, presence: Tensor, batch: int, device: torch.device) -> Tensor:
        expected = (batch, self.num_classes)
        if not isinstance(presence, Tensor) or tuple(presence.shape) != expected:
            shape = tuple(presence.shape) if isinstance(presence, Tensor) else type(presence).__name__
            raise ValueError(f"presence must be B x K = {expected}, got {shape}")
        return (presence.float() > 0.5).to(device)

    def _two_step(self, features: Tensor, weak: Tensor, assigned: Tensor) -> tuple[Tensor, Tensor]:
        """Centres from ``weak`` (else ``assigned``), then similarity-weighted means over ``assigned``.

        Args:
            features: N x D normalised pixel features.
            weak: N class of the weak label or ``_NONE``.
            assigned: N class used in step 2 (weak label, else confident pseudo) or ``_NONE``.
        """
        k, d = self.num_classes, features.shape[1]
        weak_sum, weak_count = _class_sums(features, weak, k)
        all_sum, all_count = _class_sums(features, assigned, k)
        stats = all_reduce_sum(torch.cat([weak_sum, all_sum, weak_count[:, None], all_count[:, None]], 1))
        weak_sum, all_sum = stats[:, :d], stats[:, d : 2 * d]
        weak_count, all_count = stats[:, 2 * d], stats[:, 2 * d + 1]
        centres = F.normalize(torch.where(weak_count[:, None] > 0, weak_sum, all_sum), dim=1)

        kept = assigned != _NONE
        feats, cls = features[kept], assigned[kept]
        cosine = (feats * centres[cls]).sum(dim=1)
        weights = torch.exp((cosine - 1.0) / self.temperature)
        weighted = features.new_zeros(k, d).index_add_(0, cls, weights[:, None] * feats)
        total = features.new_zeros(k).index_add_(0, cls, weights)
        second = all_reduce_sum(torch.cat([weighted, total[:, None]], 1))
        weighted, total = second[:, :d], second[:, d]

        valid = all_count > 0
        mean = weighted / total.clamp_min(torch.finfo(total.dtype).tiny)[:, None]
        prototypes = torch.where(valid[:, None], F.normalize(mean, dim=1), torch.zeros_like(mean))
        return prototypes, valid


def _class_sums(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums of features (K x D) and pixel counts (K), skipping ``_NONE`` labels."""
    kept = labels != _NONE
    cls = labels[kept]
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, cls, features[kept])
    counts = features.new_zeros(num_classes).index_add_(0, cls, torch.ones_like(cls, dtype=features.dtype))
    return sums, counts
