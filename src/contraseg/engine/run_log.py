"""Training logs: a JSONL file, optional TensorBoard scalars and a tqdm progress bar.

``run_dir/log.jsonl`` gets one JSON object per line::

    {"type": "train", "iteration": 50, "lr": 0.0098, "loss": 1.2, "ce": 1.1, "proac": 0.1, "time": 0.21}
    {"type": "eval", "iteration": 4000, "dataset": "cityscapes/val", "mIoU": 0.71, "IoU": {...}}

Only the main process (rank 0) writes; on other ranks every method is a no-op. On
resume, :meth:`RunLogger.truncate_after` drops entries past the resumed iteration
(written after the last checkpoint by the run that stopped), so the log reads like
one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, containers are cleaned recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSONL log (skipping a torn last line)."""
    records = []
    with open(path) as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


class RunLogger:
    """JSONL + TensorBoard + progress bar for one training run.

    Args:
        run_dir: where ``log.jsonl`` and ``tensorboard/`` go.
        enabled: False on ranks other than 0 (everything becomes a no-op).
        total_iters, start_iter: for the progress bar.
        tensorboard: write TensorBoard scalars if the package is installed.
        progress: show a tqdm bar (only when stderr is a terminal).
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, total_iters: int = 0,
                 start_iter: int = 0, tensorboard: bool = True, progress: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "log.jsonl"
        self._writer = None
        self._bar = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("tensorboard is not installed: skipping TensorBoard logs", file=sys.stderr)
            else:
                self._writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=start_iter or None)
        if progress and sys.stderr.isatty():
            self._bar = tqdm(total=total_iters, initial=start_iter, dynamic_ncols=True, desc="train")

    def truncate_after(self, iteration: int) -> None:
        """Drop records whose iteration is greater than ``iteration`` (used on resume)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_jsonl(self.path) if int(r.get("iteration", 0)) <= iteration]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as handle:
            for record in kept:
                handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(json_safe(record)) + "\n")

    def log_train(self, iteration: int, lr: float, terms: dict[str, float], seconds: float) -> None:
        """Record one training step: lr, each loss term and seconds per iteration."""
        if not self.enabled:
            return
        self._write({"type": "train", "iteration": iteration, "lr": lr, **terms, "time": seconds,
                     "wall": time.time()})
        if self._writer is not None:
            self._writer.add_scalar("train/lr", lr, iteration)
            for name, value in terms.items():
                self._writer.add_scalar(f"train/{name}", value, iteration)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{terms.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}")

    def log_eval(self, iteration: int, dataset: str, metrics: dict[str, Any]) -> None:
        """Record one evaluation: mIoU, mAcc, aAcc and per-class IoU."""
        if not self.enabled:
            return
        per_class = dict(zip(metrics["classes"], metrics["IoU"]))
        self._write({"type": "eval", "iteration": iteration, "dataset": dataset, "mIoU": metrics["mIoU"],
                     "mAcc": metrics["mAcc"], "aAcc": metrics["aAcc"], "IoU": per_class})
        if self._writer is not None:
            for key in ("mIoU", "mAcc", "aAcc"):
                if math.isfinite(metrics[key]):
                    self._writer.add_scalar(f"eval/{dataset}/{key}", metrics[key], iteration)

    def step(self, n: int = 1) -> None:
        """Advance the progress bar."""
        if self._bar is not None:
            self._bar.update(n)

    def message(self, text: str) -> None:
        """Print a line (through tqdm when the bar is shown) on the main process."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        """Close the progress bar and the TensorBoard writer."""
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
