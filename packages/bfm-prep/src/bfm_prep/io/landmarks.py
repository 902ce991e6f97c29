"""Landmark definitions: vertex index lists, returned 0-based (int64).

Three text formats, told apart by content:

1. ``.anl`` (3DMM-STN's ``Landmarks21_BFM.anl``, ``Landmarks68_BFM.anl``, ...): lines starting
   with ``%`` are comments, one **1-based** vertex index per line (MATLAB's
   ``textscan(f, '%f', 'CommentStyle', '%')``). A file is read as .anl when its name ends in
   ``.anl``.
2. Plain index lists (any other name, e.g. ``.txt``): one index per line (whitespace-separated
   indices are accepted too), comment lines start with ``#`` or ``%``. **0-based** unless a
   comment line says ``1-based`` (or ``one-based``); a comment saying ``0-based`` is allowed.
3. eos-style mappings (``ibug_to_sfm.txt``, ``ibug_to_bfm2009.txt``; TOML): a
   ``[landmark_mappings]`` section of ``<ibug number> = <vertex index>`` lines, ``#`` comments.
   The vertex indices are **0-based**: eos uses them directly as C++ indices, and the real
   files confirm it (in ``ibug_to_bfm2009.txt`` the nose tip, iBUG 31, is 8319, the 3DMM-STN
   .anl files give 8320 1-based; in ``ibug_to_sfm.txt`` iBUG 31 = 114 is the vertex of largest
   z of the Surrey mean shape and each left/right pair maps to mirror-image vertices, while the
   1-based reading would put them on unrelated vertices). :func:`load_landmarks` returns the
   vertices in iBUG order (the points a file leaves out are skipped);
   :func:`load_landmark_mapping` keeps the iBUG numbers.

Out-of-range indices (given ``n_vertices``) raise a PrepError naming the file and the line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from bfm_prep.io._checks import fail, require_file

_MAPPING_LINE = re.compile(r"^\s*(\d+)\s*=\s*(-?\d+)\s*(?:#.*)?$")
_SECTION = re.compile(r"^\s*\[([^\]]+)\]")
_ONE_BASED = re.compile(r"\b(1|one)[- ]based\b", re.IGNORECASE)
_ZERO_BASED = re.compile(r"\b(0|zero)[- ]based\b", re.IGNORECASE)

ANL = "anl"
INDEX_LIST = "index-list"
EOS_MAPPING = "eos-mapping"


def _read_text(path) -> list[str]:
    require_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except UnicodeDecodeError:
        raise fail(path, "is not a text file", "pass a landmark list (.anl or .txt)") from None


def landmark_format(path: str | os.PathLike, lines: list[str] | None = None) -> str:
    """``"anl"``, ``"eos-mapping"`` or ``"index-list"`` (see the module docstring)."""
    lines = _read_text(path) if lines is None else lines
    if any(_SECTION.match(ln) and "landmark_mappings" in ln for ln in lines) or any(
        _MAPPING_LINE.match(ln) for ln in lines
    ):
        return EOS_MAPPING
    if str(path).lower().endswith(".anl"):
        return ANL
    return INDEX_LIST


def _check_range(values: list[tuple[int, int]], path, n_vertices, base: int) -> None:
    """values: (line number, index as written)."""
    lo = base
    hi = None if n_vertices is None else n_vertices - 1 + base
    for lineno, val in values:
        if val < lo or (hi is not None and val > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise fail(
                path,
                f"line {lineno}: vertex index {val} is out of range "
                f"(valid {base}-based indices: {rng})",
                "check that the landmarks belong to this mesh",
            )


def load_landmark_mapping(path: str | os.PathLike, n_vertices: int | None = None) -> dict[int, int]:
    """An eos-style mapping file as ``{ibug number (1-based label): 0-based vertex index}``."""
    lines = _read_text(path)
    section = None
    out: dict[int, int] = {}
    seen: list[tuple[int, int]] = []
    for lineno, line in enumerate(lines, 1):
        s = line.split("#", 1)[0].strip()
        if not s:
            continue
        m = _SECTION.match(s)
        if m:
            section = m.group(1).strip()
            continue
        if section not in (None, "landmark_mappings"):
            continue
        m = _MAPPING_LINE.match(s)
        if not m:
            raise fail(
                path,
                f"line {lineno} is not '<landmark> = <vertex index>': {s[:40]!r}",
                "expected an eos-style landmark mapping",
            )
        key, val = int(m.group(1)), int(m.group(2))
        if key in out:
            raise fail(path, f"line {lineno}: landmark {key} is mapped twice")
        out[key] = val
        seen.append((lineno, val))
    if not out:
        raise fail(
            path,
            "holds no '<landmark> = <vertex index>' mappings",
            "expected a [landmark_mappings] section",
        )
    _check_range(seen, path, n_vertices, 0)
    return dict(sorted(out.items()))


def _index_list(path, lines: list[str], fmt: str, base: int | None):
    values: list[tuple[int, int]] = []
    declared = None
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        if s[0] in "%#":
            if _ONE_BASED.search(s):
                declared = 1
            elif _ZERO_BASED.search(s):
                declared = 0 if declared is None else declared
            continue
        for tok in s.split():
            try:
                f = float(tok)
            except ValueError:
                raise fail(
                    path,
                    f"line {lineno}: {tok[:20]!r} is not a vertex index",
                    "expected one whole number per line",
                ) from None
            if not np.isfinite(f) or f != int(f):
                raise fail(
                    path,
                    f"line {lineno}: {tok[:20]!r} is not a whole number",
                    "expected vertex indices",
                ) from None
            values.append((lineno, int(f)))
    if base is None:
        base = 1 if fmt == ANL else (declared if declared is not None else 0)
    return values, base


def load_landmarks(
    path: str | os.PathLike, n_vertices: int | None = None, base: int | None = None
) -> np.ndarray:
    """Read a landmark definition as (L,) int64 0-based vertex indices.

    Args:
        path: an .anl file, a plain index list, or an eos-style mapping (module docstring).
        n_vertices: the mesh's vertex count; indices outside it raise a PrepError.
        base: force the index base (0 or 1) of an .anl/plain list, overriding the rules above.
    """
    lines = _read_text(path)
    fmt = landmark_format(path, lines)
    if fmt == EOS_MAPPING:
        return np.asarray(list(load_landmark_mapping(path, n_vertices).values()), dtype=np.int64)
    if base not in (None, 0, 1):
        raise fail(path, f"base={base!r} is not 0 or 1")
    values, b = _index_list(path, lines, fmt, base)
    if not values:
        raise fail(path, "holds no vertex indices", "expected one index per line")
    _check_range(values, path, n_vertices, b)
    return np.asarray([v for _, v in values], dtype=np.int64) - b


def landmark_base(path: str | os.PathLike) -> int:
    """The index base the file is read with (0 or 1)."""
    lines = _read_text(path)
    fmt = landmark_format(path, lines)
    if fmt == EOS_MAPPING:
        return 0
    return _index_list(path, lines, fmt, None)[1]


def default_landmark_name(path: str | os.PathLike, count: int) -> str:
    """A landmark-set name: ``aflw21`` for 21 points, ``ibug68`` for 68, else the file's stem
    in lower case (e.g. ``ibug_to_sfm`` for eos's partial iBUG mapping)."""
    stem = Path(path).stem.lower()
    if count == 21:
        return "aflw21"
    if count == 68:
        return "ibug68"
    return re.sub(r"[^a-z0-9_]+", "_", stem).strip("_") or "landmarks"


__all__ = [
    "load_landmarks",
    "load_landmark_mapping",
    "landmark_format",
    "landmark_base",
    "default_landmark_name",
]
