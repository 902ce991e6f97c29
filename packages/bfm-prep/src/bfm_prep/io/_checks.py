"""Shared checks for the readers of external files: every failure is one PrepError sentence
that names the file and what is wrong with it."""

from __future__ import annotations

import os
import warnings

import numpy as np

from bfm_prep.errors import PrepError


def fail(path: str | os.PathLike, problem: str, hint: str | None = None) -> PrepError:
    """A PrepError ``"<path>: <problem>; <hint>."``; returned, so callers ``raise fail(...)``."""
    msg = f"{path}: {problem}"
    if hint:
        msg += f"; {hint}"
    return PrepError(msg.rstrip(".") + ".")


def require_file(path: str | os.PathLike) -> None:
    """Raise a PrepError when ``path`` is not an existing regular file (a folder is called a
    folder, not a missing file)."""
    if os.path.isdir(path):
        raise fail(path, "is a folder, not a file", "pass the file itself")
    if not os.path.exists(path):
        raise fail(path, "no such file", "check the path")
    if not os.path.isfile(path):
        raise fail(path, "is not a regular file", "pass a regular file")


def dtype_name(a: np.ndarray) -> str:
    if a.dtype == object:
        return "object (a MATLAB cell or struct)"
    if a.dtype.kind in "US":
        return "text (a MATLAB char array)"
    if a.dtype.names:
        return "a record (a MATLAB struct)"
    return str(a.dtype)


def check_real(a: np.ndarray, name: str, path, *, finite: bool = True) -> np.ndarray:
    """``a`` must hold real numbers (integer or floating, not bool/complex/text/cell)."""
    a = np.asarray(a)
    if a.dtype.kind not in "iuf":
        raise fail(
            path,
            f"{name} has the wrong data type {dtype_name(a)}",
            "expected real numbers (single or double)",
        )
    if finite and a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise fail(path, f"{name} contains {bad} NaN or infinite values", "the file is damaged")
    return a


def as_index_array(a: np.ndarray, name: str, path) -> np.ndarray:
    """Integer indices as int64: integer dtypes, or floating values that are whole numbers."""
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        if a.size and not np.isfinite(a).all():
            raise fail(
                path, f"{name} contains NaN or infinite values", "expected whole-number indices"
            )
        r = np.rint(a)
        if a.size and np.abs(a - r).max() > 0:
            raise fail(
                path,
                f"{name} has the wrong data type: it holds fractional values",
                "expected whole-number vertex indices",
            )
        return r.astype(np.int64)
    raise fail(path, f"{name} has the wrong data type {dtype_name(a)}", "expected integer indices")


def as_vector(
    a: np.ndarray, name: str, path, length: int | None = None, length_what: str = ""
) -> np.ndarray:
    """A (n,), (n, 1) or (1, n) array as a flat vector, optionally of a given length."""
    a = np.asarray(a)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim > 2 or (a.ndim == 2 and min(a.shape) != 1 and a.size != 0):
        raise fail(
            path, f"{name} has the wrong shape {tuple(a.shape)}", "expected a vector (n x 1)"
        )
    v = a.reshape(-1)
    if length is not None and v.size != length:
        what = f" ({length_what})" if length_what else ""
        raise fail(
            path,
            f"{name} has the wrong shape {tuple(a.shape)}: {v.size} entries, "
            f"expected {length}{what}",
        )
    return v


def check_matrix(
    a: np.ndarray,
    name: str,
    path,
    rows: int | None = None,
    cols: int | None = None,
    rows_what: str = "",
    cols_what: str = "",
) -> np.ndarray:
    """A 2-D array with optional fixed row/column counts."""
    a = np.asarray(a)
    if a.ndim != 2:
        raise fail(path, f"{name} has the wrong shape {tuple(a.shape)}", "expected a 2-D matrix")
    for axis, want, what in ((0, rows, rows_what), (1, cols, cols_what)):
        if want is not None and a.shape[axis] != want:
            w = f" ({what})" if what else ""
            dim = "rows" if axis == 0 else "columns"
            raise fail(
                path, f"{name} has the wrong shape {tuple(a.shape)}: expected {want} {dim}{w}"
            )
    return a


def check_indices(idx: np.ndarray, name: str, path, n: int | None, base: int = 0) -> np.ndarray:
    """Convert ``base``-based indices to 0-based int64 and check they lie in 0..n-1."""
    idx = np.asarray(idx, dtype=np.int64) - base
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        upper = (n - 1) if n is not None else None
        if lo < 0 or (upper is not None and hi > upper):
            rng = f"{base}..{n - 1 + base}" if n is not None else f">= {base}"
            raise fail(
                path,
                f"{name} has an index out of range: values run from {lo + base} to "
                f"{hi + base}, valid {base}-based indices are {rng}",
            )
    return idx


def check_component_count(
    requested: int | None, available: int, parameter: str, what: str, path
) -> int:
    """A requested component count, checked against the ``available`` ones (None: all).

    Args:
        parameter: the reader's parameter that asked (``"n_shape"``), named in the message
            (:meth:`PrepError.naming`, so that a command can say its option instead).
        what: the kind of component, for the message (``"identity"``).
    """
    if requested is None:
        return available
    field = "{" + parameter + "}"
    if isinstance(requested, bool) or int(requested) != requested or requested < 0:
        raise PrepError.naming(
            field + " {requested!r} is not a valid component count; pass 0 or more.",
            requested=requested,
        )
    if requested > available:
        raise PrepError.naming(
            field + " {requested} asks for more {what} components than the "
            "{available} in {path}; pass at most {available}.",
            requested=requested,
            what=what,
            available=available,
            path=path,
        )
    return int(requested)


def check_kept_spread(spread: np.ndarray, name: str, path, kept: int, parameter: str) -> None:
    """The standard deviations (or variances) of the ``kept`` first components must be > 0:
    a component without spread adds nothing and has no unit component (``basis / std``).

    Negative values are refused by the callers for every component (a damaged file); a zero
    only matters among those kept, so the message says how many to keep instead.
    """
    zero = np.flatnonzero(np.asarray(spread)[:kept] <= 0)
    if zero.size:
        first = int(zero[0])
        raise PrepError.naming(
            "{path}: " + name + " is 0 for component {number}, one of the {kept} kept; a "
            "component without variance adds nothing: keep at most {fewer} with {"
            + parameter
            + "}.",
            path=path,
            number=first + 1,
            kept=kept,
            fewer=first,
        )


def warn_unused_vertices(faces: np.ndarray, n: int, path, mesh: str = "mesh") -> int:
    """Warn (not fail) when some vertices belong to no triangle; return their count."""
    used = np.zeros(n, dtype=bool)
    used[np.asarray(faces).reshape(-1)] = True
    unused = int(n - np.count_nonzero(used))
    if unused:
        warnings.warn(
            f"{path}: {unused} of the {n} vertices of the {mesh} are used by no "
            "triangle; they are kept (they carry no surface)",
            stacklevel=3,
        )
    return unused


def orient_front(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, bool]:
    """Faces wound counter-clockwise seen from +z (the artifact convention).

    The area-weighted normals of a face mesh seen from the front sum to a vector along +z; when
    the sum points to -z every triangle is reversed (columns 1 and 2 swapped).
    Returns (faces, flipped).

    stn-core has a twin, ``stn_core.grid_model.orient_faces_towards_camera``, that cannot be
    shared: bfm-prep never imports torch or stn-core, stn-core never imports bfm-prep, and
    each must orient the faces of files written elsewhere.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if f.size == 0:
        return f, False
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    nz = (
        (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    ).sum()
    if nz < 0:
        return np.ascontiguousarray(f[:, [0, 2, 1]]), True
    return np.ascontiguousarray(f), False
