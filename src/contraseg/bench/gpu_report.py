"""The report of ``python -m contraseg.bench gpu`` (:mod:`.gpu`): the environment header and
the markdown of docs/gpu.md (a summary table, then each check's numbers and output).
"""

from __future__ import annotations

import datetime
import platform
from pathlib import Path
from typing import Any

import torch

from .gpu_common import CheckResult


def environment() -> dict[str, str]:
    """Device and library versions for the report header."""
    import importlib

    env = {"date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
           "python": platform.python_version(), "torch": torch.__version__,
           "CUDA (torch build)": str(torch.version.cuda)}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["device"] = f"{props.name} (compute capability {props.major}.{props.minor}, {props.total_memory / 2**30:.0f} GiB)"
        env["cuDNN"] = str(torch.backends.cudnn.version())
        env["NCCL"] = ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else "?"
    for module in ("torchvision", "timm", "numpy"):
        try:
            env[module] = importlib.import_module(module).__version__
        except Exception as err:  # the report says what is missing rather than failing
            env[module] = f"unavailable ({type(err).__name__})"
    return env


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def format_report(results: list[CheckResult], env: dict[str, str], command: str, total_s: float) -> str:
    """The markdown of docs/gpu.md."""
    failed = [r for r in results if r.passed is False]
    verdict = "ALL CHECKS PASSED" if not failed else f"FAILED: {', '.join(r.name for r in failed)}"
    lines = ["# GPU check", "", f"`{command}` ({total_s:.0f} s). **{verdict}.**", "",
             "| environment | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in env.items()]
    lines += ["", "| check | result | seconds | what |", "|---|---|---:|---|"]
    lines += [f"| {r.name} | {r.status} | {r.seconds:.1f} | {r.summary} |" for r in results]
    for r in results:
        if not r.numbers and not r.output:
            continue
        lines += ["", f"## {r.name}: {r.status}", ""]
        if r.numbers:
            nested = all(isinstance(v, dict) for v in r.numbers.values())
            if nested:
                columns = list(next(iter(r.numbers.values())))
                lines += ["| case | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
                lines += [f"| {case} | " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |"
                          for case, row in r.numbers.items()]
            else:
                lines += [f"- {key}: {_fmt(value)}" for key, value in r.numbers.items()]
        if r.output:
            lines += ["", r.output]
    return "\n".join(lines) + "\n"


def write_report(results: list[CheckResult], env: dict[str, str], path: Path, command: str, total_s: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_report(results, env, command, total_s))
