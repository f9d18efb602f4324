"""The supervised segmentation loss (the ``loss:`` config section): cross-entropy, with
optional class weights, or openseg's online hard example mining (OHEM).

Logits B x K x h x w are upsampled (bilinear) to the B x H x W labels, then, over the
set V of labelled pixels (label != ignore_index), with p_i = softmax(logits_i)[y_i]:

``ce``    (PyTorch's weighted mean, as ``nn.CrossEntropyLoss(weight=w)`` of the release)::

              L = sum_{i in V} w[y_i] * (-log p_i) / sum_{i in V} w[y_i]

``ohem``  (openseg's ``FSOhemCELoss``, tfzhou/ContrastiveSeg@287e5d3,
          lib/loss/loss_helper.py:215-262): sort the p_i of V ascending (s_0 <= s_1 <= ...),
          ``threshold = max(s[min(min_kept, |V| - 1)], thresh)`` (loss_helper.py:250-251),
          keep the pixels with ``p_i < threshold`` (strictly, :254) and take the plain mean
          of their weighted losses ``w[y_i] * (-log p_i)`` (``reduction='none'`` then
          ``.mean()``, :252-256; not renormalised by the weights)::

              L = mean_{i in V, p_i < threshold} w[y_i] * (-log p_i)

With no labelled pixel both give NaN, as ``F.cross_entropy`` does (and as before: the
trainer's non-finite-loss check then names the usual causes). ``w`` is 1 for every class
without ``class_weights``. An auxiliary head (OCR, DSN) is supervised by the weighted
``ce`` in both cases (:meth:`SegmentationLoss.auxiliary`), as openseg's ``FSAuxOhemCELoss``
does (lib/loss/loss_helper.py:264-281). The released code has no class named
``OhemCrossEntropy2d``; ``FSOhemCELoss`` (loss type ``fs_ohemce_loss``,
lib/loss/loss_manager.py:29) is openseg's OHEM.

Class-weight presets (``loss.class_weights: <name>``): :data:`CLASS_WEIGHT_PRESETS`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CLASS_WEIGHT_PRESETS", "SegmentationLoss", "build_segmentation_loss", "resolve_class_weights"]

# openseg's Cityscapes class weights (19 classes, trainId order): tfzhou/ContrastiveSeg@287e5d3,
# configs/cityscapes/H_48_D_4.json:127-129 ("ce_weight"), read by lib/loss/loss_helper.py:33-34
# (FSCELoss: nn.CrossEntropyLoss(weight=...)); the same list in ProtoSeg@1c4a778
# configs/cityscapes/H_48_D_4_proto.json.
CLASS_WEIGHT_PRESETS: dict[str, tuple[float, ...]] = {
    "openseg_cityscapes": (0.8373, 0.9180, 0.8660, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
                           0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507),
}


def resolve_class_weights(value: str | Sequence[float] | None, num_classes: int | None = None,
                          key: str = "loss.class_weights") -> list[float] | None:
    """The K class weights of a ``loss.class_weights`` value (null, a preset name or a list).

    Raises:
        ValueError: an unknown preset, a negative weight, or (``num_classes`` given) a
            list whose length is not K, one line naming ``key``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value not in CLASS_WEIGHT_PRESETS:
            raise ValueError(f"config key {key}: unknown preset {value!r}; presets: {', '.join(CLASS_WEIGHT_PRESETS)}")
        weights = list(CLASS_WEIGHT_PRESETS[value])
        what = f"preset {value!r} has"
    else:
        weights = [float(v) for v in value]
        what = "the list has"
    if any(w < 0 for w in weights):
        raise ValueError(f"config key {key}: class weights must be >= 0, got {weights}")
    if num_classes is not None and len(weights) != num_classes:
        raise ValueError(f"config key {key}: {what} {len(weights)} weights but the training set has "
                         f"{num_classes} classes")
    return weights


class SegmentationLoss(nn.Module):
    """Cross-entropy or OHEM of B x K x h x w logits against B x H x W labels (see the
    module docstring for the formulas).

    Args:
        name: ``"ce"`` or ``"ohem"``.
        class_weights: K weights, or None for 1 everywhere.
        ohem_thresh: OHEM's probability threshold (openseg's ``ohem_thresh``).
        ohem_min_kept: OHEM's minimum of kept pixels (openseg's ``ohem_minkeep``; at least 1).
        ignore_index: the label of unlabelled pixels.
    """

    def __init__(self, name: str = "ce", class_weights: Sequence[float] | None = None, ohem_thresh: float = 0.7,
                 ohem_min_kept: int = 100000, ignore_index: int = 255) -> None:
        super().__init__()
        if name not in ("ce", "ohem"):
            raise ValueError(f"loss name must be ce or ohem, got {name!r}")
        self.name = name
        self.ohem_thresh = float(ohem_thresh)
        self.ohem_min_kept = max(1, int(ohem_min_kept))  # as released: max(1, ohem_minkeep), loss_helper.py:220
        self.ignore_index = int(ignore_index)
        # float64, cast to the logits' dtype at each call (a float64 check sees the exact weights)
        weight = None if class_weights is None else torch.tensor([float(w) for w in class_weights],
                                                                 dtype=torch.float64)
        self.register_buffer("class_weights", weight, persistent=False)

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The scalar loss of ``logits`` B x K x h x w (upsampled to H x W) and ``labels`` B x H x W."""
        return self._loss(logits, labels, self.name)

    def auxiliary(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The auxiliary head's loss: the class-weighted cross-entropy even under OHEM, as
        openseg's ``FSAuxOhemCELoss`` (loss_helper.py:268 and :278, ``FSCELoss`` on the aux output)."""
        return self._loss(logits, labels, "ce")

    def _loss(self, logits: Tensor, labels: Tensor, name: str) -> Tensor:
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        weight = self.class_weights
        if weight is not None:
            if weight.numel() != logits.shape[1]:
                raise ValueError(f"loss.class_weights has {weight.numel()} weights, the logits "
                                 f"{logits.shape[1]} classes")
            weight = weight.to(device=logits.device, dtype=logits.dtype)
        valid = labels != self.ignore_index
        if name == "ce" or not bool(valid.any()):  # no labelled pixel: NaN, as F.cross_entropy gives
            return F.cross_entropy(logits, labels, weight=weight, ignore_index=self.ignore_index)
        per_pixel = F.cross_entropy(logits, labels, weight=weight, ignore_index=self.ignore_index, reduction="none")
        with torch.no_grad():
            safe = labels.masked_fill(~valid, 0)
            prob = logits.softmax(1).gather(1, safe.unsqueeze(1)).squeeze(1)[valid]
            ordered = prob.sort().values
            threshold = max(float(ordered[min(self.ohem_min_kept, ordered.numel() - 1)]), self.ohem_thresh)
            keep = prob < threshold
        kept = per_pixel[valid][keep]
        if kept.numel() == 0:  # every probability equal to the threshold (the release would give NaN)
            return logits.sum() * 0.0
        return kept.mean()

    def extra_repr(self) -> str:
        text = f"name={self.name}, weighted={self.class_weights is not None}"
        if self.name == "ohem":
            text += f", thresh={self.ohem_thresh}, min_kept={self.ohem_min_kept}"
        return text


def build_segmentation_loss(cfg: Any, num_classes: int, ignore_index: int = 255,
                            model: nn.Module | None = None) -> SegmentationLoss:
    """The :class:`SegmentationLoss` of a ``loss:`` section for a K-class training set.

    Raises:
        ValueError: ``loss.aux_weight`` is set but ``model`` has no auxiliary head (its
            ``aux_loss_weight`` is 0), or the class weights do not fit (one line each).
    """
    if cfg.aux_weight is not None and model is not None and not float(getattr(model, "aux_loss_weight", 0.0)):
        raise ValueError(f"config key loss.aux_weight: {cfg.aux_weight} is set but the model has no auxiliary head "
                         "(OCR has one); remove the key")
    weights = resolve_class_weights(cfg.class_weights, num_classes)
    return SegmentationLoss(cfg.name, weights, cfg.ohem_thresh, cfg.ohem_min_kept, ignore_index)
