"""ContrastiveSeg's per-anchor example sampling over the memory bank, streamed in blocks.

Wang et al., "Exploring Cross-Image Pixel Contrast for Semantic Segmentation", ICCV 2021
(arXiv 2101.11939), the hard example sampling it compares with contrasting the whole
bank. The released code never implemented it (tfzhou/ContrastiveSeg README: "[ ] Hard
Example Mining"; its issue 31). With ``s_ac = x_a . c / t`` over the bank's entries ``c``,
``P(a)`` the entries of the anchor's class and ``N(a)`` all others, each anchor keeps a
subset ``P'(a)`` of at most ``K+`` positives and ``N'(a)`` of at most ``K-`` negatives:

- ``random``: ``K+`` of ``P(a)`` and ``K-`` of ``N(a)`` uniformly without replacement;
- ``hardest``: the ``K+`` positives of lowest ``s_ap`` and the ``K-`` negatives of highest ``s_an``;
- ``semi_hard``: first the top-x hardest fraction of each set,
  ``P_x(a) = {p in P(a): rank of s_ap ascending <= ceil(x |P(a)|)}`` and
  ``N_x(a) = {n in N(a): rank of s_an descending <= ceil(x |N(a)|)}``, then ``K+`` of
  ``P_x(a)`` and ``K-`` of ``N_x(a)`` uniformly without replacement.

A set smaller than asked is taken whole. The loss is Eq. 3 on the kept sets (as
:mod:`contraseg.losses.memory_contrast` on the whole bank)::

    L_a    = log sum_{n in N'(a)} exp(s_an)          (-inf when N'(a) is empty)
    loss_a = (t / t_base) * mean_{p in P'(a)} softplus(L_a - s_ap)
    loss   = mean of loss_a over the anchors with P'(a) non-empty

Source and status: the definitions above and the defaults (K+ = 1024, K- = 2048, x = 0.1)
are recalled from the paper's hard-example-sampling section; its text could not be
retrieved when this was written, so they are CHOSEN values, not checked against the paper
and not released ones (the release has no implementation). Change them by config.

Random draws. "Uniformly without replacement" is "the K smallest of i.i.d. uniform
priorities": every (anchor, entry) pair has the priority :func:`pair_priorities`
``u(seed, a, j)``, a counter-based hash of the seed, the anchor's index ``a`` (in the
caller's order) and the entry's global bank index ``j`` (queue offset + class * S + slot).
The draws are thus the same whatever the block size or device, and a test can reproduce
them per anchor. Priorities are float32 on a 2^-24 grid: two equal ones (rare) are ordered
arbitrarily. :class:`~contraseg.losses.PixelContrastLoss` draws the seed from its
generator each call and mixes in the process rank (under DDP each rank has its own
anchors and draws; the bank is the gathered one, the same on every rank).

Top-x without an A x M matrix. The x-quantile of every anchor's similarities is found
from a per-anchor histogram of ``_BINS`` bins of the cosine ``t * s`` over [-1, 1]
(one extra pass over the bank); the kept set is the entries whose bin is at or past the
bin holding the ``ceil(x n)``-th hardest. A deliberate difference: it holds the exact
top-x fraction plus the entries tied with its boundary within one bin (2 / 4096 in
cosine); documented, and tested against exact top-x where no such tie exists.

Cost and memory: one pass over the bank in blocks (semi-hard: two) with the A x n
similarities of a block (the blocks of :mod:`contraseg.losses.memory_contrast`), keeping
per anchor the best ``K`` (priority, similarity, index) by ``topk`` of the kept and the
block's best; then the loss on the A x (K+ + K-) kept similarities. The selection is not
differentiated (as a sampler); the gradient flows through the kept ``s_ac`` only,
``d loss / d x_a = sum_c (d loss / d s_ac) c / t``, computed by one more pass (the kept
coefficients scattered into each block's A x n, times its entries). Memory:
O(A (K + block + bins)), whatever the bank size. The bank is read, never differentiated.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .memory_contrast import _entries, _plan, default_block_size

SAMPLINGS = ("all", "random", "hardest", "semi_hard")
_BINS = 4096
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)
_MIX32 = 0x2C1B3C6D  # an odd 32-bit multiplier (as a positive int32)


def _shr(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: Tensor) -> Tensor:
    """splitmix64's finaliser on int64 (wrapping arithmetic)."""
    x = x ^ _shr(x, 30)
    x = x * _MIX1
    x = x ^ _shr(x, 27)
    x = x * _MIX2
    return x ^ _shr(x, 31)


def pair_priorities(seed: int, anchor_ids: Tensor, entry_ids: Tensor) -> Tensor:
    """i.i.d.-looking uniform priorities in [0, 1) on a 2^-24 grid, float32 (exact),
    ``len(anchor_ids) x len(entry_ids)``: a hash of (seed, anchor index, global entry index);
    the same on every device. (Equal priorities, rare, are ordered arbitrarily.) The anchor
    and entry indices are hashed to 32 bits each (splitmix64); the pair's hash is one
    multiply-xorshift of their xor, in int32 (the A x n part is the costly one)."""
    seed_t = torch.tensor(int(seed) & ((1 << 63) - 1), dtype=torch.long, device=anchor_ids.device)
    a = (_mix(anchor_ids.long() * _GOLDEN + _mix(seed_t)) >> 32).to(torch.int32)
    e = (_mix(entry_ids.long().to(anchor_ids.device) * _MIX2 + 1) >> 32).to(torch.int32)
    x = (a[:, None] ^ e[None, :]).mul_(_MIX32)
    x ^= (x >> 15) & 0x1FFFF
    return ((x >> 8) & 0xFFFFFF).float().mul_(2.0 ** -24)


def bin_position(scaled_similarity: Tensor, temperature: float) -> Tensor:
    """``(t s + 1) * _BINS / 2``: where the cosine ``t s`` in [-1, 1] falls on [0, _BINS]."""
    return scaled_similarity * (temperature * _BINS / 2) + _BINS / 2


def cosine_bins(scaled_similarity: Tensor, temperature: float) -> Tensor:
    """The histogram bin (long, [0, _BINS)) of ``t * s``: ``floor`` of :func:`bin_position`
    clamped (truncation after the clamp to [0, _BINS - 1] is the floor)."""
    return bin_position(scaled_similarity, temperature).clamp_(0, _BINS - 1).long()


def _block_ids(block, offsets: Sequence[int], device: torch.device) -> Tensor:
    parts = [torch.arange(lo, hi) for lo, hi in block.rows]
    return (torch.cat(parts) + offsets[block.source]).to(device=device, dtype=torch.int32)


def _merge(kept: tuple, key: Tensor, sim: Tensor | None, ids: Tensor) -> tuple:
    """Keep the K smallest keys of the kept K and the block's n (A x K each: key, s, id;
    s is None when it is the key itself, as for ``hardest``)."""
    kept_key, kept_s, kept_id = kept
    k = kept_key.shape[1]
    if key.shape[1] > k:  # the block's own best k first: no copy of the A x n keys
        key, at = torch.topk(key, k, dim=1, largest=False, sorted=False)
        sim, ids = None if sim is None else sim.gather(1, at), ids[at]
    else:
        ids = ids[None, :].expand(key.shape[0], -1)
    keys = torch.cat([kept_key, key], dim=1)
    top = torch.topk(keys, k, dim=1, largest=False, sorted=False).indices
    return (keys.gather(1, top), None if sim is None else torch.cat([kept_s, sim], 1).gather(1, top),
            torch.cat([kept_id, ids], 1).gather(1, top))


def _empty(rows: int, k: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return (torch.full((rows, k), math.inf, dtype=like.dtype, device=like.device),
            like.new_zeros(rows, k), torch.full((rows, k), -1, dtype=torch.int32, device=like.device))


def _boundary_bins(flat, blocks, starts, scaled, labels, temperature, fraction):
    """Per anchor, the bin of its ceil(x |N(a)|)-th highest negative and ceil(x |P(a)|)-th
    lowest positive (A long each): one pass over the bank, histograms of A x (_BINS + 1)."""
    num = scaled.shape[0]
    neg = torch.zeros(num, _BINS + 1, dtype=torch.long, device=scaled.device)
    pos = torch.zeros_like(neg)
    for block in blocks:
        lo, hi = starts[block.first_class], starts[block.last_class + 1]
        bins = cosine_bins(scaled @ _entries(flat, block, scaled).T, temperature)
        one = neg.new_ones(1, 1).expand_as(bins)
        if hi > lo:
            same = labels[lo:hi, None] == block.labels(bins.device)[None, :]
            pos[lo:hi].scatter_add_(1, torch.where(same, bins[lo:hi], _BINS), one[lo:hi])
            bins[lo:hi].masked_fill_(same, _BINS)  # the dump bin: not a negative
        neg.scatter_add_(1, bins, one)
    neg, pos = neg[:, :_BINS], pos[:, :_BINS]
    need_n = torch.ceil(neg.sum(1).double() * fraction).long()
    need_p = torch.ceil(pos.sum(1).double() * fraction).long()
    from_top = neg.flip(1).cumsum(1).flip(1)  # entries in bins >= b
    return (from_top >= need_n[:, None]).sum(1) - 1, (pos.cumsum(1) < need_p[:, None]).sum(1)


@torch.no_grad()
def select_examples(scaled, labels, anchor_ids, starts, flat, blocks, offsets, sampling, positives, negatives,
                    seed, temperature, fraction):
    """Per anchor (sorted by class), the kept positives and negatives: ``(s, id)`` pairs,
    A x K+ and A x K- each, ``id = -1`` for an empty slot."""
    num = scaled.shape[0]
    bound_n = bound_p = None
    if sampling == "semi_hard":
        bound_n, bound_p = _boundary_bins(flat, blocks, starts, scaled, labels, temperature, fraction)
    kept_p, kept_n = _empty(num, positives, scaled), _empty(num, negatives, scaled)
    carry = sampling != "hardest"  # hardest: the key is the similarity (s for positives, -s for negatives)
    for block in blocks:
        lo, hi = starts[block.first_class], starts[block.last_class + 1]
        ids = _block_ids(block, offsets, scaled.device)
        sim = scaled @ _entries(flat, block, scaled).T  # A x n
        if sampling == "hardest":
            key = -sim  # a new tensor: sim is kept
        else:
            key = pair_priorities(seed, anchor_ids, ids).to(sim.dtype)
            if sampling == "semi_hard":
                # with the position clamped to [0, _BINS - 1] (floor of it = the bin): bin < b <=> position < b
                position = bin_position(sim, temperature).clamp_(0, _BINS - 1)
                key.masked_fill_(position < bound_n[:, None], math.inf)
        same = None
        if hi > lo:
            same = labels[lo:hi, None] == block.labels(sim.device)[None, :]
            key_p = (sim[lo:hi].clone() if sampling == "hardest"
                     else pair_priorities(seed, anchor_ids[lo:hi], ids).to(sim.dtype))
            if sampling == "semi_hard":
                key_p.masked_fill_(position[lo:hi] >= bound_p[lo:hi, None] + 1, math.inf)  # bin > b
            key_p.masked_fill_(~same, math.inf)
            part = _merge(tuple(t[lo:hi] for t in kept_p), key_p, sim[lo:hi] if carry else None, ids)
            for whole, new in zip(kept_p, part):
                if new is not None:
                    whole[lo:hi] = new
            key[lo:hi].masked_fill_(same, math.inf)
        kept_n = _merge(kept_n, key, sim if carry else None, ids)
    if not carry:
        kept_p, kept_n = (kept_p[0], kept_p[0], kept_p[2]), (kept_n[0], -kept_n[0], kept_n[2])
    out = []
    for key, sim, ids in (kept_p, kept_n):
        empty = torch.isinf(key)
        out.append((sim.masked_fill(empty, 0.0), ids.masked_fill(empty, -1).long()))
    return out[0], out[1]


class _KeptSimilarity(torch.autograd.Function):
    """``s = scaled_a . bank[id]`` for the kept (anchor, id) pairs: forward returns the values
    the selection pass computed; backward walks the blocks once more, scattering each
    block's kept coefficients into an A x n matrix and multiplying it by the block's
    entries (one A x D x M matmul in all, nothing of size M kept)."""

    @staticmethod
    def forward(ctx, scaled, values, ids, blocks, offsets, *queues):
        ctx.save_for_backward(ids, *queues)
        ctx.blocks, ctx.offsets = blocks, offsets
        return values.clone()

    @staticmethod
    def backward(ctx, grad_values):
        ids, *queues = ctx.saved_tensors
        flat = [q.reshape(-1, q.shape[-1]) for q in queues]
        grad = grad_values.new_zeros(ids.shape[0], flat[0].shape[1])
        for block in ctx.blocks:
            column = torch.full_like(ids, -1)
            start = 0
            for lo, hi in block.rows:
                first = ctx.offsets[block.source] + lo
                inside = (ids >= first) & (ids < first + hi - lo)
                column = torch.where(inside, ids - first + start, column)
                start += hi - lo
            kept = column >= 0
            if not bool(kept.any()):
                continue
            coef = grad_values.new_zeros(ids.shape[0], start)
            coef.scatter_add_(1, column.clamp_(min=0), grad_values * kept)
            grad.addmm_(coef, _entries(flat, block, grad))
        return (grad, None, None, None, None) + (None,) * len(queues)


def sampled_memory_contrast(anchors: Tensor, anchor_labels: Tensor, queues: Sequence[Tensor],
                            counts: Sequence[Tensor], temperature: float, base_temperature: float,
                            sampling: str, positives: int, negatives: int, seed: int,
                            semi_hard_fraction: float = 0.1, block_size: int | None = None) -> Tensor | None:
    """The ContrastiveSeg loss against the bank with per-anchor example sampling.

    Args:
        anchors: A x D L2-normalised anchors (float32 / float64, differentiable).
        anchor_labels: A long in [0, K).
        queues, counts: as :func:`contraseg.losses.memory_contrast.memory_contrast`.
        temperature, base_temperature: t and t_base.
        sampling: ``random``, ``hardest`` or ``semi_hard`` (module docstring).
        positives, negatives: K+ and K- per anchor (>= 1).
        seed: the random draws (:func:`pair_priorities`); unused by ``hardest``.
        semi_hard_fraction: x in (0, 1].
        block_size: bank entries per block (default as the streaming loss).

    Returns:
        The scalar loss, or ``None`` when no anchor keeps a positive.
    """
    if sampling not in SAMPLINGS[1:]:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS[1:])}, got {sampling!r}")
    for name, value in (("positives", positives), ("negatives", negatives)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not 0 < semi_hard_fraction <= 1:
        raise ValueError(f"semi_hard_fraction must be in (0, 1], got {semi_hard_fraction!r}")
    if len(queues) != len(counts) or not queues:
        raise ValueError(f"need one counts tensor per queue, got {len(queues)} and {len(counts)}")
    num_classes = queues[0].shape[0]
    if anchors.shape[0] == 0:
        return None
    labels = anchor_labels.to(anchors.device)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"anchor_labels has values in [{low}, {high}], outside [0, {num_classes}) of the queues")
    block = block_size or default_block_size(anchors.shape[0], anchors.device, anchors.element_size())
    count_table = torch.stack([c.detach().to("cpu", torch.long) for c in counts])
    blocks = _plan(count_table.tolist(), [q.shape[1] for q in queues], block)
    order = torch.argsort(labels, stable=True)
    per_class = torch.bincount(labels, minlength=num_classes).cpu()
    starts = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(per_class, 0)]).tolist()
    detached = [q.detach() for q in queues]
    flat = [q.reshape(-1, q.shape[-1]) for q in detached]
    offsets = [0]
    for q in flat[:-1]:
        offsets.append(offsets[-1] + q.shape[0])
    scaled = anchors[order] / temperature
    sorted_labels = labels[order]
    (s_p, id_p), (s_n, id_n) = select_examples(scaled.detach(), sorted_labels, order, starts, flat, blocks,
                                               offsets, sampling, positives, negatives, seed, temperature,
                                               semi_hard_fraction)
    valid_p, valid_n = id_p >= 0, id_n >= 0
    has_positive = valid_p.any(1)
    if not bool(has_positive.any()):
        return None
    sims = _KeptSimilarity.apply(scaled, torch.cat([s_p, s_n], 1), torch.cat([id_p, id_n], 1), blocks,
                                 offsets, *detached)
    s_p, s_n = sims[:, :positives], sims[:, positives:]
    has_negative = valid_n.any(1)
    negative = torch.where(valid_n & has_negative[:, None], s_n, torch.zeros_like(s_n))
    negative = negative.masked_fill(~valid_n & has_negative[:, None], -math.inf)
    lse = torch.where(has_negative, torch.logsumexp(negative, dim=1), torch.full_like(s_n[:, 0], -math.inf))
    terms = F.softplus(lse[:, None] - s_p.masked_fill(~valid_p, 0.0)) * valid_p
    per_anchor = terms.sum(1)[has_positive] / valid_p.sum(1)[has_positive]
    return (temperature / base_temperature) * per_anchor.mean()
