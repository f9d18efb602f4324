"""Cosine similarity of dense embeddings to fixed prototypes, on the native layout.

``s_bki = p_k . x_bi / (|x_bi| t)`` for embeddings B x D x n (n = h*w, a view of the
B x D x h x w tensor, so nothing is copied) and K x D prototypes (not differentiated:
they are fixed buffers in ProAC and WDASS).

Autograd through ``F.normalize`` (or ``vector_norm``) costs several passes over the
N x D embeddings in backward; this function writes the gradient in closed form,

    dL/dx = P^T a - c * x,   a_k = g_k / (|x| t),   c = (sum_k g_k r_k) / (|x|^3 t),

with r = P x the raw dot products (recovered from the output, which is all that is
saved besides the input): one elementwise pass over x, fused into a ``baddbmm``. Where
``|x| < eps`` the norm is clamped as in ``F.normalize`` and the second term vanishes.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

EPS = 1e-12


class _NormalisedSimilarity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, feats: Tensor, protos: Tensor, temperature: float) -> Tensor:
        norm = torch.linalg.vector_norm(feats, dim=1)  # B x n
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
        out = feats * (-c).unsqueeze(1)
        out.baddbmm_(protos.t().expand(feats.shape[0], -1, -1), scaled)
        return out, None, None


def normalised_similarity(feats: Tensor, prototypes: Tensor, temperature: float = 1.0) -> Tensor:
    """``p_k . x_i / (|x_i| t)``: feats B x D x n, prototypes K x D (unit norm, fixed) -> B x K x n.

    The gradient flows to ``feats`` only.
    """
    return _NormalisedSimilarity.apply(feats, prototypes.detach(), float(temperature))
