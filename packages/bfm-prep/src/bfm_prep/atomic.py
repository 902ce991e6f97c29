"""Atomic writing: every file bfm-prep writes (artifacts, pictures, meshes, pairs files, the
synthetic model's files) goes through :func:`atomic_path`.

A file is written to a temporary file in its own folder and renamed onto its path only when
the writing succeeded, so an interrupted or failed command never leaves a partial file (nor
its temporary file) behind, and an existing file is replaced whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import h5py


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A new temporary file beside ``path`` to write; renamed onto ``path`` when the block
    succeeds, removed when it raises.

    The folder is created if missing. The temporary file (``.<name>.<random>.tmp``) gets the
    permissions a plain ``open`` would give: mkstemp makes files readable by the owner only,
    and outputs are shared between the users of a machine like any other file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file opened beside ``path``, renamed onto it only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
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


__all__ = ["atomic_file", "atomic_h5", "atomic_path", "atomic_write_bytes"]
