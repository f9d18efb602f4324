"""``python -m contraseg.adapt CONFIG [--set key=value ...] [--resume PATH|auto] [--run-dir DIR]``

Runs a domain-adaptation config (a training config with an ``adapt:`` section, see
:mod:`contraseg.adapt.config`): self-training with offline pseudo labels (and rounds),
WDASS with weak target labels, or source-only fine-tuning. The run directory (default
``runs/<config name>``) receives what ``contraseg train`` writes plus ``adapt.yaml``
(and ``round_<r>/`` folders for several self-training rounds). Under ``torchrun
--nproc_per_node N -m contraseg.adapt CONFIG`` it runs distributed data parallel.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``adapt`` (for a CLI that lists this module)."""
    parser = subparsers.add_parser("adapt", help="domain adaptation: self-training (+ProAC), WDASS",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    configure(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments and ``func`` to ``parser``."""
    parser.add_argument("config", help="YAML config with an adapt: section")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set adapt.rounds=2 (repeatable)")
    parser.add_argument("--resume", metavar="PATH|auto",
                        help="continue from a checkpoint; 'auto' = RUN_DIR/last.pth (each round's) if it exists")
    parser.add_argument("--run-dir", help="output folder (default runs/<config name>)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device type (default: CUDA if available)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(func=run, command="adapt")


def run(args: argparse.Namespace) -> int:
    """Load the config, adapt, print a summary; user errors become :class:`UserError`."""
    import torch

    from ..engine.checkpoint import CheckpointError
    from ..engine.config import ConfigError
    from ..engine.process_group import destroy_process_group, init_process_group_from_env
    from .config import load_adapt_config
    from .run import run_adaptation

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        cfg, adapt = load_adapt_config(args.config, args.overrides)
    except ConfigError as err:
        raise UserError(str(err)) from None
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.name
    try:
        context = init_process_group_from_env(args.device)
    except ValueError as err:
        raise UserError(str(err)) from None
    try:
        try:
            summary = run_adaptation(cfg, adapt, run_dir, resume=args.resume, context=context)
        except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
            raise UserError(" ".join(str(err).split())) from None
    finally:
        destroy_process_group()
    if context.is_main:
        best = summary["best"]
        print(json.dumps({"run_dir": summary["run_dir"], "method": adapt.method, "iteration": summary["iteration"],
                          "best_mIoU": best["mIoU"], "best_iteration": best["iteration"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m contraseg.adapt``: one-line errors with exit code 2, like ``contraseg``."""
    parser = argparse.ArgumentParser(prog="python -m contraseg.adapt",
                                     description=" ".join(__doc__.split("\n\n")[1].split()))
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as err:
        print(f"contraseg adapt: error: {err}", file=sys.stderr)
        return 2
