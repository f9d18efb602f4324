"""Training curves from a run's ``log.jsonl`` (see :mod:`contraseg.engine.run_log`).

Records read::

    {"type": "train", "iteration": 50, "lr": 0.0098, "loss": 1.2, "ce": 1.1, "proac": 0.1, "time": 0.21, ...}
    {"type": "eval", "iteration": 4000, "dataset": "cityscapes/val", "unit": "%", "mIoU": 71.0, "IoU": {...}}

Every numeric key of a training record other than the bookkeeping ones (iteration, lr,
time, eta, wall, reg_weight) is a loss term. The log stores mIoU in percent (``"unit":
"%"``; older logs without it as a fraction); it is read back as a fraction (shown as a
percentage); NaN values are stored as null and read back as NaN. Records are sorted by
iteration; when an iteration appears twice (a run resumed without truncation) the last
record wins.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunCurves", "LOG_NAME", "find_run_log", "read_run_curves", "summarise_curves"]

LOG_NAME = "log.jsonl"
NON_LOSS_KEYS = frozenset({"type", "iteration", "lr", "time", "eta", "wall", "reg_weight"})


@dataclass
class RunCurves:
    """The series of one run, ready to plot.

    Attributes:
        path: the log file.
        iterations: training-record iterations, increasing.
        lr: learning rate at each of them.
        losses: loss term -> values aligned with ``iterations`` (NaN where missing);
            ``"loss"`` (the total) first.
        evals: evaluation dataset -> ``(iterations, mIoU fractions)``.
    """

    path: Path
    iterations: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    losses: dict[str, list[float]] = field(default_factory=dict)
    evals: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)


def find_run_log(run: str | os.PathLike) -> Path:
    """``run/log.jsonl`` for a run folder, or ``run`` itself when it is a file.

    Raises:
        FileNotFoundError: one line naming the missing log file.
    """
    path = Path(run)
    log = path / LOG_NAME if path.is_dir() else path
    if not log.is_file():
        raise FileNotFoundError(f"training log not found: {log}")
    return log


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _last_per_iteration(records: list[dict[str, Any]], key: Any = None) -> list[dict[str, Any]]:
    latest: dict[Any, dict[str, Any]] = {}
    for record in records:
        latest[(key(record) if key else None, int(record["iteration"]))] = record
    return sorted(latest.values(), key=lambda r: int(r["iteration"]))


def read_run_curves(run: str | os.PathLike) -> RunCurves:
    """Read the training and evaluation series of a run folder (or of a log file).

    Raises:
        FileNotFoundError: the log does not exist.
        ValueError: the log holds no training or evaluation record (one line naming it).
    """
    from ..engine.run_log import read_jsonl

    log = find_run_log(run)
    records = [r for r in read_jsonl(log) if isinstance(r, dict) and isinstance(r.get("iteration"), (int, float))]
    train = _last_per_iteration([r for r in records if r.get("type") == "train"])
    evals = _last_per_iteration([r for r in records if r.get("type") == "eval"], key=lambda r: str(r.get("dataset", "val")))
    if not train and not evals:
        raise ValueError(f"{log}: no training or evaluation records")
    terms: list[str] = []
    for record in train:
        for key, value in record.items():
            if key not in NON_LOSS_KEYS and key not in terms and (value is None or isinstance(value, (int, float))):
                terms.append(key)
    terms.sort(key=lambda name: name != "loss")  # the total first, the rest in order of appearance
    curves = RunCurves(path=log)
    curves.iterations = [int(r["iteration"]) for r in train]
    curves.lr = [_number(r.get("lr")) for r in train]
    curves.losses = {name: [_number(r.get(name)) for r in train] for name in terms}
    for record in evals:
        its, values = curves.evals.setdefault(str(record.get("dataset", "val")), ([], []))
        its.append(int(record["iteration"]))
        value = _number(record.get("mIoU"))
        values.append(value / 100.0 if record.get("unit") == "%" else value)  # logs store percent
    return curves


def _last_finite(values: list[float]) -> float | None:
    for value in reversed(values):
        if math.isfinite(value):
            return value
    return None


def summarise_curves(curves: RunCurves) -> dict[str, Any]:
    """Last and best mIoU per evaluation dataset, final loss terms and learning rate.

    Returns ``{"log", "train_records", "last_iteration", "final_lr", "final_losses":
    {term: value}, "eval": {dataset: {"evaluations", "last": {"iteration", "mIoU"},
    "best": {"iteration", "mIoU"}}}}`` (mIoU as fractions; None where undefined).
    """
    evals = {}
    for dataset, (its, values) in curves.evals.items():
        finite = [(v, i) for i, v in zip(its, values) if math.isfinite(v)]
        best = max(finite, key=lambda pair: pair[0]) if finite else None
        evals[dataset] = {
            "evaluations": len(its),
            "last": {"iteration": its[-1], "mIoU": values[-1] if math.isfinite(values[-1]) else None},
            "best": None if best is None else {"iteration": best[1], "mIoU": best[0]},
        }
    last_iterations = curves.iterations[-1:] + [its[-1] for its, _ in curves.evals.values()]
    return {
        "log": str(curves.path),
        "train_records": len(curves.iterations),
        "last_iteration": max(last_iterations) if last_iterations else None,
        "final_lr": _last_finite(curves.lr),
        "final_losses": {name: _last_finite(values) for name, values in curves.losses.items()},
        "eval": evals,
    }
