"""Mean teacher: an exponential moving average (EMA) of the student's weights.

Tarvainen and Valpola, NeurIPS 2017; used for pseudo labels by DACS (Tranheden et al.,
WACV 2021), DAFormer and WDASS. The teacher starts as a copy of the student. After the
k-th optimiser step (k = 1, 2, ...) every floating parameter and buffer becomes

    theta_teacher <- a_k theta_teacher + (1 - a_k) theta_student,   a_k = min(1 - 1/(k + 1), m)

so for k < 1/(1 - m) - 1 the teacher is the plain average of all student iterates so far
(the warm start of DACS's release), afterwards an EMA with momentum m; ``warm_start=False``
uses a_k = m from the first step (WDASS's release: anurag-198/WDASS@7276a27d916b
utils/ema_classes.py:90 blends with ``self.alpha``; the ramp computed at :81 is unused).
BatchNorm running statistics are averaged the same way (``buffers="ema"``, WDASS's
``--bn_buffer``) or copied from the student (``buffers="copy"``); integer buffers
(``num_batches_tracked``) are always copied. The teacher never receives gradients. It
predicts in eval mode (``batch_norm="running"``: BatchNorm's running statistics) or, with
``batch_norm="batch"``, in train mode: BatchNorm normalises with the statistics of the batch
it predicts on and updates its running statistics, as WDASS's released teacher (its
``ema_net`` is never put in eval mode during training: train.py:444 unpacks the four outputs
that network/deepv2.py:159-166 returns only in training mode).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn


def ema_momentum(step: int, momentum: float) -> float:
    """``a_k = min(1 - 1/(k + 1), m)`` for optimiser step ``k >= 1``."""
    if step < 1:
        raise ValueError(f"step must be >= 1 (steps are counted from 1), got {step}")
    return min(1.0 - 1.0 / (step + 1), momentum)


class MeanTeacher(nn.Module):
    """An EMA copy of ``student`` (a segmentor; the bare model, not a DDP wrapper).

    Args:
        student: the model to follow; copied at construction.
        momentum: m in [0, 1).
        buffers: ``"ema"`` or ``"copy"`` (floating buffers such as BatchNorm statistics).
        warm_start: ``a_k = min(1 - 1/(k + 1), m)`` (True) or ``a_k = m`` (False).
        batch_norm: ``"running"`` (predict in eval mode) or ``"batch"`` (in train mode).

    ``teacher(images)`` runs the copy under ``torch.no_grad`` and returns its output dict
    (``{"logits", "embed"}`` for a segmentor).
    """

    def __init__(self, student: nn.Module, momentum: float = 0.999, buffers: str = "ema", warm_start: bool = True,
                 batch_norm: str = "running") -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if buffers not in ("ema", "copy"):
            raise ValueError(f"buffers must be 'ema' or 'copy', got {buffers!r}")
        if batch_norm not in ("running", "batch"):
            raise ValueError(f"batch_norm must be 'running' or 'batch', got {batch_norm!r}")
        self.model = copy.deepcopy(student)
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.momentum = float(momentum)
        self.buffers_mode = buffers
        self.warm_start = bool(warm_start)
        self.batch_norm = batch_norm
        self.model.train(batch_norm == "batch")

    def train(self, mode: bool = True) -> MeanTeacher:
        """The teacher keeps its own mode (``batch_norm``) whatever the trainer does."""
        super().train(mode)
        self.model.train(self.batch_norm == "batch")
        return self

    @torch.no_grad()
    def forward(self, images: Tensor) -> Any:
        """The teacher's output on ``images`` B x 3 x H x W (no gradient)."""
        return self.model(images)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> float:
        """Blend the student in after optimiser step ``step`` (>= 1); returns ``a_k``."""
        alpha = ema_momentum(step, self.momentum) if self.warm_start else self.momentum
        mine = dict(self.model.named_parameters())
        theirs = dict(student.named_parameters())
        if mine.keys() != theirs.keys():
            raise ValueError("MeanTeacher.update: the student's parameters differ from the teacher's")
        for name, param in mine.items():
            param.mul_(alpha).add_(theirs[name].detach(), alpha=1.0 - alpha)
        student_buffers = dict(student.named_buffers())
        for name, buffer in self.model.named_buffers():
            source = student_buffers[name].detach()
            if self.buffers_mode == "copy" or not buffer.is_floating_point():
                buffer.copy_(source)
            else:
                buffer.mul_(alpha).add_(source, alpha=1.0 - alpha)
        return alpha

    def extra_repr(self) -> str:
        return (f"momentum={self.momentum}, buffers={self.buffers_mode!r}, warm_start={self.warm_start}, "
                f"batch_norm={self.batch_norm!r}")
