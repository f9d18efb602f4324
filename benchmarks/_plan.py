"""The results runner's job graph: every run of docs/results.md's tables, with its dependencies.

Dependencies (a job starts only after these finished): every adaptation run after that
seed's supervised cross-entropy run ``sup_ce_s<seed>`` (it starts from its ``last.pth``);
self-training after ``pseudo_s<seed>`` (labels of the CE model); WDASS after
``weak_<kind>``; ProAC stage 2 ``st2_<stage1>[_proac]_s<seed>`` after ``sup_ce_s<seed>``
(its init) and ``pseudo_<stage1>_s<seed>``, which runs after the stage-1 run
``<stage1>_s<seed>``; robustness evaluations ``rob_<model>_<perturbation>_s<seed>`` and the
prototype diversity ``div_protoseg_s<seed>`` after the supervised run they read.

Every training keeps its ``last.pth`` (the robustness evaluations, the pseudo labels and
the second stage read it). Each job's done marker is its result JSON in ``OUT/results/``
(``--resume auto`` continues an interrupted training).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from _jobs import ROOT, Job, adapt, contraseg, last_eval
from _rows import (ABLATION, ADAPTATION, MEMORY_SAMPLING, PERTURBATIONS, ROBUST_MODELS, SIZE, STAGE2,
                   SUPERVISED, SUPERVISED_DELAYED, UDA_BASELINES, WDASS_DELAYED, WEAK_KINDS)

CONFIGS = ROOT / "configs"


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def metrics_of(stored: dict[str, Any]) -> dict[str, Any]:
    """``{dataset: {"miou", "per_class_iou"}}`` in percent from an ``eval`` JSON."""
    scale = 1.0 if stored.get("unit") == "%" else 100.0
    return {dataset: {"miou": scale * values["mIoU"],
                      "per_class_iou": {c: None if v is None else scale * v
                                        for c, v in zip(values["classes"], values["IoU"])}}
            for dataset, values in stored["results"].items()}


def run_environment() -> dict[str, str]:
    """What besides the code and seed moves a run's numbers: the same commit and seed give
    the same run on one machine, but another processor or torch build rounds differently
    and 640 iterations amplify it (docs/results.md, section 4)."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu,
           "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name(0)
    return env


def write_record(marker: Path, record: dict[str, Any]) -> None:
    """The job's result JSON, with the environment that produced it (:func:`run_environment`)."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**record, "environment": run_environment()}, indent=1))


def result_writer(table: str, row: str, seed: int, run_dir: Path):
    """``on_done`` of a training job: its last evaluation as ``OUT/results/<run>.json``."""

    def write(job: Job, seconds: float) -> None:
        stored = last_eval(run_dir)
        write_record(job.done_marker, {"run": job.name, "table": table, "row": row, "seed": seed,
                                       "iteration": stored["iteration"], "unit": "%",
                                       "metrics": metrics_of(stored), "seconds": seconds})

    return write


def robustness_writer(model: str, pkey: str, spec: str | None, seed: int, eval_json: Path):
    """``on_done`` of a ``contraseg eval [--perturb SPEC]`` job: its metrics as a result record."""

    def write(job: Job, seconds: float) -> None:
        stored = json.loads(eval_json.read_text())
        write_record(job.done_marker, {"run": job.name, "table": "robustness", "row": model, "key": f"rob_{model}_{pkey}",
                                       "perturbation": pkey, "spec": spec, "recorded": stored.get("perturbation"),
                                       "seed": seed, "iteration": stored["iteration"], "unit": "%",
                                       "metrics": metrics_of(stored), "seconds": seconds})

    return write


def diversity_writer(seed: int, viz_json: Path):
    """``on_done`` of the diversity job: per-class within-class cosines and prototype use."""

    def write(job: Job, seconds: float) -> None:
        stored = json.loads(viz_json.read_text())
        per_class = stored["per_class"]
        write_record(job.done_marker, {"run": job.name, "table": "diversity", "row": "protoseg", "key": "div_protoseg",
                                       "seed": seed, "iteration": stored["iteration"], "dataset": stored["dataset"],
                                       "images": stored["images"], "per_class": per_class, "seconds": seconds})

    return write


def build_jobs(args: argparse.Namespace) -> list[Job]:
    """The whole plan, in the order the scheduler should prefer among ready jobs."""
    out, results = args.out, args.out / "results"
    s_iters, t_iters = args.source_iters, args.adapt_iters
    source_length = getattr(args, "source_length", 1000)
    target = ["--dataset", "synthetic-target", "--option", f"size={SIZE}", "--option", f"length={args.target_length}"]
    common = [*sets("data.num_workers=0", "eval.batch_size=20", "train.log_interval=50", "train.tensorboard=false",
                    f"data.train.options.length={source_length}"),
              "--device", args.device, "--threads", str(args.threads), "--resume", "auto"]

    def stage1(seed: int) -> list[str]:
        return sets(f"schedule.max_iters={s_iters}", f"schedule.warmup_iters={max(1, s_iters // 20)}",
                    f"train.eval_interval={s_iters}", f"train.checkpoint_interval={min(160, s_iters)}",
                    f"train.seed={seed}")

    def source_model(seed: int) -> Path:
        return out / "runs" / f"sup_ce_s{seed}" / "last.pth"

    def stage2(seed: int) -> list[str]:
        return sets(f"schedule.max_iters={t_iters}", f"schedule.warmup_iters={max(1, t_iters // 10)}",
                    f"train.eval_interval={t_iters}", f"train.checkpoint_interval={min(80, t_iters)}",
                    f"train.seed={seed}", f"adapt.init_checkpoint={source_model(seed)}",
                    f"adapt.target.options.length={args.target_length}", "adapt.target.options.cache=true")

    def train_job(table: str, row: str, seed: int, config: str, extra: list[str]) -> Job:
        name = f"{'sup' if table == 'supervised' else table}_{row}_s{seed}"
        run_dir = out / "runs" / name
        return Job(name, contraseg("train", str(CONFIGS / config), "--run-dir", str(run_dir), *stage1(seed),
                                   *extra, *common),
                   results / f"{name}.json", on_done=result_writer(table, row, seed, run_dir),
                   info={"run_dir": run_dir})

    def adapt_job(table: str, row: str, seed: int, config: str, extra: list[str], labels: str | None,
                  pseudo: str = "pseudo") -> Job:
        name = f"{row}_s{seed}"
        run_dir = out / "runs" / name
        after = [f"sup_ce_s{seed}"]
        if labels == "pseudo":
            extra = [*sets(f"adapt.pseudo_labels.dir={out / pseudo / f's{seed}'}"), *extra]
            after.append(f"{pseudo}_s{seed}")
        elif labels is not None:
            extra = [*sets(f"adapt.wdass.weak_labels={out / 'weak' / labels}"), *extra]
            after.append(f"weak_{labels}")
        return Job(name, adapt(str(CONFIGS / config), "--run-dir", str(run_dir), *stage2(seed), *extra, *common),
                   results / f"{name}.json", after=after, on_done=result_writer(table, row, seed, run_dir),
                   info={"run_dir": run_dir})

    def pseudo_job(folder: str, checkpoint: Path, seed: int, after: str) -> Job:
        labels = out / folder / f"s{seed}"
        return Job(f"{folder}_s{seed}", contraseg(
            "pseudo-label", str(checkpoint), *target, "--out", str(labels), "--overwrite", "--threshold", "0.9",
            "--class-percentile", "0.5", "--batch-size", "20", "--num-workers", "0", "--device", args.device),
            labels / "summary.json", after=[after])

    ramp = f"adapt.wdass.warmup_iters={max(1, t_iters // 10)}"
    jobs = [Job(f"weak_{kind}", contraseg("weak-labels", "--kind", kind, *target, "--seed", "0",
                                           "--out", str(out / "weak" / kind)), out / "weak" / kind / "summary.json")
            for kind in WEAK_KINDS]
    jobs += [train_job("supervised", "ce", seed, "synthetic_source_only.yaml", []) for seed in args.seeds]
    jobs += [pseudo_job("pseudo", source_model(seed), seed, f"sup_ce_s{seed}") for seed in args.seeds]
    for seed in args.seeds:
        jobs += [adapt_job("da", row, seed, config, sets(*extra, *((ramp,) if labels not in (None, "pseudo") else ())),
                           labels) for row, _, config, extra, labels in ADAPTATION]
        jobs += [train_job("supervised", row, seed, config, []) for row, _, config in SUPERVISED[1:]]
        jobs += [train_job("supervised", row, seed, config, sets(*extra(s_iters)))
                 for row, _, config, extra in (*SUPERVISED_DELAYED, *MEMORY_SAMPLING)]
        jobs.append(train_job("da", "oracle", seed, "synthetic_oracle.yaml",
                              sets(f"data.train.options.length={args.target_length}", "data.train.options.cache=true")))
        jobs += [adapt_job("uda", row, seed, config, [], None) for row, _, config in UDA_BASELINES]
        jobs += [adapt_job("wdass_delayed", row, seed, f"synthetic_{base}.yaml",
                           sets(f"adapt.wdass.start_iter={t_iters // 15}", "adapt.wdass.warmup_iters=0"),
                           base.split("_")[1]) for row, _, base in WDASS_DELAYED]
        for first in dict.fromkeys(s for s, *_ in STAGE2):
            jobs.append(pseudo_job(f"pseudo_{first}", out / "runs" / f"{first}_s{seed}" / "last.pth", seed,
                                   f"{first}_s{seed}"))
        jobs += [adapt_job("stage2", row, seed, config, [], "pseudo", pseudo=f"pseudo_{first}")
                 for first, row, _, config in STAGE2]
        jobs += robustness_jobs(args, seed) + [diversity_job(args, seed)]
    for seed in args.ablation_seeds:
        jobs += [adapt_job("ablation", row, seed, "synthetic_wdass_coarse.yaml", sets(*extra, ramp), "coarse")
                 for row, _, extra in ABLATION]
    read = {dep for job in jobs for dep in job.after}
    for job in jobs:  # a training whose last.pth a later job reads is done only while that file exists
        if job.name in read and "run_dir" in job.info:
            job.outputs = [job.info["run_dir"] / "last.pth"]
    return jobs


def robustness_jobs(args: argparse.Namespace, seed: int) -> list[Job]:
    """``contraseg eval`` of each robustness model's ``last.pth`` (seed ``seed``), clean and perturbed
    (perturbation seed 0: every model sees the same perturbed images), on the config's val sets."""
    jobs = []
    for model in ROBUST_MODELS:
        checkpoint = args.out / "runs" / f"sup_{model}_s{seed}" / "last.pth"
        for pkey, spec, _ in PERTURBATIONS:
            name = f"rob_{model}_{pkey}_s{seed}"
            eval_json = args.out / "robustness" / f"{name}.eval.json"
            perturb = ["--perturb", spec, "--perturb-seed", "0"] if spec else []
            jobs.append(Job(name, contraseg("eval", str(checkpoint), *perturb, "--out", str(eval_json),
                                            "--num-workers", "0", "--device", args.device),
                            args.out / "results" / f"{name}.json", after=[f"sup_{model}_s{seed}"],
                            on_done=robustness_writer(model, pkey, spec, seed, eval_json)))
    return jobs


def diversity_job(args: argparse.Namespace, seed: int) -> Job:
    """``benchmarks/prototype_diversity_json.py`` on the ProtoSeg run: within-class cosines, and the
    prototypes that win pixels of their class over the first ``--diversity-images`` source val images."""
    out = args.out / "diversity" / f"protoseg_s{seed}.json"
    images = getattr(args, "diversity_images", 100)
    script = str(ROOT / "benchmarks" / "prototype_diversity_json.py")
    return Job(f"div_protoseg_s{seed}", [sys.executable, script, str(args.out / "runs" / f"sup_protoseg_s{seed}" / "last.pth"),
                                         "--images", str(images), "--device", args.device, "--out", str(out)],
               args.out / "results" / f"div_protoseg_s{seed}.json", after=[f"sup_protoseg_s{seed}"],
               on_done=diversity_writer(seed, out))
