"""How every command-line entry point reports errors: a user error is one line, a bug keeps its traceback.

An entry script hands its parser and ``main`` to :func:`run_cli` under ``if __name__ == "__main__":``::

    if __name__ == "__main__":
        run_cli(main, get_args_parser())

:func:`run_cli` adds ``--debug`` to the parser, parses the command line and calls ``main(args)``. A
user error then prints ``<prog>: error: <message>`` on stderr (one line, followed for some errors by
indented detail lines such as an expected folder tree) and exits with status 2 (the status
``argparse`` uses for a bad command line); ``--debug`` or ``MULTISHIFTSEG_DEBUG=1`` in the
environment shows the traceback instead. Any other exception is a programming error and keeps its
traceback.

A user error is a :class:`lib.errors.UserError` (``ConfigError``, ``IncompatibleCheckpointError``,
...), or one of the file-system errors in :data:`FILE_ERRORS`: every path the commands open is
given by the user (directly, or through a config or a run folder), so a missing, unreadable or
misplaced file is the user's to fix, and its message names the path.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from lib.errors import UserError

T = TypeVar("T")

DEBUG_ENV = "MULTISHIFTSEG_DEBUG"
USER_ERROR_STATUS = 2
FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
"""File-system errors reported as user errors (one line, status 2)."""


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is the user's to fix (reported in one line) rather than a programming error."""
    return isinstance(err, (UserError, *FILE_ERRORS))


def error_message(err: BaseException) -> str:
    """The message of a user error: ``path: permission denied`` for an operating-system error."""
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename} -> {err.filename2}" if err.filename2 else err.filename
        what = err.strerror[0].lower() + err.strerror[1:]
        return f"{where}: {what}" if where is not None else what
    return str(err)


def debug_requested(args: argparse.Namespace | None = None) -> bool:
    """``--debug`` was given or ``MULTISHIFTSEG_DEBUG`` is set to a non-empty value other than 0."""
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def add_debug_arg(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--debug`` (show the traceback of a user error) unless the parser has it already."""
    if parser.get_default("debug") is None:
        parser.add_argument(
            "--debug",
            action="store_true",
            help=f"show the full traceback of an error (also: {DEBUG_ENV}=1 in the environment)",
        )
    return parser


def run_cli(
    main: Callable[[argparse.Namespace], T],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    *,
    intermixed: bool = False,
) -> T:
    """Parse ``argv`` (default: the command line) with ``parser`` + ``--debug`` and return ``main(args)``.

    A user error (:func:`is_user_error`) becomes one line on stderr and ``SystemExit(2)``, unless
    debugging is requested (:func:`debug_requested`). ``intermixed``: parse with
    ``parse_intermixed_args`` (options after positional overrides).
    """
    add_debug_arg(parser)
    args = parser.parse_intermixed_args(argv) if intermixed else parser.parse_args(argv)
    try:
        return main(args)
    except Exception as err:
        if debug_requested(args) or not is_user_error(err):
            raise
        first, *details = error_message(err).splitlines() or [type(err).__name__]
        details = [f"  {line.rstrip()}" for line in details if line.strip()]
        lines = [f"{parser.prog}: error: {first}", *details]
        print("\n".join(lines), file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_STATUS) from None
