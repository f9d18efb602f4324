"""Class prototypes from weak labels: contraseg's softmax / EMA variant of WDASS's estimator.

The estimator of the released WDASS code (linear similarity weights, unnormalised
prototypes, no moving average) is :class:`contraseg.prototypes.WDASSPrototypeEstimator`
(:mod:`contraseg.prototypes.wdass_estimator`), the default of the WDASS pipeline; this
one is used by its ``prototype-softmax`` variant.

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
from torch import Tensor

from ..distributed import all_reduce_sum
from .domain_prototypes import _NONE, DomainPrototypes, _class_sums

MIN_TEMPERATURE = 0.05


class WeakLabelPrototypeEstimator(DomainPrototypes):
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

    def __init__(
        self,
        num_classes: int,
        dim: int,
        domains: tuple[str, ...] | list[str] = ("source", "target"),
        momentum: float = 0.99,
        temperature: float = 0.1,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(num_classes, dim, domains, ignore_index)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not temperature >= MIN_TEMPERATURE:
            raise ValueError(
                f"temperature must be >= {MIN_TEMPERATURE} so exp(cosine / t) stays in float32 range, "
                f"got {temperature!r}"
            )
        self.momentum = float(momentum)
        self.temperature = float(temperature)

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

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum}, temperature={self.temperature}"

    # ------------------------------------------------------------------ internals

    def _blend(self, index: int, new: Tensor, valid: Tensor) -> None:
        new = new.to(self.prototypes)
        valid = valid.to(self.initialised.device)
        old = self.prototypes[index]
        seen = self.initialised[index]
        moved = torch.where(seen[:, None], self.momentum * old + (1.0 - self.momentum) * new, new)
        self.prototypes[index] = torch.where(valid[:, None], F.normalize(moved, dim=1), old)
        self.initialised[index] = seen | valid

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
