"""The bank passes of the hard example sampling (:mod:`contraseg.losses.memory_sampling`).

Both walk the memory bank in the streaming loss's blocks (:mod:`contraseg.losses.memory_contrast`)
and keep, per anchor (rows sorted by class), the chosen positives and negatives as
``(s, id)`` pairs: A x K+ and A x K- (``id = -1`` and ``s = 0`` in an empty slot).

- :func:`hardest`: one pass keeping per anchor the ``K`` best (key, id) so far, ``topk``
  of the kept and the block's own best (key ``s`` for positives, ``-s`` for negatives).
- :func:`semi_hard`: a histogram pass (``_BINS`` bins of the cosine ``t s`` over [-1, 1])
  gives each anchor the bin holding its ``ceil(x n)``-th hardest and the sizes of the kept
  top-x sets; ranks are drawn into them; a second pass marks each block's members with
  the histogram's own expression, lists them (``nonzero``, row by row), counts them per
  anchor (carried from block to block) and picks the drawn ranks out of the list.

Every block's A x n work goes into buffers of a :class:`Workspace` made once per call: a
fresh A x n tensor per block (64 MiB at the default block) would be a fresh allocation each
time, and glibc gives every buffer of 32 MiB or more its own ``mmap``, page-faulted and
zeroed on first touch (measured in docs/benchmarks.md, "Per-anchor example sampling").
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .memory_contrast import _entries
from .memory_draws import draw_sorted

_BINS = 4096


class Workspace:
    """Reusable flat buffers by name: :meth:`take` returns a contiguous view of the wanted
    shape on the first ``numel`` elements, allocating only when a larger one is asked."""

    def __init__(self, device: torch.device):
        self.device = device
        self._buffers: dict[str, Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < numel:
            buffer = self._buffers[name] = torch.empty(numel, dtype=dtype, device=self.device)
        return buffer[:numel].view(shape)

    def similarities(self, scaled: Tensor, entries: Tensor) -> Tensor:
        """``scaled @ entries.T`` (A x n) into the buffer ``sim``."""
        sim = self.take("sim", (scaled.shape[0], entries.shape[0]), scaled.dtype)
        return torch.matmul(scaled, entries.T, out=sim)

    def same_class(self, labels: Tensor, block) -> Tensor:
        """rows x n bool: the anchor's class equals the entry's (buffer ``same``)."""
        block_labels = block.labels(labels.device)
        same = self.take("same", (labels.shape[0], block_labels.shape[0]), torch.bool)
        return torch.eq(labels[:, None], block_labels[None, :], out=same)


def bin_position(scaled_similarity: Tensor, temperature: float, inplace: bool = False,
                 out: Tensor | None = None) -> Tensor:
    """``(t s + 1) * _BINS / 2``: where the cosine ``t s`` in [-1, 1] falls on [0, _BINS]
    (``s * (t _BINS / 2)`` then ``+ _BINS / 2``; ``inplace``: overwriting ``s``; ``out``: into it)."""
    scale = temperature * _BINS / 2
    if inplace:
        position = scaled_similarity.mul_(scale)
    else:
        position = torch.mul(scaled_similarity, scale, out=out) if out is not None else scaled_similarity * scale
    return position.add_(_BINS / 2)


def cosine_bins(scaled_similarity: Tensor, temperature: float) -> Tensor:
    """The histogram bin (long, [0, _BINS)) of ``t * s``: ``floor`` of :func:`bin_position`
    clamped (truncation after the clamp to [0, _BINS - 1] is the floor)."""
    return bin_position(scaled_similarity, temperature).clamp_(0, _BINS - 1).long()


def block_ids(block, offsets: Sequence[int], device: torch.device) -> Tensor:
    """The global bank indices of a block's entries (n int32)."""
    parts = [torch.arange(lo, hi) for lo, hi in block.rows]
    return (torch.cat(parts) + offsets[block.source]).to(device=device, dtype=torch.int32)


def _merge(kept_key: Tensor, kept_id: Tensor, key: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Keep the K smallest keys (and their ids) of the kept A x K and the block's A x n."""
    k = kept_key.shape[1]
    if key.shape[1] > k:  # the block's own best k first: no copy of the A x n keys
        key, at = torch.topk(key, k, dim=1, largest=False, sorted=False)
        ids = ids[at]
    else:
        ids = ids[None, :].expand(key.shape[0], -1)
    keys, all_ids = torch.cat([kept_key, key], dim=1), torch.cat([kept_id, ids], dim=1)
    top = torch.topk(keys, k, dim=1, largest=False, sorted=False).indices
    return keys.gather(1, top), all_ids.gather(1, top)


def hardest(scaled, labels, starts, flat, blocks, offsets, positives, negatives):
    """Per anchor the K+ lowest positives and K- highest negatives: running ``topk`` over the
    blocks with the similarity as key (s for positives, -s for negatives)."""
    num = scaled.shape[0]
    work = Workspace(scaled.device)

    def empty(k):
        return (torch.full((num, k), math.inf, dtype=scaled.dtype, device=scaled.device),
                torch.full((num, k), -1, dtype=torch.int32, device=scaled.device))

    (key_p, id_p), (key_n, id_n) = empty(positives), empty(negatives)
    for block in blocks:
        lo, hi = starts[block.first_class], starts[block.last_class + 1]
        ids = block_ids(block, offsets, scaled.device)
        key = work.similarities(scaled, _entries(flat, block, scaled))  # A x n, s
        if hi > lo:
            same = work.same_class(labels[lo:hi], block)
            key_pos = work.take("key_p", same.shape, key.dtype)
            key_pos.copy_(key[lo:hi]).masked_fill_(~same, math.inf)
            key_p[lo:hi], id_p[lo:hi] = _merge(key_p[lo:hi], id_p[lo:hi], key_pos, ids)
        key.neg_()
        if hi > lo:
            key[lo:hi].masked_fill_(same, math.inf)
        key_n, id_n = _merge(key_n, id_n, key, ids)
    out = []
    for key, ids, sign in ((key_p, id_p, 1.0), (key_n, id_n, -1.0)):
        empty_slot = torch.isinf(key)
        out.append(((sign * key).masked_fill(empty_slot, 0.0), ids.masked_fill(empty_slot, -1).long()))
    return out[0], out[1]


def _boundary_bins(work, flat, blocks, starts, scaled, labels, temperature, fraction):
    """Per anchor (A long each): the bin of its ceil(x |N(a)|)-th highest negative and of its
    ceil(x |P(a)|)-th lowest positive, and the sizes of the kept sets N_x(a) (the negatives
    in bins >= the first) and P_x(a) (the positives in bins <= the second). One pass over
    the bank into one A x 2 (_BINS + 1) histogram: a negative counts in its bin, a positive
    in _BINS + 1 + its bin."""
    num = scaled.shape[0]
    histogram = torch.zeros(num, 2 * (_BINS + 1), dtype=torch.long, device=scaled.device)
    for block in blocks:
        lo, hi = starts[block.first_class], starts[block.last_class + 1]
        position = bin_position(work.similarities(scaled, _entries(flat, block, scaled)), temperature, inplace=True)
        bins = work.take("bins", position.shape, torch.long)
        bins.copy_(position.clamp_(0, _BINS - 1))  # cosine_bins: truncation after the clamp
        if hi > lo:
            bins[lo:hi].add_(work.same_class(labels[lo:hi], block), alpha=_BINS + 1)
        histogram.scatter_add_(1, bins, histogram.new_ones(1, 1).expand_as(bins))
    neg, pos = histogram[:, :_BINS], histogram[:, _BINS + 1:2 * _BINS + 1]
    need_n = torch.ceil(neg.sum(1).double() * fraction).long()
    need_p = torch.ceil(pos.sum(1).double() * fraction).long()
    from_top, below = neg.flip(1).cumsum(1).flip(1), pos.cumsum(1)  # entries in bins >= b, <= b
    bound_n = (from_top >= need_n[:, None]).sum(1) - 1
    bound_p = (below < need_p[:, None]).sum(1)
    return bound_n, bound_p, from_top.gather(1, bound_n[:, None])[:, 0], below.gather(1, bound_p[:, None])[:, 0]


def _take(member: Tensor, sim: Tensor, ids: Tensor, ranks: Tensor, seen: Tensor, values: Tensor,
          kept: Tensor) -> None:
    """In place, for rows x n members of the kept sets in one block (``member``, bool) and
    rows x k drawn ranks into the sets in id order (-1: empty slot): the slots whose rank
    falls in this block get its similarity (``values``) and bank index (``kept``); ``seen``
    (rows) counts the members of the blocks walked so far. ``nonzero`` lists the members
    row by row in column order, so a row's r-th member of the block is at its row's start
    + r in that list."""
    where = torch.nonzero(member)  # m x 2
    count = torch.bincount(where[:, 0], minlength=member.shape[0])
    if where.shape[0]:
        local = ranks - seen[:, None]
        found = (local >= 0) & (local < count[:, None])
        column = where[:, 1][(local + (count.cumsum(0) - count)[:, None]).clamp_(0, where.shape[0] - 1)]
        values.copy_(torch.where(found, sim.gather(1, column), values))
        kept.copy_(torch.where(found, ids.long()[column], kept))
    seen += count


def semi_hard(scaled, labels, order, starts, flat, blocks, offsets, positives, negatives, seed, temperature,
              fraction):
    """K+ of P_x(a) and K- of N_x(a) uniformly: the histogram pass gives each anchor's
    boundary bins and set sizes, ranks are drawn, and a second pass finds the drawn members."""
    work = Workspace(scaled.device)
    bound_n, bound_p, size_n, size_p = _boundary_bins(work, flat, blocks, starts, scaled, labels, temperature,
                                                      fraction)
    rank_p, rank_n = draw_sorted(seed, size_p, size_n, order, positives, negatives)
    rank_p, rank_n = rank_p.to(scaled.device), rank_n.to(scaled.device)
    values_p, values_n = scaled.new_zeros(rank_p.shape), scaled.new_zeros(rank_n.shape)
    id_p, id_n = torch.full_like(rank_p, -1), torch.full_like(rank_n, -1)
    seen_p, seen_n = torch.zeros_like(size_p), torch.zeros_like(size_n)
    low = torch.where(bound_n > 0, bound_n.to(scaled.dtype), -math.inf)
    high = torch.where(bound_p < _BINS - 1, bound_p.to(scaled.dtype) + 1, math.inf)
    for block in blocks:
        lo, hi = starts[block.first_class], starts[block.last_class + 1]
        ids = block_ids(block, offsets, scaled.device)
        sim = work.similarities(scaled, _entries(flat, block, scaled))
        # The histogram's bin is floor(clamp(position, 0, _BINS - 1)), with position the same
        # expression of the same sim; for 0 < b <= _BINS - 1, bin >= b <=> position >= b,
        # and for 0 <= b < _BINS - 1, bin <= b <=> position < b + 1 (edges: every bin).
        position = bin_position(sim, temperature, out=work.take("position", sim.shape, sim.dtype))
        member = torch.ge(position, low[:, None], out=work.take("member", sim.shape, torch.bool))
        if hi > lo:
            same = work.same_class(labels[lo:hi], block)
            member[lo:hi].masked_fill_(same, False)
            member_p = torch.lt(position[lo:hi], high[lo:hi, None], out=work.take("member_p", same.shape, torch.bool))
            _take(member_p.logical_and_(same), sim[lo:hi], ids, rank_p[lo:hi], seen_p[lo:hi], values_p[lo:hi],
                  id_p[lo:hi])
        _take(member, sim, ids, rank_n, seen_n, values_n, id_n)
    return (values_p, id_p), (values_n, id_n)
