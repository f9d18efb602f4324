"""ContrastiveSeg's anchor-vs-memory contrast, streamed over the bank in blocks.

Wang et al., "Exploring Cross-Image Pixel Contrast for Semantic Segmentation", ICCV 2021,
Eq. 3 with the memory bank as contrast set (Sec. 3.3). With ``x_a`` the L2-normalised
anchors, ``c`` the bank's (stored normalised) entries, ``s_ac = x_a . c / t``, ``P(a)``
the entries of the anchor's class and ``N(a)`` all the others::

    L_a    = log sum_{n in N(a)} exp(s_an)                      (-inf without negatives)
    loss_a = -(t / t_base) * mean_{p in P(a)} [ s_ap - log(exp(s_ap) + exp(L_a)) ]
           =  (t / t_base) * mean_{p in P(a)} softplus(L_a - s_ap)
    loss   = mean of loss_a over the anchors with at least one positive

This is the formula of :func:`contraseg.losses.pixel_contrast.supervised_contrast`
(``exclude_self=False``), computed without the A x M similarity matrix (A anchors,
M bank entries): the bank's filled entries are walked in blocks of at most
``block_size`` consecutive entries (a block may span several classes), the way
memory-efficient attention walks its keys. The anchors are sorted by class, so the
anchors of the classes a block holds are one contiguous slice of rows.

Forward, two passes over the blocks:

1. negatives: each block is contrasted with all anchors, its same-class pairs masked
   out, and each anchor keeps a running log-sum-exp ``L_a``;
2. positives: each block is contrasted with the anchors of the classes it holds (now
   that ``L_a`` is known; a contiguous slice of rows), and each anchor keeps the running
   sum of ``softplus(L_a - s_ap)`` over its same-class entries.

Only ``L`` (A) and the anchors are saved; backward recomputes each block's
similarities instead of storing them, with, for ``w_a = g (t / t_base) / (|H| |P(a)|)``
(H the anchors with a positive, g the incoming gradient)::

    d loss / d s_ap = -w_a sigmoid(L_a - s_ap)
    d loss / d s_an =  w_a q_a exp(s_an - L_a),   q_a = sum_{p in P(a)} sigmoid(L_a - s_ap)

walking the positive pairs first (they give ``q``), then the negative ones. The work
is the three A x D x M matmuls of the dense loss plus, in the two positive passes, the
anchors of a block's classes against the whole block: a block holds at most
``_MAX_CLASSES`` (4) classes, so that is at most about 2 x 4 / K of one matmul more on a
balanced bank. The extra memory is O(A x block_size) whatever the bank's size. Blocks are large (about 64 MiB of
similarities) because on a shared CPU every operator is a synchronisation point of the
intra-op threads: fewer, larger operators keep their speed when the machine is busy.

The bank itself is not differentiated (its entries are detached buffers). It is read in
place: a K x S x D buffer per kind (pixel, segment) whose class k holds its entries in
slots ``[0, count_k)``; a block whose entries are not contiguous in the buffer (a class
not yet full) is gathered into one n x D copy. The buffers are saved for backward, so
an in-place change of the bank between forward and backward (an enqueue) is reported
by autograd instead of giving silently wrong gradients; pass copies if the bank must
change in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

# Bytes of one A x block similarity buffer (float32: A * block * 4); the loss holds about
# two at once. On CPU large blocks keep the operator count low (see above); on CUDA they
# fill the device with few kernel launches.
_BLOCK_BUDGET = {"cpu": 64 * 2**20, "cuda": 64 * 2**20}
_MIN_BLOCK, _MAX_BLOCK = 256, 65536
# Row maxima of fully masked rows (-inf) are clamped to this, so exp(-inf - m) = 0.
_FLOOR = -1e4
# Classes per block at most: bounds the positive passes' extra work (see above).
_MAX_CLASSES = 4


def default_block_size(num_anchors: int, device: torch.device, element_size: int = 4) -> int:
    """Bank entries per block: an A x block buffer of about 64 MiB (CPU and CUDA).

    Clamped to [256, 65536]; any value gives the same result, only speed and memory change.
    """
    budget = _BLOCK_BUDGET.get(torch.device(device).type, _BLOCK_BUDGET["cuda"])
    block = budget // max(1, num_anchors * element_size)
    return int(min(_MAX_BLOCK, max(_MIN_BLOCK, block)))


@dataclass(frozen=True)
class _Block:
    """Consecutive filled entries of one queue: ``rows`` of its flattened (K*S) x D view
    (merged where contiguous) and, per class it holds, the number of its entries."""

    source: int
    rows: tuple[tuple[int, int], ...]
    classes: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def first_class(self) -> int:
        return self.classes[0]

    @property
    def last_class(self) -> int:
        return self.classes[-1]

    def labels(self, device: torch.device) -> Tensor:
        """The class of every entry (n long), made when needed: nothing of size M is kept."""
        classes, lengths = torch.tensor(self.classes), torch.tensor(self.lengths)
        return classes.repeat_interleave(lengths).to(device)


def _plan(counts: list[list[int]], sizes: list[int], block_size: int) -> list[_Block]:
    """Cut every queue's filled entries (class by class, slot by slot) into blocks."""
    blocks = []
    for source, (per_class, size) in enumerate(zip(counts, sizes)):
        pieces: list[tuple[int, int, int]] = []  # (class, flat row start, flat row stop)
        taken = 0

        def close() -> None:
            nonlocal pieces, taken
            rows: list[list[int]] = []
            for _, lo, hi in pieces:
                if rows and rows[-1][1] == lo:
                    rows[-1][1] = hi
                else:
                    rows.append([lo, hi])
            blocks.append(_Block(source, tuple((lo, hi) for lo, hi in rows),
                                 tuple(cls for cls, _, _ in pieces), tuple(hi - lo for _, lo, hi in pieces)))
            pieces, taken = [], 0

        for cls, filled in enumerate(per_class):
            if filled and pieces and len({piece[0] for piece in pieces}) == _MAX_CLASSES:
                close()
            start = 0
            while start < filled:
                take = min(filled - start, block_size - taken)
                pieces.append((cls, cls * size + start, cls * size + start + take))
                taken += take
                start += take
                if taken == block_size:
                    close()
        if pieces:
            close()
    return blocks


def _entries(flat: Sequence[Tensor], block: _Block, like: Tensor) -> Tensor:
    """The entries of one block (n x D) in the anchors' dtype and device (a view when
    they are contiguous in the queue and already match)."""
    queue = flat[block.source]
    parts = [queue[lo:hi] for lo, hi in block.rows]
    entries = parts[0] if len(parts) == 1 else torch.cat(parts)
    return entries.to(device=like.device, dtype=like.dtype)


class _StreamingMemoryContrast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scaled: Tensor, labels: Tensor, class_start: Tensor, counts: Tensor, scale: float,
                block_size: int, *queues: Tensor) -> Tensor:
        # scaled: A x D anchors sorted by class, already divided by t; labels: A, sorted;
        # class_start: K + 1 long (CPU), anchors of class k in rows [class_start[k], class_start[k+1]);
        # counts: S x K long (CPU), filled slots of every class in every queue.
        starts = class_start.tolist()
        count_list = counts.tolist()
        flat = [q.reshape(-1, q.shape[-1]) for q in queues]
        blocks = _plan(count_list, [q.shape[1] for q in queues], block_size)
        num_anchors = scaled.shape[0]

        negative_lse = scaled.new_full((num_anchors,), float("-inf"))
        for block in blocks:
            lo, hi = starts[block.first_class], starts[block.last_class + 1]
            sim = scaled @ _entries(flat, block, scaled).T  # A x n
            if hi > lo:  # the anchors of the block's classes: mask their positives
                sim[lo:hi].masked_fill_(labels[lo:hi, None] == block.labels(sim.device)[None, :], float("-inf"))
            row_max = sim.amax(dim=1, keepdim=True).clamp_(min=_FLOOR)
            block_lse = sim.sub_(row_max).exp_().sum(dim=1).log_().add_(row_max.squeeze(1))
            negative_lse = torch.logaddexp(negative_lse, block_lse)

        softplus_sum = scaled.new_zeros(num_anchors)
        for block in blocks:
            lo, hi = starts[block.first_class], starts[block.last_class + 1]
            if hi == lo:
                continue
            sim = scaled[lo:hi] @ _entries(flat, block, scaled).T
            # softplus(L_a - s_ap) on the same-class pairs: exactly 0 where L_a = -inf
            terms = F.softplus(sim.neg_().add_(negative_lse[lo:hi, None]))
            terms.masked_fill_(labels[lo:hi, None] != block.labels(terms.device)[None, :], 0.0)
            softplus_sum[lo:hi] += terms.sum(dim=1)

        positives = scaled.new_tensor([sum(per_class[k] for per_class in count_list)
                                       for k in range(len(starts) - 1)])
        positives = positives.repeat_interleave(torch.diff(class_start).to(scaled.device))
        has_positive = positives > 0
        num_with_positive = int(has_positive.sum())
        # w_a / g = (t / t_base) / (|H| |P(a)|), 0 for anchors without positives
        weight = torch.where(has_positive, scale / (num_with_positive * positives.clamp_min(1)),
                             torch.zeros_like(positives))
        ctx.save_for_backward(scaled, labels, negative_lse, weight, *queues)
        ctx.blocks, ctx.starts = blocks, starts
        return (softplus_sum * weight).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        scaled, labels, negative_lse, weight, *queues = ctx.saved_tensors
        blocks, starts = ctx.blocks, ctx.starts
        flat = [q.reshape(-1, q.shape[-1]) for q in queues]
        weight = weight * grad_output
        grad = torch.zeros_like(scaled)
        sigmoid_sum = scaled.new_zeros(scaled.shape[0])  # q_a
        for block in blocks:  # positives first: they give q
            lo, hi = starts[block.first_class], starts[block.last_class + 1]
            if hi == lo:
                continue
            entries = _entries(flat, block, scaled)
            sig = (scaled[lo:hi] @ entries.T).neg_().add_(negative_lse[lo:hi, None]).sigmoid_()
            sig.masked_fill_(labels[lo:hi, None] != block.labels(sig.device)[None, :], 0.0)
            sigmoid_sum[lo:hi] += sig.sum(dim=1)
            grad[lo:hi].addmm_(sig, entries, alpha=-1.0)  # times w_a below
        grad.mul_(weight[:, None])
        negative_weight = (weight * sigmoid_sum)[:, None]
        for block in blocks:
            lo, hi = starts[block.first_class], starts[block.last_class + 1]
            entries = _entries(flat, block, scaled)
            coef = (scaled @ entries.T).sub_(negative_lse[:, None]).exp_()
            if hi > lo:  # exp(s - L) of same-class pairs (inf where L = -inf) is no negative
                coef[lo:hi].masked_fill_(labels[lo:hi, None] == block.labels(coef.device)[None, :], 0.0)
            grad.addmm_(coef.mul_(negative_weight), entries)
        # d scaled / d anchors = 1 / t is applied by autograd outside (scaled = anchors / t)
        return (grad, None, None, None, None, None) + (None,) * len(queues)


def memory_contrast(
    anchors: Tensor,
    anchor_labels: Tensor,
    queues: Sequence[Tensor],
    counts: Sequence[Tensor],
    temperature: float,
    base_temperature: float,
    block_size: int | None = None,
) -> Tensor | None:
    """The ContrastiveSeg loss of anchors against per-class queues, streamed in blocks.

    Args:
        anchors: A x D L2-normalised anchor features (float32 or float64; differentiable).
        anchor_labels: A long, in [0, K).
        queues: K x S_i x D buffers (e.g. a memory bank's pixel and segment queues) of
            L2-normalised entries; class k of queue i fills slots ``[0, counts[i][k])``.
            Read in place, per block (converted to the anchors' dtype/device per block).
        counts: one K long tensor per queue, the filled slots of each class.
        temperature, base_temperature: t and t_base.
        block_size: bank entries per block; default :func:`default_block_size`.

    Returns:
        The scalar mean of ``loss_a`` over the anchors with a positive, or ``None`` when
        no anchor has one (empty bank, or no entry of any anchor's class).
    """
    if len(queues) != len(counts) or not queues:
        raise ValueError(f"memory_contrast: need one counts tensor per queue, got {len(queues)} and {len(counts)}")
    num_classes = queues[0].shape[0]
    if anchors.shape[0] == 0:
        return None
    block = block_size if block_size is not None else default_block_size(anchors.shape[0], anchors.device,
                                                                          anchors.element_size())
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    count_table = torch.stack([c.detach().to("cpu", torch.long) for c in counts])  # S x K
    class_sizes = count_table.sum(dim=0)
    labels = anchor_labels.to(anchors.device)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"anchor_labels has values in [{low}, {high}], outside [0, {num_classes}) of the queues")
    anchors_per_class = torch.bincount(labels, minlength=num_classes).cpu()
    if not bool((class_sizes[anchors_per_class > 0] > 0).any()):
        return None
    order = torch.argsort(labels, stable=True)
    class_start = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(anchors_per_class, 0)])
    scaled = anchors[order] / temperature
    detached = [q.detach() for q in queues]
    return _StreamingMemoryContrast.apply(scaled, labels[order], class_start, count_table,
                                          temperature / base_temperature, block, *detached)
