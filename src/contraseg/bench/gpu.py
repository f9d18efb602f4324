"""``python -m contraseg.bench gpu`` (``make gpu-check``): every CUDA path, checked on a GPU.

One script, at most ~8 minutes on one GPU, that writes ``docs/gpu.md`` (device, torch
version, every check with pass / fail and its numbers) and exits non-zero, with a
``GPU CHECK FAILED`` line per failure on stderr, on any mismatch:

=====================  ==================================================================
check                  what must hold
=====================  ==================================================================
losses-fp32            every loss (ProAC, ProAC pixel-anchor, pixel contrast, pixel
                       contrast + memory, ProtoSeg PPC + PPD, WDASS image-level and
                       prototype contrast) on CUDA in float32 equals the same loss on the
                       CPU in float64, forward and gradient (relative error <= 1e-4;
                       TF32 off)
losses-fp16 / bf16     under ``torch.autocast("cuda", fp16 / bf16)`` (a 1x1 conv before
                       the loss runs in half precision) the loss is within 1e-2 of float32
                       and the gradient's relative L2 error <= 3e-2
grad-scaler            fp16 + ``GradScaler``: scaled backward then ``unscale_`` gives the
                       float32 gradient (relative error <= 3e-2), no overflow step skipped;
                       an injected inf is caught and its step skipped
memory-sampling        the memory bank's random / hardest / semi-hard example sampling on
                       CUDA equals the CPU's in float64 (relative error <= 1e-9; the same
                       draws), and random / hardest in float32 within 1e-4
syncbn                 in a 1-process NCCL group, ``SyncBatchNorm``'s CUDA kernels (stats,
                       gather, backward reduce) give BatchNorm's output and gradients
train-amp-syncbn       50 iterations of HRNet-W18-Small + OCR with pixel contrast + memory,
                       BatchNorm -> SyncBatchNorm, DDP over the 1-process NCCL group, fp16
                       autocast + GradScaler: finite losses that go down
inference              the trained model: fp16 whole-image probabilities within 2e-2 of
                       float32 and the same class on >= 99.9 % of the pixels whose float32
                       winner leads by > 0.02; slide + flip + two scales and an odd
                       129 x 257 input run; evaluation mIoU within 1 point of float32
bench-losses           ``python -m contraseg.bench losses --device cuda`` runs (its table is
                       copied into the report)
bench-train-step       ``python -m contraseg.bench train-step --device cuda`` with fp16 and
                       bf16 runs (tables copied)
=====================  ==================================================================

On a machine without CUDA it says so and exits with status 2 without writing a report.
Needs only torch, torchvision, timm, numpy, pillow, pyyaml, opencv and cityscapesscripts:
``PYTHONPATH=src python -m contraseg.bench gpu`` runs from a checkout without installing.

The checks live in :mod:`.gpu_loss_checks` (losses, GradScaler) and
:mod:`.gpu_training_checks` (SyncBatchNorm, training, inference), the report in
:mod:`.gpu_report`; this module runs them in order within the time budget.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .gpu_common import CheckResult
from .gpu_loss_checks import check_grad_scaler, check_losses, check_memory_sampling, make_loss_inputs
from .gpu_report import environment, write_report
from .gpu_training_checks import check_inference, check_syncbn, check_training, init_single_process_group

REPORT = Path("docs/gpu.md")
TIME_BUDGET_S = 480.0


def run_benchmark(name: str, args: list[str], timeout: float) -> CheckResult:
    """Run ``python -m contraseg.bench ARGS`` in a subprocess and keep its output."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "contraseg.bench", *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired as err:
        out = err.stdout if isinstance(err.stdout, str) else (err.stdout or b"").decode(errors="replace")
        return CheckResult(name, False, f"timed out after {timeout:.0f} s: {' '.join(args)}",
                           seconds=time.perf_counter() - start, output=out)
    output = done.stdout + (f"\n[stderr]\n{done.stderr[-3000:]}" if done.returncode else "")
    return CheckResult(name, done.returncode == 0, f"python -m contraseg.bench {' '.join(args)} (exit {done.returncode})",
                       {"exit_code": done.returncode}, time.perf_counter() - start, output.strip())


def no_cuda_message() -> str:
    return (f"GPU CHECK FAILED: no CUDA device (torch.cuda.is_available() is False; torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}). Run this on a machine with an NVIDIA GPU; "
            f"nothing was checked and no report was written.")


def _guard(name: str, fn: Callable[[], Any]) -> Any:
    """Run one check; an exception is a failed check (with the error), never a crash."""
    start = time.perf_counter()
    try:
        return fn()
    except Exception as err:  # every failure goes into the report and the exit status
        line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return CheckResult(name, False, f"raised {type(err).__name__}: {line}", seconds=time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contraseg.bench gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPORT, help="report path (default docs/gpu.md)")
    parser.add_argument("--skip-bench", action="store_true", help="skip the two benchmarks")
    parser.add_argument("--iterations", type=int, default=50, help="training iterations")
    args = parser.parse_args(list(argv or []))
    if not torch.cuda.is_available():
        print(no_cuda_message(), file=sys.stderr)
        return 2
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    start = time.perf_counter()
    results: list[CheckResult] = []

    def record(found: Any) -> None:
        for result in found if isinstance(found, list) else [found]:
            results.append(result)
            print(f"[{result.status:>7}] {result.name} ({result.seconds:.1f} s): {result.summary}", flush=True)

    inputs = make_loss_inputs(batch=2, dim=64, height=33, width=65, num_classes=19)
    record(_guard("losses", lambda: check_losses(device, inputs)))
    record(_guard("grad-scaler", lambda: check_grad_scaler(device, inputs)))
    record(_guard("memory-sampling", lambda: check_memory_sampling(device)))
    record(_guard("process-group", lambda: init_single_process_group("nccl")
                  or CheckResult("process-group", True, "1-process NCCL group initialised")))
    record(_guard("syncbn", lambda: check_syncbn(device)))
    trained: dict[str, Any] = {}

    def train() -> CheckResult:
        result, trained["model"] = check_training(device, iterations=args.iterations)
        return result

    record(_guard("train-amp-syncbn", train))
    if trained.get("model") is not None:
        record(_guard("inference", lambda: check_inference(device, trained["model"])))
    if not args.skip_bench:
        left = TIME_BUDGET_S - (time.perf_counter() - start)
        record(run_benchmark("bench-losses", ["losses", "--device", "cuda", "--repeats", "7",
                                              "--memory-repeats", "2"], timeout=max(60.0, 0.55 * left)))
        left = TIME_BUDGET_S - (time.perf_counter() - start)
        for amp in ("fp16", "bf16"):
            record(run_benchmark(f"bench-train-step-{amp}", ["train-step", "--device", "cuda", "--amp", amp,
                                                             "--size", "256", "512", "--batch", "4", "--repeats", "5"],
                                 timeout=max(45.0, 0.45 * left)))
    total = time.perf_counter() - start
    command = "PYTHONPATH=src python -m contraseg.bench gpu" + (f" {' '.join(argv)}" if argv else "")
    write_report(results, environment(), args.out, command, total)
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # leaving the group is best effort at exit
        pass
    failed = [r for r in results if r.passed is False]
    for r in failed:
        print(f"GPU CHECK FAILED: {r.name}: {r.summary}", file=sys.stderr)
    print(f"report written to {args.out} ({total:.0f} s); "
          f"{'ALL CHECKS PASSED' if not failed else f'{len(failed)} FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
