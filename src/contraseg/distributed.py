"""Small torch.distributed helpers that are no-ops in a single process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all ranks (in place) and return it; identity in one process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_first(tensor: Tensor) -> Tensor:
    """Rank 0's ``tensor`` (N_0 x ...) on every rank (the other ranks' own are dropped); the
    identity in one process. Every rank must call it with the same trailing shape and dtype."""
    if not is_distributed():
        return tensor
    n = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    dist.broadcast(n, src=0)
    out = tensor.detach().clone() if rank() == 0 else tensor.new_zeros((int(n.item()),) + tuple(tensor.shape[1:]))
    dist.broadcast(out, src=0)
    return out


def all_gather_cat(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor`` (N_r x ...) from every rank along dim 0, N_r may differ.

    No gradient flows through the gathered copies; use it for memory banks and
    statistics, not for losses that need cross-rank gradients.
    """
    if not is_distributed():
        return tensor
    n = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    sizes_list = [int(s.item()) for s in sizes]
    max_n = max(sizes_list)
    padded = tensor.new_zeros((max_n,) + tuple(tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor.detach()
    gathered = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:s] for g, s in zip(gathered, sizes_list)], dim=0)
