"""Reader for the original 3DMM-STN's UV embedding of the Basel mesh, ``BFM_UV.mat``.

The file holds one variable ``UV``: (53490, 2) float64, the symmetric Tutte embedding of the
Basel Face Model 2009 mesh computed by the paper's authors, one row per Basel vertex in the
model's vertex order; u grows with model x, v with model y (up); values in [0, 1]. It uses the
same conventions as a ``stn-uv-embedding`` artifact, so it is used as is.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bfm_prep.errors import PrepError
from bfm_prep.io._checks import check_real
from bfm_prep.io.matfile import load_mat

BFM_UV_VARIABLE = "UV"


def load_bfm_uv(path: str | os.PathLike, n_vertices: int | None = None) -> np.ndarray:
    """Read ``BFM_UV.mat``.

    Args:
        path: the .mat file (MATLAB v5 or v7.3) with variable ``UV``.
        n_vertices: the model's vertex count; a different number of UV rows is an error.

    Returns:
        (N, 2) float64 UV, u with model x, v with model y (up).
    """
    path = Path(path)
    data = load_mat(path)
    if BFM_UV_VARIABLE not in data:
        found = ", ".join(sorted(k for k in data if not k.startswith("__"))) or "none"
        raise PrepError(
            f"{path}: no variable {BFM_UV_VARIABLE!r} (found: {found}); pass the original's "
            "BFM_UV.mat or a uv.h5 written by bfm-prep uv-embed."
        )
    # real numbers only (complex ones would lose their imaginary part), every one finite
    uv = check_real(data[BFM_UV_VARIABLE], BFM_UV_VARIABLE, path)
    if uv.ndim == 2 and uv.shape[1] != 2 and uv.shape[0] == 2:
        uv = uv.T  # a 2 x N variable: one column per vertex
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise PrepError(f"{path}: {BFM_UV_VARIABLE} must be a numeric N x 2 array, got {uv.shape}.")
    uv = np.ascontiguousarray(uv, dtype=np.float64)
    if n_vertices is not None and len(uv) != n_vertices:
        raise PrepError(
            f"{path}: {BFM_UV_VARIABLE} has {len(uv)} rows but the model has {n_vertices} "
            "vertices; BFM_UV.mat fits only the full Basel 2009 mesh (53490 vertices)."
        )
    return uv
