"""``contraseg adapt CONFIG [--set key=value ...] [--resume PATH|auto] [--run-dir DIR]``

Runs a domain-adaptation config (a training config with an ``adapt:`` section, see
:mod:`contraseg.adapt.config`): self-training with offline pseudo labels (and rounds),
WDASS with weak target labels, DACS (mean teacher, ClassMix, rare-class sampling), FDA
(Fourier domain adaptation), or source-only fine-tuning. The run directory (default
``runs/<config name>``) receives what ``contraseg train`` writes plus ``adapt.yaml``
(and ``round_<r>/`` folders for several self-training rounds). Under ``torchrun
--nproc_per_node N -m contraseg.adapt CONFIG`` it runs distributed data parallel.

``python -m contraseg.adapt`` is the same command (:func:`main`; the adapt package's
``__main__`` runs this module).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import add_debug_argument, report_errors
from ._common import add_run_arguments, set_threads
from .train import print_summary, start_run


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``adapt``."""
    parser = subparsers.add_parser("adapt", help="domain adaptation: self-training (+ProAC), WDASS, DACS, FDA",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    configure(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the arguments and ``func`` to ``parser``."""
    add_run_arguments(parser, "adapt.rounds=2")
    parser.set_defaults(func=run, command="adapt")


def run(args: argparse.Namespace) -> int:
    """Load the config, adapt, print a summary (see :func:`contraseg.commands.train.start_run`)."""
    from ..adapt.config import load_adapt_config
    from ..adapt.run import run_adaptation

    set_threads(args.threads)
    cfg, adapt = load_adapt_config(args.config, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / cfg.name

    def fit(context: Any) -> dict[str, Any]:
        return run_adaptation(cfg, adapt, run_dir, resume=args.resume, context=context,
                              resume_changed=args.resume_changed)

    context, summary = start_run(args, run_dir, "contraseg adapt", fit)
    if context.is_main:
        print_summary(summary, summary["run_dir"], method=adapt.method)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m contraseg.adapt``: the same one-line errors and exit codes as ``contraseg``."""
    parser = argparse.ArgumentParser(prog="python -m contraseg.adapt",
                                     description=" ".join(__doc__.split("\n\n")[1].split()))
    configure(parser)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return report_errors("adapt", lambda: run(args), getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
