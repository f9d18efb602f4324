"""Fixed class prototypes spread uniformly on the unit hypersphere (ProAC).

ProAC (Ren et al., TCSVT 2024) fixes K class prototypes before training, as far from
each other as the sphere S^{D-1} allows, and never updates them. "As far as possible"
means minimising the largest pairwise cosine, and its optimum is known exactly in two
regimes:

* ``K <= D + 1``: the regular simplex. Every pairwise cosine equals ``-1 / (K - 1)``,
  which is the lowest possible maximum (the sum of all pairwise cosines of K unit
  vectors is ``(|sum p_k|^2 - K) / 2 >= -K / 2``).
* ``D + 1 < K <= 2D``: Rankin's bound says the maximum cosine cannot be below 0, and
  vectors of the cross-polytope ``{+-e_i}`` reach 0.

Beyond ``2D`` no closed form is known; :func:`optimise_uniform_prototypes` minimises a
smooth maximum (log-sum-exp) of the pairwise cosines with projected gradient descent
and reports the maximum cosine it reached.

Every construction ends with a random rotation drawn from ``seed``, so prototypes are
deterministic for a seed but not aligned with the coordinate axes.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from torch import Tensor

from .._io import atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "hyperspherical_prototypes",
    "simplex_prototypes",
    "cross_polytope_prototypes",
    "optimise_uniform_prototypes",
    "prototype_separation",
    "optimal_max_cosine",
    "save_prototypes",
    "load_prototypes",
]


def _check_sizes(num_classes: int, dim: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if dim == 1 and num_classes > 2:
        raise ValueError(f"dim=1 holds at most 2 distinct unit vectors, got num_classes={num_classes}")


def _random_rotation(dim: int, generator: torch.Generator) -> Tensor:
    """A Haar-random D x D orthogonal matrix (QR of a Gaussian, signs fixed)."""
    gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))


def simplex_prototypes(num_classes: int, dim: int) -> Tensor:
    """The vertices of a regular simplex on S^{D-1}, K <= D + 1, as K x D float64.

    Construction: the centred standard basis ``e_k - 1/K`` of R^K lies in the
    (K-1)-dimensional subspace orthogonal to the all-ones vector; expressing it in an
    orthonormal basis of that subspace and normalising gives K unit vectors with all
    pairwise cosines ``-1/(K-1)``. The coordinates are padded with zeros to D.
    """
    _check_sizes(num_classes, dim)
    k = num_classes
    if k > dim + 1:
        raise ValueError(f"a simplex of {k} vertices needs dim >= {k - 1}, got dim={dim}")
    if k == 1:
        out = torch.zeros(1, dim, dtype=torch.float64)
        out[0, 0] = 1.0
        return out
    centred = torch.eye(k, dtype=torch.float64) - 1.0 / k
    # Orthonormal basis of the complement of the all-ones vector: the first K-1
    # columns of Q in the QR of [1 | I] with the all-ones column first.
    basis = torch.linalg.qr(torch.cat([torch.ones(k, 1, dtype=torch.float64), torch.eye(k, dtype=torch.float64)], 1))[0][:, 1:k]
    coords = centred @ basis  # K x (K-1)
    coords = coords / coords.norm(dim=1, keepdim=True)
    out = torch.zeros(k, dim, dtype=torch.float64)
    out[:, : k - 1] = coords
    return out


def cross_polytope_prototypes(num_classes: int, dim: int) -> Tensor:
    """K <= 2D vectors ``+e_1, -e_1, +e_2, -e_2, ...``: maximum pairwise cosine 0."""
    _check_sizes(num_classes, dim)
    if num_classes > 2 * dim:
        raise ValueError(f"the cross-polytope has {2 * dim} vertices in dim={dim}, got num_classes={num_classes}")
    out = torch.zeros(num_classes, dim, dtype=torch.float64)
    idx = torch.arange(num_classes)
    out[idx, idx // 2] = 1.0 - 2.0 * (idx % 2).double()
    return out


def optimise_uniform_prototypes(
    num_classes: int,
    dim: int,
    seed: int = 0,
    steps: int = 2000,
    lr: float = 0.01,
    sharpness: float = 40.0,
) -> tuple[Tensor, float]:
    """Spread K unit vectors by minimising a smooth maximum of pairwise cosines.

    Minimises ``(1/s) * log sum_{i != j} exp(s * p_i . p_j)`` (s = ``sharpness``, a
    differentiable stand-in for the largest cosine) with Adam, projecting back onto the
    sphere after each step, in float64 from a seeded Gaussian start. The best iterate
    (lowest true maximum cosine) is kept.

    Returns:
        ``(prototypes K x D float64, max pairwise cosine reached)``.
    """
    _check_sizes(num_classes, dim)
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(num_classes, dim, generator=gen, dtype=torch.float64)
    protos = torch.nn.Parameter(start / start.norm(dim=1, keepdim=True))
    opt = torch.optim.Adam([protos], lr=lr)
    off_diag = ~torch.eye(num_classes, dtype=torch.bool)
    best, best_max = protos.detach().clone(), math.inf
    for _ in range(steps):
        unit = protos / protos.norm(dim=1, keepdim=True)
        cos = (unit @ unit.T)[off_diag]
        current_max = float(cos.detach().max())
        if current_max < best_max:
            best, best_max = unit.detach().clone(), current_max
        energy = torch.logsumexp(sharpness * cos, dim=0) / sharpness
        opt.zero_grad(set_to_none=True)
        energy.backward()
        opt.step()
        with torch.no_grad():
            protos /= protos.norm(dim=1, keepdim=True)
    return best, best_max


def optimal_max_cosine(num_classes: int, dim: int) -> float | None:
    """The known optimum of the largest pairwise cosine, or None where none is known.

    ``-1/(K-1)`` for 2 <= K <= D + 1 (simplex), ``0`` for D + 1 < K <= 2D (Rankin).
    """
    if num_classes < 2:
        return None
    if num_classes <= dim + 1:
        return -1.0 / (num_classes - 1)
    if num_classes <= 2 * dim:
        return 0.0
    return None


def hyperspherical_prototypes(
    num_classes: int, dim: int, seed: int = 0, steps: int = 2000
) -> Tensor:
    """K fixed class prototypes spread uniformly on the unit sphere S^{D-1}.

    Args:
        num_classes: K.
        dim: D, the embedding dimension.
        seed: seeds the random rotation (and the optimiser's start for K > 2D).
        steps: optimiser steps for K > 2D.

    Returns:
        K x D float32 tensor of unit vectors. For K <= D + 1 every pairwise cosine is
        ``-1/(K-1)`` (the regular simplex, optimal); for K <= 2D the largest cosine is 0
        (optimal); beyond that the achieved largest cosine is logged at INFO level and
        available from :func:`prototype_separation`.

    Example:
        >>> p = hyperspherical_prototypes(19, 256)
        >>> round(prototype_separation(p)["max_cosine"], 4)
        -0.0556
    """
    _check_sizes(num_classes, dim)
    if num_classes <= dim + 1:
        protos = simplex_prototypes(num_classes, dim)
    elif num_classes <= 2 * dim:
        protos = cross_polytope_prototypes(num_classes, dim)
    else:
        protos, reached = optimise_uniform_prototypes(num_classes, dim, seed=seed, steps=steps)
        log.info("optimised %d prototypes in %d dims: max pairwise cosine %.4f", num_classes, dim, reached)
    rotation = _random_rotation(dim, torch.Generator().manual_seed(seed))
    protos = protos @ rotation
    protos = protos / protos.norm(dim=1, keepdim=True)
    return protos.float()


def prototype_separation(prototypes: Tensor) -> dict[str, float]:
    """How well K x D prototypes are spread.

    Returns a dict with ``max_cosine`` (largest pairwise cosine), ``mean_cosine``,
    ``min_angle_deg`` (smallest pairwise angle in degrees) and ``optimum`` (the known
    optimal largest cosine for this K and D, or None).
    """
    if prototypes.dim() != 2:
        raise ValueError(f"prototypes must be K x D, got shape {tuple(prototypes.shape)}")
    k, d = prototypes.shape
    unit = torch.nn.functional.normalize(prototypes.double(), dim=1)
    if k < 2:
        return {"max_cosine": float("nan"), "mean_cosine": float("nan"), "min_angle_deg": float("nan"), "optimum": None}
    cos = (unit @ unit.T)[~torch.eye(k, dtype=torch.bool)]
    max_cos = float(cos.max())
    return {
        "max_cosine": max_cos,
        "mean_cosine": float(cos.mean()),
        "min_angle_deg": math.degrees(math.acos(max(-1.0, min(1.0, max_cos)))),
        "optimum": optimal_max_cosine(k, d),
    }


def save_prototypes(path: str | os.PathLike, prototypes: Tensor) -> None:
    """Write K x D prototypes to ``path`` atomically (a temp file, then a rename).

    The file is a ``torch.save`` dict ``{"prototypes": K x D float32}`` that
    :func:`load_prototypes` reads with ``weights_only=True``.
    """
    if prototypes.dim() != 2:
        raise ValueError(f"prototypes must be K x D, got shape {tuple(prototypes.shape)}")
    data = {"prototypes": prototypes.detach().cpu().float().contiguous()}
    atomic_write(path, lambda handle: torch.save(data, handle))


def load_prototypes(path: str | os.PathLike) -> Tensor:
    """Read prototypes written by :func:`save_prototypes` (or a bare K x D tensor file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prototype file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{path}: not a prototype file ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    protos = data.get("prototypes") if isinstance(data, dict) else data
    if not isinstance(protos, Tensor) or protos.dim() != 2 or not protos.is_floating_point():
        raise ValueError(f"{path}: expected a K x D float tensor under key 'prototypes'")
    return protos
