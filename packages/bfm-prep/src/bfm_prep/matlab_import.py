"""Convert the original 3DMM-STN's resampled model (``model.mat``) into a UV-grid model.

The original's MATLAB ``prepareExpressionBFM`` / ``resampleModel`` wrote, for a grid of
R x R vertices:

- ``nverts``: R * R;
- ``shapeMU``: (3 R^2, 1), the mean shape, xyz interleaved per vertex, mm;
- ``shapePC``: (3 R^2, K), the shape components, xyz interleaved, already multiplied by
  their standard deviations (in ``model_112.mat``: 5 identity then 5 expression components);
- ``faces``: (2 (R-1)^2, 3), 1-based, two triangles per grid cell.

Its vertex order is this project's grid order (vertex k at row ``k // R`` from the top and
column ``k % R``), so the arrays are taken over as they are. Two things change: faces become
0-based, and they are reversed (second and third vertex swapped) when, as in the original's
files, they are clockwise seen from the front, because the artifact format wants them
counter-clockwise (normals towards the viewer).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bfm_prep.artifact import UVGridModel
from bfm_prep.errors import PrepError
from bfm_prep.io._checks import as_index_array, check_indices, check_real, fail, orient_front
from bfm_prep.io.matfile import load_mat, require
from bfm_prep.model import EXPRESSION, IDENTITY, MorphableModel
from bfm_prep.provenance import input_record
from bfm_prep.resample import MIN_RES, grid_uv

_WHAT = "the original 3DMM-STN's resampled model.mat (nverts, shapeMU, shapePC, faces)"
SCALING_NOTE = (
    "components taken as stored: the original pre-multiplied them by their standard "
    "deviations, so std is stored as 1"
)


def import_matlab_model(
    path: str | os.PathLike,
    n_identity: int | None = None,
    inside: np.ndarray | None = None,
    landmarks: dict[str, np.ndarray] | None = None,
) -> UVGridModel:
    """Read the original's ``model.mat`` into a :class:`~bfm_prep.artifact.UVGridModel`.

    Args:
        path: the .mat file (v5 or v7.3).
        n_identity: how many of the K components are identity (the rest are expression);
            None: K // 2, the split of ``model_112.mat`` (5 + 5).
        inside: optional (R*R,) bool mask of grid points on the source mesh; None: all True
            (the original stored no mask).
        landmarks: name -> (L,) 0-based grid vertex indices.

    Returns:
        The grid model: mean (R^2, 3) and basis (R^2, 3, K) exactly as in the file (float64),
        std = 1, faces 0-based and counter-clockwise seen from the front, uv in grid order.
    """
    path = Path(path)
    data = load_mat(path, keys=["nverts", "shapeMU", "shapePC", "faces"])
    for key in ("nverts", "shapeMU", "shapePC", "faces"):
        require(data, key, path, dtype="real", what=_WHAT)
    nverts = as_index_array(np.asarray(data["nverts"]).reshape(-1), "nverts", path)
    if nverts.size != 1 or nverts[0] <= 0:
        shape = np.asarray(data["nverts"]).shape
        raise fail(
            path,
            f"nverts must be one positive number, got an array of shape {shape}",
            f"pass {_WHAT}",
        )
    n = int(nverts[0])
    res = int(round(np.sqrt(n)))
    if res * res != n:
        raise fail(
            path,
            f"nverts = {n} is not a square number, so it is not an R x R grid",
            f"pass {_WHAT}",
        )
    if res < MIN_RES:
        raise fail(path, f"the grid is {res} x {res}, smaller than the minimum {MIN_RES}")

    mu = check_real(data["shapeMU"], "shapeMU", path)
    if mu.size != 3 * n:
        raise fail(path, f"shapeMU has {mu.size} entries, expected 3 * nverts = {3 * n}")
    pc = check_real(data["shapePC"], "shapePC", path)
    if pc.ndim != 2 or pc.shape[0] != 3 * n:
        raise fail(path, f"shapePC has shape {pc.shape}, expected {3 * n} x K (xyz interleaved)")
    k = pc.shape[1]
    if n_identity is None:
        n_identity = k // 2
    if not 0 <= n_identity <= k:
        raise PrepError.naming(
            "{n_identity} {value} is outside 0..{k}, the number of components in {path}.",
            value=n_identity,
            k=k,
            path=path,
        )

    faces = as_index_array(data["faces"], "faces", path)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise fail(path, f"faces has shape {faces.shape}, expected F x 3")
    faces = check_indices(faces, "faces", path, n, base=1)

    mean = np.ascontiguousarray(mu.reshape(n, 3), dtype=np.float64)
    faces, flipped = orient_front(mean, faces)
    model = MorphableModel(
        shape_mean=mean,
        shape_basis=np.ascontiguousarray(pc, dtype=np.float64).reshape(n, 3, k),
        shape_std=np.ones(k),
        shape_kind=[IDENTITY] * n_identity + [EXPRESSION] * (k - n_identity),
        faces=faces,
        landmarks=landmarks or {},
        provenance={
            "inputs": {"model_mat": input_record(path)},
            "parameters": {
                "res": res,
                "n_identity": n_identity,
                "n_expression": k - n_identity,
                "scaling": SCALING_NOTE,
                "faces": "faces - 1"
                + (
                    ", second and third vertex swapped to make them "
                    "counter-clockwise seen from the front"
                    if flipped
                    else ""
                ),
                "inside": "all True (the original stores no mask)"
                if inside is None
                else "given (the inside argument)",
            },
        },
    )
    if inside is None:
        inside = np.ones(n, dtype=bool)
    inside = np.asarray(inside).reshape(-1)
    if inside.size != n:
        raise PrepError(
            f"The inside mask has {inside.size} entries but {path} has {n} grid vertices."
        )
    return UVGridModel(model=model, res=res, uv=grid_uv(res), inside=inside.astype(bool))


def load_inside_mask(path: str | os.PathLike, n: int) -> np.ndarray:
    """An inside mask from a file: .npy (R*R or R x R, bool or 0/1), or text of R*R 0/1 values
    in grid order; anything else is a one-line error."""
    path = Path(path)
    if path.is_dir():
        raise PrepError.naming(
            "{path}: is a folder, not a file; pass the mask file itself to {inside}.", path=path
        )
    if not path.is_file():
        raise PrepError.naming("{path}: no such file; check the {inside} path.", path=path)
    try:
        if path.suffix == ".npy":
            a = np.load(path, allow_pickle=False)
        else:
            a = np.loadtxt(path, ndmin=1)
    except Exception as e:
        raise fail(
            path,
            f"cannot be read as a mask ({type(e).__name__})",
            "pass a .npy array or a text file of 0/1 values",
        ) from None
    a = np.asarray(a).reshape(-1)
    if a.size != n:
        raise fail(path, f"holds {a.size} values, expected {n} (one 0/1 per grid vertex)")
    if a.dtype.kind not in "biuf" or not np.isin(a, (0, 1)).all():
        raise fail(path, "holds values other than 0 and 1", "pass one 0/1 per grid vertex")
    return a.astype(bool)
