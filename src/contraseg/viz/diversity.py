"""How different the prototypes of one class are, and how many of them are used.

ProtoSeg (Zhou et al., CVPR 2022) keeps M prototypes per class; users of the released
checkpoint found a class's 10 prototypes nearly identical (tfzhou/ProtoSeg issue 15). For
the prototypes ``p_1..p_M`` of class k (unit vectors) and ``C_jl = cos(p_j, p_l)``:

* ``mean_cosine`` = mean of ``C_jl`` over pairs ``j != l``; ``max_cosine`` = their largest
  (1.0: at least two prototypes coincide; both NaN when M = 1);
* ``used`` = the number of the class's prototypes that win at least one pixel of the class
  on a dataset pass, a pixel ``i`` labelled k being won by ``argmax_j cos(f_i, p_j)`` over
  the class's own prototypes (the assignment ProtoSeg's training makes, without its
  Sinkhorn balancing; ties: the smallest index). ``pixels`` lists the pixels each won.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._labels import resize_labels
from .embedding_collect import _model_device, _prototype_space

__all__ = ["PrototypeUsage", "prototype_diversity", "prototype_usage"]


def _check(prototypes: Tensor, labels: Tensor) -> None:
    if prototypes.dim() != 2 or labels.dim() != 1 or labels.shape[0] != prototypes.shape[0]:
        raise ValueError(f"need P x D prototypes and P labels, got {tuple(prototypes.shape)} and {tuple(labels.shape)}")


class PrototypeUsage:
    """Counts, per prototype, the pixels of its class it wins (see the module doc).

    Args:
        prototypes: P x D (normalised inside).
        labels: P class ids.
    """

    def __init__(self, prototypes: Tensor, labels: Tensor) -> None:
        _check(prototypes, labels)
        self.prototypes = F.normalize(prototypes.detach().cpu().double(), dim=1)
        self.labels = labels.detach().cpu().long()
        self.counts = torch.zeros(len(self.labels), dtype=torch.int64)

    def update(self, features: Tensor, pixel_labels: Tensor) -> None:
        """Add N pixels: ``features`` N x D, ``pixel_labels`` N (classes without prototypes,
        e.g. the ignore index, are skipped)."""
        feats = F.normalize(features.detach().cpu().double(), dim=1)
        pixel_labels = pixel_labels.detach().cpu().long()
        cos = feats @ self.prototypes.T  # N x P
        for k in torch.unique(self.labels).tolist():
            own = (self.labels == k).nonzero()[:, 0]
            rows = pixel_labels == k
            if bool(rows.any()):
                winner = own[cos[rows][:, own].argmax(1)]
                self.counts += torch.bincount(winner, minlength=len(self.labels))


def prototype_diversity(prototypes: Tensor, labels: Tensor, counts: Tensor | None = None) -> dict[int, dict[str, Any]]:
    """Per class k: ``{"prototypes": M_k, "mean_cosine", "max_cosine"}`` and, with ``counts``
    (P pixel counts, e.g. :attr:`PrototypeUsage.counts`), ``"used"`` and ``"pixels"`` (list of M_k)."""
    _check(prototypes, labels)
    unit = F.normalize(prototypes.detach().cpu().double(), dim=1)
    labels = labels.detach().cpu().long()
    out: dict[int, dict[str, Any]] = {}
    for k in torch.unique(labels).tolist():
        idx = (labels == k).nonzero()[:, 0]
        block = unit[idx] @ unit[idx].T
        off = block[~torch.eye(len(idx), dtype=torch.bool)]
        row: dict[str, Any] = {"prototypes": len(idx),
                               "mean_cosine": float(off.mean()) if len(idx) > 1 else math.nan,
                               "max_cosine": float(off.max()) if len(idx) > 1 else math.nan}
        if counts is not None:
            row["pixels"] = [int(c) for c in counts[idx]]
            row["used"] = sum(c > 0 for c in row["pixels"])
        out[int(k)] = row
    return out


@torch.no_grad()
def prototype_usage(model: nn.Module, dataset: Any, prototypes: Tensor, labels: Tensor,
                    num_images: int, ignore_index: int | None = None) -> PrototypeUsage:
    """Run ``model`` (eval mode) over the first ``num_images`` samples of ``dataset`` and count
    the pixels each prototype wins, on the model's embedding grid (labels resized by nearest
    neighbour; a ProtoSeg model's pixels taken in its prototype space)."""
    if ignore_index is None:
        ignore_index = int(getattr(getattr(dataset, "info", None), "ignore_index", 255))
    usage = PrototypeUsage(prototypes, labels)
    device = _model_device(model)
    for index in range(min(num_images, len(dataset))):
        sample = dataset[index]
        embed = _prototype_space(model, model(sample["image"][None].to(device))["embed"]).float()
        grid = resize_labels(sample["label"][None].long(), tuple(embed.shape[-2:]))[0].reshape(-1).cpu()
        feats = embed[0].reshape(embed.shape[1], -1).T.cpu()
        keep = grid != ignore_index
        usage.update(feats[keep], grid[keep])
    return usage
