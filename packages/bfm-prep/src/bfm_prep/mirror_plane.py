"""The mirror plane of a nearly symmetric shape: reflection, the least-squares plane of given
pairs, candidate planes and their refinement by reflection ICP.

Shared by the exact symmetry search (:mod:`bfm_prep.symmetry`) and the pairing from
geometry (:mod:`bfm_prep.mirror_pairing`). A plane is ``(n_x, n_y, n_z, d)`` with ``|n| = 1``:
the points ``n . x = d``; its normal points to the side that gets ``u > 0.5`` (towards +x
for a model in the Basel convention).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from bfm_prep.errors import PrepError

#: The advice of every "no usable symmetry" error: give the pairs instead (the ``symmetry``
#: parameter of :func:`bfm_prep.embedding.embed_mesh`; PrepError.naming lets a command say
#: its own option).
NO_SYMMETRY_HINT = "pass {symmetry} PAIRS_FILE"


def reflect_points(points: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """Reflect (..., 3) points through the plane ``(n, d)``: ``x - 2 (n . x - d) n``."""
    n = np.asarray(plane[:3], dtype=np.float64)
    d = float(plane[3])
    x = np.asarray(points, dtype=np.float64)
    return x - 2.0 * ((x @ n) - d)[..., None] * n


def signed_distance(points: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """(...,) ``n . x - d``: positive on the side that gets ``u > 0.5``."""
    return np.asarray(points, dtype=np.float64) @ np.asarray(plane[:3], dtype=np.float64) - float(
        plane[3]
    )


def fit_plane(vertices: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Least-squares reflection plane of the pairs ``(i, mirror[i])``, normal towards +x."""
    v = np.asarray(vertices, dtype=np.float64)
    if np.all(mirror == np.arange(len(v))):
        raise PrepError.naming(
            "every vertex is its own mirror: this is no mirror symmetry; " + NO_SYMMETRY_HINT + "."
        )
    n, d = reflection_plane(v, v[mirror])
    return oriented_plane(n, d)


def oriented_plane(n: np.ndarray, d: float) -> np.ndarray:
    """The plane ``(n, d)`` with its normal turned towards +x (or its largest component)."""
    n2 = orient_normal(n)
    return np.concatenate([n2, [d if n2 @ n > 0 else -d]])


def reflection_plane(xi: np.ndarray, xj: np.ndarray) -> tuple[np.ndarray, float]:
    """The plane (n, d) minimising sum |reflect(x_i) - x_j|^2 over pairs.

    With midpoints m and differences e = x_i - x_j, the residual is
    |e|^2 - (n . e)^2 + 4 (n . m - d)^2: d = n . mean(m), and n is the eigenvector of the
    smallest eigenvalue of 4 cov(m) - e^T e (the midpoints lie on the plane, the
    differences along its normal).
    """
    m = 0.5 * (xi + xj)
    e = xi - xj
    mc = m - m.mean(axis=0)
    mat = 4.0 * (mc.T @ mc) - e.T @ e
    n = np.linalg.eigh(mat)[1][:, 0]
    return n, float(n @ m.mean(axis=0))


def orient_normal(n: np.ndarray) -> np.ndarray:
    """``n`` normalised, with a positive x component (or a positive largest component when
    it has no x component)."""
    n = n / np.linalg.norm(n)
    k = 0 if abs(n[0]) > 1e-6 else int(np.argmax(np.abs(n)))
    return -n if n[k] < 0 else n


def mirror_residual(
    vertices: np.ndarray, mirror: np.ndarray, plane: np.ndarray
) -> tuple[float, float]:
    """(rms, max) of ``|reflect(v[mirror[i]]) - v[i]|`` in the mesh's units."""
    v = np.asarray(vertices, dtype=np.float64)
    r = np.linalg.norm(reflect_points(v[mirror], plane) - v, axis=1)
    return float(np.sqrt(np.mean(r**2))), float(r.max())


def candidate_planes(v: np.ndarray) -> list[np.ndarray]:
    """Planes through the centroid: across the model's x axis and across each principal axis
    (the distinct ones), as starting points for :func:`refine_plane`."""
    c = v.mean(axis=0)
    _, _, vt = np.linalg.svd(v - c, full_matrices=False)
    normals: list[np.ndarray] = []
    for n in [np.array([1.0, 0.0, 0.0]), vt[0], vt[1], vt[2]]:
        if all(abs(float(n @ m)) < 0.98 for m in normals):
            normals.append(n)
    return [np.concatenate([n, [float(n @ c)]]) for n in normals]


def refine_plane(
    v: np.ndarray, tree: cKDTree, plane: np.ndarray, rounds: int = 4, sample: int = 4000
) -> np.ndarray:
    """Reflection ICP: refit the plane to mutual nearest neighbours of the reflection.

    Works on a fixed subsample of the vertices; neighbours farther than a tenth of the mesh's
    size are ignored (and keep the k-d tree queries fast for a wrong plane).
    """
    n = len(v)
    sub = np.arange(n) if n <= sample else np.random.default_rng(0).choice(n, sample, replace=False)
    reach = 0.1 * float(np.linalg.norm(v.max(axis=0) - v.min(axis=0)))
    for _ in range(rounds):
        dist, nn = tree.query(reflect_points(v[sub], plane), distance_upper_bound=reach)
        ok = np.isfinite(dist)
        if ok.sum() < 3:
            break
        back_d, back = tree.query(reflect_points(v[nn[ok]], plane), distance_upper_bound=reach)
        mutual = np.zeros(len(sub), dtype=bool)
        mutual[ok] = back == sub[ok]
        if mutual.sum() < 3:
            break
        keep = mutual & (dist <= 3.0 * np.median(dist[mutual]) + 1e-12)
        i, j = sub[keep], nn[keep]
        if np.all(i == j):
            break
        nrm, d = reflection_plane(v[i], v[j])
        if nrm @ plane[:3] < 0:
            nrm, d = -nrm, -d
        plane = np.concatenate([nrm, [d]])
    return plane
