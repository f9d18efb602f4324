"""``contraseg train CONFIG [--set key=value ...] [--resume PATH|auto] [--run-dir DIR]``

Trains a segmentor from a YAML config (see ``configs/`` and
:mod:`contraseg.engine.config`). Under ``torchrun --nproc_per_node N -m contraseg train
CONFIG`` it runs distributed data parallel. The run directory (default
``runs/<config name>``) receives ``last.pth``, ``best.pth``, ``config.yaml``,
``log.jsonl``, ``eval/`` and ``tensorboard/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli import UserError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``train``."""
    parser = subparsers.add_parser("train", help="train a segmentor from a YAML config",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=0.02 (repeatable)")
    parser.add_argument("--resume", metavar="PATH|auto",
                        help="continue from a checkpoint; 'auto' = RUN_DIR/last.pth if it exists")
    parser.add_argument("--run-dir", help="output folder (default runs/<config name>)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device type (default: CUDA if available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, train, print a summary; user errors become :class:`UserError`."""
    from ..engine.checkpoint import CheckpointError
    from ..engine.config import ConfigError
    from ..engine.config_io import load_config
    from ..engine.process_group import destroy_process_group, init_process_group_from_env
    from ..engine.trainer import Trainer

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as err:
        raise UserError(str(err)) from None
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.name
    try:
        context = init_process_group_from_env(args.device)
    except ValueError as err:
        raise UserError(str(err)) from None
    try:
        try:
            trainer = Trainer(cfg, run_dir, resume=args.resume, context=context)
        except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
            raise UserError(" ".join(str(err).split())) from None
        summary = trainer.fit()
    finally:
        destroy_process_group()
    if context.is_main:
        best = summary["best"]
        best_text = "n/a" if best["mIoU"] is None else f"{100 * best['mIoU']:.2f} at iteration {best['iteration']}"
        print(json.dumps({"run_dir": str(run_dir), "iteration": summary["iteration"], "best_mIoU": best["mIoU"],
                          "best_iteration": best["iteration"]}))
        print(f"done: {summary['iteration']} iterations, best mIoU {best_text}; checkpoints in {run_dir}")
    return 0
