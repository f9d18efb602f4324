"""Cosine similarity of dense embeddings to fixed prototypes, on the native layout:
:func:`normalised_similarity` (ProAC, WDASS's prototype softmax, the nearest-prototype head).

``s_bki = p_k . x_bi / (|x_bi| t)`` for embeddings B x D x n (n = h*w, a view of the
B x D x h x w tensor, so nothing is copied) and K x D prototypes (not differentiated:
they are fixed buffers in ProAC and WDASS).

Autograd through ``F.normalize`` (or ``vector_norm``) costs several passes over the
N x D embeddings in backward; this function writes the gradient in closed form,

    dL/dx = P^T a - c * x,   a_k = g_k / (|x| t),   c = (sum_k g_k r_k) / (|x|^3 t),

with r = P x the raw dot products (recovered from the output, which is all that is
saved besides the input): one elementwise pass over x, fused into a ``baddbmm``. Where
``|x| < eps`` the norm is clamped as in ``F.normalize`` and the second term vanishes.

Norms and scalings run over the D axis in blocks of :data:`CHUNK_ROWS` rows;
:func:`chunk_rows` changes the block for a ``with`` block (the ``--busy`` benchmark of
``python -m contraseg.bench losses`` compares block sizes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

EPS = 1e-12
# Rows of D handled together when a pass runs over the middle (D) axis of B x D x n:
# small enough to stay in cache, large enough to amortise the per-op overhead.
# (``vector_norm(dim=1)`` on this layout was measured 5x slower than chunks of 16 rows.)
CHUNK_ROWS = 16


@contextmanager
def chunk_rows(rows: int) -> Iterator[None]:
    """Within the ``with`` block, passes over D take ``rows`` rows at a time (then
    :data:`CHUNK_ROWS` is restored). Results agree for every block size up to rounding."""
    global CHUNK_ROWS
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a positive int, got {rows!r}")
    previous, CHUNK_ROWS = CHUNK_ROWS, rows
    try:
        yield
    finally:
        CHUNK_ROWS = previous


def _squared_norms(feats: Tensor) -> Tensor:
    """``sum_d x_bdn^2`` of B x D x n features: B x n, accumulated over chunks of rows."""
    acc = feats.new_zeros(feats.shape[0], feats.shape[2])
    for start in range(0, feats.shape[1], CHUNK_ROWS):
        rows = feats[:, start : start + CHUNK_ROWS]
        acc += (rows * rows).sum(dim=1)
    return acc


def _scale_columns(feats: Tensor, scale: Tensor) -> Tensor:
    """``feats * scale[:, None, :]`` for B x D x n features and B x n scales, chunked over D."""
    out = torch.empty_like(feats)
    column_scale = scale.unsqueeze(1)
    for start in range(0, feats.shape[1], CHUNK_ROWS):
        torch.mul(feats[:, start : start + CHUNK_ROWS], column_scale, out=out[:, start : start + CHUNK_ROWS])
    return out


class _NormalisedSimilarity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: Tensor, protos: Tensor, temperature: float) -> Tensor:
        norm = _squared_norms(feats).sqrt_()  # B x n
        inv = norm.clamp_min(EPS).reciprocal()
        out = torch.matmul(protos, feats).mul_((inv / temperature).unsqueeze(1))  # B x K x n
        ctx.save_for_backward(feats, protos, out, inv, norm > EPS)
        ctx.temperature = temperature
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        feats, protos, out, inv, unclamped = ctx.saved_tensors
        t = ctx.temperature
        scaled = grad * (inv / t).unsqueeze(1)  # a: B x K x n
        # sum_k g_k r_k / (|x|^3 t) == sum_k g_k s_k / |x|^2, from the saved output s.
        c = (grad * out).sum(dim=1) * inv.pow(2) * unclamped  # B x n
        out = _scale_columns(feats, -c)
        out.baddbmm_(protos.t().expand(feats.shape[0], -1, -1), scaled)
        return out, None, None


def normalised_similarity(feats: Tensor, prototypes: Tensor, temperature: float = 1.0) -> Tensor:
    """``p_k . x_i / (|x_i| t)``: feats B x D x n, prototypes K x D (unit norm, fixed) -> B x K x n.

    The gradient flows to ``feats`` only.
    """
    return _NormalisedSimilarity.apply(feats, prototypes.detach(), float(temperature))
