"""The cotangent Laplace-Beltrami operator of a triangle mesh, as scipy.sparse matrices.

Two matrices, both from libigl:

- the *cotangent (stiffness) matrix* ``C`` (``igl.cotmatrix``): symmetric, negative
  semi-definite, rows summing to zero, ``C_ij = (cot a_ij + cot b_ij) / 2`` for an edge ij with
  opposite angles a_ij and b_ij. It is dimensionless: ``(C f)_i`` is the integral of the
  Laplacian of ``f`` over vertex i's Voronoi cell, in the units of ``f``;
- the *mass matrix* ``M`` (``igl.massmatrix``, Voronoi): diagonal, vertex areas in mm^2.

The pointwise Laplace-Beltrami operator is ``M^-1 C``. The expression transfer
(:mod:`bfm_prep.expression`) uses ``C`` itself as its ``L``, for three reasons:

1. units: it minimises ``|L d|^2 + |S d - w|^2``; with ``L = C`` both terms are in mm^2, so
   their balance does not depend on the unit of length, whereas ``M^-1 C`` would weigh the
   Laplacian term by (unit)^-4 and make the result change if the mesh were in micrometres;
2. the original: the 3DMM-STN MATLAB code (``LaplaceBeltrami.m``, after G. Peyre) builds
   ``sum_k G_k^T diag(2 A) G_k``, which is ``-2 C`` (twice the stiffness matrix, no mass
   matrix); the sign does not matter in a least-squares term, and the factor 2 is a weight
   (see :func:`bfm_prep.expression.transfer_expression`);
3. robustness: a vertex that no triangle uses has zero area, so ``M^-1`` does not exist
   there, while ``C`` simply has a zero row and column for it.

Degenerate (zero-area) triangles have undefined cotangents; they are left out of the operator
(they have no area, so they carry no Laplacian energy) and counted in :class:`LaplacianInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass

import igl
import numpy as np
import scipy.sparse as sp

from bfm_prep.errors import PrepError

# A triangle whose area is below this fraction of the median triangle area is degenerate.
DEGENERATE_AREA_FRACTION = 1e-12


@dataclass(frozen=True)
class LaplacianInfo:
    """What :func:`cotangent_laplacian` found about the mesh."""

    n_vertices: int
    n_faces: int
    n_degenerate_faces: int  # left out of the operator
    n_unreferenced: int  # vertices that no (non-degenerate) triangle uses: zero rows


def _mesh_arrays(V: np.ndarray, F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V (N, 3) float64 and F (M, 3) int64, C-contiguous, with shapes, index range and finite
    coordinates checked (the operator's needs, not the flattening's topology checks of
    :func:`bfm_prep.mesh_checks.check_mesh`)."""
    V = np.ascontiguousarray(V, dtype=np.float64)
    F = np.ascontiguousarray(F, dtype=np.int64)
    if V.ndim != 2 or V.shape[1] != 3:
        raise PrepError(f"Mesh vertices must be (N, 3), got {V.shape}.")
    if F.ndim != 2 or F.shape[1] != 3:
        raise PrepError(f"Mesh faces must be (M, 3), got {F.shape}.")
    if F.size and (F.min() < 0 or F.max() >= V.shape[0]):
        raise PrepError(
            f"Mesh faces index vertices {F.min()}..{F.max()}, outside 0..{V.shape[0] - 1}."
        )
    if not np.isfinite(V).all():
        raise PrepError("Mesh vertices contain NaN or infinite coordinates.")
    return V, F


def triangle_areas(V: np.ndarray, F: np.ndarray) -> np.ndarray:
    """(M,) triangle areas in the squared unit of ``V``."""
    e1 = V[F[:, 1]] - V[F[:, 0]]
    e2 = V[F[:, 2]] - V[F[:, 0]]
    return 0.5 * np.linalg.norm(np.cross(e1, e2), axis=1)


def nondegenerate_faces(V: np.ndarray, F: np.ndarray) -> np.ndarray:
    """The rows of ``F`` whose area is not negligible (see ``DEGENERATE_AREA_FRACTION``)."""
    if F.shape[0] == 0:
        return F
    area = triangle_areas(V, F)
    scale = float(np.median(area)) if np.any(area > 0) else 0.0
    return F[area > DEGENERATE_AREA_FRACTION * scale] if scale > 0 else F[:0]


def cotangent_laplacian(
    V: np.ndarray, F: np.ndarray, return_info: bool = False
) -> sp.csr_matrix | tuple[sp.csr_matrix, LaplacianInfo]:
    """The cotangent matrix ``C`` (N, N) of the mesh ``(V, F)`` (``igl.cotmatrix``).

    Symmetric, negative semi-definite, each row sums to zero; a vertex that no triangle uses
    gets a zero row and column. Degenerate triangles are left out.

    Args:
        V: (N, 3) vertex positions.
        F: (M, 3) 0-based triangle indices.
        return_info: also return a :class:`LaplacianInfo`.

    Returns:
        ``C`` as CSR float64 (and the info when asked).
    """
    V, F = _mesh_arrays(V, F)
    n = V.shape[0]
    Fg = nondegenerate_faces(V, F)
    if Fg.shape[0]:
        C = igl.cotmatrix(V, Fg)
        C = sp.csr_matrix(C)
    else:
        C = sp.csr_matrix((n, n))
    if C.shape != (n, n):  # igl sizes the matrix by V; guard against a binding that does not
        C = _pad(C, n)
    if not np.isfinite(C.data).all():
        raise PrepError("The cotangent Laplacian has non-finite entries (degenerate mesh).")
    C.eliminate_zeros()
    if not return_info:
        return C
    used = np.zeros(n, dtype=bool)
    used[Fg.reshape(-1)] = True
    info = LaplacianInfo(
        n_vertices=n,
        n_faces=int(F.shape[0]),
        n_degenerate_faces=int(F.shape[0] - Fg.shape[0]),
        n_unreferenced=int(n - used.sum()),
    )
    return C, info


def mass_matrix(V: np.ndarray, F: np.ndarray) -> sp.csr_matrix:
    """The diagonal Voronoi mass matrix ``M`` (N, N) (``igl.massmatrix``), vertex areas.

    Unlike ``igl.massmatrix`` (which sizes its result by the largest index in ``F``) this is
    always (N, N); unreferenced vertices have zero area.
    """
    V, F = _mesh_arrays(V, F)
    n = V.shape[0]
    Fg = nondegenerate_faces(V, F)
    if Fg.shape[0] == 0:
        return sp.csr_matrix((n, n))
    M = igl.massmatrix(V, Fg, igl.MASSMATRIX_TYPE_VORONOI)
    d = np.zeros(n)
    diag = np.asarray(M.diagonal()).reshape(-1)
    d[: diag.shape[0]] = diag
    d[~np.isfinite(d)] = 0.0
    return sp.diags(d, format="csr")


def laplace_beltrami(V: np.ndarray, F: np.ndarray) -> sp.csr_matrix:
    """The pointwise Laplace-Beltrami operator ``M^-1 C`` (1 / unit^2).

    Rows of vertices with zero area (unreferenced) are zero.
    """
    C = cotangent_laplacian(V, F)
    m = mass_matrix(V, F).diagonal()
    inv = np.zeros_like(m)
    inv[m > 0] = 1.0 / m[m > 0]
    return sp.csr_matrix(sp.diags(inv) @ C)


def _pad(A: sp.spmatrix, n: int) -> sp.csr_matrix:
    A = sp.coo_matrix(A)
    keep = (A.row < n) & (A.col < n)
    return sp.csr_matrix((A.data[keep], (A.row[keep], A.col[keep])), shape=(n, n))
