"""Self-training on source labels and offline target pseudo labels, with an optional
contrastive regulariser over both domains (ProAC in the ProAC paper's UDA setting).

One step, with source batch (x_s, y_s) and target batch (x_t, y~_t) of pseudo labels
(255 where not confident)::

    out  = model(concat(x_s, x_t))                  # one forward pass for both domains
    loss = CE(out_s, y_s) + CE(out_t, y~_t)
           + regulariser(embed = concat(f_s, f_t), labels = concat(y_s, y~_t))

so ProAC (``regulariser.name: proac``, weight 0.1) contrasts the fixed prototypes
against the pixels of both domains in one call: every source and every confidently
pseudo-labelled target pixel of class k is a positive of prototype k, every other pixel
of the two batches a negative. The CE terms average over labelled pixels (a target crop
without confident pixels contributes 0). BatchNorm sees the two domains together.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .losses import masked_cross_entropy
from .trainer import AdaptTrainer


class SelfTrainingTrainer(AdaptTrainer):
    """Source CE + target pseudo-label CE (+ regulariser on both domains); see the module doc.

    The target labels are read from ``adapt.pseudo_labels.dir`` (``<name>.png`` per
    target sample; :func:`contraseg.adapt.run.run_adaptation` fills it in for generated
    and multi-round runs).
    """

    method = "self_training"
    target_kind = "dense"

    def label_source(self) -> str | None:
        """The pseudo-label folder ``adapt.pseudo_labels.dir``."""
        return self.adapt.pseudo_labels.dir

    def train_step(self, batch: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Tensor]:
        """One step on ``(source batch, target batch)``; returns the detached terms."""
        source, target = batch
        images_s, labels_s = self.to_device(source, "image"), self.to_device(source, "label")
        images_t, labels_t = self.to_device(target, "image"), self.to_device(target, "label")
        if images_s.shape[-2:] != images_t.shape[-2:]:
            raise ValueError(f"source crops {tuple(images_s.shape[-2:])} and target crops "
                             f"{tuple(images_t.shape[-2:])} must have one size")
        out = self.forward_parts([images_s, images_t])
        n = images_s.shape[0]
        ce_source = masked_cross_entropy(out["logits"][:n], labels_s, self.ignore_index)
        ce_target = masked_cross_entropy(out["logits"][n:], labels_t, self.ignore_index)
        labels = torch.cat([labels_s, labels_t])
        terms = self.regulariser(out, labels, self.iteration, self.model)
        loss = ce_source + ce_target + sum(terms.values()) if terms else ce_source + ce_target
        self.optimise(loss)
        self.regulariser.after_step(out, labels)
        kept = (labels_t != self.ignore_index).float().mean()
        return {"loss": loss.detach(), "ce_source": ce_source.detach(), "ce_target": ce_target.detach(),
                **{name: value.detach() for name, value in terms.items()}, "target_labelled": kept}
