"""docs/results.md's issue-19 tables: the released hard starts, the standard UDA baselines, ProAC's
second stage, robustness under ProAC's perturbations, ProtoSeg's prototype diversity, and the
list of runs whose result JSON is still missing. Every paired cell compares runs of the same
seed (``+1.2 / -0.3 / +0.8 (mean +0.6)``); a row without results shows dashes."""

from __future__ import annotations

import functools
import statistics
from pathlib import Path
from typing import Any

from _rows import (MEMORY_SAMPLING, PERTURBATIONS, ROBUST_MODELS, SOURCE, STAGE2, SUPERVISED_DELAYED, TARGET,
                   UDA_BASELINES, WDASS_DELAYED, title_of)
from _tables import mean_std, minutes, miou, paired, per_seed

Rows = list[tuple[str, str, list[str | None]]]


def paired_table(by_row: dict, first: str, rows: Rows, columns: list[str], dataset: str, seeds: list[int]) -> list[str]:
    """One line per ``(key, title, baselines)``: mIoU mean ± std, per seed, then per column the
    paired difference against that column's baseline key (``None``: ``-``)."""
    lines = [f"| {first} | mIoU | per seed ({' / '.join(map(str, seeds))}) | " + " | ".join(columns)
             + " | minutes per run |", "|---|---|---|" + "---|" * len(columns) + "---:|"]
    for key, title, bases in rows:
        runs = {s: r for s, r in by_row.get(key, {}).items() if s in seeds}
        values = [miou(runs[s], dataset) for s in seeds if s in runs]
        cells = [paired(runs, by_row.get(base, {}), dataset, seeds) if base else "-" for base in bases]
        lines.append(f"| {title} | {mean_std(values)} | {per_seed(runs, dataset, seeds)} | " + " | ".join(cells)
                     + f" | {minutes(runs)} |")
    return lines


def hard_start_table(by_row: dict, seeds: list[int]) -> list[str]:
    """Source val: each delayed row against cross-entropy and against its from-iteration-0 row."""
    rows: Rows = []
    for row, title, *_ in SUPERVISED_DELAYED:
        base = row.removesuffix("_delayed")
        rows += [(f"sup_{base}", title_of(f"sup_{base}"), ["sup_ce", None]), (f"sup_{row}", title, ["sup_ce", f"sup_{base}"])]
    return paired_table(by_row, "supervised, source val", rows, ["vs cross-entropy, paired",
                                                                  "vs from iteration 0, paired"], SOURCE, seeds)


def memory_sampling_table(by_row: dict, seeds: list[int]) -> list[str]:
    """Source val: each per-anchor sampling of the memory bank against the whole bank (same loss,
    same hard start) and against cross-entropy (issue 23)."""
    whole = "sup_pixel_contrast_memory_delayed"
    rows: Rows = [(whole, "+ pixel contrast with memory, released loss and hard start, whole bank", [None, "sup_ce"])]
    rows += [(f"sup_{row}", title, [whole, "sup_ce"]) for row, title, *_ in MEMORY_SAMPLING]
    return paired_table(by_row, "supervised, source val", rows, ["vs whole bank, paired",
                                                                  "vs cross-entropy, paired"], SOURCE, seeds)


def wdass_delayed_table(by_row: dict, seeds: list[int]) -> list[str]:
    """Target val: WDASS with the released hard start against WDASS ramped in from 0 and source-only +T."""
    rows: Rows = []
    for row, title, base in WDASS_DELAYED:
        rows += [(base, f"{title_of(base)}, terms ramped in over the first 1/10 (as in the DA table)", [None, "finetune"]),
                 (row, title, [base, "finetune"])]
    return paired_table(by_row, "WDASS, target val", rows, ["vs WDASS ramped from 0, paired",
                                                             "vs source-only +T, paired"], TARGET, seeds)


def uda_table(by_row: dict, seeds: list[int]) -> list[str]:
    """Target val: DACS and FDA against source-only +T and source-only (all from the same CE model)."""
    rows: Rows = [("sup_ce", "source-only (the CE model every row starts from)", [None, None]),
                  ("finetune", title_of("finetune"), [None, "sup_ce"]),
                  ("self_training", "self-training (pseudo labels of the CE model)", ["finetune", "sup_ce"])]
    rows += [(row, title, ["finetune", "sup_ce"]) for row, title, _ in UDA_BASELINES]
    return paired_table(by_row, "adaptation, target val", rows, ["vs source-only +T, paired",
                                                                  "vs source-only, paired"], TARGET, seeds)


def stage2_table(by_row: dict, seeds: list[int]) -> list[str]:
    """Target val: ProAC's second stage, with and without ProAC, per stage-1 model."""
    rows: Rows = []
    for stage1 in dict.fromkeys(s for s, *_ in STAGE2):
        plain, proac = [(row, title) for s, row, title, _ in STAGE2 if s == stage1]
        rows += [(stage1, f"stage 1: {title_of(stage1)}", [None, None, "finetune"]),
                 (plain[0], f"stage 2: {plain[1]}", [None, stage1, "finetune"]),
                 (proac[0], f"stage 2: {proac[1]}", [plain[0], stage1, "finetune"])]
    return paired_table(by_row, "ProAC UDA, target val", rows,
                        ["ProAC vs without, paired", "vs the stage-1 model, paired", "vs source-only +T, paired"],
                        TARGET, seeds)


def robustness_tables(by_row: dict, seeds: list[int]) -> list[str]:
    """Source val mIoU of each supervised model per perturbation, then its paired difference to CE."""
    head = "| model | " + " | ".join(title for _, _, title in PERTURBATIONS) + " |"
    rule = "|---" + "|---" * len(PERTURBATIONS) + "|"
    means, deltas = [head, rule], [head.replace("| model |", "| vs cross-entropy, paired |"), rule]
    for model in ROBUST_MODELS:
        name = title_of(f"sup_{model}")
        cells = [mean_std([miou(r, SOURCE) for s, r in by_row.get(f"rob_{model}_{pkey}", {}).items() if s in seeds])
                 for pkey, _, _ in PERTURBATIONS]
        means.append(f"| {name} | " + " | ".join(cells) + " |")
        if model != "ce":
            cells = [paired(by_row.get(f"rob_{model}_{pkey}", {}), by_row.get(f"rob_ce_{pkey}", {}), SOURCE, seeds)
                     for pkey, _, _ in PERTURBATIONS]
            deltas.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*means, "", *deltas]


def _summary(record: dict[str, Any]) -> tuple[float, float, int, int]:
    """(mean over classes of the mean within-class cosine, max over classes of the max, used, total)."""
    rows = list(record["per_class"].values())
    means = [r["mean_cosine"] for r in rows if r.get("mean_cosine") is not None]
    maxes = [r["max_cosine"] for r in rows if r.get("max_cosine") is not None]
    return (statistics.mean(means) if means else float("nan"), max(maxes) if maxes else float("nan"),
            sum(r.get("used", 0) for r in rows), sum(r["prototypes"] for r in rows))


def diversity_table(by_row: dict, seeds: list[int]) -> list[str]:
    """Per ProtoSeg seed: within-class cosines of the prototypes and how many win pixels."""
    runs = by_row.get("div_protoseg", {})
    lines = ["| ProtoSeg seed | mean within-class cosine (mean over classes) | max within-class cosine (over classes) "
             "| prototypes winning >= 1 source val pixel of their class | classes with one prototype used |",
             "|---|---:|---:|---:|---:|"]
    for seed in seeds:
        if seed not in runs:
            lines.append(f"| {seed} | - | - | - | - |")
            continue
        mean_cos, max_cos, used, total = _summary(runs[seed])
        single = sum(1 for r in runs[seed]["per_class"].values() if r.get("used") == 1)
        lines.append(f"| {seed} | {mean_cos:.3f} | {max_cos:.3f} | {used} / {total} | {single} / "
                     f"{len(runs[seed]['per_class'])} |")
    return lines


def missing_runs(expected: list[str], results: Path) -> str:
    """``expected`` run names without ``results/<run>.json``, grouped by row: ``row (seeds 0, 2)``;
    the robustness evaluations of a model counted, not listed."""
    groups: dict[str, list[str]] = {}
    for name in expected:
        if (results / f"{name}.json").exists():
            continue
        row, _, seed = name.rpartition("_s")
        if row.startswith("rob_"):
            model = next((m for m in sorted(ROBUST_MODELS, key=len, reverse=True) if row.startswith(f"rob_{m}_")), row)
            groups.setdefault(f"rob_{model}_*", []).append(seed)
        else:
            groups.setdefault(row or name, []).append(seed)
    if not groups:
        return "Missing runs: none."
    parts = [f"{row} ({len(seeds)} evaluations)" if row.startswith("rob_") else f"{row} (seeds {', '.join(seeds)})"
             for row, seeds in groups.items()]
    return "Missing runs (no result JSON yet; their rows show dashes): " + "; ".join(parts) + "."


@functools.lru_cache(maxsize=2)
def target_train(length: int) -> Any:
    """synthetic-target train (``length`` scenes, 64 x 128), drawn once per render."""
    from contraseg.data import build_dataset

    return build_dataset("synthetic-target", split="train", size=[64, 128], length=length, cache=True)


def pseudo_label_quality(out: Path, folder: str, seeds: list[int], length: int) -> str:
    """Kept share and accuracy of each seed's pseudo labels (``OUT/<folder>/s<seed>``) against
    target train's truth."""
    from contraseg.data.pseudo_labels import PseudoLabelDir

    present = [seed for seed in seeds if (out / folder / f"s{seed}" / "summary.json").exists()]
    if not present:
        return ""
    dataset = target_train(length)
    parts = []
    for seed in present:
        labels = PseudoLabelDir(out / folder / f"s{seed}")
        kept = correct = total = 0
        try:
            for index in range(len(dataset)):
                truth = dataset.load_ground_truth(index)
                label = labels.load(dataset.sample_name(index))
                mask = label != 255
                kept += int(mask.sum())
                correct += int((label[mask] == truth[mask]).sum())
                total += label.size
        except (FileNotFoundError, OSError):
            parts.append(f"seed {seed}: labels do not cover {length} images (another --target-length?)")
            continue
        parts.append(f"seed {seed}: {100 * kept / total:.0f}% of pixels kept, {100 * correct / max(kept, 1):.1f}% "
                     f"of them correct")
    return "; ".join(parts)
