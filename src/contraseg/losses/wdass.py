"""WDASS losses: image-level weak-label loss and the prototype-softmax contrast variant.

Das, Xian, Dai and Schiele, "Weakly-Supervised Domain Adaptive Semantic Segmentation
with Prototypical Contrastive Learning", CVPR 2023.

The prototype contrast of the released WDASS code (sampled anchors, negatives counted
with the multiplicity of the sampled set, t / t_base scaling, cross-domain positives)
is :class:`contraseg.losses.WDASSContrastLoss` in :mod:`contraseg.losses.wdass_contrast`,
the default of the WDASS pipeline. This module keeps contraseg's earlier formulation, the
``prototype-softmax`` variant (``adapt.wdass.contrast: prototype-softmax``): every labelled
pixel is contrasted once against all class prototypes (a softmax over prototypes),
with the EMA prototypes of :class:`contraseg.prototypes.WeakLabelPrototypeEstimator`.
The two coincide only with one anchor per class. Two alignments:

- cross-domain, asymmetric: source pixels are pulled to the *target* prototype of
  their class; the prototypes are fixed targets, so the target features are not
  dragged towards the source;
- intra-domain: source pixels to source prototypes, target pixels (weak or confident
  pseudo labels) to target prototypes.

Example::

    >>> import torch
    >>> loss = PrototypeContrastLoss(temperature=0.1)
    >>> embed = torch.randn(2, 8, 4, 4, requires_grad=True)
    >>> labels = torch.randint(0, 3, (2, 16, 16))
    >>> value = loss(embed, labels, torch.randn(3, 8))
    >>> value.backward()
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import check_embeddings, check_label_range, check_labels
from .._labels import resize_labels
from ._pixels import zero_loss
from .similarity import normalised_similarity

_REDUCTIONS = ("mean", "sum", "none")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Losses are computed in at least float32 (bf16/fp16 inputs are upcast)."""
    return torch.promote_types(dtype, torch.float32)


def _check_temperature(temperature: float) -> float:
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    return float(temperature)


class ImageLevelLoss(nn.Module):
    """Image-level weak-label loss of WDASS (multi-label classification from dense logits).

    For image b and class k the dense logits are pooled with a normalised log-sum-exp,

        z_bk = logsumexp_i(logit_bki) - log(H W),        q_bk = sigmoid(z_bk),

    and q is trained with binary cross-entropy against the presence vector y_bk:
    loss_bk = -[ y_bk log q_bk + (1 - y_bk) log(1 - q_bk) ]. It is computed on the pooled
    logit z with ``binary_cross_entropy_with_logits`` (numerically stable).

    Args:
        reduction: ``"mean"`` (over B*K), ``"sum"`` or ``"none"`` (B x K).

    Shapes:
        logits: B x K x H x W floating; presence: B x K multi-hot (bool or float in [0, 1]);
        mask: optional B x K bool, the entries whose presence is known (the others are
        left out: ``"mean"`` averages over the kept entries, ``"none"`` gives 0 elsewhere;
        nothing kept gives ``0 * logits.sum()``). The WDASS trainer masks the classes of a
        crop that its point / coarse labels cannot tell present or absent.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, logits: Tensor, presence: Tensor, mask: Tensor | None = None) -> Tensor:
        """Return the loss (a scalar, or B x K for ``reduction="none"``)."""
        pooled = pooled_logits(logits)
        target = _check_presence(presence, tuple(pooled.shape))
        if mask is None:
            return F.binary_cross_entropy_with_logits(
                pooled, target.to(pooled.dtype), reduction=self.reduction
            )
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(pooled.shape):
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool B x K = {tuple(pooled.shape)} tensor, got {shape}")
        mask = mask.to(pooled.device)
        each = F.binary_cross_entropy_with_logits(pooled, target.to(pooled.dtype), reduction="none") * mask
        if self.reduction == "none":
            return each
        if not bool(mask.any()):
            return zero_loss(logits)
        return each.sum() if self.reduction == "sum" else each.sum() / mask.sum()

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


def prototype_logits(embed: Tensor, prototypes: Tensor) -> Tensor:
    """Logits of WDASS's prototype image loss (``--improto``): ``l_bkij = <f_bij, p_k>``.

    The released code multiplies the student's target embeddings by the (unnormalised)
    real-domain prototypes and feeds the result to the image-level loss
    (anurag-198/WDASS@7276a27d916b train.py:473-477; weight ``protowt`` 1.0, train.py:479,
    inside the image term's start switch, train.py:491 and :541).

    Shapes: embed B x D x h x w, prototypes K x D -> B x K x h x w (the prototypes are
    used as given, e.g. detached; gradients reach both when they require them).
    """
    if embed.dim() != 4 or prototypes.dim() != 2 or embed.shape[1] != prototypes.shape[1]:
        raise ValueError(f"embed must be B x D x h x w and prototypes K x D with the same D, got "
                         f"{tuple(embed.shape)} and {tuple(prototypes.shape)}")
    return torch.einsum("bdhw,kd->bkhw", embed, prototypes.to(embed.dtype))


def pooled_logits(logits: Tensor) -> Tensor:
    """Normalised log-sum-exp pooling, B x K x H x W -> B x K: logsumexp_i(logit) - log(HW)."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 4 or not logits.is_floating_point():
        raise ValueError(
            f"logits must be a floating B x K x H x W tensor, got shape {tuple(logits.shape)} "
            f"dtype {logits.dtype}"
        )
    b, k, h, w = logits.shape
    if h * w == 0:
        raise ValueError(f"logits must have at least one pixel, got shape {tuple(logits.shape)}")
    flat = logits.reshape(b, k, h * w).to(_compute_dtype(logits.dtype))
    return torch.logsumexp(flat, dim=2) - math.log(h * w)


def _check_presence(presence: Tensor, expected: tuple[int, ...]) -> Tensor:
    if not isinstance(presence, Tensor):
        raise TypeError(f"presence must be a torch.Tensor, got {type(presence).__name__}")
    if tuple(presence.shape) != expected:
        raise ValueError(
            f"presence must be B x K = {expected} to match logits, got shape {tuple(presence.shape)}"
        )
    if presence.dtype != torch.bool and presence.numel() > 0:
        low, high = float(presence.min()), float(presence.max())
        if low < 0 or high > 1:
            raise ValueError(f"presence must lie in [0, 1], got values in [{low}, {high}]")
    return presence


class PrototypeContrastLoss(nn.Module):
    """Pixel-to-prototype InfoNCE with fixed (detached) prototypes (WDASS, eq. of L_pc).

    For every kept pixel i whose class y_i has a prototype (``valid[y_i]``)::

        l_i = -log( exp(f_i . p_{y_i} / t) / sum_{k valid} exp(f_i . p_k / t) )

    and the loss is the mean of l_i over those pixels. f_i and p_k are L2-normalised
    inside. The prototypes are detached: the gradient only reaches the embeddings,
    which is what makes the source-to-target alignment asymmetric. Pixels labelled
    ``ignore_index`` or whose class has no prototype are skipped; when none is left the
    loss is ``0 * embeddings.sum()``. Computed in at least float32.

    Args:
        temperature: t > 0.
        ignore_index: label of pixels to skip.

    Shapes:
        embeddings: B x D x h x w; labels: B x H x W integer (nearest-resized to h x w);
        prototypes: K x D; valid: K bool (default: all True).
    """

    def __init__(self, temperature: float = 0.1, ignore_index: int = 255) -> None:
        super().__init__()
        self.temperature = _check_temperature(temperature)
        self.ignore_index = int(ignore_index)

    def forward(
        self, embeddings: Tensor, labels: Tensor, prototypes: Tensor, valid: Tensor | None = None
    ) -> Tensor:
        """Return the scalar loss."""
        check_embeddings(embeddings)
        check_labels(labels, embeddings.shape[0])
        protos = _check_prototypes(prototypes, tuple(embeddings.shape))
        num_classes = protos.shape[0]
        b, d, h, w = embeddings.shape
        targets = resize_labels(labels, (h, w)).reshape(b, h * w)
        check_label_range(targets, num_classes, self.ignore_index)
        valid = _check_valid(valid, num_classes, protos.device)
        safe = targets.clamp(0, num_classes - 1)  # ignored pixels are masked just below
        keep = (targets != self.ignore_index) & valid[safe]
        if not bool(keep.any()):
            return zero_loss(embeddings)
        # Class index -> column among the valid prototypes; skipped pixels -> -100.
        column = torch.cumsum(valid.long(), dim=0) - 1
        target_columns = torch.where(keep, column[safe], -100)
        dtype = _compute_dtype(embeddings.dtype)
        with torch.autocast(embeddings.device.type, enabled=False):
            kept_protos = F.normalize(protos.detach().to(dtype)[valid], dim=1)
            # B x V x n logits on the embeddings' own layout (no N x D copy).
            logits = normalised_similarity(embeddings.reshape(b, d, h * w).to(dtype), kept_protos, self.temperature)
            return F.cross_entropy(logits, target_columns, ignore_index=-100)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, ignore_index={self.ignore_index}"


def _check_prototypes(prototypes: Tensor, embeddings_shape: tuple[int, ...]) -> Tensor:
    if not isinstance(prototypes, Tensor):
        raise TypeError(f"prototypes must be a torch.Tensor, got {type(prototypes).__name__}")
    if prototypes.dim() != 2 or prototypes.shape[1] != embeddings_shape[1]:
        raise ValueError(
            f"prototypes must be K x D with the D of embeddings {embeddings_shape}, "
            f"got shape {tuple(prototypes.shape)}"
        )
    if not prototypes.is_floating_point():
        raise ValueError(f"prototypes must be floating point, got dtype {prototypes.dtype}")
    return prototypes


def _check_valid(valid: Tensor | None, num_classes: int, device: torch.device) -> Tensor:
    if valid is None:
        return torch.ones(num_classes, dtype=torch.bool, device=device)
    if not isinstance(valid, Tensor):
        raise TypeError(f"valid must be a torch.Tensor, got {type(valid).__name__}")
    if valid.dtype != torch.bool or tuple(valid.shape) != (num_classes,):
        raise ValueError(
            f"valid must be a bool tensor of shape ({num_classes},) like prototypes, "
            f"got shape {tuple(valid.shape)} dtype {valid.dtype}"
        )
    return valid.to(device)


class WDASSSoftmaxContrastLoss(nn.Module):
    """Cross-domain (asymmetric) plus intra-domain prototype contrast, prototype-softmax variant.

    Not the released formula (that is :class:`contraseg.losses.WDASSContrastLoss`): every
    kept pixel is contrasted once against the prototypes of all classes, source anchors
    only in the cross term.

    ::

        cross        = PC(source pixels, target prototypes)
        intra_source = PC(source pixels, source prototypes)
        intra_target = PC(target pixels, target prototypes)
        total        = cross_weight * cross + intra_weight * (intra_source + intra_target)

    where PC is :class:`PrototypeContrastLoss` (prototypes detached). ``target_labels``
    are the weak labels (point / coarse) or confident pseudo-labels of the target
    images, with ``ignore_index`` (255) everywhere else; ``source_labels`` are the
    full source ground truth.

    Shapes:
        source_embed, target_embed: B x D x h x w; source_labels, target_labels:
        B x H x W; source_prototypes, target_prototypes: K x D; source_valid,
        target_valid: K bool (classes that have a prototype; default all).

    Returns:
        dict with scalar tensors ``total``, ``cross``, ``intra_source``, ``intra_target``.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        cross_weight: float = 1.0,
        intra_weight: float = 1.0,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        for name, value in (("cross_weight", cross_weight), ("intra_weight", intra_weight)):
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        self.contrast = PrototypeContrastLoss(temperature, ignore_index)
        self.cross_weight = float(cross_weight)
        self.intra_weight = float(intra_weight)

    def forward(
        self,
        source_embed: Tensor,
        source_labels: Tensor,
        target_embed: Tensor,
        target_labels: Tensor,
        source_prototypes: Tensor,
        target_prototypes: Tensor,
        source_valid: Tensor | None = None,
        target_valid: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Return ``{"total", "cross", "intra_source", "intra_target"}``."""
        if tuple(source_prototypes.shape) != tuple(target_prototypes.shape):
            raise ValueError(
                f"source_prototypes {tuple(source_prototypes.shape)} and target_prototypes "
                f"{tuple(target_prototypes.shape)} must have the same K x D shape"
            )
        cross = self.contrast(source_embed, source_labels, target_prototypes, target_valid)
        intra_source = self.contrast(source_embed, source_labels, source_prototypes, source_valid)
        intra_target = self.contrast(target_embed, target_labels, target_prototypes, target_valid)
        total = self.cross_weight * cross + self.intra_weight * (intra_source + intra_target)
        return {
            "total": total,
            "cross": cross,
            "intra_source": intra_source,
            "intra_target": intra_target,
        }

    def extra_repr(self) -> str:
        return f"cross_weight={self.cross_weight}, intra_weight={self.intra_weight}"
