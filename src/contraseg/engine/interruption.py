"""Stopping a training run cleanly on SIGINT / SIGTERM.

While :meth:`Trainer.fit <contraseg.engine.trainer.Trainer.fit>` runs, a
:class:`StopRequest` turns the first SIGINT or SIGTERM into a flag; the trainer finishes
its step, writes ``last.pth`` and raises :class:`TrainingInterrupted` (the command line
turns it into a resume hint and exit code 130 / 143). A second SIGINT raises
``KeyboardInterrupt`` at once. DataLoader workers ignore SIGINT
(:func:`contraseg.engine.sampling.ignore_sigint`).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any


class TrainingInterrupted(Exception):
    """SIGINT / SIGTERM stopped :meth:`Trainer.fit` after it saved ``checkpoint``."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name} at iteration {iteration}; saved {checkpoint}")
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint


class StopRequest:
    """While active, SIGINT / SIGTERM only set :attr:`signum` (a second SIGINT raises
    KeyboardInterrupt at once). Handlers are installed only in the main thread."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
