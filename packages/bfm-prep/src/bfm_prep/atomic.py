"""Atomic writing: every file bfm-prep writes (artifacts, pictures, meshes, pairs files, the
synthetic model's files) goes through :func:`atomic_path`.

A file is written to a temporary file in its own folder and renamed onto its path only when
the writing succeeded, so an interrupted or failed command never leaves a partial file (nor
its temporary file) behind, and an existing file is replaced whole or not at all. Inside
:func:`all_or_nothing` the renames wait for the end of the block, so a command that writes
several files (``plot``, ``uv-embed --plot``, ``synth``) leaves all of them or none.

Temporary files are named ``.<target name>.<8 characters of [a-z0-9_]>.tmp``. A process killed
with SIGKILL (or a power cut) cannot remove its own; the next write to the same target does
(:func:`remove_stale_temporaries`). It removes a file only when all of these hold:

- its name is that pattern for this target's name, in the target's folder (never another
  target's temporary file, never a file the writer did not make);
- it was last modified more than :data:`STALE_AFTER_S` seconds ago. A writer modifies its file
  as it writes, and one writing several files at once (:func:`all_or_nothing`) touches those
  it holds at least every :data:`TOUCH_EVERY_S` seconds, so a live writer's file never gets
  that old;
- no process holds a lock on it: HDF5 locks the files it writes and :func:`atomic_file` locks
  its own, so the file of a writer that is alive but stopped (Ctrl-Z) is kept however old.
  (On a file system without ``flock`` the age alone decides.)
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import h5py

# A temporary file untouched for this long belongs to a writer that is gone.
STALE_AFTER_S = 15 * 60
# How often a writer holding finished files for :func:`all_or_nothing` refreshes their times.
TOUCH_EVERY_S = 60
_TEMPORARY_SUFFIX = re.compile(r"\.[a-z0-9_]{8}\.tmp")


class _Pending:
    """The temporary files of an :func:`all_or_nothing` block, waiting for their rename."""

    def __init__(self) -> None:
        self.renames: list[tuple[Path, Path]] = []
        self.touched = time.monotonic()

    def add(self, tmp: Path, path: Path) -> None:
        self.renames.append((tmp, path))
        if time.monotonic() - self.touched > TOUCH_EVERY_S:
            for held, _ in self.renames:
                with contextlib.suppress(OSError):
                    os.utime(held)
            self.touched = time.monotonic()


_pending: contextvars.ContextVar[_Pending | None] = contextvars.ContextVar(
    "bfm_prep_atomic_pending", default=None
)


def _is_temporary_of(name: str, target: str) -> bool:
    prefix = f".{target}"
    return name.startswith(prefix) and _TEMPORARY_SUFFIX.fullmatch(name[len(prefix) :]) is not None


def _locked(path: Path) -> bool:
    """True when another open file holds a lock on ``path`` (False where locks are unsupported)."""
    try:
        with open(path, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError as e:
        return e.errno in (errno.EAGAIN, errno.EACCES)
    return False


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed writer left for ``path`` (the rule is in the
    module docstring); returns those removed. Never raises for a file it cannot remove."""
    path = Path(path)
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        if not _is_temporary_of(entry.name, path.name):
            continue
        candidate = Path(entry.path)
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if now - entry.stat(follow_symlinks=False).st_mtime <= STALE_AFTER_S:
                continue
            if _locked(candidate):
                continue
            candidate.unlink()
        except OSError:
            continue
        removed.append(candidate)
    return removed


def _new_temporary(path: Path) -> Path:
    """Create ``.<name>.<random>.tmp`` beside ``path``: created exclusively, with the mode a
    plain ``open`` would give (0o666 less the umask, applied by the system itself)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary file beside ``path`` to write; renamed onto ``path`` when the block
    succeeds (at the end of an enclosing :func:`all_or_nothing` block, if any), removed when
    it raises.

    The folder is created if missing; stale temporary files of ``path`` are removed first
    (module docstring). The temporary file gets the permissions a plain ``open`` would give,
    so outputs are shared between the users of a machine like any other file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _new_temporary(path)
    try:
        yield tmp
        pending = _pending.get()
        if pending is None:
            os.replace(tmp, path)
        else:
            pending.add(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Every :func:`atomic_path` write inside the block is renamed onto its path only when the
    whole block succeeds; when it raises (or is interrupted), none is, and every temporary file
    is removed, so the files of an earlier run stay as they were. Blocks may nest: the
    outermost one renames."""
    if _pending.get() is not None:
        yield
        return
    pending = _Pending()
    token = _pending.set(pending)
    try:
        yield
        _pending.reset(token)
        token = None
        while pending.renames:
            tmp, path = pending.renames[0]
            os.replace(tmp, path)
            pending.renames.pop(0)
    finally:
        if token is not None:
            _pending.reset(token)
        for tmp, _ in pending.renames:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file opened beside ``path``, renamed onto it only when the block succeeds.
    The file is locked while it is written (the stale-file rule of the module docstring)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        with contextlib.suppress(OSError):
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield f


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike) -> Iterator[h5py.File]:
    """An HDF5 file opened beside ``path``, renamed onto it only when the block succeeds."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename; returns the path."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


__all__ = [
    "STALE_AFTER_S",
    "all_or_nothing",
    "atomic_file",
    "atomic_h5",
    "atomic_path",
    "atomic_write_bytes",
    "remove_stale_temporaries",
]
