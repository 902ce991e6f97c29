"""The checks of model arrays: data-type kind, finiteness, index range, positive standard
deviations. The one place they are made, for the artifact readers (:mod:`bfm_prep.artifact`,
on each dataset as it comes out of the file, before anything converts it), for the in-memory
model (:meth:`bfm_prep.model.MorphableModel.validate`) and so for ``inspect``, which reads an
artifact with the readers before it summarises it.

Kinds, as the artifact format says (docs/artifact-format.md):

- :data:`FLOAT`: floating-point numbers (coordinates, bases, standard deviations, colour, UV),
  every one finite; :data:`REAL` is the same with integers allowed too, for arrays made in
  memory (``np.ones(k)`` and ``[1, 2]`` are both fine there);
- :data:`INDEX`: integers (faces, landmarks, mirror pairs, the symmetry line); a float is
  refused even when whole, since bfm-prep writes int64 and a float there means damage;
- :data:`MASK`: booleans, or integers that are all 0 or 1 (the grid's ``inside``);
- :data:`TEXT`: strings (the components' kinds).

A failed check raises :class:`DamagedArray`, a :class:`~bfm_prep.errors.PrepError` that keeps
the array's name and what is wrong, for the reader to say which file it came from.
"""

from __future__ import annotations

import numpy as np

from bfm_prep.errors import PrepError

FLOAT = "float"
REAL = "real"
INDEX = "index"
MASK = "mask"
TEXT = "text"

_EXPECTED = {
    FLOAT: "floating-point numbers",
    REAL: "real numbers",
    INDEX: "integer indices",
    MASK: "booleans (or 0/1)",
    TEXT: "text",
}
_KINDS = {FLOAT: "f", REAL: "fiu", INDEX: "iu", MASK: "biu", TEXT: "SUO"}


class DamagedArray(PrepError):
    """An array that fails a check of this module.

    Attributes:
        name: the array's name (a dataset such as ``"shape/basis"``, or a field).
        problem: what is wrong, a phrase that follows the name (``"holds 3 NaN or infinite
            values"``).
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name = name
        self.problem = problem


def describe_dtype(dtype: np.dtype) -> str:
    """A data type in words: ``"byte strings (|S32)"``, ``"float64"``, ``"bool"``."""
    dtype = np.dtype(dtype)
    if dtype.names:
        return "a compound record"
    if dtype.kind == "S":
        return f"byte strings ({dtype.str})"
    if dtype.kind == "U":
        return f"text ({dtype.str})"
    if dtype.kind == "O":
        return "objects (variable-length strings or references)"
    return str(dtype)


def check_kind(a, name: str, kind: str) -> np.ndarray:
    """``a`` as an array whose data type is of ``kind`` (:data:`FLOAT`, :data:`REAL`,
    :data:`INDEX`, :data:`MASK`, :data:`TEXT`); numbers are also checked finite, a mask 0/1.

    Raises:
        DamagedArray: another data type, a NaN or an infinity, a mask value other than 0/1.
    """
    a = np.asarray(a)
    if a.dtype.names or a.dtype.kind not in _KINDS[kind]:
        raise DamagedArray(
            name, f"has the data type {describe_dtype(a.dtype)}, expected {_EXPECTED[kind]}"
        )
    if kind in (FLOAT, REAL):
        check_finite(a, name)
    if kind == MASK and a.dtype.kind != "b" and a.size and not np.isin(a, (0, 1)).all():
        raise DamagedArray(name, "holds values other than 0 and 1, expected a mask")
    return a


def check_finite(a: np.ndarray, name: str) -> None:
    """Raise :class:`DamagedArray` when a float array holds NaN or infinity."""
    a = np.asarray(a)
    if a.dtype.kind in "fc" and a.size:
        finite = np.isfinite(a)
        if not finite.all():
            bad = int(a.size - np.count_nonzero(finite))
            raise DamagedArray(name, f"holds {bad} NaN or infinite value{'s' * (bad != 1)}")


def check_positive(std: np.ndarray, name: str) -> None:
    """Raise :class:`DamagedArray` unless every standard deviation is > 0 (a component with
    std 0 carries nothing, and ``basis / std`` gives its unit component)."""
    std = np.asarray(std)
    if std.size and not (std > 0).all():
        bad = int(std.size - np.count_nonzero(std > 0))
        raise DamagedArray(
            name,
            f"holds {bad} value{'s' * (bad != 1)} that {'are' if bad != 1 else 'is'} not "
            "positive, expected standard deviations (> 0)",
        )


def check_index_range(idx: np.ndarray, name: str, n: int, what: str = "vertices") -> None:
    """Raise :class:`DamagedArray` when an index lies outside ``0 .. n - 1``."""
    idx = np.asarray(idx)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise DamagedArray(
            name, f"indexes {what} {idx.min()}..{idx.max()}, outside 0..{max(n - 1, 0)}"
        )


def check_shape(a: np.ndarray, name: str, shape: tuple[int | None, ...]) -> None:
    """Raise :class:`DamagedArray` unless ``a`` has ``shape`` (None matches any size)."""
    ok = a.ndim == len(shape) and all(
        w is None or w == s for w, s in zip(shape, a.shape, strict=True)
    )
    if not ok:
        want = "(" + ", ".join("n" if w is None else str(w) for w in shape)
        want += ",)" if len(shape) == 1 else ")"
        raise DamagedArray(name, f"has shape {tuple(a.shape)}, expected {want}")


__all__ = [
    "FLOAT",
    "INDEX",
    "REAL",
    "MASK",
    "TEXT",
    "DamagedArray",
    "check_finite",
    "check_index_range",
    "check_kind",
    "check_positive",
    "check_shape",
    "describe_dtype",
]
