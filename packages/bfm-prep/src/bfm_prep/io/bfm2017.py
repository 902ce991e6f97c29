"""The Basel Face Model 2017/2019 (``model2017-1_bfm_nomouth.h5``,
``model2017-1_face12_nomouth.h5``, ``model2019_*.h5``): the statismo HDF5 layout.

| dataset | shape | meaning |
| --- | --- | --- |
| shape/model/mean | (3N,) | mean shape, millimetres, xyz interleaved per vertex |
| shape/model/pcaBasis | (3N, K) | principal components with **orthonormal columns** |
| shape/model/pcaVariance | (K,) | variances (eigenvalues), mm^2: std = sqrt(pcaVariance) |
| expression/model/{mean,pcaBasis,pcaVariance} | (3N,), (3N, Ke), (Ke,) | expression (optional) |
| color/model/{mean,pcaBasis,pcaVariance} | (3N,), (3N, Kc), (Kc,) | colour, [0, 1] (optional) |
| shape/representer/cells | (3, M) | triangles, 0-based |
| shape/representer/points | (3, N) | the reference mesh (used here only to check N) |

Orthonormal columns: statismo stores the orthonormal basis and the variances separately; eos's
convert-bfm2017-to-eos.py checks it on the real file ("the basis is unit norm ... the basis
vectors are orthogonal") and passes pcaBasis as ``orthonormal_pca_basis`` with pcaVariance as
the eigenvalues. So each stored component here is ``pcaBasis[:, k] * sqrt(pcaVariance[k])``
(coefficients ~ N(0, 1)), with std = sqrt(pcaVariance). A warning is given if the columns are
not unit-norm.

The expression components become kind ``"expression"`` of the same MorphableModel, after the
identity ones. When expression components are kept, the expression model's mean (a mean
deformation) is added to the shape mean, as scalismo-faces and eos do when they sum the two
models; with ``n_exp=0`` the mean is the neutral shape mean alone. Units are millimetres already.
"""

from __future__ import annotations

import os

import h5py
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
from bfm_prep.io.bfm2009 import check_unit_columns
from bfm_prep.io.matfile import open_hdf5
from bfm_prep.model import EXPRESSION, IDENTITY, MorphableModel
from bfm_prep.provenance import input_record

WHAT = "a Basel Face Model 2017/2019 .h5 file"


def _dataset(f, name: str, path, required: bool = True):
    item = f.get(name)
    if item is None:
        if not required:
            return None
        raise fail(path, f"missing dataset {name!r}", f"pass {WHAT}")
    if not isinstance(item, h5py.Dataset):
        raise fail(path, f"{name!r} is a group, not a dataset", f"pass {WHAT}")
    try:
        return np.asarray(item[()])
    except OSError as e:
        raise fail(
            path,
            f"dataset {name!r} cannot be read ({str(e).splitlines()[0]})",
            "the file is truncated or damaged; copy it again",
        ) from None


def _pca(f, group: str, path, n_rows: int | None, n_keep, parameter: str, what: str):
    """(mean (3N,), basis (3N, k) scaled, std (k,), available K) of one statismo PCA model."""
    mean = check_real(_dataset(f, f"{group}/model/mean", path), f"{group}/model/mean", path)
    mean = as_vector(
        mean, f"{group}/model/mean", path, n_rows, "3 x the number of vertices of the shape model"
    )
    if mean.size == 0 or mean.size % 3:
        raise fail(
            path,
            f"{group}/model/mean has {mean.size} entries, not a positive multiple of 3",
            "expected x, y, z interleaved per vertex",
        )
    name = f"{group}/model/pcaBasis"
    basis = check_real(
        check_matrix(
            _dataset(f, name, path),
            name,
            path,
            rows=mean.size,
            rows_what=f"the length of {group}/model/mean",
        ),
        name,
        path,
    )
    vname = f"{group}/model/pcaVariance"
    var = as_vector(
        check_real(_dataset(f, vname, path), vname, path),
        vname,
        path,
        basis.shape[1],
        f"one per column of {name}",
    )
    if (var < 0).any():
        raise fail(path, f"{vname} has negative values", "expected variances (>= 0)")
    k = check_component_count(n_keep, basis.shape[1], parameter, what, path)
    check_kept_spread(var, vname, path, k, parameter)
    check_unit_columns(basis[:, :k], name, path)
    std = np.sqrt(var[:k].astype(np.float64))
    scaled = np.array(basis[:, :k], dtype=np.float64, order="C")
    scaled *= std
    return mean.astype(np.float64), scaled, std, int(basis.shape[1])


def load_bfm2017(
    path: str | os.PathLike,
    n_shape: int | None = None,
    n_exp: int | None = None,
    n_color: int | None = None,
) -> MorphableModel:
    """Read a BFM 2017/2019 .h5 file into a :class:`MorphableModel`.

    Args:
        path: the .h5 file.
        n_shape: identity components to keep (None: all).
        n_exp: expression components to keep (None: all the file has; 0 or a file without
            ``expression/`` gives none).
        n_color: colour components to keep (None: all; a file without ``color/`` gives no
            colour model).
    Raises:
        PrepError: not HDF5, truncated, a missing dataset, a wrong shape or dtype, a triangle
            index out of range, or more components asked for than the file has.
    """
    with open_hdf5(path) as f:
        s_mean, s_basis, s_std, s_avail = _pca(
            f, "shape", path, None, n_shape, "n_shape", "identity"
        )
        n = s_mean.size // 3

        cells = _dataset(f, "shape/representer/cells", path, required=False)
        cells_name = "shape/representer/cells"
        if cells is None:  # the BFM 2009 .h5 export keeps them at representer/cells
            cells = _dataset(f, "representer/cells", path, required=False)
            cells_name = "representer/cells"
        if cells is None:
            raise fail(path, "missing dataset 'shape/representer/cells'", f"pass {WHAT}")
        cells = check_matrix(
            cells, cells_name, path, rows=3, rows_what="one row per triangle corner"
        )
        faces = check_indices(
            as_index_array(cells, cells_name, path).T, cells_name, path, n, base=0
        )
        if faces.shape[0] == 0:
            raise fail(path, f"{cells_name} has no triangles")

        points = _dataset(f, "shape/representer/points", path, required=False)
        if points is not None:
            check_matrix(
                points,
                "shape/representer/points",
                path,
                rows=3,
                cols=n,
                cols_what="the number of vertices of shape/model/mean",
            )

        e_basis = np.zeros((3 * n, 0))
        e_std = np.zeros(0)
        e_avail = 0
        e_mean = None
        if "expression" in f and n_exp != 0:
            e_mean, e_basis, e_std, e_avail = _pca(
                f, "expression", path, 3 * n, n_exp, "n_exp", "expression"
            )
        elif "expression/model/pcaBasis" in f:
            e_avail = int(f["expression/model/pcaBasis"].shape[-1])
        elif n_exp:
            raise PrepError.naming(
                "{path}: has no expression model (expression/model); drop {n_exp}.", path=path
            )

        color = {}
        kc = 0
        c_avail = 0
        if "color" in f and n_color != 0:
            c_mean, c_basis, c_std, c_avail = _pca(
                f, "color", path, 3 * n, n_color, "n_color", "colour"
            )
            kc = c_basis.shape[1]
            color = dict(
                color_mean=c_mean.reshape(n, 3),
                color_basis=c_basis.reshape(n, 3, kc),
                color_std=c_std,
            )
        elif "color/model/pcaBasis" in f:
            c_avail = int(f["color/model/pcaBasis"].shape[-1])
        elif n_color:
            raise PrepError.naming(
                "{path}: has no colour model (color/model); drop {n_color}.", path=path
            )

    k, ke = s_basis.shape[1], e_basis.shape[1]
    mean = s_mean.reshape(n, 3)
    if e_mean is not None:
        mean = mean + e_mean.reshape(n, 3)
    basis = np.concatenate([s_basis.reshape(n, 3, k), e_basis.reshape(n, 3, ke)], axis=2)
    faces, flipped = orient_front(mean, faces)
    unused = warn_unused_vertices(faces, n, path)
    params = {
        "source": "bfm2017",
        "n_shape": k,
        "n_shape_available": s_avail,
        "n_exp": ke,
        "n_exp_available": e_avail,
        "n_color": kc,
        "n_color_available": c_avail,
        "shape_scaling": "pcaBasis (orthonormal columns) * sqrt(pcaVariance); units mm; "
        "coefficients ~ N(0, 1); std = sqrt(pcaVariance)",
        "expression_mean": "added to the shape mean" if e_mean is not None else "none",
        "color_scaling": "pcaBasis * sqrt(pcaVariance); RGB in [0, 1]" if color else "none",
        "faces": f"{cells_name} transposed (0-based)",
        "faces_reversed": bool(flipped),
        "unused_vertices": unused,
    }
    return MorphableModel(
        shape_mean=mean,
        shape_basis=basis,
        shape_std=np.concatenate([s_std, e_std]),
        shape_kind=[IDENTITY] * k + [EXPRESSION] * ke,
        faces=faces,
        provenance={"inputs": {"bfm": input_record(path)}, "parameters": params},
        **color,
    )


__all__ = ["load_bfm2017"]
