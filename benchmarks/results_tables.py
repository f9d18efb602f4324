"""docs/results.md's three tables on the synthetic benchmark: every method, several seeds.

All runs use the demo's model and images (``configs/_base_synthetic.yaml``:
MobileNetV3-Large + FPN top-down head at stride 2, 64-d embedding, 64 x 128 images,
batch 8, AdamW 3e-3 poly, no pretrained weights). Hyperparameters are the methods'
published / released ones, written in the configs before any run; nothing is selected on
a validation split (one evaluation per run, at its last iteration).

**Supervised** (train on labelled ``synthetic-source``, ``--source-iters`` iterations;
source val is the metric, target val is also recorded): cross-entropy
(``synthetic_source_only.yaml``), + ProAC (``synthetic_proac.yaml``), + pixel contrast
(``synthetic_pixel_contrast.yaml``), + pixel contrast with a memory bank
(``synthetic_pixel_contrast_memory.yaml``), ProtoSeg (``synthetic_protoseg.yaml``).

**Domain adaptation** (``synthetic-source`` -> ``synthetic-target``; target val is the
metric): source-only (the supervised cross-entropy run of the same seed); every
adaptation row starts from it and trains ``--adapt-iters`` more iterations: source-only
+T (the same on the source alone: the adaptation rows' baseline), self-training, self-
training + ProAC, WDASS with image / point / coarse labels (the released prototype
contrast) and with coarse labels and contraseg's earlier ``prototype-softmax`` contrast;
target-supervised (``synthetic_oracle.yaml``, ``--source-iters`` from scratch on labelled
target train).

**WDASS ablation** (coarse labels, ``--ablation-seeds``): without the prototype contrast
(``contrast_weight=0``), without the image-level loss (``image_weight=0``), without
ClassMix (``mix=false``: no mixed images and so no cross-entropy on the mean teacher's
pseudo labels; the teacher still gives the target prototypes their pixels), and with none
of the three (source CE + weak-label CE alone).

Each run is a subprocess with ``--threads`` CPU threads and no loader worker, ``--jobs``
at once; its result (``OUT/results/<run>.json``: mIoU and per-class IoU in percent on
both val sets, seconds) is written from the run's own ``eval/iter_*.json``, and the
tables (``OUT/results.md``) only from those files. Resumable: a run whose result exists
is skipped, an interrupted training continues from its ``last.pth``.

Usage::

    .venv/bin/python benchmarks/results_tables.py --out runs/results_tables
    .venv/bin/python benchmarks/results_tables.py --out docs/results_data/gpu_640 --render-only
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _jobs import ROOT, Job, adapt, contraseg, last_eval, schedule  # noqa: E402

CONFIGS = ROOT / "configs"
SIZE = "[64,128]"
SOURCE, TARGET = "synthetic-source/val", "synthetic-target/val"
WEAK_KINDS = ("image", "point", "coarse")

#: (row, title, config) of the supervised table.
SUPERVISED = (
    ("ce", "cross-entropy", "synthetic_source_only.yaml"),
    ("proac", "+ ProAC (0.1)", "synthetic_proac.yaml"),
    ("pixel_contrast", "+ pixel contrast (0.1)", "synthetic_pixel_contrast.yaml"),
    ("pixel_contrast_memory", "+ pixel contrast with memory (0.1; 500 + 500 keys per class)",
     "synthetic_pixel_contrast_memory.yaml"),
    ("protoseg", "ProtoSeg head (10 prototypes per class; PPC 0.01 + PPD 0.001)", "synthetic_protoseg.yaml"),
)
#: (row, title, config, extra --set values, label folder kind) of the adaptation runs.
ADAPTATION = (
    ("finetune", "source-only, +T on the source", "synthetic_source_only_finetune.yaml", (), None),
    ("self_training", "self-training", "synthetic_self_training.yaml", (), "pseudo"),
    ("self_training_proac", "self-training + ProAC", "synthetic_self_training_proac.yaml", (), "pseudo"),
    ("wdass_image", "WDASS, image labels", "synthetic_wdass_image.yaml", (), "image"),
    ("wdass_point", "WDASS, point labels", "synthetic_wdass_point.yaml", (), "point"),
    ("wdass_coarse", "WDASS, coarse labels", "synthetic_wdass_coarse.yaml", (), "coarse"),
    ("wdass_coarse_softmax", "WDASS, coarse labels, prototype-softmax contrast (contraseg's earlier one)",
     "synthetic_wdass_coarse.yaml", ("adapt.wdass.contrast=prototype-softmax",), "coarse"),
)
ABLATION = (
    ("ablation_no_contrast", "without prototype contrast", ("adapt.wdass.contrast_weight=0",)),
    ("ablation_no_image", "without image-level loss", ("adapt.wdass.image_weight=0",)),
    ("ablation_no_mix", "without ClassMix (no mean-teacher pseudo-label CE)", ("adapt.wdass.mix=false",)),
    ("ablation_weak_ce_only", "none of the three (source CE + weak-label CE only)",
     ("adapt.wdass.contrast_weight=0", "adapt.wdass.image_weight=0", "adapt.wdass.mix=false")),
)
#: Images through the student per step at batch 8 (WDASS: source, mixed and target; the
#: image-label kind adds the whole target image; its mean teacher also sees the 8 target images).
IMAGES_PER_STEP = {"self_training": "16", "self_training_proac": "16", "wdass_image": "32 + 8",
                   "wdass_point": "24 + 8", "wdass_coarse": "24 + 8", "wdass_coarse_softmax": "24 + 8",
                   "ablation_no_contrast": "24 + 8", "ablation_no_image": "24 + 8", "ablation_no_mix": "16 + 8",
                   "ablation_weak_ce_only": "16 + 8"}


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def result_writer(table: str, row: str, seed: int, run_dir: Path):
    """``on_done`` of a training job: its last evaluation as ``OUT/results/<run>.json``."""

    def write(job: Job, seconds: float) -> None:
        stored = last_eval(run_dir)
        scale = 1.0 if stored.get("unit") == "%" else 100.0
        metrics = {}
        for dataset, values in stored["results"].items():
            metrics[dataset] = {"miou": scale * values["mIoU"],
                                "per_class_iou": {c: None if v is None else scale * v
                                                  for c, v in zip(values["classes"], values["IoU"])}}
        record = {"run": job.name, "table": table, "row": row, "seed": seed, "iteration": stored["iteration"],
                  "unit": "%", "metrics": metrics, "seconds": seconds}
        job.done_marker.parent.mkdir(parents=True, exist_ok=True)
        job.done_marker.write_text(json.dumps(record, indent=1))

    return write


def build_jobs(args: argparse.Namespace) -> list[Job]:
    """The whole plan, in the order the scheduler should prefer among ready jobs."""
    out, results = args.out, args.out / "results"
    s_iters, t_iters = args.source_iters, args.adapt_iters
    target = ["--dataset", "synthetic-target", "--option", f"size={SIZE}", "--option", f"length={args.target_length}"]
    common = [*sets("data.num_workers=0", "eval.batch_size=20", "train.log_interval=50", "train.tensorboard=false"),
              "--device", args.device, "--threads", str(args.threads), "--resume", "auto"]

    def stage1(seed: int) -> list[str]:
        return sets(f"schedule.max_iters={s_iters}", f"schedule.warmup_iters={max(1, s_iters // 20)}",
                    f"train.eval_interval={s_iters}", f"train.checkpoint_interval={min(160, s_iters)}",
                    f"train.seed={seed}")

    def stage2(seed: int) -> list[str]:
        source = out / "runs" / f"sup_ce_s{seed}" / "last.pth"
        return sets(f"schedule.max_iters={t_iters}", f"schedule.warmup_iters={max(1, t_iters // 10)}",
                    f"train.eval_interval={t_iters}", f"train.checkpoint_interval={min(80, t_iters)}",
                    f"train.seed={seed}", f"adapt.init_checkpoint={source}",
                    f"adapt.target.options.length={args.target_length}", "adapt.target.options.cache=true")

    def train_job(table: str, row: str, seed: int, config: str, extra: list[str]) -> Job:
        name = f"{'sup' if table == 'supervised' else table}_{row}_s{seed}"
        run_dir = out / "runs" / name
        marker = results / f"{name}.json"
        return Job(name, contraseg("train", str(CONFIGS / config), "--run-dir", str(run_dir), *stage1(seed),
                                   *extra, *common),
                   marker, on_done=result_writer(table, row, seed, run_dir))

    def adapt_job(table: str, row: str, seed: int, config: str, extra: list[str], labels: str | None) -> Job:
        name = f"{row}_s{seed}"
        run_dir = out / "runs" / name
        after = [f"sup_ce_s{seed}"]
        if labels == "pseudo":
            folder = out / "pseudo" / f"s{seed}"
            extra = [*sets(f"adapt.pseudo_labels.dir={folder}"), *extra]
            after.append(f"pseudo_s{seed}")
        elif labels is not None:
            extra = [*sets(f"adapt.wdass.weak_labels={out / 'weak' / labels}",
                           f"adapt.wdass.warmup_iters={max(1, t_iters // 10)}"), *extra]
            after.append(f"weak_{labels}")
        return Job(name, adapt(str(CONFIGS / config), "--run-dir", str(run_dir), *stage2(seed), *extra, *common),
                   results / f"{name}.json", after=after, on_done=result_writer(table, row, seed, run_dir))

    jobs = [Job(f"weak_{kind}", contraseg("weak-labels", "--kind", kind, *target, "--seed", "0",
                                           "--out", str(out / "weak" / kind)), out / "weak" / kind / "summary.json")
            for kind in WEAK_KINDS]
    jobs += [train_job("supervised", "ce", seed, "synthetic_source_only.yaml", []) for seed in args.seeds]
    for seed in args.seeds:
        labels = out / "pseudo" / f"s{seed}"
        jobs.append(Job(f"pseudo_s{seed}", contraseg(
            "pseudo-label", str(out / "runs" / f"sup_ce_s{seed}" / "last.pth"), *target, "--out", str(labels),
            "--threshold", "0.9", "--class-percentile", "0.5", "--batch-size", "20", "--num-workers", "0",
            "--device", args.device), labels / "summary.json", after=[f"sup_ce_s{seed}"]))
    for seed in args.seeds:
        jobs += [adapt_job("da", row, seed, config, sets(*extra), labels)
                 for row, _, config, extra, labels in ADAPTATION]
        jobs += [train_job("supervised", row, seed, config, []) for row, _, config in SUPERVISED[1:]]
        jobs.append(train_job("da", "oracle", seed, "synthetic_oracle.yaml",
                              sets(f"data.train.options.length={args.target_length}", "data.train.options.cache=true")))
    for seed in args.ablation_seeds:
        jobs += [adapt_job("ablation", row, seed, "synthetic_wdass_coarse.yaml", sets(*extra), "coarse")
                 for row, _, extra in ABLATION]
    return jobs


# --------------------------------------------------------------------------- tables


def load_results(out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """``{row: {seed: record}}`` from ``OUT/results/*.json`` (supervised rows keyed ``sup_<row>``)."""
    by_row: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted((out / "results").glob("*.json")):
        record = json.loads(path.read_text())
        key = f"sup_{record['row']}" if record["table"] == "supervised" else record["row"]
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
    for row, title, _ in SUPERVISED:
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


def pseudo_label_quality(out: Path, seeds: list[int], length: int) -> str:
    """Kept share and accuracy of each seed's pseudo labels against target train's truth."""
    from contraseg.data import build_dataset
    from contraseg.data.pseudo_labels import PseudoLabelDir

    dataset = build_dataset("synthetic-target", split="train", size=[64, 128], length=length, cache=True)
    parts = []
    for seed in seeds:
        if not (out / "pseudo" / f"s{seed}" / "summary.json").exists():
            continue
        folder = PseudoLabelDir(out / "pseudo" / f"s{seed}")
        kept = correct = total = 0
        for index in range(len(dataset)):
            truth = dataset.load_ground_truth(index)
            label = folder.load(dataset.sample_name(index))
            mask = label != 255
            kept += int(mask.sum())
            correct += int((label[mask] == truth[mask]).sum())
            total += label.size
        parts.append(f"seed {seed}: {100 * kept / total:.0f}% of pixels kept, {100 * correct / max(kept, 1):.1f}% "
                     f"of them correct")
    return "; ".join(parts)


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(args: argparse.Namespace, wall: float | None, timings: dict[str, float]) -> str:
    by_row = load_results(args.out)
    text = ["## Supervised (train on synthetic-source, evaluate on source val)", "",
            *supervised_table(by_row, args.seeds), "",
            "Per-class IoU on source val (mean over seeds):", "",
            *per_class_table(by_row, [(f"sup_{row}", title.split(" (")[0]) for row, title, _ in SUPERVISED],
                             SOURCE, args.seeds), "",
            "## Domain adaptation (synthetic-source -> synthetic-target, evaluate on target val)", "",
            *da_table(by_row, args.seeds), ""]
    quality = pseudo_label_quality(args.out, args.seeds, args.target_length)
    if quality:
        text += [f"Pseudo labels of target train (source-only model, class-wise median confidence capped at 0.9): "
                 f"{quality}.", ""]
    da_rows = [("sup_ce", "source-only"), ("finetune", "source-only +T"), ("self_training_proac", "ST + ProAC"),
               ("wdass_image", "WDASS image"), ("wdass_point", "WDASS point"), ("wdass_coarse", "WDASS coarse"),
               ("oracle", "oracle")]
    text += ["Per-class IoU on target val (mean over seeds):", "", *per_class_table(by_row, da_rows, TARGET, args.seeds),
             ""]
    if args.ablation_seeds:
        text += ["## WDASS ablation (coarse labels)", "", *ablation_table(by_row, args.ablation_seeds), ""]
    skipped = f"; rows left out: {', '.join(args.skip_rows)}" if getattr(args, "skip_rows", None) else ""
    settings = (f"Settings: seeds {args.seeds} (ablation {args.ablation_seeds or 'not run'}{skipped}); {args.source_iters} supervised / "
                f"oracle iterations; T = {args.adapt_iters} adaptation iterations; {args.target_length} target "
                f"train images; device {args.device}; {args.jobs} runs at once with {args.threads} thread(s) each; "
                f"commit {commit()}; {platform.node()}.")
    if wall is not None:
        settings += (f" This invocation: {wall / 60:.1f} min wall-clock for {len(timings)} jobs "
                     f"({sum(timings.values()) / 60:.1f} min of job time).")
    text.append(settings)
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "results_tables", help="output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--ablation-seeds", type=int, nargs="*", default=[0], help="ablation seeds (default 0)")
    parser.add_argument("--source-iters", type=int, default=640, help="supervised / oracle iterations (default 640)")
    parser.add_argument("--adapt-iters", type=int, default=160, help="adaptation iterations T (default 160)")
    parser.add_argument("--target-length", type=int, default=1000, help="synthetic-target train images (default 1000)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of every run (default cpu)")
    parser.add_argument("--skip-rows", nargs="*", default=[], metavar="ROW",
                        help="leave these rows out of the plan, e.g. wdass_coarse_softmax (every seed)")
    parser.add_argument("--render-only", action="store_true",
                        help="print the tables from OUT/results/*.json without running anything")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    wall, timings = None, {}
    if not args.render_only:
        jobs = build_jobs(args)
        skipped = {f"{row}_s{seed}" for row in args.skip_rows for seed in args.seeds}
        skipped |= {f"sup_{name}" for name in skipped} | {f"da_{name}" for name in skipped}
        jobs = [job for job in jobs if job.name not in skipped]
        tick = time.perf_counter()
        timings = schedule(jobs, args.jobs, args.out / "logs", threads=args.threads)
        wall = time.perf_counter() - tick
    text = render(args, wall, timings)
    if not args.render_only:  # a re-render only prints: OUT/results.md keeps the run's wall time
        (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
