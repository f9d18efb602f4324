"""How a set of class prototypes is spread: the cosine matrix and its summaries.

For P prototypes ``p_j`` of classes ``c_j`` (ProAC: P = K, one per class; ProtoSeg:
P = K*M) with ``C_jl = cos(p_j, p_l)``:

* separation: the largest and the mean ``C_jl`` over pairs of *different* classes
  (for one prototype per class, all off-diagonal entries). For K <= D + 1 classes the
  best achievable largest cosine is the regular simplex's ``-1/(K-1)``.
* diversity of class k (ProtoSeg, M >= 2): the mean ``C_jl`` over pairs ``j != l`` of its
  own prototypes. 1.0 means the class's prototypes collapsed into one direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PrototypeSimilarity", "prototype_similarity", "simplex_optimum"]


def simplex_optimum(num_classes: int, dim: int) -> float | None:
    """``-1/(K-1)``, the regular simplex's pairwise cosine, when 2 <= K <= D + 1; else None."""
    if 2 <= num_classes <= dim + 1:
        return -1.0 / (num_classes - 1)
    return None


@dataclass
class PrototypeSimilarity:
    """The P x P cosine matrix of prototypes and its summary.

    Attributes:
        cosine: P x P float64 cosines.
        labels: P class ids.
        summary: ``{"num_prototypes", "num_classes", "per_class", "dim",
            "max_between_cosine", "mean_between_cosine", "simplex_optimum",
            "diversity": {class id: mean within-class cosine} or None}``.
    """

    cosine: Tensor
    labels: Tensor
    summary: dict[str, Any]


def prototype_similarity(prototypes: Tensor, labels: Tensor | None = None) -> PrototypeSimilarity:
    """Cosine matrix, separation and per-class diversity of P x D prototypes.

    Args:
        prototypes: P x D (normalised inside).
        labels: P class ids; None means one prototype per class (class j = row j).
    """
    if not isinstance(prototypes, Tensor) or prototypes.dim() != 2 or prototypes.shape[0] == 0:
        shape = tuple(prototypes.shape) if isinstance(prototypes, Tensor) else type(prototypes).__name__
        raise ValueError(f"prototypes must be a non-empty P x D tensor, got {shape}")
    p, d = prototypes.shape
    labels = torch.arange(p) if labels is None else labels.detach().cpu().long()
    if labels.shape != (p,):
        raise ValueError(f"labels must hold one class id per prototype ({p}), got shape {tuple(labels.shape)}")
    unit = F.normalize(prototypes.detach().cpu().double(), dim=1)
    cosine = unit @ unit.T
    between = labels[:, None] != labels[None, :]
    classes = torch.unique(labels)
    counts = torch.bincount(labels)[classes]
    diversity = None
    if int(counts.max()) >= 2:
        diversity = {}
        for c in classes.tolist():
            block = cosine[labels == c][:, labels == c]
            m = block.shape[0]
            off = ~torch.eye(m, dtype=torch.bool)
            diversity[int(c)] = float(block[off].mean()) if m >= 2 else float("nan")
    summary = {
        "num_prototypes": p,
        "num_classes": len(classes),
        "per_class": int(counts.max()),
        "dim": d,
        "max_between_cosine": float(cosine[between].max()) if bool(between.any()) else None,
        "mean_between_cosine": float(cosine[between].mean()) if bool(between.any()) else None,
        "simplex_optimum": simplex_optimum(len(classes), d),
        "diversity": diversity,
    }
    return PrototypeSimilarity(cosine, labels, summary)

