"""Sinkhorn-Knopp equipartitioned assignment (ProtoSeg, after SwAV).

Zhou, Wang, Konukoglu and Van Gool, "Rethinking Semantic Segmentation: A Prototype
View", CVPR 2022, assign the pixels of a class to its M prototypes by solving an
entropy-regularised transport problem: maximise ``sum_ij Q_ij S_ij + eps H(Q)`` subject
to every pixel having mass 1/N and every prototype mass 1/M, solved by alternately
normalising the columns (prototypes) and the rows (pixels) of ``exp(S / eps)``.

This implementation works in the log domain (no overflow or underflow for any score
scale), and can solve many independent problems at once: ``groups`` says which
problem (class) each row belongs to, so one call handles every class of a batch with
no Python loop over classes. In a ``torch.distributed`` run the column sums and row
counts are all-reduced, so the equipartition holds over the global batch.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

from ..distributed import all_reduce_sum, is_distributed

__all__ = ["sinkhorn", "grouped_sinkhorn"]


def _group_logsumexp(values: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """log sum_{i in group g} exp(values_i) for N x M ``values``: returns G x M.

    Reduced across ranks when distributed (global max first, then summed exps).
    Empty groups give -inf.
    """
    m = values.shape[1]
    idx = groups[:, None].expand(-1, m)
    gmax = values.new_full((num_groups, m), -math.inf).scatter_reduce(0, idx, values, reduce="amax")
    if is_distributed():
        dist.all_reduce(gmax, op=dist.ReduceOp.MAX)
    safe_max = torch.where(torch.isfinite(gmax), gmax, torch.zeros_like(gmax))
    sums = values.new_zeros((num_groups, m)).index_add_(0, groups, torch.exp(values - safe_max[groups]))
    all_reduce_sum(sums)
    return torch.log(sums) + safe_max


def grouped_sinkhorn(
    scores: Tensor,
    groups: Tensor,
    num_groups: int,
    iterations: int = 3,
    epsilon: float = 0.05,
) -> tuple[Tensor, Tensor]:
    """Independent Sinkhorn problems, one per group, solved together.

    Args:
        scores: N x M similarities of each row to the M prototypes of its group.
        groups: N integer group (class) of each row, in [0, num_groups).
        num_groups: G.
        iterations: Sinkhorn iterations (ProtoSeg: 3).
        epsilon: entropy weight (ProtoSeg: 0.05).

    Returns:
        ``(assignment N x M, index N)``: each row of the assignment sums to 1, within a
        group the columns share the group's rows equally after the last column step,
        and ``index`` is the row's argmax prototype.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be N x M, got shape {tuple(scores.shape)}")
    if groups.shape != scores.shape[:1]:
        raise ValueError(f"groups must have shape ({scores.shape[0]},), got {tuple(groups.shape)}")
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    n, m = scores.shape
    dtype = torch.promote_types(scores.dtype, torch.float32)
    log_q = scores.detach().to(dtype) / epsilon
    groups = groups.long()
    # Number of rows per group over all ranks: the B of ProtoSeg's sinkhorn.
    counts = torch.bincount(groups, minlength=num_groups).to(dtype)
    all_reduce_sum(counts)
    log_counts = torch.log(counts.clamp_min(1.0))
    for _ in range(iterations):
        # columns: each prototype of a group gets total mass 1/M
        log_q = log_q - _group_logsumexp(log_q, groups, num_groups)[groups] - math.log(m)
        # rows: each pixel of a group gets mass 1/B_g
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - log_counts[groups, None]
    assignment = torch.exp(log_q + log_counts[groups, None])
    return assignment.to(scores.dtype), assignment.argmax(dim=1)


def sinkhorn(scores: Tensor, iterations: int = 3, epsilon: float = 0.05) -> tuple[Tensor, Tensor]:
    """Sinkhorn-Knopp assignment of N rows to M columns with equipartition.

    Args:
        scores: N x M similarities (e.g. cosines of the pixels of one class to its
            prototypes).
        iterations: number of column + row normalisations.
        epsilon: entropy weight; smaller is closer to a hard assignment.

    Returns:
        ``(assignment N x M, index N)``: rows sum to 1, column sums approach N/M as the
        iterations grow (3 iterations, as in ProtoSeg, balance only roughly),
        ``index`` is the argmax column of each row. Under ``torch.distributed`` the
        sums are all-reduced, so the clustering is over the global batch.

    Example:
        >>> q, idx = sinkhorn(torch.randn(100, 4))
        >>> q.sum(1)  # all ones
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be N x M, got shape {tuple(scores.shape)}")
    groups = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return grouped_sinkhorn(scores, groups, 1, iterations=iterations, epsilon=epsilon)
