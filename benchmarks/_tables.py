"""docs/results.md's first three tables (supervised, domain adaptation, WDASS ablation) and the
cell formatting every table shares: mean ± std over seeds, per-seed values, paired
per-seed differences against a baseline row of the same seeds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from _rows import ABLATION, ADAPTATION, IMAGES_PER_STEP, SOURCE, SUPERVISED, SUPERVISED_DELAYED, TARGET


def load_results(out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """``{row: {seed: record}}`` from ``OUT/results/*.json`` (a record's ``key`` if it has one;
    else its row, supervised rows keyed ``sup_<row>``)."""
    by_row: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted((out / "results").glob("*.json")):
        record = json.loads(path.read_text())
        key = record.get("key") or (f"sup_{record['row']}" if record["table"] == "supervised" else record["row"])
        by_row.setdefault(key, {})[record["seed"]] = record
    return by_row


def miou(record: dict[str, Any], dataset: str) -> float:
    return record["metrics"][dataset]["miou"]


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def paired(runs: dict[int, dict], base: dict[int, dict], dataset: str, seeds: list[int]) -> str:
    """Per-seed differences against the baseline and their mean: ``+1.2 / -0.3 (mean +0.4)``."""
    common = [s for s in seeds if s in runs and s in base]
    if not common:
        return "-"
    deltas = [miou(runs[s], dataset) - miou(base[s], dataset) for s in common]
    mean = f" (mean {statistics.mean(deltas):+.1f})" if len(deltas) > 1 else ""
    return " / ".join(f"{d:+.1f}" for d in deltas) + mean


def per_seed(runs: dict[int, dict], dataset: str, seeds: list[int]) -> str:
    return " / ".join(f"{miou(runs[s], dataset):.1f}" if s in runs else "-" for s in seeds)


def minutes(runs: dict[int, dict]) -> str:
    return f"{statistics.mean(r['seconds'] for r in runs.values()) / 60:.1f}" if runs else "-"


def per_class_table(by_row: dict, rows: list[tuple[str, str]], dataset: str, seeds: list[int]) -> list[str]:
    """Classes down, methods across: IoU mean over the seeds (a class absent from a run's
    labels and predictions counts as missing, not 0)."""
    present = [(key, title) for key, title in rows if by_row.get(key)]
    if not present:
        return []
    classes: list[str] = []
    for key, _ in present:
        for record in by_row[key].values():
            for name in record["metrics"][dataset]["per_class_iou"]:
                if name not in classes:
                    classes.append(name)
    lines = ["| class | " + " | ".join(title for _, title in present) + " |", "|---" + "|---:" * len(present) + "|"]
    for name in classes:
        cells = []
        for key, _ in present:
            values = [r["metrics"][dataset]["per_class_iou"].get(name) for s, r in by_row[key].items() if s in seeds]
            values = [v for v in values if v is not None]
            cells.append(f"{statistics.mean(values):.1f}" if values else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def supervised_table(by_row: dict, seeds: list[int]) -> list[str]:
    base = by_row.get("sup_ce", {})
    lines = ["| method | source val mIoU | per seed (" + " / ".join(map(str, seeds)) + ") | vs cross-entropy, "
             "paired | target val mIoU | minutes per run |", "|---|---|---|---|---|---:|"]
    for row, title, *_ in (*SUPERVISED, *SUPERVISED_DELAYED):
        runs = by_row.get(f"sup_{row}", {})
        values = [miou(runs[s], SOURCE) for s in seeds if s in runs]
        delta = "-" if row == "ce" else paired(runs, base, SOURCE, seeds)
        target = mean_std([miou(runs[s], TARGET) for s in seeds if s in runs])
        lines.append(f"| {title} | {mean_std(values)} | {per_seed(runs, SOURCE, seeds)} | {delta} | {target} | "
                     f"{minutes(runs)} |")
    return lines


def da_table(by_row: dict, seeds: list[int]) -> list[str]:
    rows = [("sup_ce", "source-only"), *[(row, title) for row, title, *_ in ADAPTATION],
            ("oracle", "target-supervised (oracle, from scratch)")]
    base, source_only = by_row.get("finetune", {}), by_row.get("sup_ce", {})
    lines = ["| method | target val mIoU | per seed (" + " / ".join(map(str, seeds)) + ") | vs source-only +T, "
             "paired | vs source-only, paired | images / step | minutes per run |",
             "|---|---|---|---|---|---|---:|"]
    for key, title in rows:
        runs = by_row.get(key, {})
        values = [miou(runs[s], TARGET) for s in seeds if s in runs]
        adapted = key not in ("sup_ce", "oracle")
        vs_t = paired(runs, base, TARGET, seeds) if adapted and key != "finetune" else "-"
        vs_0 = paired(runs, source_only, TARGET, seeds) if key != "sup_ce" else "-"
        lines.append(f"| {title} | {mean_std(values)} | {per_seed(runs, TARGET, seeds)} | {vs_t} | {vs_0} | "
                     f"{IMAGES_PER_STEP.get(key, '8')} | {minutes(runs)} |")
    return lines


def ablation_table(by_row: dict, seeds: list[int]) -> list[str]:
    full = by_row.get("wdass_coarse", {})
    lines = ["| WDASS, coarse labels | target val mIoU | per seed (" + " / ".join(map(str, seeds)) + ") | "
             "vs full WDASS, paired | images / step |", "|---|---|---|---|---|"]
    rows = [("wdass_coarse", "full (as in the DA table)"), *[(row, title) for row, title, _ in ABLATION]]
    for key, title in rows:
        runs = {s: r for s, r in by_row.get(key, {}).items() if s in seeds}
        values = [miou(runs[s], TARGET) for s in seeds if s in runs]
        delta = "-" if key == "wdass_coarse" else paired(runs, full, TARGET, seeds)
        lines.append(f"| {title} | {mean_std(values)} | {per_seed(runs, TARGET, seeds)} | {delta} | "
                     f"{IMAGES_PER_STEP.get(key, '8')} |")
    return lines
