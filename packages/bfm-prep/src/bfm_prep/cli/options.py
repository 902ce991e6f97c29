"""Option parsing shared by several commands (no math here either): landmark options, output
paths checked before any work (writable, and never an input), the library's parameter names
said as options, plurals."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from bfm_prep.errors import PrepError


@contextlib.contextmanager
def option_words(**words: str) -> Iterator[None]:
    """Errors of the library calls inside the block name this command's options, not the
    library's parameters: ``option_words(n_shape="--n-shape")`` turns "n_shape 300 asks for
    ..." into "--n-shape 300 asks for ..." (:meth:`bfm_prep.errors.PrepError.in_words`)."""
    try:
        yield
    except PrepError as e:
        if e.template is None:
            raise
        raise e.in_words(words) from None


def parse_landmark_options(items: list[str]) -> dict[str, Path]:
    """``["NAME=FILE", ...]`` -> ``{NAME: Path(FILE)}``; a one-line error for a bad item."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise PrepError(
                f"--landmarks {item!r}: expected NAME=FILE, e.g. aflw21=Landmarks21_BFM.anl."
            )
        if name in out:
            raise PrepError(f"--landmarks: the name {name!r} is given twice.")
        out[name] = Path(path)
    return out


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 file"``, ``"2 files"``; ``many`` for an irregular plural (``"vertex"``,
    ``"vertices"``)."""
    n = int(n)
    return f"{n} {word if n == 1 else (many or word + 's')}"


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (``.`` for a relative path)."""
    p = path
    while not p.exists():
        parent = p.parent
        if parent == p:
            break
        p = parent
    return p


def _check_one(option: str, path: Path, folder: bool) -> None:
    if path.exists():
        if folder and not path.is_dir():
            raise PrepError(
                f"{option} {path}: exists and is not a folder; pass a folder to write into."
            )
        if not folder and path.is_dir():
            raise PrepError(f"{option} {path}: is a folder; give the path of the file to write.")
    # The folder the file (or the new folder) goes in: it exists, or its nearest existing
    # ancestor is a folder we can create files (and so folders) in.
    where = path if folder and path.is_dir() else (path.parent if str(path.parent) else Path("."))
    base = _nearest_existing(where)
    if not base.is_dir():
        raise PrepError(
            f"{option} {path}: {base} is a file, not a folder; pass a path in a folder."
        )
    try:  # os.access is unreliable (root, read-only mounts, /proc): try for real
        with tempfile.TemporaryFile(dir=base, prefix=".bfm-prep-check."):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise PrepError(
            f"{option} {path}: cannot write in the folder {base} ({reason}); pass a "
            "path in a folder you can write to."
        ) from None


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same path once resolved (``./``, ``..``,
    symbolic links), or one existing file reached by two names (a hard link)."""
    with contextlib.suppress(OSError):
        if os.path.samefile(a, b):
            return True
    return os.path.realpath(a) == os.path.realpath(b)


Pair = tuple[str, Path | None]


def check_outputs(
    *outputs: Pair,
    folders: tuple[str, ...] = (),
    inputs: Iterable[Pair] = (),
    folder_files: Mapping[str, Iterable[str]] | None = None,
) -> None:
    """Refuse output paths that cannot be written, or that would replace an input, before any
    work is done or any output is written: the one check of every command's outputs.

    Args:
        outputs: ``(option, path)`` pairs, e.g. ``("--out", out)``; a None path is skipped.
        folders: the options whose path is a folder to write into (created if missing);
            the others are files.
        inputs: ``(option, path)`` pairs of every file the command reads (``("--model",
            model)``, one ``("--landmarks", file)`` per set, ...); a None path is skipped.
        folder_files: for a folder option, the names of the files the command may write
            into it; none of them may be an input either.

    Raises:
        PrepError: a file path that is a folder, a folder path that is a file, a parent that
            is a file, a folder that cannot be written (or made), two outputs on one path, or
            an output that is an input, reached by any path (the same name, another spelling,
            a symbolic or a hard link).
    """
    inputs = [(option, Path(p)) for option, p in inputs if p is not None]
    seen: list[tuple[Path, str]] = []
    for option, path in outputs:
        if path is None:
            continue
        path = Path(path)
        _check_one(option, path, option in folders)
        if option in folders:
            for name in (folder_files or {}).get(option, ()):
                for in_option, in_path in inputs:
                    if same_file(path / name, in_path):
                        raise PrepError(
                            f"{option} {path}: the command would write its {name} there, over "
                            f"the input {in_option} {in_path}; pass another folder for {option}."
                        )
        else:
            for in_option, in_path in inputs:
                if same_file(path, in_path):
                    raise PrepError(
                        f"{option} {path}: is the same file as the input {in_option} {in_path}; "
                        f"an output never replaces an input, so pass another path for {option}."
                    )
        for other, other_option in seen:
            if same_file(path, other):
                raise PrepError(
                    f"{option} {path}: is also given as {other_option}; pass different "
                    "paths for the two outputs."
                )
        seen.append((path, option))
