"""The numbers behind an embedding plot: how close pixels sit to their class prototype.

With ``f_i`` the (normalised) embedding of a pixel of class ``y_i`` and ``p_j`` the
prototypes, ``c_j`` the class of prototype ``j``::

    own_i   = max_{j: c_j = y_i}  cos(f_i, p_j)     (ProtoSeg: the nearest of the class's M)
    other_i = max_{j: c_j != y_i} cos(f_i, p_j)     (the strongest competitor)

and per class k the means of ``own_i`` and ``other_i`` over its pixels, their difference
(the margin), and the class that most often gives ``other_i`` (ties: the smallest id). The silhouette score
(Rousseeuw 1987), ``s_i = (b_i - a_i) / max(a_i, b_i)`` averaged over pixels with
``a_i`` the mean distance to the pixel's own class and ``b_i`` to the nearest other
class, is computed with the cosine distance on the D-dim embeddings and with the
Euclidean distance on the 2-D projection.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["class_name", "prototype_cosines", "class_mean_prototypes", "silhouette", "embedding_stats"]


def _check_points(embeddings: Tensor, labels: Tensor) -> None:
    if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
        shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
        raise ValueError(f"embeddings must be an N x D tensor, got {shape}")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != embeddings.shape[0]:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a length-{embeddings.shape[0]} vector like embeddings' rows, got {shape}")


def prototype_cosines(embeddings: Tensor, labels: Tensor, prototypes: Tensor,
                      prototype_labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per pixel: cosine to the nearest own-class prototype and to the nearest other one.

    Args:
        embeddings: N x D pixel embeddings (normalised inside).
        labels: N class ids.
        prototypes: P x D prototypes (normalised inside).
        prototype_labels: P class ids of the prototypes.

    Returns:
        ``(own N, other N, other_class N)`` in float64; ``own`` is NaN for a pixel whose
        class has no prototype, ``other`` NaN and ``other_class`` -1 when no prototype
        of another class exists.
    """
    _check_points(embeddings, labels)
    if not isinstance(prototypes, Tensor) or prototypes.dim() != 2 or prototypes.shape[1] != embeddings.shape[1]:
        shape = tuple(prototypes.shape) if isinstance(prototypes, Tensor) else type(prototypes).__name__
        raise ValueError(f"prototypes must be P x {embeddings.shape[1]} like the embeddings, got {shape}")
    if prototype_labels.dim() != 1 or prototype_labels.shape[0] != prototypes.shape[0]:
        raise ValueError(f"prototype_labels must have one class id per prototype ({prototypes.shape[0]}), "
                         f"got shape {tuple(prototype_labels.shape)}")
    feats = F.normalize(embeddings.double(), dim=1)
    protos = F.normalize(prototypes.to(feats.device).double(), dim=1)
    cos = feats @ protos.T  # N x P
    same = labels.to(feats.device)[:, None] == prototype_labels.to(feats.device)[None, :]
    own = cos.masked_fill(~same, -math.inf).amax(dim=1) if cos.shape[1] else cos.new_full((len(cos),), -math.inf)
    own = own.masked_fill(torch.isinf(own), math.nan)
    if cos.shape[1] == 0:
        return own, own.clone(), torch.full_like(labels, -1)
    other, index = cos.masked_fill(same, -math.inf).max(dim=1)
    none = torch.isinf(other)
    other_class = prototype_labels.to(feats.device)[index].masked_fill(none, -1)
    return own, other.masked_fill(none, math.nan), other_class


def class_mean_prototypes(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """One prototype per class present: the normalised mean of its normalised embeddings.

    Returns ``(prototypes C x D, classes C)``, classes in increasing order.
    """
    _check_points(embeddings, labels)
    classes = torch.unique(labels)
    feats = F.normalize(embeddings.float(), dim=1)
    means = torch.stack([feats[labels == c].mean(dim=0) for c in classes.tolist()]) if len(classes) else feats[:0]
    return F.normalize(means, dim=1), classes


def silhouette(points: Tensor | np.ndarray, labels: Tensor | np.ndarray, metric: str) -> float | None:
    """sklearn's mean silhouette coefficient, or None when undefined (fewer than 2
    classes, or as many classes as points)."""
    from sklearn.metrics import silhouette_score

    x = points.detach().cpu().double().numpy() if isinstance(points, Tensor) else np.asarray(points, np.float64)
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if len(x) != len(y):
        raise ValueError(f"points has {len(x)} rows but labels has {len(y)}")
    num_labels = len(np.unique(y))
    if num_labels < 2 or num_labels > len(y) - 1:
        return None
    return float(silhouette_score(x, y, metric=metric))


def class_name(class_id: int, class_names: Sequence[str] | None) -> str:
    """The name of class ``class_id`` (its number when ``class_names`` does not cover it)."""
    if class_names is not None and 0 <= class_id < len(class_names):
        return str(class_names[class_id])
    return str(class_id)


def embedding_stats(embeddings: Tensor, labels: Tensor, prototypes: Tensor, prototype_labels: Tensor,
                    class_names: Sequence[str] | None = None,
                    coords_2d: Tensor | np.ndarray | None = None) -> dict[str, Any]:
    """Per-class prototype cosines and silhouette scores of sampled pixel embeddings.

    Args:
        embeddings: N x D pixel embeddings.
        labels: N class ids.
        prototypes, prototype_labels: P x D prototypes and their P class ids.
        class_names: names for the table (index = class id).
        coords_2d: optional N x 2 projection of the same pixels (its silhouette is added).

    Returns:
        ``{"num_pixels", "per_class": [{"class", "name", "pixels", "own_cosine",
        "nearest_other_cosine", "margin", "nearest_other_class"}, ...],
        "mean_own_cosine", "mean_nearest_other_cosine" (means over classes),
        "silhouette_embedding" (cosine), "silhouette_2d" (Euclidean, or None)}``.
    """
    own, other, other_class = prototype_cosines(embeddings, labels, prototypes, prototype_labels)
    labels_cpu = labels.detach().cpu()
    own, other, other_class = own.cpu(), other.cpu(), other_class.cpu()
    rows = []
    for c in torch.unique(labels_cpu).tolist():
        members = labels_cpu == c
        rivals = other_class[members]
        rivals = rivals[rivals >= 0]
        rival = int(torch.bincount(rivals).argmax()) if len(rivals) else None
        own_mean, other_mean = float(own[members].mean()), float(other[members].mean())
        rows.append({
            "class": int(c),
            "name": class_name(int(c), class_names),
            "pixels": int(members.sum()),
            "own_cosine": own_mean,
            "nearest_other_cosine": other_mean,
            "margin": own_mean - other_mean,
            "nearest_other_class": None if rival is None else class_name(rival, class_names),
        })
    if coords_2d is not None and len(coords_2d) != len(labels_cpu):
        raise ValueError(f"coords_2d has {len(coords_2d)} rows but there are {len(labels_cpu)} pixels")
    return {
        "num_pixels": int(len(labels_cpu)),
        "per_class": rows,
        "mean_own_cosine": float(np.nanmean([r["own_cosine"] for r in rows])) if rows else math.nan,
        "mean_nearest_other_cosine": float(np.nanmean([r["nearest_other_cosine"] for r in rows])) if rows else math.nan,
        "silhouette_embedding": silhouette(F.normalize(embeddings.double(), dim=1), labels_cpu, "cosine"),
        "silhouette_2d": None if coords_2d is None else silhouette(coords_2d, labels_cpu, "euclidean"),
    }
