"""Mixed-precision policy: which autocast dtype, and a GradScaler for fp16.

=========  ====================================  ==========================
``amp``    CUDA                                  CPU
=========  ====================================  ==========================
auto       bf16 if supported, else fp16+scaler   off (float32)
bf16       bf16                                  bf16 (autocast on CPU)
fp16       fp16 with a GradScaler                error: fp16 needs CUDA
off        float32                               float32
=========  ====================================  ==========================

fp16 always comes with a ``torch.amp.GradScaler`` (its state goes into every training
checkpoint under ``scaler``), as ProtoSeg released it: tfzhou/ProtoSeg@1c4a778,
segmentor/trainer.py:156 (``scaler = torch.cuda.amp.GradScaler()``) and :182
(``with torch.cuda.amp.autocast():``). ContrastiveSeg trains in float32 (``amp: off``).
Deliberate difference: ProtoSeg re-creates its scaler at every epoch; contraseg keeps one
for the whole run (and across a resume).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch


@dataclass
class Precision:
    """The resolved policy: ``dtype`` is None for float32 training."""

    device_type: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    def autocast(self) -> AbstractContextManager:
        """The autocast context for the forward pass (a no-op for float32)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    @property
    def name(self) -> str:
        """``"fp32"``, ``"fp16"`` or ``"bf16"``."""
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """The policy for config value ``amp`` on ``device`` (see the module table)."""
    cuda = device.type == "cuda"
    if amp not in ("auto", "off", "fp16", "bf16"):
        raise ValueError(f"amp must be one of auto, off, fp16, bf16, got {amp!r}")
    if amp == "fp16" and not cuda:
        raise ValueError(f"amp: fp16 needs a CUDA device, got {device.type}; use bf16 or off")
    if amp == "auto":
        if not cuda:
            dtype = None
        else:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    return Precision(device.type, dtype, scaler)
