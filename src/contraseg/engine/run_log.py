"""Training logs: a JSONL file, optional TensorBoard scalars, progress for people.

``run_dir/log.jsonl`` gets one JSON object per line::

    {"type": "train", "iteration": 50, "lr": 0.0098, "loss": 1.2, "ce": 1.1, "proac": 0.1, "time": 0.21,
     "eta": 830.0}
    {"type": "eval", "iteration": 4000, "dataset": "cityscapes/val", "unit": "%", "mIoU": 71.2, "IoU": {...}}

Metrics in every JSON file are percentages (``"unit": "%"``), as mmsegmentation
reports them; in memory (``compute_metrics``) they stay fractions. ``time`` is seconds
per iteration, ``eta`` the seconds left at that pace.

Progress: on a terminal a tqdm bar; otherwise (a pipe, nohup, a log file) every
``log_train`` prints a plain line ``[it/max] loss ... ce ... proac(w) ... | lr ... | x it/s | ETA h:mm:ss``:
a term marked ``(w)`` is weighted as it is added to the loss (the JSONL keys keep the bare
names); it/s counts data loading and training steps, never the evaluations between them.
:class:`Progress` does the same for loops over images (eval, pseudo labels, predict).

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
import threading
import time
from pathlib import Path
from typing import Any, Callable

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


PERCENT_KEYS = ("mIoU", "mAcc", "aAcc", "IoU", "Acc")


def metrics_in_percent(metrics: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``compute_metrics``' dict with mIoU, mAcc, aAcc, IoU and Acc in percent
    (None / NaN kept as they are)."""
    def pct(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [pct(v) for v in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return round(100.0 * value, 4)
        return value

    return {key: pct(value) if key in PERCENT_KEYS else value for key, value in metrics.items()}


def format_duration(seconds: float) -> str:
    """``3725.2`` -> ``"1:02:05"``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Progress of a loop over ``total`` items: tqdm on a terminal, else a line at each
    tenth of the work and at least every ``interval`` seconds (and at the end).

    Call :meth:`update` with the number of items just done; :meth:`close` at the end.
    """

    def __init__(self, desc: str, total: int, unit: str = "images", interval: float = 30.0,
                 stream: Any = None) -> None:
        self.desc, self.total, self.unit, self.interval = desc, max(0, int(total)), unit, interval
        self.stream = stream or sys.stdout
        self.done = 0
        self._start = self._last = time.perf_counter()
        self._next_tenth = 1
        self._bar = None
        if self.stream.isatty() and sys.stderr.isatty():
            self._bar = tqdm(total=self.total or None, desc=desc, unit=unit[:3], dynamic_ncols=True, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            if self._bar.total != self.total and self.total:
                self._bar.total = self.total
            self._bar.update(n)
            return
        now = time.perf_counter()
        tenth = self.total and self.done * 10 >= self._next_tenth * self.total
        if tenth or now - self._last >= self.interval or self.done >= self.total:
            while self.total and self.done * 10 >= self._next_tenth * self.total:
                self._next_tenth += 1
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        left = (self.total - self.done) / rate if rate and math.isfinite(rate) else 0.0
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        print(f"{self.desc}: {self.done}/{self.total} {self.unit}{share}, {rate:.2f} {self.unit}/s, "
              f"ETA {format_duration(left)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Heartbeat:
    """Progress of work that cannot count its steps: while the block runs, a line
    ``DESC: still running, h:mm:ss elapsed`` every ``interval`` seconds (a tqdm timer on a
    terminal), from a daemon thread.
    """

    def __init__(self, desc: str, interval: float = 15.0, stream: Any = None) -> None:
        self.desc, self.interval = desc, interval
        self.stream = stream or sys.stdout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        start = time.perf_counter()
        bar = tqdm(desc=self.desc, bar_format="{desc}: {elapsed}") if self.stream.isatty() else None
        while not self._stop.wait(1.0 if bar is not None else self.interval):
            if bar is not None:
                bar.refresh()
            else:
                print(f"{self.desc}: still running, {format_duration(time.perf_counter() - start)} elapsed",
                      file=self.stream, flush=True)
        if bar is not None:
            bar.close()

    def __enter__(self) -> "Heartbeat":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def progress_reporter(desc: str) -> Callable[[int, int], None]:
    """A ``report(done, total)`` callback drawing a :class:`Progress` (started now)."""
    bar = Progress(desc, 0)

    def report(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.done)
        if done >= total:
            bar.close()

    return report


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


UNWEIGHTED_TERMS = ("loss", "ce", "ce_source", "ce_mix", "lr")


def term_label(name: str) -> str:
    """How a loss term is shown on a progress line: ``proac(w)`` for a weighted term."""
    return name if name in UNWEIGHTED_TERMS else f"{name}(w)"


class RunLogger:
    """JSONL + TensorBoard + progress bar for one training run.

    Args:
        run_dir: where ``log.jsonl`` and ``tensorboard/`` go.
        enabled: False on ranks other than 0 (everything becomes a no-op).
        total_iters, start_iter: for the progress bar.
        tensorboard: write TensorBoard scalars if the package is installed.
        progress: show a tqdm bar when stdout and stderr are terminals (else plain lines on stdout).
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, total_iters: int = 0,
                 start_iter: int = 0, tensorboard: bool = True, progress: bool = True) -> None:
        self.enabled = enabled
        self.total_iters = total_iters
        self.path = Path(run_dir) / "log.jsonl"
        self._writer = None
        self._bar = None
        self._explained = False
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
        if progress and sys.stderr.isatty() and sys.stdout.isatty():  # `| tee log` gets plain lines
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
        eta = seconds * max(0, self.total_iters - iteration)
        self._write({"type": "train", "iteration": iteration, "lr": lr, **terms, "time": seconds,
                     "eta": round(eta, 1), "wall": time.time()})
        if self._writer is not None:
            self._writer.add_scalar("train/lr", lr, iteration)
            for name, value in terms.items():
                self._writer.add_scalar(f"train/{name}", value, iteration)
        self.print_train(iteration, lr, terms, seconds)

    def print_train(self, iteration: int, lr: float, terms: dict[str, float], seconds: float) -> None:
        """Show the loss terms: the bar's postfix on a terminal, else a plain line on stdout."""
        if not self.enabled:
            return
        rate = f"{1.0 / seconds:.2f}" if seconds > 0 else "inf"
        if self._bar is not None:  # tqdm's own rate is wall time (evaluations included); train_it/s is not
            self._bar.set_postfix(loss=f"{terms.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}", train_its=rate)
            return
        shown = " ".join(f"{term_label(name)} {value:.4f}" for name, value in terms.items() if name != "reg_weight")
        if not self._explained and any(term_label(name) != name for name in terms):
            self._explained = True
            print("loss terms: name(w) = the weighted term as added to the loss (weight x raw value); "
                  "it/s counts data loading and training steps, not evaluations", flush=True)
        eta = format_duration(seconds * max(0, self.total_iters - iteration))
        print(f"[{iteration}/{self.total_iters}] {shown} | lr {lr:.3e} | {rate} it/s | ETA {eta}", flush=True)

    def log_record(self, record: dict[str, Any]) -> None:
        """Append any other record (e.g. ``{"type": "config_change", ...}``)."""
        if self.enabled:
            self._write(record)

    def progress(self, desc: str) -> Any:
        """A ``progress(done, total)`` callback for evaluation loops (a :class:`Progress`
        line or bar, silent on a terminal with the training bar shown)."""
        return progress_reporter(desc) if self.enabled else None

    def log_eval(self, iteration: int, dataset: str, metrics: dict[str, Any]) -> None:
        """Record one evaluation: mIoU, mAcc, aAcc and per-class IoU."""
        if not self.enabled:
            return
        pct = metrics_in_percent(metrics)
        per_class = dict(zip(metrics["classes"], pct["IoU"]))
        self._write({"type": "eval", "iteration": iteration, "dataset": dataset, "unit": "%", "mIoU": pct["mIoU"],
                     "mAcc": pct["mAcc"], "aAcc": pct["aAcc"], "IoU": per_class})
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
