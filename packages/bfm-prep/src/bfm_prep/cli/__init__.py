"""Thin command-line front: a command parses, calls one library function, reports.

Errors a user can cause (:class:`bfm_prep.PrepError`) print one line and exit with status 2.
So do the file-system errors a path given on the command line can cause (a folder that
cannot be written, a missing parent, a file where a folder belongs, ...): one line naming the
path, exit status 2. Any other exception is a bug and keeps its traceback. A command ended
by SIGTERM (a killed job, a time limit) exits like one interrupted with Ctrl-C: the file being
written is left as it was, its temporary file removed (exit status 143).
"""

from __future__ import annotations

import signal
import sys
import threading

# Importing a command module registers its command on ``app``.
from bfm_prep.cli import (  # noqa: E402,F401  (import order: registration)
    cmd_embed,
    cmd_expression,
    cmd_inspect,
    cmd_matlab,
    cmd_plot,
    cmd_resample,
    cmd_synth,
)
from bfm_prep.cli.app import app
from bfm_prep.errors import PrepError

# OSErrors about a path (never h5py's bare OSError about a file's content, nor a bug's).
PATH_ERRORS = (
    PermissionError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
)


def path_error_message(e: OSError) -> str:
    """One line for a file-system error: the path, what went wrong, what to do."""
    path = e.filename if e.filename is not None else e.filename2
    reason = e.strerror or str(e)
    hint = {
        PermissionError: "check its permissions or pass a path you can write to",
        FileNotFoundError: "check the path and that its folder exists and can be written",
        FileExistsError: "remove it or pass another path",
        NotADirectoryError: "a part of the path is a file, not a folder; check the path",
        IsADirectoryError: "it is a folder; pass the path of a file",
    }.get(type(e), "check the path")
    where = f"{path}: " if path is not None else ""
    return f"{where}{reason[:1].lower()}{reason[1:]}; {hint}."


def _terminated(signum: int, frame) -> None:
    """SIGTERM (a killed job, a time limit) as SystemExit, so that the atomic writers remove
    their temporary file on the way out instead of leaving it behind."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``bfm-prep``."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:
        app(args=argv, prog_name="bfm-prep")
    except PrepError as e:
        print(f"bfm-prep: error: {e}", file=sys.stderr)
        sys.exit(2)
    except PATH_ERRORS as e:
        print(f"bfm-prep: error: {path_error_message(e)}", file=sys.stderr)
        sys.exit(2)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


__all__ = ["app", "main"]
