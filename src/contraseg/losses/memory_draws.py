"""The random draws of the memory bank's example sampling (:mod:`contraseg.losses.memory_sampling`).

Each anchor keeps ``K`` members of a set of ``n`` bank entries uniformly without
replacement. The entries of a set are numbered by rank ``0 .. n - 1`` in the order of
their global bank index (queue offset + class * S + slot), so drawing ``K`` distinct
ranks per anchor is the whole of the randomness: :func:`sample_ranks` draws them on the
CPU from a generator seeded with the seed, so they depend on the seed and the set sizes
only (not on the device, the block size or the anchors' order inside the loss), and a
per-anchor reference can reproduce them (:func:`draw_sorted`: the same for the loss's rows,
sorted by class). :func:`rank_ids` maps the ranks of ``P(a)`` and ``N(a)`` (random
sampling) to global bank indices.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

# Rows with n <= _DENSE * k take the k smallest of n random keys; larger ones draw with
# replacement and drop repeats (k + k // 4 + _MARGIN draws first: enough but in rare cases).
_DENSE = 4
_MARGIN = 32
_DENSE_CHUNK = 2**21  # random keys per chunk of rows on the dense path (16 MiB of float64)


def _first_distinct(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """rows x m values (in draw order) -> the values sorted along each row (rows x m) and
    which of those to keep (rows x m bool): the first ``k`` distinct values in draw order."""
    ordered, perm = torch.sort(values, dim=1, stable=True)  # equal values keep draw order
    first = torch.ones_like(values, dtype=torch.bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # the first drawn of each value
    first = torch.empty_like(first).scatter_(1, perm, first)  # back in draw order
    return ordered, (first & (first.cumsum(1) <= k)).gather(1, perm)


def _with_replacement(sizes: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """rows x count int32, uniform in [0, sizes[i]) (float64 ``floor(u * n)``; a bank holds
    fewer than 2^31 entries)."""
    u = torch.rand(sizes.numel(), count, generator=generator, dtype=torch.float64)
    return torch.minimum(torch.floor(u * sizes[:, None].double()).int(), (sizes[:, None] - 1).int())


def draw_ranks(sizes: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """Per row ``i``, ``k`` distinct integers drawn uniformly without replacement from
    ``[0, sizes[i])``.

    Args:
        sizes: rows (long, >= 0), the set size ``n`` of every row.
        k: draws per row (>= 1).
        generator: a CPU generator; the draws are a function of its state, ``sizes`` and ``k``.

    Returns:
        rows x k long (CPU), each row ascending (the drawn set; its order carries nothing);
        a row with ``n < k`` holds ``0 .. n - 1`` and -1 in its last ``k - n`` slots.

    Rows with ``n <= 4k`` take the ``k`` smallest of ``n`` float64 uniform keys. Larger
    ones draw ``k + k // 4 + 32`` values with replacement and keep the first ``k`` distinct
    ones in draw order (rejecting repeats one by one is exactly sampling without
    replacement); a row left short (rare) draws more until it has ``k``.
    """
    sizes = sizes.to("cpu", torch.long).flatten()
    out = torch.full((sizes.numel(), k), -1, dtype=torch.long)
    dense = torch.nonzero(sizes <= _DENSE * k).flatten()
    if dense.numel() and int(sizes[dense].max()) > 0:
        width = int(sizes[dense].max())
        take = min(k, width)
        step = max(1, _DENSE_CHUNK // width)
        for lo in range(0, dense.numel(), step):
            rows = dense[lo:lo + step]
            n = sizes[rows]
            keys = torch.rand(rows.numel(), width, generator=generator, dtype=torch.float64)
            keys.masked_fill_(torch.arange(width)[None, :] >= n[:, None], 2.0)  # past n: last
            picked = torch.topk(keys, take, dim=1, largest=False).indices.sort(1).values  # past n: last
            out[rows, :take] = picked.masked_fill(torch.arange(take)[None, :] >= n[:, None], -1)
    sparse = torch.nonzero(sizes > _DENSE * k).flatten()
    if sparse.numel():
        n = sizes[sparse]
        values = _with_replacement(n, k + k // 4 + _MARGIN, generator)
        ordered, keep = _first_distinct(values, k)
        full = keep.sum(1) == k
        out[sparse[full]] = ordered[full][keep[full]].view(-1, k).long()
        for row in torch.nonzero(~full).flatten().tolist():  # short of k distinct: draw more
            drawn = values[row:row + 1]
            while True:
                drawn = torch.cat([drawn, _with_replacement(n[row:row + 1], k // 4 + _MARGIN, generator)], 1)
                ordered, keep = _first_distinct(drawn, k)
                if int(keep.sum()) == k:
                    break
            out[sparse[row]] = ordered[keep].long()
    return out


def sample_ranks(seed: int, positive_sizes: Tensor, negative_sizes: Tensor, positives: int,
                 negatives: int) -> tuple[Tensor, Tensor]:
    """The drawn ranks of every anchor's positives and negatives.

    Args:
        seed: the draws' seed (any int; taken modulo 2^64).
        positive_sizes, negative_sizes: A long, ``|P(a)|`` and ``|N(a)|`` (or the semi-hard
            top-x sets) of every anchor, in the caller's order of the anchors.
        positives, negatives: K+ and K-.

    Returns:
        A x K+ and A x K- long (CPU), ranks into the sets in id order, each row ascending
        with -1 in its empty slots, last (:func:`draw_ranks`, positives first, from one
        generator seeded with ``seed``).
    """
    generator = torch.Generator().manual_seed(int(seed) & (2**64 - 1))
    return draw_ranks(positive_sizes, positives, generator), draw_ranks(negative_sizes, negatives, generator)


def draw_sorted(seed: int, size_p: Tensor, size_n: Tensor, order: Tensor, positives: int,
                negatives: int) -> tuple[Tensor, Tensor]:
    """:func:`sample_ranks` for the class-sorted rows of the loss (row i =
    the caller's anchor ``order[i]``): sizes A each in, A x K+ and A x K- ranks (CPU) out."""
    rows = order.cpu()
    unsorted = [torch.empty_like(size, device="cpu").index_put_((rows,), size.cpu()) for size in (size_p, size_n)]
    rank_p, rank_n = sample_ranks(seed, *unsorted, positives, negatives)
    return rank_p[rows], rank_n[rows]


def rank_ids(ranks: Tensor, labels: Tensor, count_table: Tensor, queue_sizes: Sequence[int],
             positive: bool) -> Tensor:
    """Global bank indices of ranks into ``P(a)`` (``positive``) or ``N(a)``.

    Args:
        ranks: A x k long, ranks in id order (-1: empty slot).
        labels: A long, the anchors' classes.
        count_table: Q x K long (CPU), filled slots of every class in every queue.
        queue_sizes: S of every queue (Q ints).
        positive: map into ``P(a)`` (the entries of the anchor's class) or ``N(a)`` (all others).

    Returns:
        A x k long on ``ranks``' device: queue offset + class * S + slot, -1 where ``ranks``
        is (the map is increasing: ascending ranks give ascending indices).

    The filled entries are Q x K segments (queue-major, class-minor: id order) of
    ``count_table`` lengths; per class, a table of the kept segments' cumulative lengths
    and ``searchsorted`` find each rank's segment.
    """
    num_queues, num_classes = count_table.shape
    offsets = torch.tensor([0] + list(queue_sizes[:-1])).cumsum(0) * num_classes
    first = (offsets[:, None] + torch.arange(num_classes)[None, :] * torch.tensor(queue_sizes)[:, None]).flatten()
    lengths = count_table.to("cpu", torch.long).flatten()  # Q*K segments, id order
    same = torch.arange(num_classes).repeat(num_queues)[None, :] == torch.arange(num_classes)[:, None]
    table = lengths[None, :] * (same if positive else ~same)  # K x Q*K kept segment lengths
    ends = table.cumsum(1)
    device = ranks.device
    ends, begins, first = ends.to(device), (ends - table).to(device), first.to(device)
    rows = labels.to(device)
    segment = torch.searchsorted(ends[rows], ranks.clamp(min=0), right=True).clamp_(max=lengths.numel() - 1)
    ids = first[segment] + ranks - begins[rows].gather(1, segment)
    return ids.masked_fill(ranks < 0, -1)
