"""Guo et al.'s CoarseData expression basis: ``Exp_Pca.bin`` with ``std_exp.txt``.

``Exp_Pca.bin`` layout (raw, little-endian, no header beyond the count; as read by
Deep3DFaceReconstruction's ``LoadExpBasis``):

    int32 D
    float32 mean[3 V]             xyz interleaved per vertex
    float32 component[D][3 V]     component d stored whole, one after another

V is 53215 (the 3DDFA vertices) in the real file; here it is implied by the size,
``V = (size - 4) / 4 / (D + 1) / 3``, so any V is accepted when the size is consistent, and a
size that fits no whole V is reported as a truncated file. ``std_exp.txt`` holds D
whitespace-separated standard deviations (79 in the real file).

Units and scaling: the components are orthonormal-like directions and the standard deviations
are in micrometres, like the BFM 2009 (Deep3DFaceReconstruction builds ``expPC * std_exp / 1e5``
for decimetres). Here ``components = component * std / 1000`` in mm per unit coefficient
(coefficients ~ N(0, 1)), ``std`` = std_exp / 1000 (mm) and ``mean = mean / 1000``.
"""

from __future__ import annotations

import os

import numpy as np

from bfm_prep.io._checks import check_component_count, fail, require_file
from bfm_prep.io.expression_basis import COARSEDATA, ExpressionBasis
from bfm_prep.provenance import input_record

REAL_V = 53215
SCALING = (
    "Exp_Pca.bin component * std_exp / 1000 (micrometres to mm); coefficients ~ N(0, 1); "
    "std = std_exp / 1000"
)


def read_coarsedata_header(bin_path: str | os.PathLike) -> tuple[int, int]:
    """(D, V) of an ``Exp_Pca.bin``, checked against the file size."""
    require_file(bin_path)
    size = os.path.getsize(bin_path)
    if size < 4:
        raise fail(
            bin_path,
            f"is truncated: {size} bytes, too short for the int32 component count",
            "copy Exp_Pca.bin again",
        )
    with open(bin_path, "rb") as f:
        d = int(np.frombuffer(f.read(4), dtype="<i4")[0])
    if d <= 0:
        raise fail(
            bin_path,
            f"starts with the component count {d}, which is not positive",
            "pass the CoarseData Exp_Pca.bin",
        )
    rest = size - 4
    per_vertex = 4 * 3 * (d + 1)
    if rest == 0 or rest % per_vertex:
        need = 4 + per_vertex * REAL_V
        raise fail(
            bin_path,
            f"is truncated or not in the Exp_Pca.bin layout: after the count "
            f"D = {d} there are {rest} bytes, not (D + 1) x 3 x V float32 values "
            f"for any whole V (53215 vertices would take {need} bytes in all)",
            "copy the file again",
        )
    return d, rest // per_vertex


def read_std(std_path: str | os.PathLike, count: int | None = None) -> np.ndarray:
    """The whitespace-separated standard deviations of ``std_exp.txt`` (checked positive)."""
    require_file(std_path)
    try:
        text = open(std_path, encoding="utf-8").read()
    except UnicodeDecodeError:
        raise fail(std_path, "is not a text file", "pass std_exp.txt") from None
    tokens = text.split()
    values = []
    for i, tok in enumerate(tokens):
        try:
            values.append(float(tok))
        except ValueError:
            raise fail(
                std_path,
                f"value {i + 1} is {tok[:20]!r}, not a number",
                "expected whitespace-separated standard deviations",
            ) from None
    std = np.asarray(values, dtype=np.float64)
    if std.size == 0:
        raise fail(
            std_path, "holds no numbers", "expected whitespace-separated standard deviations"
        )
    if not np.isfinite(std).all() or (std <= 0).any():
        raise fail(
            std_path,
            "holds a value that is not a positive finite number",
            "standard deviations must be > 0",
        )
    if count is not None and std.size != count:
        raise fail(
            std_path,
            f"holds {std.size} standard deviations but the basis has {count} components",
            "pass the std_exp.txt that belongs to this Exp_Pca.bin",
        )
    return std


def load_coarsedata_expression(
    bin_path: str | os.PathLike, std_path: str | os.PathLike, n_exp: int | None = None
) -> ExpressionBasis:
    """Read ``Exp_Pca.bin`` + ``std_exp.txt`` into an :class:`ExpressionBasis` in mm.

    Only the first ``n_exp`` components are read from disk.

    Raises:
        PrepError: truncated or inconsistent size, non-positive count, a std file with the
            wrong number of values or non-numbers, more components asked for than stored.
    """
    d, v = read_coarsedata_header(bin_path)
    std = read_std(std_path, d)
    k = check_component_count(n_exp, d, "n_exp", "expression", bin_path)
    with open(bin_path, "rb") as f:
        f.seek(4)
        mean = np.fromfile(f, dtype="<f4", count=3 * v)
        comps = np.fromfile(f, dtype="<f4", count=3 * v * k)
    if mean.size != 3 * v or comps.size != 3 * v * k:  # the file changed under us
        raise fail(bin_path, "is truncated", "copy the file again")
    if not (np.isfinite(mean).all() and np.isfinite(comps).all()):
        raise fail(bin_path, "contains NaN or infinite values", "the file is damaged")
    # (k, 3V) -> (k, V, 3) -> (V, 3, k)
    c = comps.astype(np.float64).reshape(k, v, 3).transpose(1, 2, 0)
    c = c * (std[:k] / 1000.0)
    return ExpressionBasis(
        mean=mean.astype(np.float64).reshape(v, 3) / 1000.0,
        components=c,
        std=std[:k] / 1000.0,
        source=COARSEDATA,
        scaling=SCALING,
        provenance={
            "inputs": {
                "expression": input_record(bin_path),
                "expression_std": input_record(std_path),
            },
            "parameters": {
                "expression_source": COARSEDATA,
                "n_exp": k,
                "n_exp_available": d,
                "expression_scaling": SCALING,
            },
        },
    )


__all__ = ["load_coarsedata_expression", "read_coarsedata_header", "read_std"]
