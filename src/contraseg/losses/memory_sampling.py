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

Source and status: the paper's text (Sec. 3.3) could not be read here. The definitions
and x = 0.1 (semi-hard: the hardest 10 % of each set, then K at random) agree with how
the release's users describe that section (tfzhou/ContrastiveSeg issues 17, 22, 31); the
counts K+ = 1024 and K- = 2048 are recalled from the paper, not checked against it. None
of them is released (the release has no implementation). Change them by config.

Random draws. The members of a set (``P(a)``, ``N(a)``, ``P_x(a)``, ``N_x(a)``) are
numbered by rank in the order of their global bank index (queue offset + class * S +
slot), and each anchor draws ``K`` distinct ranks uniformly from ``[0, |set|)``
(:func:`contraseg.losses.memory_draws.sample_ranks`: on the CPU, from a generator seeded
with the seed; the anchors in the caller's order). The draws are thus a function of the
seed and the set sizes only, the same whatever the block size or device, and a test can
reproduce them per anchor. :class:`~contraseg.losses.PixelContrastLoss` draws the seed
from its generator each call and mixes in the process rank (under DDP each rank has its
own anchors and draws; the bank is the gathered one, the same on every rank).

Top-x without an A x M matrix. The x-quantile of every anchor's similarities is found
from a per-anchor histogram of ``_BINS`` bins of the cosine ``t * s`` over [-1, 1]
(one extra pass over the bank); the kept set is the entries whose bin is at or past the
bin holding the ``ceil(x n)``-th hardest. A deliberate difference: it holds the exact
top-x fraction plus the entries tied with its boundary within one bin (2 / 4096 in
cosine); documented, and tested against exact top-x where no such tie exists.

Cost and memory. ``random``: the set sizes come from the counts, the drawn ranks are
mapped to bank indices (``searchsorted`` in per-class tables of segment lengths), the
kept pairs are placed in the blocks once (block and column of each), and one pass over
the bank in blocks (the blocks of :mod:`contraseg.losses.memory_contrast`) computes each
block's A x n similarities and picks out the placed ones. ``hardest``: one pass keeping
per anchor the best ``K`` (similarity, index) by ``topk`` of the kept and the block's
best. ``semi_hard``: the histogram pass gives each anchor's boundary bins and the sizes
of its top-x sets; ranks are drawn in them; a second pass marks each block's members
with the histogram's own expression, lists them (``nonzero``, row by row), counts them
per anchor (carried from block to block) and picks the drawn ranks out of the list. Then
the loss on the A x (K+ + K-) kept similarities. The selection is not differentiated (as
a sampler); the gradient flows through the kept ``s_ac`` only,
``d loss / d x_a = sum_c (d loss / d s_ac) c / t``, computed by one more pass (the kept
coefficients put into each block's A x n, times its entries). In all two (``semi_hard``:
three) A x D x M matmuls against the dense loss's three, plus element-wise work over the
A x n similarities of a block in the ``hardest`` and ``semi_hard`` passes and over the
A x K kept pairs. Memory: O(A (K + block + bins)), whatever the bank size (``semi_hard``'s
member list holds up to ``x`` of a block's pairs). The bank is read, never differentiated.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .memory_contrast import _entries, _plan, default_block_size
from .memory_draws import draw_sorted, rank_ids
from .memory_hard_examples import Workspace, cosine_bins, hardest, semi_hard

__all__ = ["SAMPLINGS", "cosine_bins", "sampled_memory_contrast", "select_examples"]

SAMPLINGS = ("all", "random", "hardest", "semi_hard")


def _place(ids: Tensor, blocks, offsets: Sequence[int]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Where the kept (anchor, id) pairs lie in the blocks.

    Args:
        ids: A x k global bank indices (long, -1: empty slot), distinct within a row.

    Returns:
        Per block, three m long tensors: the pairs' flat index into ``ids`` (A * k), their
        row (anchor) and their column in the block's A x n similarities (m = 0 for a block
        holding none). The blocks' row ranges are ascending global ids (a queue after the
        other, class by class), so one ``searchsorted`` on their first ids places every
        pair, and one sort groups them by block.
    """
    firsts, columns, owners = [], [], []
    for number, block in enumerate(blocks):
        start = 0
        for lo, hi in block.rows:
            firsts.append(offsets[block.source] + lo)
            columns.append(start)
            owners.append(number)
            start += hi - lo
    firsts_t, columns_t, owners_t = (torch.tensor(v, device=ids.device) for v in (firsts, columns, owners))
    flat = ids.flatten()
    index = torch.nonzero(flat >= 0).flatten()
    kept = flat[index]
    at = torch.searchsorted(firsts_t, kept, right=True) - 1
    column, owner = kept - firsts_t[at] + columns_t[at], owners_t[at]
    order = torch.argsort(owner)
    sizes = torch.bincount(owner, minlength=len(blocks)).tolist()
    return [(i, torch.div(i, ids.shape[1], rounding_mode="floor"), c)
            for i, c in zip(index[order].split(sizes), column[order].split(sizes))]


def _gather(scaled: Tensor, place, flat, blocks, shape: tuple[int, int]) -> Tensor:
    """``scaled_a . bank[id]`` for the A x k (anchor, id) pairs placed by :func:`_place` (0 in
    empty slots): one pass, each block's A x n similarities, the placed ones picked out."""
    values = scaled.new_zeros(shape[0] * shape[1])
    work = Workspace(scaled.device)
    for block, (index, row, column) in zip(blocks, place):
        if index.numel():
            values[index] = work.similarities(scaled, _entries(flat, block, scaled))[row, column]
    return values.view(shape)


def _random(scaled, labels, order, flat, blocks, offsets, count_table, positives, negatives, seed):
    """K+ of P(a) and K- of N(a) uniformly: drawn ranks (caller's anchor order), mapped to
    bank indices (their similarities are gathered later, by :func:`_gather`)."""
    sorted_labels = labels.cpu()
    size_p = count_table.sum(0)[sorted_labels]
    size_n = count_table.sum() - size_p
    rank_p, rank_n = draw_sorted(seed, size_p, size_n, order, positives, negatives)
    sizes = [q.shape[0] // count_table.shape[1] for q in flat]
    id_p = rank_ids(rank_p, sorted_labels, count_table, sizes, True).to(scaled.device)
    id_n = rank_ids(rank_n, sorted_labels, count_table, sizes, False).to(scaled.device)
    return (None, id_p), (None, id_n)


@torch.no_grad()
def select_examples(scaled, labels, order, starts, flat, blocks, offsets, count_table, sampling, positives,
                    negatives, seed, temperature, fraction):
    """Per anchor (sorted by class; ``order`` A: the caller's index of each row), the kept
    positives and negatives: ``(s, id)`` pairs, A x K+ and A x K- each, ``id = -1`` (and
    ``s = 0``) for an empty slot; ``s`` is None for ``random`` (the ids are drawn without
    the similarities: :func:`_gather`). ``count_table``: Q x K filled slots (CPU long)."""
    if sampling == "hardest":
        return hardest(scaled, labels, starts, flat, blocks, offsets, positives, negatives)
    if sampling == "random":
        return _random(scaled, labels, order, flat, blocks, offsets, count_table, positives, negatives, seed)
    return semi_hard(scaled, labels, order, starts, flat, blocks, offsets, positives, negatives, seed,
                      temperature, fraction)


class _KeptSimilarity(torch.autograd.Function):
    """``s = scaled_a . bank[id]`` for the kept (anchor, id) pairs (A x k): forward returns the
    values the selection computed; backward walks the blocks once more, putting each
    block's kept coefficients (placed by :func:`_place`) into an A x n matrix and
    multiplying it by the block's entries (one A x D x M matmul in all, nothing of size M
    kept)."""

    @staticmethod
    def forward(ctx, scaled, values, place, blocks, *queues):
        ctx.save_for_backward(*queues)  # an enqueue before backward is reported by autograd
        ctx.place, ctx.blocks = place, blocks
        return values.clone()

    @staticmethod
    def backward(ctx, grad_values):
        queues = ctx.saved_tensors
        flat = [q.reshape(-1, q.shape[-1]) for q in queues]
        grad = grad_values.new_zeros(grad_values.shape[0], flat[0].shape[1])
        coefficients = grad_values.flatten()
        work = Workspace(grad.device)
        for block, (index, row, column) in zip(ctx.blocks, ctx.place):
            if not index.numel():
                continue
            entries = _entries(flat, block, grad)
            coef = work.take("coef", (grad_values.shape[0], entries.shape[0]), grad.dtype).zero_()
            coef.index_put_((row, column), coefficients[index], accumulate=True)
            grad.addmm_(coef, entries)
        return (grad, None, None, None) + (None,) * len(queues)


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
        seed: the random draws (:func:`~contraseg.losses.memory_draws.sample_ranks`); unused by ``hardest``.
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
                                               offsets, count_table, sampling, positives, negatives, seed,
                                               temperature, semi_hard_fraction)
    valid_p, valid_n = id_p >= 0, id_n >= 0
    has_positive = valid_p.any(1)
    if not bool(has_positive.any()):
        return None
    ids = torch.cat([id_p, id_n], 1)
    place = _place(ids, blocks, offsets)
    values = (_gather(scaled.detach(), place, flat, blocks, ids.shape) if s_p is None
              else torch.cat([s_p, s_n], 1))
    sims = _KeptSimilarity.apply(scaled, values, place, blocks, *detached)
    s_p, s_n = sims[:, :positives], sims[:, positives:]
    has_negative = valid_n.any(1)
    negative = torch.where(valid_n & has_negative[:, None], s_n, torch.zeros_like(s_n))
    negative = negative.masked_fill(~valid_n & has_negative[:, None], -math.inf)
    lse = torch.where(has_negative, torch.logsumexp(negative, dim=1), torch.full_like(s_n[:, 0], -math.inf))
    terms = F.softplus(lse[:, None] - s_p.masked_fill(~valid_p, 0.0)) * valid_p
    per_anchor = terms.sum(1)[has_positive] / valid_p.sum(1)[has_positive]
    return (temperature / base_temperature) * per_anchor.mean()
