"""The cotangent Laplacian (bfm_prep.laplacian): known values, structure, robustness."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import trimesh
from bfm_prep.errors import PrepError
from bfm_prep.laplacian import cotangent_laplacian, laplace_beltrami, mass_matrix

from tests.tolerances import TOL

RTOL, ATOL = TOL[np.float64]


def grid_mesh(n: int = 9, jitter: float = 0.0, seed: int = 0):
    """An n x n planar grid in z = 0 (spacing 1), two triangles per cell."""
    x, y = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float))
    V = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], axis=1)
    if jitter:
        V[:, :2] += np.random.default_rng(seed).uniform(-jitter, jitter, (n * n, 2))
    idx = np.arange(n * n).reshape(n, n)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    F = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    boundary = np.zeros(n * n, dtype=bool)
    boundary[idx[0]] = boundary[idx[-1]] = boundary[idx[:, 0]] = boundary[idx[:, -1]] = True
    return V, F, boundary


def test_two_right_triangles_match_hand_computed_cotangents():
    # unit square split along 1-2: the angles opposite the boundary edges are 45 degrees
    # (cot = 1), the angles opposite the diagonal are 90 degrees (cot = 0)
    V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=float)
    F = np.array([[0, 1, 2], [1, 3, 2]])
    C = cotangent_laplacian(V, F).toarray()
    expected = np.array(
        [[-1.0, 0.5, 0.5, 0.0], [0.5, -1.0, 0.0, 0.5], [0.5, 0.0, -1.0, 0.5], [0.0, 0.5, 0.5, -1.0]]
    )
    np.testing.assert_allclose(C, expected, rtol=RTOL, atol=ATOL)


def test_symmetric_rows_sum_to_zero_negative_semidefinite():
    V, F, _ = grid_mesh(7, jitter=0.2)
    V[:, 2] = 0.3 * np.sin(V[:, 0]) * np.cos(V[:, 1])
    C = cotangent_laplacian(V, F)
    assert sp.issparse(C) and C.shape == (49, 49)
    D = C.toarray()
    np.testing.assert_allclose(D, D.T, rtol=0, atol=ATOL)
    np.testing.assert_allclose(D.sum(axis=1), 0.0, atol=1e-12)
    assert np.linalg.eigvalsh(D).max() < 1e-10


def test_linear_functions_are_harmonic_at_interior_vertices():
    V, F, boundary = grid_mesh(9, jitter=0.25)
    C = cotangent_laplacian(V, F)
    f = 2.0 * V[:, 0] - 3.0 * V[:, 1] + 1.0
    np.testing.assert_allclose((C @ f)[~boundary], 0.0, atol=1e-10)


def test_sphere_laplace_beltrami_of_position_is_mean_curvature_normal():
    # on a sphere of radius R the Laplace-Beltrami of the position is -2 x / R^2
    R = 3.0
    m = trimesh.creation.icosphere(subdivisions=4, radius=R)
    V, F = np.asarray(m.vertices), np.asarray(m.faces)
    LX = laplace_beltrami(V, F) @ V
    expected = -2.0 * V / R**2
    rel = np.linalg.norm(LX - expected, axis=1) / np.linalg.norm(expected, axis=1)
    assert rel.max() < 0.02, rel.max()
    # the Voronoi areas add up to the sphere's area (to discretisation error)
    area = mass_matrix(V, F).diagonal().sum()
    assert abs(area - 4 * np.pi * R**2) / (4 * np.pi * R**2) < 0.01


def test_unreferenced_vertex_gives_zero_row_and_full_size():
    V, F, _ = grid_mesh(4)
    V = np.vstack([V, [[50.0, 50.0, 50.0]]])  # a vertex no triangle uses, last
    C, info = cotangent_laplacian(V, F, return_info=True)
    assert C.shape == (17, 17)
    assert info.n_unreferenced == 1
    assert C[16].nnz == 0 and C[:, 16].nnz == 0
    M = mass_matrix(V, F)
    assert M.shape == (17, 17) and M.diagonal()[16] == 0
    L = laplace_beltrami(V, F)
    assert np.isfinite(L.data).all() and L[16].nnz == 0


def test_degenerate_triangle_is_left_out_not_nan():
    V, F, _ = grid_mesh(4)
    V = np.vstack([V, [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])  # 16, 17: collinear with vertex 1
    F = np.vstack([F, [[1, 16, 17]]])  # zero area
    C, info = cotangent_laplacian(V, F, return_info=True)
    assert info.n_degenerate_faces == 1
    assert np.isfinite(C.data).all()
    assert np.isfinite(mass_matrix(V, F).data).all()


@pytest.mark.parametrize(
    "V, F, match",
    [
        (np.zeros((4, 2)), np.array([[0, 1, 2]]), "vertices must be"),
        (np.zeros((4, 3)), np.array([[0, 1]]), "faces must be"),
        (np.zeros((4, 3)), np.array([[0, 1, 4]]), "outside 0..3"),
        (np.full((4, 3), np.nan), np.array([[0, 1, 2]]), "NaN"),
    ],
)
def test_bad_meshes_raise_prep_error(V, F, match):
    with pytest.raises(PrepError, match=match):
        cotangent_laplacian(V, F)
