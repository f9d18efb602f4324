"""benchmarks/_jobs.py (the resumable job scheduler) and benchmarks/results_tables.py (the plan
and the tables of docs/results.md), without training anything."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _jobs  # noqa: E402
import results_tables  # noqa: E402


def python_job(name: str, code: str, marker: Path, after: list[str] | None = None) -> _jobs.Job:
    return _jobs.Job(name, [sys.executable, "-c", code], marker, after=after or [])


def test_schedule_runs_dependencies_first_and_skips_finished_jobs(tmp_path):
    a, b, c = (tmp_path / f"{n}.done" for n in "abc")
    # b and c fail unless a's marker is there when they start
    check_a = f"import pathlib, sys\nif not pathlib.Path({str(a)!r}).exists(): sys.exit(3)\n"
    jobs = [python_job("b", f"{check_a}pathlib.Path({str(b)!r}).touch()", b, after=["a"]),
            python_job("a", f"import pathlib; pathlib.Path({str(a)!r}).touch()", a),
            python_job("c", f"{check_a}pathlib.Path({str(c)!r}).touch()", c, after=["a", "b"])]
    timings = _jobs.schedule(jobs, parallel=2, logs=tmp_path / "logs")
    assert set(timings) == {"a", "b", "c"} and a.exists() and b.exists() and c.exists()
    assert (tmp_path / "logs" / "b.log").read_text().startswith(sys.executable)
    assert _jobs.schedule(jobs, parallel=2, logs=tmp_path / "logs") == {}  # every marker exists: nothing runs


def test_schedule_stops_at_a_failure_and_names_its_log(tmp_path):
    never = tmp_path / "never.done"
    jobs = [python_job("bad", "import sys; sys.exit(5)", tmp_path / "bad.done"),
            python_job("later", f"import pathlib; pathlib.Path({str(never)!r}).touch()", never, after=["bad"])]
    with pytest.raises(RuntimeError, match=r"job bad failed with exit code 5; see .*bad\.log"):
        _jobs.schedule(jobs, parallel=2, logs=tmp_path / "logs")
    assert not never.exists()


def test_schedule_refuses_unknown_dependencies_and_duplicate_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dependencies"):
        _jobs.schedule([python_job("x", "pass", tmp_path / "x", after=["nope"])], 1, tmp_path)
    with pytest.raises(ValueError, match="unique"):
        _jobs.schedule([python_job("x", "pass", tmp_path / "1"), python_job("x", "pass", tmp_path / "2")], 1, tmp_path)


def plan_args(tmp_path: Path, **kw) -> argparse.Namespace:
    values = dict(out=tmp_path, seeds=[0, 1, 2], ablation_seeds=[0], source_iters=640, adapt_iters=160,
                  target_length=1000, source_length=1000, diversity_images=100, jobs=2, threads=1, device="cpu",
                  skip_rows=[])
    values.update(kw)
    return argparse.Namespace(**values)


def test_the_plan_has_every_row_and_seed_and_adaptation_starts_from_that_seeds_source_model(tmp_path):
    jobs = results_tables.build_jobs(plan_args(tmp_path, ablation_seeds=[0, 2]))
    names = {job.name for job in jobs}
    assert len(names) == len(jobs)
    for seed in (0, 1, 2):
        assert {f"sup_{row}_s{seed}" for row, *_ in results_tables.SUPERVISED} <= names
        assert {f"{row}_s{seed}" for row, *_ in results_tables.ADAPTATION} <= names
        assert {f"sup_{row}_s{seed}" for row, *_ in results_tables.SUPERVISED_DELAYED} <= names
        assert f"da_oracle_s{seed}" in names
    assert {job.name for job in jobs if job.name.startswith("ablation_")} == {
        f"{row}_s{seed}" for row, *_ in results_tables.ABLATION for seed in (0, 2)}
    for job in jobs:
        config = next((Path(arg) for arg in job.argv if arg.endswith(".yaml")), None)
        assert config is None or config.exists(), config
        if "contraseg.adapt" in job.argv:
            seed = job.name.rsplit("_s", 1)[1]
            assert f"sup_ce_s{seed}" in job.after
            assert f"adapt.init_checkpoint={tmp_path / 'runs' / f'sup_ce_s{seed}' / 'last.pth'}" in job.argv
            assert "schedule.max_iters=160" in job.argv
        elif "train" in job.argv:
            assert "schedule.max_iters=640" in job.argv


def fake_result(out: Path, table: str, row: str, seed: int, source: float, target: float) -> None:
    classes = {"road": target + 1.0, "bicycle": None}
    record = {"run": f"{row}_s{seed}", "table": table, "row": row, "seed": seed, "iteration": 640, "unit": "%",
              "metrics": {results_tables.SOURCE: {"miou": source, "per_class_iou": {"road": source, "bicycle": 0.0}},
                          results_tables.TARGET: {"miou": target, "per_class_iou": classes}},
              "seconds": 60.0}
    (out / "results").mkdir(parents=True, exist_ok=True)
    name = f"sup_{row}_s{seed}" if table == "supervised" else f"{row}_s{seed}"
    (out / "results" / f"{name}.json").write_text(json.dumps(record))


def test_tables_give_mean_std_and_paired_differences_from_the_result_files(tmp_path):
    for seed, (ce, proac) in enumerate([(60.0, 61.0), (62.0, 61.5), (64.0, 66.0)]):
        fake_result(tmp_path, "supervised", "ce", seed, ce, 18.0)
        fake_result(tmp_path, "supervised", "proac", seed, proac, 17.0)
    fake_result(tmp_path, "da", "finetune", 0, 60.0, 20.0)
    fake_result(tmp_path, "da", "wdass_coarse", 0, 60.0, 35.5)
    fake_result(tmp_path, "ablation", "ablation_no_mix", 0, 60.0, 34.0)
    text = results_tables.render(plan_args(tmp_path), wall=None, timings={})
    lines = text.splitlines()
    ce = next(line for line in lines if line.startswith("| cross-entropy |"))
    assert "| 62.0 ± 2.0 | 60.0 / 62.0 / 64.0 | - |" in ce
    proac = next(line for line in lines if line.startswith("| + ProAC"))
    assert "| 62.8 ± 2.8 |" in proac and "| +1.0 / -0.5 / +2.0 (mean +0.8) |" in proac
    wdass = next(line for line in lines if line.startswith("| WDASS, coarse labels |"))
    assert "| 35.5 | 35.5 / - / - | +15.5 | +17.5 |" in wdass  # vs +T (20.0) and vs source-only (18.0)
    ablation = next(line for line in lines if line.startswith("| without ClassMix"))
    assert "| 34.0 | 34.0 | -1.5 |" in ablation
    road = next(line for line in lines if line.startswith("| road |"))
    assert road.startswith("| road | 62.0 | 62.8 |")  # per-class table: mean over seeds, source val
    assert "| bicycle | 0.0 | 0.0 |" in text and "unit" not in text
    assert "| + pixel contrast (0.1), from iteration 0 | - | - / - / - | - | - | - |" in text  # no results: dashes
    assert "Missing runs (no result JSON yet" in text and "sup_pixel_contrast_delayed (seeds 0, 1, 2)" in text


# --------------------------------------------------------------------------- issue 19 rows


def by_name(jobs: list[_jobs.Job]) -> dict[str, _jobs.Job]:
    return {job.name: job for job in jobs}


def test_the_plan_has_a_topological_order_and_only_known_dependencies(tmp_path):
    jobs = by_name(results_tables.build_jobs(plan_args(tmp_path)))
    done: set[str] = set()
    while len(done) < len(jobs):  # Kahn: some job must always be ready, or there is a cycle
        ready = [name for name, job in jobs.items() if name not in done and set(job.after) <= done]
        assert ready, sorted(set(jobs) - done)
        done |= set(ready)
    assert {dep for job in jobs.values() for dep in job.after} <= set(jobs)


def test_proac_stage2_runs_after_its_stage1_model_and_pseudo_labels_from_the_ce_init(tmp_path):
    jobs = by_name(results_tables.build_jobs(plan_args(tmp_path)))
    for seed in (0, 1, 2):
        ce = str(tmp_path / "runs" / f"sup_ce_s{seed}" / "last.pth")
        for stage1 in ("dacs", "fda"):
            first = jobs[f"{stage1}_s{seed}"]
            assert first.after == [f"sup_ce_s{seed}"] and f"adapt.init_checkpoint={ce}" in first.argv
            assert first.outputs == [tmp_path / "runs" / f"{stage1}_s{seed}" / "last.pth"]  # pseudo labels read it
            labels = jobs[f"pseudo_{stage1}_s{seed}"]
            assert labels.after == [f"{stage1}_s{seed}"] and str(first.outputs[0]) in labels.argv
            folder = tmp_path / f"pseudo_{stage1}" / f"s{seed}"
            assert labels.argv[labels.argv.index("--out") + 1] == str(folder)
            plain, proac = jobs[f"st2_{stage1}_s{seed}"], jobs[f"st2_{stage1}_proac_s{seed}"]
            for job in (plain, proac):  # paired: same init, same pseudo labels, same seed
                assert set(job.after) == {f"sup_ce_s{seed}", f"pseudo_{stage1}_s{seed}"}
                assert f"adapt.init_checkpoint={ce}" in job.argv and f"adapt.pseudo_labels.dir={folder}" in job.argv
                assert f"train.seed={seed}" in job.argv
            assert plain.argv[plain.argv.index("contraseg.adapt") + 1].endswith("synthetic_self_training.yaml")
            assert proac.argv[proac.argv.index("contraseg.adapt") + 1].endswith("synthetic_self_training_proac.yaml")


def test_robustness_and_diversity_read_the_kept_checkpoints_of_the_supervised_runs(tmp_path):
    jobs = by_name(results_tables.build_jobs(plan_args(tmp_path)))
    clean, masked = jobs["rob_proac_clean_s2"], jobs["rob_proac_mask0.25_s2"]
    checkpoint = tmp_path / "runs" / "sup_proac_s2" / "last.pth"
    for job in (clean, masked):
        assert job.after == ["sup_proac_s2"] and str(checkpoint) in job.argv and "eval" in job.argv
    assert "--perturb" not in clean.argv
    assert masked.argv[masked.argv.index("--perturb") + 1] == "mask:0.25" and "--perturb-seed" in masked.argv
    assert checkpoint in jobs["sup_proac_s2"].outputs  # a missing last.pth makes the run go again
    specs = {job.argv[job.argv.index("--perturb") + 1] for name, job in jobs.items()
             if name.startswith("rob_ce_") and "--perturb" in job.argv}
    assert specs == {"resolution:0.5", "resolution:1.5", "illumination:night:0.5", "illumination:gamma:2", "mask:0.25"}
    assert {name.removesuffix("_clean_s0") for name in jobs if name.startswith("rob_") and name.endswith("_clean_s0")} \
        == {"rob_ce", "rob_proac", "rob_pixel_contrast_delayed", "rob_protoseg"}
    div = jobs["div_protoseg_s1"]
    assert div.after == ["sup_protoseg_s1"] and str(tmp_path / "runs" / "sup_protoseg_s1" / "last.pth") in div.argv
    assert jobs["sup_ce_s0"].outputs and not jobs["sup_pixel_contrast_memory_s0"].outputs  # nothing reads it


def test_delayed_rows_use_the_released_starts_scaled_to_the_schedule(tmp_path):
    jobs = by_name(results_tables.build_jobs(plan_args(tmp_path, source_iters=800, adapt_iters=300)))
    assert "regulariser.start_iter=100" in jobs["sup_pixel_contrast_delayed_s0"].argv  # 800 / 8
    memory = jobs["sup_pixel_contrast_memory_delayed_s0"].argv
    for pair in ("regulariser.start_iter=100", "regulariser.weight=1", "regulariser.temperature=0.07",
                 "regulariser.max_views=1", "regulariser.memory_pixels_per_update=10"):
        assert pair in memory
    assert not any(arg.startswith("regulariser.start_iter") for arg in jobs["sup_pixel_contrast_s0"].argv)
    delayed, ramped = jobs["wdass_point_delayed_s1"].argv, jobs["wdass_point_s1"].argv
    assert "adapt.wdass.start_iter=20" in delayed and "adapt.wdass.warmup_iters=0" in delayed  # 300 / 15, no ramp
    assert "adapt.wdass.warmup_iters=30" not in delayed and "adapt.wdass.warmup_iters=30" in ramped
    assert f"adapt.wdass.weak_labels={tmp_path / 'weak' / 'point'}" in delayed


def test_schedule_reruns_a_finished_job_whose_output_is_gone(tmp_path):
    marker, output = tmp_path / "a.done", tmp_path / "last.pth"
    marker.touch()
    job = python_job("a", f"import pathlib; pathlib.Path({str(output)!r}).touch()", marker)
    job.outputs = [output]
    assert set(_jobs.schedule([job], 1, tmp_path / "logs")) == {"a"} and output.exists()
    assert _jobs.schedule([job], 1, tmp_path / "logs") == {}


def fake_record(out: Path, name: str, **record) -> None:
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "results" / f"{name}.json").write_text(json.dumps({"seconds": 30.0, "unit": "%", **record}))


def metrics(source: float, target: float) -> dict:
    return {results_tables.SOURCE: {"miou": source, "per_class_iou": {"road": source}},
            results_tables.TARGET: {"miou": target, "per_class_iou": {"road": target}}}


def test_issue19_tables_pair_each_row_with_its_baseline(tmp_path):
    for seed, (ce, late, plain, proac, night_ce, night_proac) in enumerate(
            [(60.0, 61.0, 30.0, 31.0, 40.0, 43.0), (62.0, 61.5, 32.0, 31.5, 41.0, 42.0)]):
        fake_result(tmp_path, "supervised", "ce", seed, ce, 18.0)
        fake_result(tmp_path, "supervised", "pixel_contrast", seed, ce - 3.0, 18.0)
        fake_result(tmp_path, "supervised", "pixel_contrast_delayed", seed, late, 18.0)
        fake_result(tmp_path, "da", "finetune", seed, 60.0, 20.0)
        fake_result(tmp_path, "stage2", "st2_dacs", seed, 60.0, plain)
        fake_result(tmp_path, "stage2", "st2_dacs_proac", seed, 60.0, proac)
        fake_result(tmp_path, "uda", "dacs", seed, 60.0, 29.0)
        for model, value in (("ce", night_ce), ("proac", night_proac)):
            fake_record(tmp_path, f"rob_{model}_night0.5_s{seed}", table="robustness", row=model, seed=seed,
                        key=f"rob_{model}_night0.5", metrics=metrics(value, 10.0))
    per_class = {"road": {"prototypes": 10, "mean_cosine": 0.5, "max_cosine": 0.9, "used": 1},
                 "sky": {"prototypes": 10, "mean_cosine": 0.3, "max_cosine": 0.95, "used": 4}}
    fake_record(tmp_path, "div_protoseg_s0", table="diversity", row="protoseg", key="div_protoseg", seed=0,
                per_class=per_class)
    text = results_tables.render(plan_args(tmp_path, seeds=[0, 1]), wall=None, timings={})
    lines = text.splitlines()
    hard = [line for line in lines if line.startswith("| + pixel contrast (0.1), off for the first 1/8")]
    assert hard[0].endswith("| 61.2 ± 0.4 | 61.0 / 61.5 | +1.0 / -0.5 (mean +0.2) | 18.0 ± 0.0 | 1.0 |")  # vs CE
    assert hard[1].endswith("| +1.0 / -0.5 (mean +0.2) | +4.0 / +2.5 (mean +3.2) | 1.0 |")  # vs CE and vs from 0
    proac = next(line for line in lines if line.startswith("| stage 2: self-training + ProAC (0.1), pseudo labels "
                                                           "of the DACS"))
    assert "| 31.2 ± 0.4 | 31.0 / 31.5 | +1.0 / -0.5 (mean +0.2) | +2.0 / +2.5 (mean +2.2) | +11.0 / +11.5" in proac
    robust = lines[next(i for i, line in enumerate(lines) if line.startswith("## Robustness")):]
    night = [line for line in robust if line.startswith("| + ProAC (0.1) |")]  # mIoU, then vs CE
    assert night[0].split(" | ")[4] == "42.5 ± 0.7" and night[1].split(" | ")[4] == "+3.0 / +1.0 (mean +2.0)"
    assert "| 0 | 0.400 | 0.950 | 5 / 20 | 1 / 2 |" in text and "| 1 | - | - | - | - |" in text
    missing = next(line for line in lines if line.startswith("Missing runs"))
    assert "st2_fda_proac (seeds 0, 1)" in missing and "rob_ce_* (10 evaluations)" in missing
    assert "st2_dacs_proac" not in missing and "div_protoseg (seeds 1)" in missing


def test_only_keeps_the_matching_jobs_and_everything_they_need(tmp_path):
    names = {job.name for job in results_tables.plan(plan_args(tmp_path, only=["st2_dacs_proac_s1"]))}
    assert names == {"st2_dacs_proac_s1", "pseudo_dacs_s1", "dacs_s1", "sup_ce_s1"}
    issue19 = {job.name for job in results_tables.plan(plan_args(tmp_path, only=list(results_tables.ISSUE19)))}
    assert {"wdass_coarse_s0", "wdass_coarse_delayed_s0", "finetune_s2", "rob_protoseg_mask0.25_s1", "div_protoseg_s0",
            "sup_pixel_contrast_memory_s1", "weak_coarse", "st2_fda_s2"} <= issue19
    assert not {name for name in issue19 if name.startswith(("ablation_", "da_oracle", "self_training", "pseudo_s"))}
    assert "wdass_coarse_softmax_s0" not in issue19


def test_memory_sampling_rows_are_the_released_memory_row_with_one_strategy_each(tmp_path):
    jobs = by_name(results_tables.build_jobs(plan_args(tmp_path, source_iters=800, adapt_iters=300)))
    whole = jobs["sup_pixel_contrast_memory_delayed_s1"].argv
    for strategy in ("random", "hardest", "semi_hard"):
        argv = jobs[f"sup_memory_{strategy}_delayed_s1"].argv
        assert f"regulariser.memory_sampling={strategy}" in argv
        renamed = [a.replace(f"sup_memory_{strategy}_delayed", "sup_pixel_contrast_memory_delayed") for a in argv]
        at = renamed.index(f"regulariser.memory_sampling={strategy}")
        assert renamed[at - 1] == "--set" and renamed[:at - 1] + renamed[at + 1:] == whole  # nothing else differs
        assert "regulariser.start_iter=100" in argv and "regulariser.weight=1" in argv and "train.seed=1" in argv


def test_a_result_record_names_the_environment_that_produced_it(tmp_path):
    import torch

    import _plan

    marker = tmp_path / "results" / "sup_ce_s0.json"
    _plan.write_record(marker, {"run": "sup_ce_s0", "seed": 0})
    record = json.loads(marker.read_text())
    assert record["run"] == "sup_ce_s0" and record["seed"] == 0
    env = record["environment"]
    assert env["torch"] == torch.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu"] and env["python"]
