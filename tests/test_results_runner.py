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
                  target_length=1000, jobs=2, threads=1, device="cpu")
    values.update(kw)
    return argparse.Namespace(**values)


def test_the_plan_has_every_row_and_seed_and_adaptation_starts_from_that_seeds_source_model(tmp_path):
    jobs = results_tables.build_jobs(plan_args(tmp_path, ablation_seeds=[0, 2]))
    names = {job.name for job in jobs}
    assert len(names) == len(jobs)
    for seed in (0, 1, 2):
        assert {f"sup_{row}_s{seed}" for row, *_ in results_tables.SUPERVISED} <= names
        assert {f"{row}_s{seed}" for row, *_ in results_tables.ADAPTATION} <= names
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
    assert "| + pixel contrast (0.1) | - | - / - / - | - | - | - |" in text  # a row without results: dashes
