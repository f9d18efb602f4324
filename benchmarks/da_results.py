"""Domain-adaptation evidence on the synthetic benchmark: every pipeline, several seeds.

Runs, for each seed, on ``synthetic-source`` -> ``synthetic-target`` with the demo's model
(MobileNetV3-Large + MLP head, 64 x 128 images, batch 8, AdamW 2e-3, no pretrained
weights) and reports the mean and standard deviation of the target mIoU
(``synthetic-target`` val):

=======================  ==============================================================
source-only              ``configs/synthetic_source_only.yaml``, ``--source-iters`` its
source-only +T           the source-only model trained ``--adapt-iters`` more on the source
                         alone (``synthetic_source_only_finetune.yaml``): the baseline of
                         every row below, which all start from the same weights and train
                         the same number of iterations (not the same FLOPs: see the
                         images-per-step column)
self-training            pseudo labels of target train from the source-only model (class-
                         wise median confidence capped at 0.9), then source CE + target
                         pseudo-label CE (``synthetic_self_training.yaml``)
self-training + ProAC    the same + ProAC (0.1) over both domains (``..._proac.yaml``)
WDASS image/point/coarse ``synthetic_wdass_{image,point,coarse}.yaml`` with weak labels of
                         target train made by ``contraseg weak-labels`` (seed 0)
oracle                   ``synthetic_oracle.yaml``: labelled target train, ``--source-iters``
                         iterations from scratch
oracle +T                the source-only model trained ``--adapt-iters`` more on labelled
                         target train (``synthetic_oracle_finetune.yaml``): the
                         iteration-matched upper reference of the adaptation rows
=======================  ==============================================================

Each run is a subprocess (``contraseg train``, ``contraseg pseudo-label``, ``contraseg
weak-labels``, ``python -m contraseg.adapt``) with one torch thread and no loader
workers; ``--jobs`` of them run at once. The script is resumable: a run whose result
JSON exists (``OUT/results/<run>.json``) or a label folder whose ``summary.json`` exists
is skipped, and an interrupted training continues from its ``last.pth``. At the end it
writes ``OUT/table.md`` (the table, per-seed values and timings) and prints it.

Usage::

    .venv/bin/python benchmarks/da_results.py --out runs/da_results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SIZE = "[64,128]"
WEAK_KINDS = ("image", "point", "coarse")
#: Images through the student per step at batch 8 (WDASS: source, mixed and target; its
#: teacher also sees the 8 target images).
IMAGES_PER_STEP = {"self_training": "16", "self_training_proac": "16", "wdass_image": "24 + 8",
                   "wdass_point": "24 + 8", "wdass_coarse": "24 + 8"}
ROWS = (  # (row key, title)
    ("source_only", "source-only"),
    ("finetune", "source-only, +T iterations"),
    ("self_training", "self-training"),
    ("self_training_proac", "self-training + ProAC"),
    ("wdass_image", "WDASS, image labels"),
    ("wdass_point", "WDASS, point labels"),
    ("wdass_coarse", "WDASS, coarse labels"),
    ("oracle", "target-supervised (oracle), from scratch"),
    ("oracle_finetune", "target-supervised, +T iterations from source-only"),
)


@dataclass
class Job:
    """One subprocess: ``argv``, the jobs it waits for, and how to tell it is done."""

    name: str
    argv: list[str]
    done_marker: Path
    after: list[str] = field(default_factory=list)
    row: str | None = None  # training runs: the table row
    seed: int | None = None
    run_dir: Path | None = None


def contraseg(*args: str) -> list[str]:
    return [sys.executable, "-m", "contraseg", *args]


def adapt(*args: str) -> list[str]:
    return [sys.executable, "-m", "contraseg.adapt", *args]


def build_jobs(args: argparse.Namespace) -> list[Job]:
    """The whole plan as a list of jobs with dependencies."""
    out = args.out
    target = ["--dataset", "synthetic-target", "--option", f"size={SIZE}", "--option", f"length={args.target_length}"]
    jobs = [Job(f"weak_{kind}", contraseg("weak-labels", "--kind", kind, *target, "--seed", "0",
                                           "--out", str(out / "weak" / kind)), out / "weak" / kind / "summary.json")
            for kind in WEAK_KINDS]
    s_iters, t_iters = args.source_iters, args.adapt_iters
    warmup = max(1, t_iters // 10)
    common = ["--set", "data.num_workers=0", "--set", "eval.batch_size=8", "--set", "train.log_interval=25",
              "--device", "cpu", "--resume", "auto"]
    for seed in args.seeds:
        stage1 = ["--set", f"schedule.max_iters={s_iters}", "--set", f"schedule.warmup_iters={min(20, s_iters)}",
                  "--set", f"train.eval_interval={s_iters}",
                  "--set", f"train.checkpoint_interval={min(100, s_iters)}", "--set", f"train.seed={seed}"]
        source_dir = out / "runs" / f"source_only_s{seed}"
        jobs.append(Job(f"source_only_s{seed}", contraseg("train", str(CONFIGS / "synthetic_source_only.yaml"),
                                                          "--run-dir", str(source_dir), *stage1, *common),
                        out / "results" / f"source_only_s{seed}.json", row="source_only", seed=seed, run_dir=source_dir))
        oracle_dir = out / "runs" / f"oracle_s{seed}"
        jobs.append(Job(f"oracle_s{seed}", contraseg("train", str(CONFIGS / "synthetic_oracle.yaml"), "--run-dir",
                                                     str(oracle_dir), *stage1, "--set",
                                                     f"data.train.options.length={args.target_length}", *common),
                        out / "results" / f"oracle_s{seed}.json", row="oracle", seed=seed, run_dir=oracle_dir))
        labels = out / "pseudo" / f"s{seed}"
        jobs.append(Job(f"pseudo_s{seed}", contraseg("pseudo-label", str(source_dir / "last.pth"), *target, "--out",
                                                     str(labels), "--threshold", "0.9", "--class-percentile", "0.5",
                                                     "--batch-size", "8", "--num-workers", "0", "--device", "cpu"),
                        labels / "summary.json", after=[f"source_only_s{seed}"]))
        stage2 = ["--set", f"schedule.max_iters={t_iters}", "--set", f"schedule.warmup_iters={warmup}",
                  "--set", f"train.eval_interval={t_iters}", "--set", f"train.checkpoint_interval={min(50, t_iters)}",
                  "--set", f"train.seed={seed}", "--set", f"adapt.init_checkpoint={source_dir / 'last.pth'}",
                  "--set", f"adapt.target.options.length={args.target_length}", "--threads", "1"]
        runs: list[tuple[str, str, list[str], list[str]]] = [
            ("finetune", "synthetic_source_only_finetune.yaml", [], []),
            ("oracle_finetune", "synthetic_oracle_finetune.yaml",
             ["--set", f"data.train.options.length={args.target_length}"], []),
            ("self_training", "synthetic_self_training.yaml",
             ["--set", f"adapt.pseudo_labels.dir={labels}"], [f"pseudo_s{seed}"]),
            ("self_training_proac", "synthetic_self_training_proac.yaml",
             ["--set", f"adapt.pseudo_labels.dir={labels}"], [f"pseudo_s{seed}"]),
        ]
        for kind in WEAK_KINDS:
            runs.append((f"wdass_{kind}", f"synthetic_wdass_{kind}.yaml",
                         ["--set", f"adapt.wdass.weak_labels={out / 'weak' / kind}",
                          "--set", f"adapt.wdass.warmup_iters={warmup}"], [f"weak_{kind}"]))
        for row, config, extra, after in runs:
            run_dir = out / "runs" / f"{row}_s{seed}"
            jobs.append(Job(f"{row}_s{seed}", adapt(str(CONFIGS / config), "--run-dir", str(run_dir), *stage2, *extra,
                                                    *common),
                            out / "results" / f"{row}_s{seed}.json", after=[f"source_only_s{seed}", *after], row=row,
                            seed=seed, run_dir=run_dir))
    return jobs


def last_eval(run_dir: Path) -> dict[str, Any]:
    """The metrics of the run's last evaluation (``eval/iter_*.json``)."""
    files = sorted((run_dir / "eval").glob("iter_*.json"))
    if not files:
        raise FileNotFoundError(f"no evaluation in {run_dir / 'eval'}")
    return json.loads(files[-1].read_text())


def write_result(job: Job, seconds: float) -> None:
    """``OUT/results/<run>.json``: target / source mIoU and per-class IoU of the last evaluation."""
    assert job.run_dir is not None
    stored = last_eval(job.run_dir)
    results = stored["results"]
    scale = 0.01 if stored.get("unit") == "%" else 1.0  # eval/iter_*.json store percent; kept as fractions here
    target = results["synthetic-target/val"]
    source = results.get("synthetic-source/val", {}).get("mIoU")
    record = {"run": job.name, "row": job.row, "seed": job.seed, "iteration": stored["iteration"],
              "target_mIoU": scale * target["mIoU"], "source_mIoU": None if source is None else scale * source,
              "IoU": {c: None if v is None else scale * v for c, v in zip(target["classes"], target["IoU"])},
              "seconds": seconds}
    job.done_marker.parent.mkdir(parents=True, exist_ok=True)
    job.done_marker.write_text(json.dumps(record, indent=1))


def run_job(job: Job, logs: Path) -> float:
    """Run one job's subprocess (one torch thread), logging to ``logs/<name>.log``; returns seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    logs.mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    with open(logs / f"{job.name}.log", "w") as log:
        log.write(" ".join(job.argv) + "\n")
        log.flush()
        code = subprocess.run(job.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    seconds = time.perf_counter() - tick
    if code != 0:
        raise RuntimeError(f"job {job.name} failed with exit code {code}; see {logs / (job.name + '.log')}")
    if job.row is not None:
        write_result(job, seconds)
    return seconds


def schedule(jobs: list[Job], parallel: int, logs: Path) -> dict[str, float]:
    """Run the jobs, at most ``parallel`` at once, each after its dependencies; skip finished ones."""
    by_name = {job.name: job for job in jobs}
    done = {job.name for job in jobs if job.done_marker.exists()}
    timings: dict[str, float] = {}
    pending = [job for job in jobs if job.name not in done]
    for name in sorted(done):
        print(f"skip {name}: {by_name[name].done_marker} exists", flush=True)
    running: dict[Future, Job] = {}
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        while pending or running:
            ready = [job for job in pending if all(dep in done for dep in job.after)]
            for job in ready[: parallel - len(running)]:
                pending.remove(job)
                print(f"start {job.name}", flush=True)
                running[pool.submit(run_job, job, logs)] = job
            if not running:
                missing = sorted({dep for job in pending for dep in job.after} - done - set(by_name))
                raise RuntimeError(f"jobs cannot start; unknown dependencies {missing}")
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                timings[job.name] = future.result()  # re-raises a failed job
                done.add(job.name)
                print(f"done  {job.name} in {timings[job.name]:.0f} s", flush=True)
    return timings


def pseudo_label_quality(out: Path, seeds: list[int], length: int) -> dict[int, dict[str, float]]:
    """Kept fraction and accuracy of the kept pseudo labels against the target ground truth."""
    from contraseg.data import build_dataset
    from contraseg.data.pseudo_labels import PseudoLabelDir

    dataset = build_dataset("synthetic-target", split="train", size=[64, 128], length=length)
    quality = {}
    for seed in seeds:
        folder = PseudoLabelDir(out / "pseudo" / f"s{seed}")
        kept = correct = total = 0
        for index in range(len(dataset)):
            truth = dataset.load_ground_truth(index)
            label = folder.load(dataset.sample_name(index))
            mask = label != 255
            kept += int(mask.sum())
            correct += int((label[mask] == truth[mask]).sum())
            total += label.size
        quality[seed] = {"kept": kept / total, "accuracy": correct / max(kept, 1)}
    return quality


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{100 * values[0]:.1f}" if values else "-"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def table(out: Path, seeds: list[int], quality: dict[int, dict[str, float]]) -> str:
    """The markdown table of target mIoU (mean ± sample std over seeds, and per seed)."""
    records = [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]
    by_row: dict[str, dict[int, dict[str, Any]]] = {}
    for record in records:
        by_row.setdefault(record["row"], {})[record["seed"]] = record
    baseline = [by_row.get("finetune", {}).get(s, {}).get("target_mIoU") for s in seeds]
    lines = ["| method | target mIoU (mean ± std) | per seed " + " / ".join(str(s) for s in seeds)
             + " | vs source-only +T (per seed) | images / step | minutes per run |",
             "|---|---|---|---|---|---|"]
    for row, title in ROWS:
        runs = by_row.get(row, {})
        values = [runs[s]["target_mIoU"] for s in seeds if s in runs]
        per_seed = " / ".join(f"{100 * runs[s]['target_mIoU']:.1f}" if s in runs else "-" for s in seeds)
        deltas = "-"
        if row not in ("source_only", "finetune", "oracle", "oracle_finetune") and all(b is not None for b in baseline) and values:
            deltas = " / ".join(f"{100 * (runs[s]['target_mIoU'] - b):+.1f}" for s, b in zip(seeds, baseline)
                                if s in runs)
        minutes = statistics.mean(r["seconds"] for r in runs.values()) / 60 if runs else float("nan")
        images = IMAGES_PER_STEP.get(row, "8")
        lines.append(f"| {title} | {mean_std(values)} | {per_seed} | {deltas} | {images} | {minutes:.1f} |")
    if quality:
        lines.append("")
        lines.append("Pseudo labels of target train (source-only model, class-wise median capped at 0.9): "
                     + "; ".join(f"seed {s}: {100 * q['kept']:.0f}% of pixels kept, {100 * q['accuracy']:.1f}% of them "
                                 f"correct" for s, q in quality.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "da_results", help="output folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--source-iters", type=int, default=300, help="source-only / oracle iterations (default 300)")
    parser.add_argument("--adapt-iters", type=int, default=100, help="adaptation iterations T (default 100)")
    parser.add_argument("--target-length", type=int, default=1000, help="synthetic-target train images (default 1000)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (default 2)")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    tick = time.perf_counter()
    timings = schedule(build_jobs(args), args.jobs, args.out / "logs")
    wall = time.perf_counter() - tick
    quality = pseudo_label_quality(args.out, args.seeds, args.target_length)
    text = table(args.out, args.seeds, quality)
    text += (f"\n\nSettings: seeds {args.seeds}, {args.source_iters} source-only / oracle iterations, "
             f"{args.adapt_iters} adaptation iterations, {args.target_length} target train images, "
             f"{args.jobs} runs at once. This invocation: {wall / 60:.1f} min wall-clock for {len(timings)} jobs "
             f"({sum(timings.values()) / 60:.1f} min of job time).")
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
