"""3DDFA files: the expression model ``Model_Expression.mat`` and ``map_tddfa_to_basel.mat``.

``Model_Expression.mat`` (Zhu et al., 3DDFA release, MATLAB): ``w_exp`` (3V x D) and
``mu_exp`` (3V x 1), xyz interleaved per vertex, micrometres like the BFM 2009 (the 3DDFA
vertices are a subset of the Basel ones, V = 53215 of 53490; D = 29). The real file also
holds ``sigma_exp`` (D x 1; face3d's generate.m reads ``mu_exp, w_exp, sigma_exp`` from it).

Scaling decision: the components are used **as stored**, std = 1. One unit of coefficient k
adds column k of ``w_exp`` (µm, converted to mm). This is what the original 3DMM-STN
``prepareExpressionBFM.m`` does (it adds ``w_exp(:, i)`` to the micrometre mean shape, then
divides the model by 1000), and how 3DDFA-based code uses the columns (face3d's
``generate_vertices`` adds ``expPC @ exp_para`` with coefficients of order 1, whereas the
orthonormal BFM shape components need coefficients of order 1e4 µm). ``sigma_exp``, when
present, is kept in ``ExpressionBasis.file_std`` but not applied. ``mu_exp`` becomes
``ExpressionBasis.mean`` (mm); the original ignores it.

``map_tddfa_to_basel.mat``: ``map_tddfa_to_basel``, 1 x V uint16, the **0-based** Basel vertex
index of each 3DDFA vertex (the original adds 1 before using it in MATLAB).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from bfm_prep.io._checks import (
    as_index_array,
    as_vector,
    check_component_count,
    check_indices,
    check_matrix,
    check_real,
    fail,
)
from bfm_prep.io.expression_basis import TDDFA, ExpressionBasis
from bfm_prep.io.matfile import load_mat, require
from bfm_prep.provenance import input_record

WHAT_EXP = "the 3DDFA expression model Model_Expression.mat"
WHAT_MAP = "the 3DDFA-to-Basel mapping map_tddfa_to_basel.mat"
SCALING = (
    "as stored: one unit of coefficient adds one column of w_exp (micrometres / 1000 -> mm), "
    "as in 3DMM-STN's prepareExpressionBFM; std = 1"
)


def load_tddfa_expression(path: str | os.PathLike, n_exp: int | None = None) -> ExpressionBasis:
    """Read ``Model_Expression.mat`` (v5 or v7.3) into an :class:`ExpressionBasis` in mm.

    Raises:
        PrepError: not a MAT-file, truncated, missing ``w_exp``/``mu_exp``, wrong shape or dtype.
    """
    d = load_mat(path, keys=("w_exp", "mu_exp", "sigma_exp"))
    w = check_real(
        check_matrix(require(d, "w_exp", path, what=WHAT_EXP), "w_exp", path), "w_exp", path
    )
    if w.shape[0] == 0 or w.shape[0] % 3:
        raise fail(
            path,
            f"w_exp has the wrong shape {w.shape}: {w.shape[0]} rows is not a "
            "positive multiple of 3",
            "expected 3V x D, xyz interleaved per vertex",
        )
    v = w.shape[0] // 3
    mu = as_vector(
        check_real(require(d, "mu_exp", path, what=WHAT_EXP), "mu_exp", path),
        "mu_exp",
        path,
        3 * v,
        "3 x the number of vertices, as the rows of w_exp",
    )
    k = check_component_count(n_exp, w.shape[1], "n_exp", "expression", path)
    file_std = None
    if "sigma_exp" in d:
        s = np.asarray(d["sigma_exp"])
        if s.dtype.kind in "iuf" and s.size == w.shape[1] and np.isfinite(s).all():
            file_std = s.reshape(-1)[:k].astype(np.float64)
        else:
            warnings.warn(
                f"{path}: sigma_exp ({s.shape}, {s.dtype}) does not hold one finite number per "
                "column of w_exp; it is ignored (it is not used anyway)",
                stacklevel=2,
            )
    comps = np.array(w[:, :k], dtype=np.float64, order="C")
    comps /= 1000.0
    return ExpressionBasis(
        mean=mu.astype(np.float64).reshape(v, 3) / 1000.0,
        components=comps.reshape(v, 3, k),
        std=np.ones(k),
        source=TDDFA,
        scaling=SCALING,
        file_std=file_std,
        provenance={
            "inputs": {"expression": input_record(path)},
            "parameters": {
                "expression_source": TDDFA,
                "n_exp": k,
                "n_exp_available": int(w.shape[1]),
                "expression_scaling": SCALING,
                "mat_version": d.version,
            },
        },
    )


def load_mapping(
    path: str | os.PathLike, n_target: int | None = None, n_source: int | None = None
) -> np.ndarray:
    """Read ``map_tddfa_to_basel.mat``: (V,) int64, the 0-based Basel index of each 3DDFA vertex.

    Args:
        path: the .mat file (variable ``map_tddfa_to_basel``, 1 x V, 0-based).
        n_target: the number of Basel vertices; indices must be below it.
        n_source: the expected V (the expression model's vertex count), if known.
    Raises:
        PrepError: not a MAT-file, missing variable, not a vector, fractional values, an index
            out of range, or a length other than ``n_source``.
    A Basel vertex named twice is allowed with a warning (it would pull two constraints onto
    one vertex).
    """
    d = load_mat(path, keys=("map_tddfa_to_basel",))
    raw = require(d, "map_tddfa_to_basel", path, what=WHAT_MAP)
    m = as_index_array(as_vector(raw, "map_tddfa_to_basel", path), "map_tddfa_to_basel", path)
    if m.size == 0:
        raise fail(path, "map_tddfa_to_basel is empty")
    if n_source is not None and m.size != n_source:
        raise fail(
            path,
            f"map_tddfa_to_basel has {m.size} entries but the expression model has "
            f"{n_source} vertices",
            "pass the mapping made for that expression model",
        )
    m = check_indices(m, "map_tddfa_to_basel", path, n_target, base=0)
    dup = int(m.size - np.unique(m).size)
    if dup:
        warnings.warn(
            f"{path}: {dup} Basel vertices are named more than once in map_tddfa_to_basel",
            stacklevel=2,
        )
    return m


__all__ = ["load_tddfa_expression", "load_mapping"]
