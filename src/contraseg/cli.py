"""The ``contraseg`` command line.

Each sub-command lives in ``contraseg/commands/<name>.py`` and exposes
``add_parser(subparsers)`` (which registers its arguments and sets ``func``) and
``run(args) -> int``. Every user-caused failure (a :class:`UserError`, bad data or
config, an unreadable or unwritable file, a full disk) ends in one line
``contraseg COMMAND: error: ...`` naming the file or key, exit code 2, no traceback;
``--debug`` (anywhere on the command line) shows the traceback instead. Ctrl-C exits
with 130 (``train`` and ``adapt`` first save ``last.pth``; SIGTERM there exits 143).
The error type and this reporting are :mod:`contraseg.errors`, below every command.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import Interrupted, UserError, add_debug_argument, report_errors

# Modules under contraseg.commands, in the order `contraseg --help` lists them.
COMMANDS = (
    "train",
    "adapt",
    "config",
    "eval",
    "predict",
    "convert_checkpoint",
    "datasets",
    "prototypes",
    "pseudo_label",
    "weak_labels",
    "viz",
    "demo",
)


__all__ = ["Interrupted", "UserError", "build_parser", "main", "report_errors"]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="contraseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"contraseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"contraseg.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"contraseg.commands.{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    add_debug_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return report_errors(args.command, lambda: args.func(args), getattr(args, "debug", False))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
