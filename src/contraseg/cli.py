"""The ``contraseg`` command line.

Each sub-command lives in ``contraseg/commands/<name>.py`` and exposes
``add_parser(subparsers)`` (which registers its arguments and sets ``func``) and
``run(args) -> int``. Every user-caused failure (a :class:`UserError`, bad data or
config, an unreadable or unwritable file, a full disk) ends in one line
``contraseg COMMAND: error: ...`` naming the file or key, exit code 2, no traceback;
``--debug`` (anywhere on the command line) shows the traceback instead. Ctrl-C exits
with 130 (``train`` and ``adapt`` first save ``last.pth``; SIGTERM there exits 143).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .commands._common import USER_ERRORS, Interrupted, UserError, error_message, exit_code_of

# Modules under contraseg.commands, in the order `contraseg --help` lists them.
COMMANDS = (
    "train",
    "adapt",
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


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on ``parser`` and every nested sub-command (so it works in any position)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error instead of one line")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _add_debug(child)


def report_errors(command: str, body, debug: bool = False) -> int:
    """Run ``body()``; a user-caused failure prints one ``contraseg COMMAND: error: ...``
    line on stderr and returns its exit code (2; 130/143 when interrupted), unless ``debug``."""
    try:
        return int(body() or 0)
    except (*USER_ERRORS, KeyboardInterrupt) as err:
        if debug:
            raise
        print(f"contraseg {command}: error: {error_message(err)}", file=sys.stderr, flush=True)
        return exit_code_of(err)


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
    _add_debug(parser)
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
