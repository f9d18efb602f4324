"""The command line's error type and its one-line error reporting.

Every command (``contraseg/commands/*``) raises :class:`UserError` for a mistake of its
user and runs under :func:`report_errors`, so that every user-caused failure (a
:class:`UserError`, bad data or config, an unreadable or unwritable file, a full disk)
ends in one line ``contraseg COMMAND: error: ...`` with exit code 2 and no traceback;
``--debug`` (:func:`add_debug_argument`) shows the traceback instead. Ctrl-C exits with
130, an :class:`Interrupted` run with its own code (130 / 143).

* :func:`error_message` turns any user-caused exception into the one line printed
  after ``error:`` (a DataLoader worker's error is unwrapped to the original message; an
  ``OSError`` names its file).
* :data:`USER_ERRORS` are the exception types a user causes; anything else is a bug and
  keeps its traceback.

This module sits below ``contraseg.cli``, ``contraseg.commands`` and every library
package, and imports none of them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Callable

__all__ = ["Interrupted", "USER_ERRORS", "UserError", "add_debug_argument", "error_message", "exit_code_of",
           "report_errors"]

MAX_MESSAGE = 400  # characters of an error line


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2 (or ``exit_code``)."""

    exit_code = 2


class Interrupted(UserError):
    """A run stopped by SIGINT (exit 130) or SIGTERM (exit 143) after saving its state."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Exceptions that a user causes (bad data, config, files, disk, permissions): one line,
# exit 2. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, OSError, FloatingPointError)

_WORKER_HEADER = re.compile(r"Caught (\w+) in DataLoader worker process \d+\.?")


def error_message(err: BaseException) -> str:
    """One line for ``err``: the DataLoader worker's original message, an OSError's file and
    reason, whitespace collapsed, at most :data:`MAX_MESSAGE` characters."""
    text = str(err)
    if "Original Traceback" in text or _WORKER_HEADER.search(text):
        # torch re-raises a worker's exception as "Caught X in DataLoader worker process N.
        # Original Traceback ...\nX: original message"; the last "X: " line is the message
        lines = [line for line in text.splitlines() if line.strip()]
        name = _WORKER_HEADER.search(text)
        for line in reversed(lines):
            head, sep, rest = line.partition(": ")
            if sep and (name is None or head.strip().endswith(name.group(1))):
                text = rest
                break
        else:
            text = lines[-1] if lines else text
    elif isinstance(err, OSError) and err.filename is not None:
        reason = err.strerror or text
        target = f"{err.filename} -> {err.filename2}" if err.filename2 is not None else str(err.filename)
        if isinstance(err, FileExistsError) and Path(str(err.filename)).is_file():
            text = f"cannot create the folder {target}: a file has that name"
        else:
            text = f"{target}: {reason}"
    elif isinstance(err, KeyboardInterrupt):
        text = "interrupted"
    if not text.strip():
        text = type(err).__name__
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return text


def exit_code_of(err: BaseException) -> int:
    """2 for user errors, 130 for Ctrl-C, ``err.exit_code`` for :class:`Interrupted`."""
    if isinstance(err, KeyboardInterrupt):
        return 130
    return int(getattr(err, "exit_code", 2))


def report_errors(command: str, body: Callable[[], int | None], debug: bool = False) -> int:
    """Run ``body()``; a user-caused failure prints one ``contraseg COMMAND: error: ...``
    line on stderr and returns its exit code (2; 130/143 when interrupted), unless ``debug``."""
    try:
        return int(body() or 0)
    except (*USER_ERRORS, KeyboardInterrupt) as err:
        if debug:
            raise
        for line in getattr(err, "messages", None) or [error_message(err)]:  # several config errors: a line each
            print(f"contraseg {command}: error: {line}", file=sys.stderr, flush=True)
        return exit_code_of(err)


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on ``parser`` and every nested sub-command (so it works in any position)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error instead of one line")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                add_debug_argument(child)
