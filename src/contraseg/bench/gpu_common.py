"""What every check of ``python -m contraseg.bench gpu`` (:mod:`.gpu`) shares: its result,
:class:`CheckResult`, the relative error it compares with, and float32 without TF32.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class CheckResult:
    """One check: ``passed`` None means skipped (with the reason in ``summary``)."""

    name: str
    passed: bool | None
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    output: str = ""  # a benchmark's printed tables, copied into the report

    @property
    def status(self) -> str:
        return {True: "pass", False: "FAIL", None: "skipped"}[self.passed]


@contextmanager
def no_tf32() -> Iterator[None]:
    """float32 means float32: TF32 off for matmuls and cuDNN convolutions."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def relative_error(a: Tensor, b: Tensor) -> float:
    """``||a - b|| / max(||b||, 1e-12)`` (L2 over all entries)."""
    return float((a - b).norm() / b.norm().clamp_min(1e-12))
