"""WDASS's edge loss on source images, as released (``adapt.wdass.edge_weight``).

anurag-198/WDASS@7276a27d916b loss/edgeloss.py:291-325 (``EdgeLoss.forward``), weight
``--edge_wt`` 10 (command_line/arguments.py:135, applied at train.py:534), always on
(``--edgeLoss`` store_true with default True, arguments.py:16), on the GTA (source) images
only (their ``coarse`` flag is False, edgeloss.py:291). For logits ``z`` (B x K x H x W,
the logits bilinearly upsampled to the label size, deepv2.py:155) and labels ``y``:

1. ignored pixels: ``z <- 0`` and ``y <- 0`` there (edgeloss.py:301-306, "not perfect");
2. ``Y = one_hot(y)`` (B x K x H x W, edgeloss.py:307);
3. ``P = softmax((z + G) / tau)`` over classes, ``G = -log(eps - log(U + eps))``,
   ``U ~ U(0, 1)``, ``tau = 0.5``, ``eps = 1e-10`` (Gumbel-softmax, edgeloss.py:207-230, :309);
4. ``mag(E) = sqrt(dx^2 + dy^2 + 1e-6) / max(...)`` with central differences
   ``dx[i, j] = (E[i, j+1] - E[i, j-1]) / 2`` (zero outside the image) and the max over
   the whole B x K x H x W tensor (``compute_grad_mag``, edgeloss.py:188-193, :63-77);
   ``convTri`` returns its input (edgeloss.py:115), so there is no triangle smoothing;
5. ``l = |mag(P) - mag(Y)|`` per element; with ``m = [mag(P) >= 1e-8]`` and
   ``m^ = [mag(Y) >= 1e-8]``::

       L = 0.5 * sum(l m) / (sum(m) + eps) + 0.5 * sum(l m^) / (sum(m^) + eps)

   (edgeloss.py:316-324). The gradient flows through ``P`` only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_labels

__all__ = ["WDASSEdgeLoss", "gradient_magnitude"]

_EPS = 1e-10
_THRESHOLD = 1e-8


def gradient_magnitude(maps: Tensor) -> Tensor:
    """``sqrt(dx^2 + dy^2 + 1e-6) / max`` of B x K x H x W ``maps`` (central differences,
    zero padding, one max over the whole tensor); same shape."""
    padded = F.pad(maps, (1, 1, 1, 1))
    dx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    magnitude = torch.sqrt(dx * dx + dy * dy + 1e-6)
    return magnitude / magnitude.max()


class WDASSEdgeLoss(nn.Module):
    """The released WDASS edge loss (module docstring).

    Args:
        tau: Gumbel-softmax temperature (released 0.5, edgeloss.py:309).
        ignore_index: label of unlabelled pixels.

    Call: ``loss(logits, labels, uniform=None, generator=None)`` with logits B x K x H x W
    (float), labels B x H x W in [0, K) or ``ignore_index``, and the Gumbel noise's
    uniforms ``uniform`` (B x K x H x W in [0, 1)) or drawn from ``generator`` (on the CPU,
    then moved to the logits' device). Returns a scalar (computed in float32 or wider).
    """

    def __init__(self, tau: float = 0.5, ignore_index: int = 255) -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)
        self.ignore_index = int(ignore_index)

    def forward(self, logits: Tensor, labels: Tensor, uniform: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        if logits.dim() != 4 or not logits.is_floating_point():
            raise ValueError(f"logits must be a floating B x K x H x W tensor, got shape {tuple(logits.shape)}")
        b, k, h, w = logits.shape
        check_labels(labels, b)
        if tuple(labels.shape[-2:]) != (h, w):
            raise ValueError(f"labels must be B x H x W = {(b, h, w)} like the logits, got {tuple(labels.shape)}")
        if h < 2 or w < 2:
            raise ValueError(f"logits must be at least 2 x 2 pixels, got {h} x {w}")
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        ignored = labels == self.ignore_index
        if bool(((labels[~ignored] < 0) | (labels[~ignored] >= k)).any()):
            raise ValueError(f"labels must be in [0, {k}) or {self.ignore_index}")
        if uniform is None:
            uniform = torch.rand((b, k, h, w), generator=generator, dtype=logits.dtype)
        elif tuple(uniform.shape) != (b, k, h, w):
            raise ValueError(f"uniform must be B x K x H x W = {(b, k, h, w)}, got {tuple(uniform.shape)}")
        uniform = uniform.to(logits.device, logits.dtype)
        logits = logits.masked_fill(ignored[:, None], 0.0)
        target = F.one_hot(labels.masked_fill(ignored, 0).long(), k).permute(0, 3, 1, 2).to(logits.dtype)
        gumbel = -torch.log(_EPS - torch.log(uniform + _EPS))
        soft = torch.softmax((logits + gumbel) / self.tau, dim=1)
        predicted = gradient_magnitude(soft).reshape(b, -1)
        wanted = gradient_magnitude(target).reshape(b, -1)
        each = (predicted - wanted).abs()
        on_predicted = (predicted >= _THRESHOLD).detach().to(each.dtype)
        on_wanted = (wanted >= _THRESHOLD).to(each.dtype)
        return (0.5 * (each * on_predicted).sum() / (on_predicted.sum() + _EPS)
                + 0.5 * (each * on_wanted).sum() / (on_wanted.sum() + _EPS))

    def extra_repr(self) -> str:
        return f"tau={self.tau}, ignore_index={self.ignore_index}"
