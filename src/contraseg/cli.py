"""The ``contraseg`` command line.

Each sub-command lives in ``contraseg/commands/<name>.py`` and exposes
``add_parser(subparsers)`` (which registers its arguments and sets ``func``) and
``run(args) -> int``. Errors that the user can fix raise :class:`UserError`; they
are printed as one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules under contraseg.commands, in the order `contraseg --help` lists them.
COMMANDS = (
    "train",
    "adapt",
    "eval",
    "predict",
    "datasets",
    "prototypes",
    "pseudo_label",
    "weak_labels",
    "viz",
    "demo",
)


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contraseg", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"contraseg.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"contraseg.commands.{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"contraseg {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
