"""docs/results.md's tables on the synthetic benchmark: every method, several seeds.

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

**Issue 19** (the papers' own structure; rows in ``_rows.py``, the job graph in ``_plan.py``):
pixel contrast and memory with ContrastiveSeg's released hard start (off for the first
eighth; the memory row with the released loss: weight 1, t 0.07, 1 view, 10 pixels per
update) against cross-entropy and the from-iteration-0 rows; WDASS with its released hard
start (terms off for the first fifteenth, no ramp) against WDASS ramped in from 0 and
source-only +T; DACS and FDA from the same CE model, against source-only +T; ProAC's UDA as
released: offline pseudo labels of the DACS / FDA model of the same seed, then self-training
with and without ProAC, both initialised from the CE model stage 1 started from (the release
initialises stage 2 from ImageNet, which this benchmark has not; the stage-1 model gives only
the pseudo labels); ``contraseg eval --perturb`` of the supervised CE, ProAC, pixel contrast
(both starts) and ProtoSeg checkpoints (resolution x0.5 / x1.5, night 0.5, gamma 2, 25%
masked, perturbation seed 0), paired against CE; the ProtoSeg prototypes' within-class
cosines and use (``prototype_diversity_json.py``). ``--render-only`` lists the runs whose
result JSON is missing; ``--only ISSUE19`` runs just these rows and their baselines.

Tiny check of the whole graph (21 minutes on 2 busy cores for one seed, numbers meaningless; 15
adaptation iterations so that the WDASS start, 15 // 15, is not 0)::

    .venv/bin/python benchmarks/results_tables.py --out /tmp/rt_tiny --seeds 0 --ablation-seeds \
        --source-iters 8 --adapt-iters 15 --target-length 16 --source-length 16 --diversity-images 4

Usage::

    .venv/bin/python benchmarks/results_tables.py --out runs/results_tables
    .venv/bin/python benchmarks/results_tables.py --out runs/results_tables19 --only ISSUE19
    .venv/bin/python benchmarks/results_tables.py --out docs/results_data/gpu_640 --render-only
"""

from __future__ import annotations

import argparse
import fnmatch
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _jobs import ROOT, Job, schedule  # noqa: E402
from _plan import build_jobs  # noqa: E402
from _rows import ABLATION, ADAPTATION, SOURCE, SUPERVISED, SUPERVISED_DELAYED, TARGET  # noqa: E402
from _tables import ablation_table, da_table, load_results, per_class_table, supervised_table  # noqa: E402
from _tables19 import (diversity_table, hard_start_table, memory_sampling_table, missing_runs,
                       pseudo_label_quality,  # noqa: E402
                       robustness_tables, stage2_table, uda_table, wdass_delayed_table)

__all__ = ["ABLATION", "ADAPTATION", "ISSUE19", "SOURCE", "SUPERVISED", "SUPERVISED_DELAYED", "TARGET", "build_jobs", "main",
           "plan", "render"]


#: ``--only ISSUE19``: the issue-19 rows and the rows they are paired with (no oracle, ablation,
#: CE-label self-training or prototype-softmax WDASS).
ISSUE19 = ("sup_*", "finetune_*", "wdass_image_s[0-9]*", "wdass_point_s[0-9]*", "wdass_coarse_s[0-9]*",
           "wdass_*_delayed_*",
           "dacs_*", "fda_*", "st2_*", "rob_*", "div_*")


def plan(args: argparse.Namespace) -> list[Job]:
    """:func:`build_jobs` without the ``--skip-rows`` (every seed of each); with ``--only``, just the
    jobs whose names match one of its patterns and the jobs they need."""
    skip = getattr(args, "skip_rows", None) or []
    skipped = {f"{row}_s{seed}" for row in skip for seed in (*args.seeds, *args.ablation_seeds)}
    skipped |= {f"sup_{name}" for name in skipped} | {f"da_{name}" for name in skipped}
    jobs = [job for job in build_jobs(args) if job.name not in skipped]
    only = getattr(args, "only", None)
    if only:
        by_name = {job.name: job for job in jobs}
        todo = [name for name in by_name if any(fnmatch.fnmatchcase(name, pattern) for pattern in only)]
        keep: set[str] = set()
        while todo:
            name = todo.pop()
            if name not in keep:
                keep.add(name)
                todo += [dep for dep in by_name[name].after if dep in by_name]
        jobs = [job for job in jobs if job.name in keep]
    return jobs


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
    seeds, length = args.seeds, args.target_length
    sup_rows = [(f"sup_{row}", title.split(" (")[0] + (", hard start" if "delayed" in row else ""))
                for row, title, *_ in (*SUPERVISED, *SUPERVISED_DELAYED)]
    text = ["## Supervised (train on synthetic-source, evaluate on source val)", "",
            *supervised_table(by_row, seeds), "",
            "Per-class IoU on source val (mean over seeds):", "", *per_class_table(by_row, sup_rows, SOURCE, seeds), "",
            "## Domain adaptation (synthetic-source -> synthetic-target, evaluate on target val)", "",
            *da_table(by_row, seeds), ""]
    quality = pseudo_label_quality(args.out, "pseudo", seeds, length)
    if quality:
        text += [f"Pseudo labels of target train (source-only model, class-wise median confidence capped at 0.9): "
                 f"{quality}.", ""]
    da_rows = [("sup_ce", "source-only"), ("finetune", "source-only +T"), ("self_training_proac", "ST + ProAC"),
               ("wdass_image", "WDASS image"), ("wdass_point", "WDASS point"), ("wdass_coarse", "WDASS coarse"),
               ("dacs", "DACS"), ("fda", "FDA"), ("oracle", "oracle")]
    text += ["Per-class IoU on target val (mean over seeds):", "", *per_class_table(by_row, da_rows, TARGET, seeds), ""]
    if args.ablation_seeds:
        text += ["## WDASS ablation (coarse labels)", "", *ablation_table(by_row, args.ablation_seeds), ""]
    text += ["## Released hard start: pixel contrast off for the first 1/8 of training (ContrastiveSeg 5000 / 40000)",
             "", *hard_start_table(by_row, seeds), "",
             "## Hard example sampling over the memory bank (ContrastiveSeg Sec. 3.3; issue 23), with the "
             "released memory loss and hard start", "", *memory_sampling_table(by_row, seeds), "",
             "## Released hard start: WDASS's contrast and image-level terms off for the first 1/15 "
             "(WDASS 10000 / 150000), from the CE model", "", *wdass_delayed_table(by_row, seeds), "",
             "## Standard UDA baselines from the same CE model: DACS and FDA", "", *uda_table(by_row, seeds), "",
             "## ProAC UDA as released: stage 1 an adapted model (DACS, FDA), its offline pseudo labels, stage 2 "
             "self-training with / without ProAC from the CE model", "", *stage2_table(by_row, seeds), ""]
    for stage1 in ("dacs", "fda"):
        quality = pseudo_label_quality(args.out, f"pseudo_{stage1}", seeds, length)
        if quality:
            text += [f"Pseudo labels of target train ({stage1.upper()} model, class-wise median confidence capped "
                     f"at 0.9): {quality}.", ""]
    text += ["## Robustness: source val mIoU under ProAC's perturbations (`contraseg eval --perturb`, seed 0)", "",
             *robustness_tables(by_row, seeds), "",
             "## ProtoSeg prototype diversity (10 prototypes per class; use counted on source val)", "",
             *diversity_table(by_row, seeds), "",
             missing_runs([job.name for job in plan(args) if job.done_marker.parent.name == "results"],
                          args.out / "results"), ""]
    skipped = f"; rows left out: {', '.join(args.skip_rows)}" if getattr(args, "skip_rows", None) else ""
    if getattr(args, "only", None):
        skipped += f"; only {' '.join(args.only)} and what they need"
    settings = (f"Settings: seeds {seeds} (ablation {args.ablation_seeds or 'not run'}{skipped}); {args.source_iters} "
                f"supervised / oracle iterations; T = {args.adapt_iters} adaptation iterations; {length} target "
                f"train images; {getattr(args, 'source_length', 1000)} source train images; device {args.device}; "
                f"{args.jobs} runs at once with {args.threads} thread(s) each; commit {commit()}; {platform.node()}.")
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
    parser.add_argument("--source-length", type=int, default=1000,
                        help="synthetic-source train images (default 1000; smaller only for a quick check)")
    parser.add_argument("--diversity-images", type=int, default=100,
                        help="source val images over which ProtoSeg's prototype use is counted (default 100)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of every run (default cpu)")
    parser.add_argument("--skip-rows", nargs="*", default=[], metavar="ROW",
                        help="leave these rows out of the plan, e.g. wdass_coarse_softmax (every seed)")
    parser.add_argument("--only", nargs="+", metavar="PATTERN",
                        help="run only the jobs whose names match these shell patterns (and the jobs they need), "
                             "e.g. 'st2_*' 'rob_*'; ISSUE19 = every issue-19 row and its baselines")
    parser.add_argument("--render-only", action="store_true",
                        help="print the tables from OUT/results/*.json without running anything")
    args = parser.parse_args(argv)
    if args.only and "ISSUE19" in args.only:
        args.only = [p for p in args.only if p != "ISSUE19"] + list(ISSUE19)
    for name in ("source_iters", "adapt_iters", "target_length", "source_length", "jobs", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    args.out = args.out.resolve()
    wall, timings = None, {}
    if not args.render_only:
        tick = time.perf_counter()
        timings = schedule(plan(args), args.jobs, args.out / "logs", threads=args.threads)
        wall = time.perf_counter() - tick
    text = render(args, wall, timings)
    if not args.render_only:  # a re-render only prints: OUT/results.md keeps the run's wall time
        (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
