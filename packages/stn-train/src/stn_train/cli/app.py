"""The typer application object, and what every command shares: the one place where a
user's error becomes one line on stderr and exit status 2, a progress bar, plurals.

Errors a user can cause (:class:`stn_train.errors.TrainError`, and stn-core's
:class:`stn_core.StnError` for unreadable model files), file-system errors about a path and
text files that are not text print one line and exit with status 2, without a traceback; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from stn_core import StnError
from typer.core import TyperGroup

from stn_train.errors import TrainError

__all__ = ["app", "fail", "plural", "is_main_process", "progress_bar"]

# OSErrors about a path the user named (never a bare OSError about a file's content).
_PATH_ERRORS = (
    PermissionError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
)


def fail(message: str) -> None:
    """Print ``stn-train: error: MESSAGE`` on one line on stderr and exit with status 2."""
    typer.echo(f"stn-train: error: {' '.join(message.split())}", err=True)
    raise typer.Exit(2)


def _os_error_message(e: OSError) -> str:
    """One sentence for an operating-system error on a file: which file, what, what to do."""
    what = e.strerror or type(e).__name__
    where = e.filename if e.filename is not None else "a file"
    if e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    return f"{where}: {what}; check the path and its permissions, or choose another."


class _Commands(TyperGroup):
    """stn-train's command group: a user's error in any command ends it as :func:`fail`;
    ``--help`` lists the commands in the order of the work."""

    ORDER = ("detect", "run", "eval", "predict", "fit", "synthesize", "version")

    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: (self.ORDER + (n,)).index(n))

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TrainError as e:
            fail(e.for_cli())
        except StnError as e:
            fail(str(e))
        except UnicodeDecodeError as e:
            fail(
                f"a file that should be text is not UTF-8 text ({e.reason} at byte {e.start}); "
                "check that each file argument is the kind of file its option asks for."
            )
        except _PATH_ERRORS as e:
            fail(_os_error_message(e))
        except OSError as e:
            if e.errno is None or (e.filename is None and e.strerror is None):
                raise  # not about a file the user named: a genuine bug, keep the traceback
            fail(_os_error_message(e))


# Help is click's plain formatter, not typer's rich panels (rich_markup_mode=None): rich's
# options table shrinks every column to fit the terminal and cuts long option names with an
# ellipsis (``--photometric-wei…`` at 80 columns or when piped); click's never cuts a name.
app = typer.Typer(
    name="stn-train",
    help="Train, evaluate and apply the 3DMM-STN localiser.",
    cls=_Commands,
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def is_main_process() -> bool:
    """Rank 0 under torchrun (its ``RANK`` variable), or the only process."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def progress_bar(label: str, transient: bool = False) -> Iterator:
    """A rich progress bar on stderr, as a callback ``update(done, total, info="")`` for the
    library's ``progress`` arguments, or None when stderr is not a terminal (a log file or a
    pipe gets no bar). The bar appears at the first update (so a process that never reports
    shows none) and is stopped on the way out."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
    task = None

    def update(done: int, total: int, info: str = "") -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(label, total=total, completed=done, info=info)
        else:
            bar.update(task, completed=done, total=total, info=info)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()
