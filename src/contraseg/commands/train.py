"""``contraseg train CONFIG [--set key=value ...] [--resume PATH|auto] [--run-dir DIR]``

Trains a segmentor from a YAML config (see ``configs/`` and
:mod:`contraseg.engine.config`). Under ``torchrun --nproc_per_node N -m contraseg train
CONFIG`` it runs distributed data parallel. The run directory (default
``runs/<config name>``) receives ``last.pth``, ``best.pth``, ``config.yaml``,
``log.jsonl``, ``eval/`` and ``tensorboard/``. A run folder holds one run: a non-empty
one is refused unless you continue it (``--resume auto``) or start afresh
(``--overwrite``); a resume with a changed training setting is refused unless
``--resume-changed``. Ctrl-C (or SIGTERM) finishes the current step, saves ``last.pth``
and exits with 130 (143).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import Interrupted
from ._common import add_run_arguments, check_run_dir_path, in_process_group, prepare_run_dir, set_threads
from .run_folder import held_run_folder


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train``."""
    parser = subparsers.add_parser("train", help="train a segmentor from a YAML config",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    add_run_arguments(parser, "optim.lr=0.02")
    parser.set_defaults(func=run)


def resume_hint(command: str, args: argparse.Namespace, run_dir: Path) -> str:
    """The command line that continues an interrupted run."""
    sets = "".join(f" --set {item}" for item in args.overrides)
    return f"{command} {args.config}{sets} --run-dir {run_dir} --resume auto"


def start_run(args: argparse.Namespace, run_dir: Path, command: str, fit: Any) -> tuple[Any, dict[str, Any]]:
    """What ``train`` and ``adapt`` share around ``fit(context)``: the run-folder check,
    the process group, and an interruption turned into a resume hint (exit 130 / 143)."""
    from ..engine.process_group import barrier
    from ..engine.interruption import TrainingInterrupted

    def body(context: Any) -> dict[str, Any]:
        check_run_dir_path(run_dir)
        with held_run_folder(run_dir, context.is_main, fresh=args.resume is None):
            prepare_run_dir(run_dir, args.resume, args.overwrite, delete=context.is_main)
            barrier()
            try:
                return fit(context)
            except TrainingInterrupted as err:
                raise Interrupted(f"{err}; resume with: {resume_hint(command, args, run_dir)}",
                                  128 + err.signum) from None

    return in_process_group(args.device, body)


def percent(value: float | None) -> float | None:
    """A fraction as a percentage rounded to 0.01 (None stays None)."""
    return None if value is None else round(100.0 * value, 2)


def print_summary(summary: dict[str, Any], run_dir: Path | str, **extra: Any) -> None:
    """The closing JSON line and the ``done:`` line of ``train`` and ``adapt``."""
    best = summary["best"]
    best_text = "n/a" if best["mIoU"] is None else f"{100 * best['mIoU']:.2f}% at iteration {best['iteration']}"
    print(json.dumps({"run_dir": str(run_dir), **extra, "iteration": summary["iteration"],
                      "best_mIoU": percent(best["mIoU"]), "best_iteration": best["iteration"]}))
    print(f"done: {summary['iteration']} iterations, best mIoU {best_text}; checkpoints in {run_dir}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Load the config, train, print a summary."""
    from ..engine.config_io import load_config
    from ..engine.trainer import Trainer

    set_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.name

    def fit(context: Any) -> dict[str, Any]:
        trainer = Trainer(cfg, run_dir, resume=args.resume, context=context, resume_changed=args.resume_changed)
        return trainer.fit()

    context, summary = start_run(args, run_dir, "contraseg train", fit)
    if context.is_main:
        print_summary(summary, run_dir)
    return 0
