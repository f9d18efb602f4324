"""``adapt.method: fda``: FDA training (Yang & Soatto, CVPR 2020; see :mod:`contraseg.adapt.fda`).

One step, with source batch (x_s, y_s) and unlabeled target batch x_t (paired i with i)::

    x_s' = normalise(amplitude_swap(pixels(x_s), pixels(x_t), beta))   # source content, target style
    out  = model(concat(x_s', x_t))
    loss = CE(out_s, y_s) + [i >= entropy_start_iter] * entropy_weight * robust_entropy(out_t, eta)
           (+ the config's regulariser on the source half)

(released train.py:77-102: ``loss_seg_src + triger_ent * entW * loss_ent_trg``). The swap
works on de-normalised pixels 0-255 as released, and the swapped image is normalised with
the dataset's statistics (ImageNet mean / std) instead of the released BGR mean
subtraction. Deliberate difference: the two domains go through one forward pass (as in
:mod:`contraseg.adapt.self_training`), so BatchNorm sees both together and DDP sees one
forward per backward; the released script runs two forward passes. Multi-band transfer
trains one run per beta (``--set adapt.fda.beta=0.05`` ...) and averages their
predictions with :func:`contraseg.adapt.fda.multiband_probabilities`. The run's
``last.pth`` is an ordinary checkpoint: ``contraseg pseudo-label`` labels the target
with it and ``adapt.method: self_training`` (optionally with ProAC) is the second stage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .fda import amplitude_swap, low_frequency_window, robust_entropy
from .losses import masked_cross_entropy
from .trainer import AdaptTrainer


class FDATrainer(AdaptTrainer):
    """Source CE on target-styled source images + robust entropy on target images."""

    method = "fda"
    target_kind = "none"

    def setup(self) -> None:
        """The normalisation statistics of the source set's transform."""
        transform = getattr(self.train_set, "transform", None)
        self.pixel_mean = torch.tensor(getattr(transform, "mean", IMAGENET_MEAN), device=self.device).view(1, 3, 1, 1)
        self.pixel_std = torch.tensor(getattr(transform, "std", IMAGENET_STD), device=self.device).view(1, 3, 1, 1)
        h, w = self.cfg.data.crop_size
        b = low_frequency_window(h, w, self.adapt.fda.beta)
        if self.ctx.is_main:
            note = " (0: the swap leaves the source unchanged; raise adapt.fda.beta)" if b == 0 else ""
            print(f"FDA: beta {self.adapt.fda.beta} swaps {b} x {b} corner blocks of the {h} x {w} crops' "
                  f"amplitude{note}", flush=True)

    def styled_source(self, images_s: Tensor, images_t: Tensor) -> Tensor:
        """Normalised source images with the paired target's low-frequency amplitude."""
        scale = 255.0
        pixels_s = (images_s * self.pixel_std + self.pixel_mean) * scale
        pixels_t = (images_t * self.pixel_std + self.pixel_mean) * scale
        swapped = amplitude_swap(pixels_s, pixels_t, self.adapt.fda.beta)
        return (swapped / scale - self.pixel_mean) / self.pixel_std

    def train_step(self, batch: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Tensor]:
        """One step on ``(source batch, target batch)``; returns the detached terms."""
        source, target = batch
        images_s, labels_s = self.to_device(source, "image"), self.to_device(source, "label")
        images_t = self.to_device(target, "image")
        if images_s.shape != images_t.shape:
            raise ValueError(f"FDA pairs source and target crops one to one: source batch {tuple(images_s.shape)}, "
                             f"target batch {tuple(images_t.shape)} (set adapt.target_batch_size to data.batch_size)")
        n = images_s.shape[0]
        out = self.forward_parts([self.styled_source(images_s, images_t), images_t])
        ce_source = masked_cross_entropy(out["logits"][:n], labels_s, self.ignore_index)
        fda = self.adapt.fda
        on = 1.0 if self.iteration >= fda.entropy_start_iter else 0.0
        entropy = robust_entropy(out["logits"][n:], fda.eta)
        source_out = {name: value[:n] for name, value in out.items()}
        terms = self.regulariser(source_out, labels_s, self.iteration, self.model)
        loss = ce_source + on * fda.entropy_weight * entropy
        if terms:
            loss = loss + sum(terms.values())
        self.optimise(loss)
        self.regulariser.after_step(source_out, labels_s)
        return {"loss": loss.detach(), "ce_source": ce_source.detach(), "entropy_target": entropy.detach(),
                **{name: value.detach() for name, value in terms.items()}}
