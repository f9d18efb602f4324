"""Subprocess jobs with dependencies, a few at a time, resumable: the runners' machinery.

A :class:`Job` is one command line (``contraseg train``, ``python -m contraseg.adapt``, ...)
with the names of the jobs it waits for and a marker file whose existence means it is done
(a finished job is skipped when the runner starts again; an interrupted training continues
from its ``last.pth`` when its command says ``--resume auto``). :func:`schedule` runs the
jobs, at most ``parallel`` at once, in list order among those whose dependencies are done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Job:
    """One subprocess: ``argv``, the jobs it waits for, and how to tell it is done.

    ``on_done(job, seconds)`` runs after a successful exit (e.g. to write the result JSON
    that is also the ``done_marker``). ``outputs``: files later jobs read (a training's
    ``last.pth``); a job whose marker exists but one of these is gone runs again."""

    name: str
    argv: list[str]
    done_marker: Path
    after: list[str] = field(default_factory=list)
    on_done: Callable[["Job", float], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)

    def is_done(self) -> bool:
        return self.done_marker.exists() and all(path.exists() for path in self.outputs)


def contraseg(*args: str) -> list[str]:
    """``python -m contraseg ARGS`` with this interpreter."""
    return [sys.executable, "-m", "contraseg", *args]


def adapt(*args: str) -> list[str]:
    """``python -m contraseg.adapt ARGS`` with this interpreter."""
    return [sys.executable, "-m", "contraseg.adapt", *args]


def last_eval(run_dir: Path) -> dict[str, Any]:
    """The stored metrics of a run's last evaluation (``RUN_DIR/eval/iter_*.json``)."""
    files = sorted((run_dir / "eval").glob("iter_*.json"), key=lambda p: int(p.stem.split("_")[-1]))
    if not files:
        raise FileNotFoundError(f"no evaluation in {run_dir / 'eval'}")
    return json.loads(files[-1].read_text())


def run_job(job: Job, logs: Path, threads: int) -> float:
    """Run one job with ``threads`` CPU threads, output to ``logs/<name>.log``; returns seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONUNBUFFERED": "1"}
    logs.mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    with open(logs / f"{job.name}.log", "w") as log:
        log.write(" ".join(job.argv) + "\n")
        log.flush()
        code = subprocess.run(job.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    seconds = time.perf_counter() - tick
    if code != 0:
        raise RuntimeError(f"job {job.name} failed with exit code {code}; see {logs / (job.name + '.log')}")
    if job.on_done is not None:
        job.on_done(job, seconds)
    return seconds


def schedule(jobs: list[Job], parallel: int, logs: Path, threads: int = 1) -> dict[str, float]:
    """Run the jobs, at most ``parallel`` at once, each after its dependencies; skip finished ones.

    A failed job stops the scheduling of new jobs; the running ones finish, then its error
    is raised. Returns the seconds of every job run by this call."""
    by_name = {job.name: job for job in jobs}
    if len(by_name) != len(jobs):
        raise ValueError("job names must be unique")
    done = {job.name for job in jobs if job.is_done()}
    for name in sorted(done):
        print(f"skip  {name}: {by_name[name].done_marker} exists", flush=True)
    for job in jobs:
        if job.name not in done and job.done_marker.exists():
            print(f"rerun {job.name}: {[str(p) for p in job.outputs if not p.exists()]} missing", flush=True)
    pending = [job for job in jobs if job.name not in done]
    unknown = sorted({dep for job in pending for dep in job.after} - set(by_name))
    if unknown:
        raise ValueError(f"unknown dependencies {unknown}")
    timings: dict[str, float] = {}
    running: dict[Future, Job] = {}
    failure: BaseException | None = None
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        while (pending and failure is None) or running:
            if failure is None:
                ready = [job for job in pending if all(dep in done for dep in job.after)]
                for job in ready[: parallel - len(running)]:
                    pending.remove(job)
                    print(f"start {job.name} (+{(time.perf_counter() - started) / 60:.1f} min)", flush=True)
                    running[pool.submit(run_job, job, logs, threads)] = job
            if not running:
                raise RuntimeError(f"jobs cannot start: {[job.name for job in pending]}")
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                try:
                    timings[job.name] = future.result()
                except Exception as err:  # let the running jobs finish, then report the first failure
                    failure = failure or err
                    print(f"FAIL  {job.name}: {err}", flush=True)
                    continue
                done.add(job.name)
                print(f"done  {job.name} in {timings[job.name]:.0f} s "
                      f"({len(done)}/{len(jobs)}, +{(time.perf_counter() - started) / 60:.1f} min)", flush=True)
    if failure is not None:
        raise failure
    return timings
