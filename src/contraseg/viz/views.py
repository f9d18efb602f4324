"""One model's view of sampled pixels: prototypes, joint 2-D projection and statistics.

Pixels and prototypes are projected together (prototypes appended as the last P rows of
one t-SNE / UMAP / PCA input), so prototypes sit in the same map as the pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .embedding_plot import EmbeddingPanel
from .cosine_stats import embedding_stats
from .projection2d import project_2d
from .prototype_sources import PrototypeSet, class_mean_set

__all__ = ["EmbeddingView", "embedding_view"]


@dataclass
class EmbeddingView:
    """Everything one panel shows.

    Attributes:
        title: panel title. labels: N pixel class ids.
        prototypes: the prototypes shown (class means when the model has none).
        coords: N x 2 pixel coordinates; prototype_coords: P x 2.
        stats: :func:`contraseg.viz.embedding_stats` plus ``"prototypes": {"kind", "count", "per_class"}``.
    """

    title: str
    labels: Tensor
    prototypes: PrototypeSet
    coords: np.ndarray
    prototype_coords: np.ndarray
    stats: dict[str, Any]

    def panel(self, method: str) -> EmbeddingPanel:
        """The :class:`EmbeddingPanel` drawing this view (``method`` names the projection)."""
        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        note = (f"silhouette: {fmt(self.stats['silhouette_embedding'])} (cosine, D-dim), "
                f"{fmt(self.stats['silhouette_2d'])} ({method} 2-D)")
        return EmbeddingPanel(self.title, self.coords, self.labels.numpy(), self.prototype_coords,
                              self.prototypes.labels.numpy(), self.prototypes.kind, self.prototypes.legend, note)


def embedding_view(title: str, embeddings: Tensor, labels: Tensor, prototypes: PrototypeSet | None,
                   method: str = "tsne", seed: int = 0, class_names: Sequence[str] | None = None) -> EmbeddingView:
    """Project N x D pixel embeddings with their prototypes to 2-D and measure them.

    Args:
        title: panel title.
        embeddings: N x D sampled pixel embeddings; labels: their N class ids.
        prototypes: the model's prototypes, or None to use the class means of ``embeddings``.
        method, seed: see :func:`contraseg.viz.project_2d`.
        class_names: names used in the statistics.

    Raises:
        ValueError: prototypes of another dimension than the embeddings.
    """
    if embeddings.dim() != 2 or labels.shape != (embeddings.shape[0],):
        raise ValueError(f"embeddings must be N x D with N labels, got {tuple(embeddings.shape)} "
                         f"and {tuple(labels.shape)}")
    protos = prototypes if prototypes is not None else class_mean_set(embeddings, labels)
    if protos.vectors.shape[1] != embeddings.shape[1]:
        raise ValueError(f"{title}: prototypes have dimension {protos.vectors.shape[1]} "
                         f"but the embeddings have {embeddings.shape[1]}")
    feats = F.normalize(embeddings.detach().cpu().float(), dim=1)
    joint = project_2d(torch.cat([feats, protos.vectors.cpu()]), method=method, seed=seed)
    n = len(feats)
    labels = labels.detach().cpu().long()
    stats = embedding_stats(feats, labels, protos.vectors, protos.labels, class_names, joint[:n])
    stats["prototypes"] = {"kind": protos.kind, "count": len(protos.labels), "per_class": protos.per_class}
    return EmbeddingView(title, labels, protos, joint[:n], joint[n:], stats)
