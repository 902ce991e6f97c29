"""The Surrey Face Model (eos), low-resolution shape model as .npz exports.

``sfm_shape_3448.npz``: ``mean`` (3N, 1) float32 mm, xyz interleaved; ``basis`` (3N, K)
orthonormal columns; ``eigenvalues`` (K, 1) variances (mm^2); ``triangles`` (M, 3) 0-based;
``uv`` (N, 2) the model's own texture coordinates. N = 3448, K = 63, M = 6736.

``expression_blendshapes_3448.npz``: ``names`` (6,), ``deformations`` (3N, 6) offsets from
the mean in mm.

Conversion: identity components ``basis[:, k] * sqrt(eigenvalues[k])`` (coefficients ~ N(0, 1),
``shape_std = sqrt(eigenvalues)``); the blendshapes become expression components as stored
(std 1: one unit of coefficient is the whole blendshape). The mesh has holes (an outer boundary
and a mouth opening) and faces +z; faces are oriented counter-clockwise seen from +z.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

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
    require_file,
    warn_unused_vertices,
)
from bfm_prep.model import EXPRESSION, IDENTITY, MorphableModel
from bfm_prep.provenance import input_record

WHAT = "the Surrey Face Model sfm_shape_3448.npz"
WHAT_BS = "the Surrey Face Model expression_blendshapes_3448.npz"


def _load_npz(path, keys: tuple[str, ...], what: str) -> dict:
    require_file(path)
    if not zipfile.is_zipfile(path):
        raise fail(path, "is not a NumPy .npz archive (or is truncated)", f"pass {what}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise fail(
                    path,
                    f"missing array {missing[0]!r} (found: {', '.join(z.files)})",
                    f"pass {what}",
                )
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise fail(
            path,
            f"cannot be read as a .npz archive ({type(e).__name__}: {e})",
            "the file is truncated or damaged",
        ) from None


def load_sfm_uv(shape_npz: str | os.PathLike) -> np.ndarray:
    """The model's own texture coordinates ``uv`` (N, 2) float64 (not a symmetric embedding)."""
    d = _load_npz(shape_npz, ("uv", "mean"), WHAT)
    n = as_vector(d["mean"], "mean", shape_npz).size // 3
    return check_real(
        check_matrix(d["uv"], "uv", shape_npz, rows=n, cols=2), "uv", shape_npz
    ).astype(np.float64)


def load_sfm(
    shape_npz: str | os.PathLike,
    blendshapes_npz: str | os.PathLike | None = None,
    n_shape: int | None = None,
) -> MorphableModel:
    """Read the Surrey Face Model into a :class:`MorphableModel` (no colour model).

    Args:
        shape_npz: ``sfm_shape_3448.npz``.
        blendshapes_npz: ``expression_blendshapes_3448.npz`` (optional): its deformations
            become expression components (std 1), after the identity ones.
        n_shape: identity components to keep (None: all 63).
    """
    d = _load_npz(shape_npz, ("mean", "basis", "eigenvalues", "triangles"), WHAT)
    mean = as_vector(check_real(d["mean"], "mean", shape_npz), "mean", shape_npz)
    if mean.size == 0 or mean.size % 3:
        raise fail(shape_npz, f"mean has {mean.size} entries, not a positive multiple of 3")
    n = mean.size // 3
    basis = check_real(
        check_matrix(d["basis"], "basis", shape_npz, rows=3 * n, rows_what="the length of mean"),
        "basis",
        shape_npz,
    )
    ev = as_vector(
        check_real(d["eigenvalues"], "eigenvalues", shape_npz),
        "eigenvalues",
        shape_npz,
        basis.shape[1],
        "one per column of basis",
    )
    if (ev < 0).any():
        raise fail(shape_npz, "eigenvalues has negative values", "expected variances (>= 0)")
    k = check_component_count(n_shape, basis.shape[1], "n_shape", "identity", shape_npz)
    check_kept_spread(ev, "eigenvalues", shape_npz, k, "n_shape")
    tri = check_matrix(d["triangles"], "triangles", shape_npz, cols=3)
    faces = check_indices(as_index_array(tri, "triangles", shape_npz), "triangles", shape_npz, n)

    std = np.sqrt(ev[:k].astype(np.float64))
    comps = [np.array(basis[:, :k], dtype=np.float64).reshape(n, 3, k) * std]
    kinds = [IDENTITY] * k
    stds = [std]
    inputs = {"sfm_shape": input_record(shape_npz)}
    params = {
        "source": "sfm",
        "n_shape": k,
        "n_shape_available": int(basis.shape[1]),
        "shape_scaling": "basis * sqrt(eigenvalues); mm; coefficients ~ N(0, 1)",
    }
    if blendshapes_npz is not None:
        b = _load_npz(blendshapes_npz, ("deformations",), WHAT_BS)
        deform = check_real(
            check_matrix(
                b["deformations"],
                "deformations",
                blendshapes_npz,
                rows=3 * n,
                rows_what=f"3 x the {n} vertices of the shape model",
            ),
            "deformations",
            blendshapes_npz,
        )
        ke = deform.shape[1]
        comps.append(np.array(deform, dtype=np.float64).reshape(n, 3, ke))
        kinds += [EXPRESSION] * ke
        stds.append(np.ones(ke))
        inputs["sfm_blendshapes"] = input_record(blendshapes_npz)
        names = [str(x) for x in np.asarray(b.get("names", [])).reshape(-1)]
        params.update(
            n_exp=ke,
            expression_names=names,
            expression_scaling="blendshape offsets as stored (mm); std = 1",
        )
    v = mean.astype(np.float64).reshape(n, 3)
    faces, flipped = orient_front(v, faces)
    params["faces_reversed"] = bool(flipped)
    params["unused_vertices"] = warn_unused_vertices(faces, n, shape_npz)
    return MorphableModel(
        shape_mean=v,
        shape_basis=np.concatenate(comps, axis=2),
        shape_std=np.concatenate(stds),
        shape_kind=kinds,
        faces=faces,
        provenance={"inputs": inputs, "parameters": params},
    )


__all__ = ["load_sfm", "load_sfm_uv"]
