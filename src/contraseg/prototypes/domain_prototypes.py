"""Per-domain K x D prototype buffers and the input handling shared by the WDASS estimators.

:class:`DomainPrototypes` is the base of
:class:`contraseg.prototypes.WeakLabelPrototypeEstimator` (softmax weights, EMA) and
:class:`contraseg.prototypes.WDASSPrototypeEstimator` (as released). It owns what the two
have in common and nothing of their formulas:

- the argument checks of ``num_classes``, ``dim`` and ``domains``;
- the buffers ``prototypes`` (num_domains x K x D, zero) and ``initialised``
  (num_domains x K bool), which follow ``.to()`` and are saved in ``state_dict``;
- :meth:`DomainPrototypes.get` and the domain-name lookup;
- flattening a batch to N = B*h*w pixels: L2-normalised features (N x D) and label
  vectors (N long, ``_NONE`` where unlabelled or not confident).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._labels import resize_labels
from .._validation import check_dim, check_embeddings, check_label_range, check_labels

_NONE = -1  # "no class" in the flat assignment vectors


class DomainPrototypes(nn.Module):
    """K x D prototypes for each named domain; subclasses add the estimate and the update.

    Args:
        num_classes: K.
        dim: embedding dimension D.
        domains: names of the domains, each with its own K x D prototypes.
        ignore_index: label of unlabelled pixels.

    Buffers (follow ``.to()``, saved in ``state_dict``):
        prototypes: num_domains x K x D (zero until a class is first estimated).
        initialised: num_domains x K bool.
    """

    prototypes: Tensor
    initialised: Tensor

    def __init__(
        self,
        num_classes: int,
        dim: int,
        domains: tuple[str, ...] | list[str] = ("source", "target"),
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("dim", dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        domains = tuple(domains)
        if not domains or len(set(domains)) != len(domains) or not all(isinstance(d, str) for d in domains):
            raise ValueError(f"domains must be distinct strings, got {domains!r}")
        self.num_classes = num_classes
        self.dim = dim
        self.domains = domains
        self.ignore_index = int(ignore_index)
        self.register_buffer("prototypes", torch.zeros(len(domains), num_classes, dim))
        self.register_buffer("initialised", torch.zeros(len(domains), num_classes, dtype=torch.bool))

    def get(self, domain: str) -> tuple[Tensor, Tensor]:
        """``(prototypes K x D, initialised K bool)`` of ``domain`` (copies, no gradient)."""
        index = self._domain_index(domain)
        return self.prototypes[index].detach().clone(), self.initialised[index].clone()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, domains={self.domains}"

    # ------------------------------------------------------------------ internals

    def _domain_index(self, domain: str) -> int:
        if domain not in self.domains:
            raise ValueError(f"unknown domain {domain!r}; domains are {', '.join(self.domains)}")
        return self.domains.index(domain)

    def _flat_features(self, embeddings: Tensor) -> Tensor:
        """B x D x h x w -> (B*h*w) x D, detached, L2-normalised, at least float32."""
        check_embeddings(embeddings)
        check_dim(embeddings.shape[1], self.dim, "embeddings", "the estimator")
        b, d, h, w = embeddings.shape
        dtype = torch.promote_types(embeddings.dtype, torch.float32)
        flat = embeddings.detach().permute(0, 2, 3, 1).reshape(b * h * w, d).to(dtype)
        return F.normalize(flat, dim=1)

    def _flat_labels(self, labels: Tensor, batch: int, size: tuple[int, int], name: str) -> Tensor:
        """B x H x W labels -> B*h*w long (nearest-resized to ``size``), ``_NONE`` where ``ignore_index``."""
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
        """Flat pseudo labels with ``_NONE`` where absent or below ``threshold``.

        None without ``pseudo_labels``; without ``confidence`` every pseudo label counts
        as confident. ``confidence`` (B x H' x W', the shape of ``pseudo_labels``) is
        nearest-resized to ``size``.
        """
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
        return torch.where(conf.to(pseudo.device) >= threshold, pseudo, torch.full_like(pseudo, _NONE))


def _class_sums(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums of features (K x D) and pixel counts (K), skipping ``_NONE`` labels."""
    kept = labels != _NONE
    cls = labels[kept]
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, cls, features[kept])
    counts = features.new_zeros(num_classes).index_add_(0, cls, torch.ones_like(cls, dtype=features.dtype))
    return sums, counts
