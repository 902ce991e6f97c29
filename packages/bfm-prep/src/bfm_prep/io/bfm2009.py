"""The Basel Face Model 2009, ``PublicMM1/01_MorphableModel.mat`` (MATLAB v5 or v7.3).

File facts (Paysan et al. 2009; the same reading as eos's convert-bfm2009-to-eos.py and
Deep3DFaceReconstruction's load_data.py):

| variable | MATLAB size | meaning |
| --- | --- | --- |
| shapeMU | 3N x 1 | mean shape, micrometres, xyz interleaved per vertex (x1 y1 z1 x2 ...) |
| shapePC | 3N x K | shape principal components, orthonormal columns (unitless) |
| shapeEV | K x 1 | standard deviations of the shape coefficients, micrometres |
| texMU | 3N x 1 | mean colour, RGB interleaved, in [0, 255] |
| texPC | 3N x Kc | colour principal components, orthonormal columns |
| texEV | Kc x 1 | colour standard deviations, in [0, 255] units |
| tl | M x 3 | triangles, 1-based vertex indices |

The real file has N = 53490, K = Kc = 199, M = 106466. Conversion, once:

- ``shape_mean = shapeMU / 1000`` as (N, 3) millimetres;
- ``shape_basis[..., k] = shapePC[:, k] * shapeEV[k] / 1000`` as (N, 3, K): each identity
  component scaled by its standard deviation, so coefficients follow N(0, 1);
  ``shape_std = shapeEV / 1000`` (mm), so ``shape_basis / shape_std`` is the unit shapePC column;
- ``color_mean = texMU / 255``, ``color_basis = texPC * texEV / 255``, ``color_std = texEV / 255``;
- ``faces = tl - 1``; the winding is then made counter-clockwise seen from the front (+z, the
  artifact convention; the BFM's own ``tl`` is wound the other way, as eos notes), recorded in
  ``provenance["parameters"]["faces_reversed"]``.

Vertices that no triangle uses are kept, with a warning naming their count.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from bfm_prep.errors import PrepError
from bfm_prep.io._checks import (
    as_index_array,
    as_vector,
    check_component_count,
    check_indices,
    check_kept_spread,
    check_matrix,
    check_real,
    fail,
    orient_front,
    warn_unused_vertices,
)
from bfm_prep.io.matfile import load_mat, require
from bfm_prep.model import IDENTITY, MorphableModel
from bfm_prep.provenance import input_record

WHAT = "the Basel Face Model 2009 file 01_MorphableModel.mat"
_KEYS = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl")
_UNIT_NORM_TOL = 1e-2


def check_unit_columns(pc: np.ndarray, name: str, path) -> None:
    """Warn when principal components are not unit-norm (the file convention)."""
    if pc.size == 0:
        return
    norms = np.sqrt(np.einsum("ij,ij->j", pc, pc, dtype=np.float64))
    if np.abs(norms - 1.0).max() > _UNIT_NORM_TOL:
        warnings.warn(
            f"{path}: the columns of {name} have norms {norms.min():.4g}..{norms.max():.4g}, "
            "not 1 as in the published file; they are scaled by the standard deviations "
            "anyway, so check that the file is unmodified",
            stacklevel=3,
        )


def _scaled(pc: np.ndarray, scale: np.ndarray) -> np.ndarray:
    out = np.array(pc, dtype=np.float64, order="C")
    out *= scale
    return out


def _pca_part(
    d,
    path,
    mu_key,
    pc_key,
    ev_key,
    n_rows: int | None,
    n_keep: int | None,
    parameter: str,
    what: str,
):
    mu = check_real(require(d, mu_key, path, what=WHAT), mu_key, path)
    mu = (
        as_vector(mu, mu_key, path, n_rows, "3 x the number of vertices")
        if n_rows
        else as_vector(mu, mu_key, path)
    )
    if mu.size == 0 or mu.size % 3:
        raise fail(
            path,
            f"{mu_key} has {mu.size} entries, not a positive multiple of 3",
            "expected x, y, z interleaved per vertex",
        )
    pc = check_real(
        check_matrix(
            require(d, pc_key, path, what=WHAT),
            pc_key,
            path,
            rows=mu.size,
            rows_what=f"the length of {mu_key}",
        ),
        pc_key,
        path,
    )
    ev = check_real(require(d, ev_key, path, what=WHAT), ev_key, path)
    ev = as_vector(ev, ev_key, path, pc.shape[1], f"one per column of {pc_key}")
    if (ev < 0).any():
        raise fail(path, f"{ev_key} has negative values", "expected standard deviations (>= 0)")
    k = check_component_count(n_keep, pc.shape[1], parameter, what, path)
    check_kept_spread(ev, ev_key, path, k, parameter)
    return mu, pc, ev, k


def load_bfm2009(
    path: str | os.PathLike, n_shape: int | None = None, n_color: int | None = None
) -> MorphableModel:
    """Read ``01_MorphableModel.mat`` into a :class:`MorphableModel` (identity components only).

    Args:
        path: the .mat file (v5 or v7.3).
        n_shape: keep the first n identity components (None: all 199).
        n_color: keep the first n colour components (None: all). The colour model is optional:
            a file with none of texMU/texPC/texEV gives a model without colour.
    Raises:
        PrepError: not a MAT-file, truncated, a missing variable, a wrong shape or dtype, a
            triangle index out of range.
    """
    d = load_mat(path, keys=_KEYS)
    mu, pc, ev, k = _pca_part(
        d, path, "shapeMU", "shapePC", "shapeEV", None, n_shape, "n_shape", "identity"
    )
    n = mu.size // 3
    check_unit_columns(pc[:, :k], "shapePC", path)

    has_color = any(key in d for key in ("texMU", "texPC", "texEV"))
    color = {}
    kc = 0
    if has_color:
        tmu, tpc, tev, kc = _pca_part(
            d, path, "texMU", "texPC", "texEV", 3 * n, n_color, "n_color", "colour"
        )
        color = dict(
            color_mean=(tmu.astype(np.float64) / 255.0).reshape(n, 3),
            color_basis=_scaled(tpc[:, :kc], tev[:kc] / 255.0).reshape(n, 3, kc),
            color_std=tev[:kc].astype(np.float64) / 255.0,
        )
    elif n_color:
        raise PrepError.naming(
            "{path}: has no colour model (texMU, texPC, texEV); drop {n_color}.", path=path
        )

    tl = require(d, "tl", path, what=WHAT)
    tl = check_matrix(tl, "tl", path, cols=3, cols_what="three vertex indices per triangle")
    faces = check_indices(as_index_array(tl, "tl", path), "tl", path, n, base=1)
    if faces.shape[0] == 0:
        raise fail(path, "tl has no triangles")

    mean = mu.astype(np.float64).reshape(n, 3) / 1000.0
    basis = _scaled(pc[:, :k], ev[:k] / 1000.0).reshape(n, 3, k)
    faces, flipped = orient_front(mean, faces)
    unused = warn_unused_vertices(faces, n, path)

    params = {
        "source": "bfm2009",
        "mat_version": d.version,
        "n_shape": k,
        "n_shape_available": int(pc.shape[1]),
        "n_color": kc,
        "n_color_available": int(d["texPC"].shape[1]) if has_color else 0,
        "shape_scaling": "shapePC * shapeEV / 1000 (micrometres to mm); coefficients ~ N(0, 1); "
        "shape_std = shapeEV / 1000",
        "color_scaling": "texMU / 255; texPC * texEV / 255; color_std = texEV / 255"
        if has_color
        else "none",
        "faces": "tl - 1 (1-based to 0-based)",
        "faces_reversed": bool(flipped),
        "unused_vertices": unused,
    }
    return MorphableModel(
        shape_mean=mean,
        shape_basis=basis,
        shape_std=ev[:k].astype(np.float64) / 1000.0,
        shape_kind=[IDENTITY] * k,
        faces=faces,
        provenance={"inputs": {"bfm": input_record(path)}, "parameters": params},
        **color,
    )


__all__ = ["load_bfm2009", "check_unit_columns"]
