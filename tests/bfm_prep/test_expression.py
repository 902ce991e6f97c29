"""Expression transfer (bfm_prep.expression): exactness, one factorisation, robustness, and
extrapolation accuracy on a real face mesh with a mouth hole (the Surrey Face Model)."""

from __future__ import annotations

import math

import bfm_prep.expression as expression
import numpy as np
import pytest
import scipy.sparse as sp
from bfm_prep.errors import PrepError
from bfm_prep.expression import LaplacianExtrapolator, transfer_expression
from bfm_prep.laplacian import cotangent_laplacian
from scipy.spatial import cKDTree

from tests.conftest import reference_file
from tests.tolerances import TOL

RTOL, ATOL = TOL[np.float64]
# Sparse direct solves of these small, well-conditioned systems are accurate to ~1e-12
# relative; compare with this (looser than TOL's round-off figure, far below any mm scale).
SOLVE_RTOL = 1e-9


def bumpy_disk(n: int = 17, hole: bool = False):
    """A curved n x n grid patch (mm scale); optionally with a hole (triangles removed)."""
    x, y = np.meshgrid(np.linspace(-40, 40, n), np.linspace(-40, 40, n))
    z = 15.0 * np.exp(-(x**2 + y**2) / 900.0) + 2.0 * np.sin(x / 9.0)
    V = np.stack([x.ravel(), y.ravel(), z.ravel()], axis=1)
    idx = np.arange(n * n).reshape(n, n)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    F = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    if hole:  # remove the triangles of a slit in the middle (a "mouth")
        centre = V[F].mean(axis=1)
        F = F[~((np.abs(centre[:, 0]) < 12) & (np.abs(centre[:, 1]) < 3))]
    return V, F


def interior_region(V, radius=14.0):
    """Vertices near the centre: the 'mouth interior' that the expression model lacks."""
    return np.flatnonzero(np.hypot(V[:, 0], V[:, 1] / 2) < radius)


def split(V, hidden):
    mask = np.zeros(V.shape[0], dtype=bool)
    mask[hidden] = True
    return np.flatnonzero(~mask), mask


def smooth_field(V, n_comp=4, seed=0):
    """(N, 3, D) smooth displacement fields (mm)."""
    rng = np.random.default_rng(seed)
    out = np.empty((V.shape[0], 3, n_comp))
    for k in range(n_comp):
        f, p = rng.uniform(0.02, 0.08, 3), rng.uniform(0, 2 * np.pi, 3)
        for c in range(3):
            out[:, c, k] = 3.0 * np.sin(f[c] * V[:, 0] + p[c]) * np.cos(f[(c + 1) % 3] * V[:, 1])
    return out


# --------------------------------------------------------------------------------------------
# exactness


def test_solution_solves_the_stated_least_squares_problem():
    # lambda = 1: d must equal the least-squares solution of the stacked system
    # [L; S] d = [0; w] (what the MATLAB original's backslash computed), to solver precision
    V, F = bumpy_disk(11, hole=True)
    mapped, _ = split(V, interior_region(V, 10.0))
    W = smooth_field(V, 3)[mapped]
    d = transfer_expression(V, F, W, mapped)
    L = cotangent_laplacian(V, F).toarray()
    S = np.zeros((mapped.size, V.shape[0]))
    S[np.arange(mapped.size), mapped] = 1.0
    A = np.vstack([L, S])
    for k in range(W.shape[2]):
        for c in range(3):
            b = np.concatenate([np.zeros(V.shape[0]), W[:, c, k]])
            ref = np.linalg.lstsq(A, b, rcond=None)[0]
            np.testing.assert_allclose(d[:, c, k], ref, rtol=SOLVE_RTOL, atol=1e-9)


@pytest.mark.parametrize("weight", [1.0, 0.25, math.inf])
def test_rigid_translation_is_extrapolated_exactly(weight):
    V, F = bumpy_disk(15, hole=True)
    mapped, hidden = split(V, interior_region(V))
    t = np.array([1.5, -2.0, 0.75])
    W = np.broadcast_to(t[None, :, None], (mapped.size, 3, 1)).copy()
    d = transfer_expression(V, F, W, mapped, weight=weight)
    np.testing.assert_allclose(d[..., 0], np.broadcast_to(t, V.shape), rtol=0, atol=1e-9)


def test_hard_constraint_keeps_mapped_values_and_extrapolates_linear_fields_exactly():
    # weight = inf: mapped vertices keep w exactly; on a planar mesh an affine displacement
    # field is harmonic at interior vertices, so it is also the extrapolation into a hole
    # that does not touch the boundary
    V, F = bumpy_disk(15)
    V[:, 2] = 0.0
    mapped, hidden = split(V, interior_region(V))
    A = np.array([[0.05, 0.01, 0.0], [-0.02, 0.03, 0.0], [0.01, 0.04, 0.0]])
    field = (V @ A.T)[:, :, None] + np.array([0.5, 0.0, -1.0])[None, :, None]
    d, diag = transfer_expression(
        V, F, field[mapped], mapped, weight=math.inf, return_diagnostics=True
    )
    np.testing.assert_array_equal(d[mapped], field[mapped])
    np.testing.assert_allclose(d[hidden], field[hidden], rtol=0, atol=1e-9)
    assert diag.mapped_max_deviation_mm == 0.0
    assert diag.n_extrapolated == hidden.sum()


def test_soft_constraint_deviation_is_reported_and_shrinks_with_weight():
    V, F = bumpy_disk(15, hole=True)
    mapped, _ = split(V, interior_region(V))
    W = smooth_field(V, 2)[mapped]
    devs = []
    for weight in (0.25, 1.0, 100.0, math.inf):
        d, diag = transfer_expression(V, F, W, mapped, weight=weight, return_diagnostics=True)
        dev = np.abs(d[mapped] - W).max()
        assert diag.mapped_max_deviation_mm == pytest.approx(
            np.linalg.norm(d[mapped] - W, axis=1).max(), rel=1e-12, abs=1e-15
        )
        devs.append(dev)
    assert devs[0] > devs[1] > devs[2] > devs[3] == 0.0


# --------------------------------------------------------------------------------------------
# one factorisation, many right-hand sides


@pytest.mark.parametrize("weight", [1.0, math.inf])
def test_one_factorisation_for_all_components_equals_per_component_solves(monkeypatch, weight):
    V, F = bumpy_disk(15, hole=True)
    mapped, _ = split(V, interior_region(V))
    W = smooth_field(V, 6, seed=3)[mapped]

    calls = []
    real = expression._factorise

    def counting_factorise(A):
        calls.append(A.shape)
        return real(A)

    monkeypatch.setattr(expression, "_factorise", counting_factorise)
    d = transfer_expression(V, F, W, mapped, weight=weight)
    assert len(calls) == 1, "the system must be factorised once for all components"

    separate = np.stack(
        [
            transfer_expression(V, F, W[:, :, k : k + 1], mapped, weight=weight)[:, :, 0]
            for k in range(W.shape[2])
        ],
        axis=2,
    )
    assert len(calls) == 1 + W.shape[2]
    np.testing.assert_allclose(d, separate, rtol=SOLVE_RTOL, atol=1e-12)
    # and solving coordinate by coordinate against one factorisation gives the same again
    ext = LaplacianExtrapolator(V, F, mapped, weight=weight)
    for c in range(3):
        np.testing.assert_allclose(
            ext.solve(W[:, c, :])[:, :], d[:, c, :], rtol=SOLVE_RTOL, atol=1e-12
        )


def test_solver_falls_back_to_lu_when_cholesky_fails_and_refuses_singular_systems():
    # an indefinite (but invertible) matrix: the Cholesky factorisation fails silently, the
    # residual check notices, SuperLU solves it
    A = sp.csc_matrix(np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]))
    B = np.arange(6.0).reshape(3, 2)
    solver = expression.SPDSolver(A)
    X = solver.solve(B)
    assert solver.backend == "superlu"
    np.testing.assert_allclose(A @ X, B, rtol=RTOL, atol=1e-12)
    # an SPD one stays with the Cholesky factorisation
    spd = expression.SPDSolver(sp.csc_matrix(np.array([[2.0, -1.0], [-1.0, 2.0]])))
    np.testing.assert_allclose(spd.solve(np.ones(2)), [1.0, 1.0], rtol=RTOL)
    assert spd.backend == "cholesky" and spd.last_residual < 1e-14
    with pytest.raises(PrepError, match="singular|could not be solved"):
        expression.SPDSolver(sp.csc_matrix(np.array([[1.0, -1.0], [-1.0, 1.0]]))).solve(np.ones(2))


def test_float32_components_are_accepted_and_solved_in_float64():
    V, F = bumpy_disk(11, hole=True)
    mapped, _ = split(V, interior_region(V, 10.0))
    W = smooth_field(V, 2)[mapped]
    d64 = transfer_expression(V, F, W, mapped)
    d32 = transfer_expression(V, F, W.astype(np.float32), mapped)
    assert d32.dtype == np.float64 and d32.shape == (V.shape[0], 3, 2)
    np.testing.assert_allclose(d32, d64, rtol=TOL[np.float32][0], atol=TOL[np.float32][1] * 10)


# --------------------------------------------------------------------------------------------
# mapping and mesh robustness


def test_duplicate_mapping_entries_are_averaged_with_a_warning():
    V, F = bumpy_disk(11, hole=True)
    mapped, _ = split(V, interior_region(V, 10.0))
    W = smooth_field(V, 1)[mapped]
    dup_target = mapped[5]
    mapping = np.concatenate([mapped, [dup_target]])
    extra = W[5:6] + 2.0  # a second, different value on the same vertex
    W2 = np.concatenate([W, extra])
    with pytest.warns(UserWarning, match="1 mapping entries repeat a mesh vertex"):
        d, diag = transfer_expression(V, F, W2, mapping, weight=math.inf, return_diagnostics=True)
    np.testing.assert_allclose(d[dup_target], (W[5] + extra[0]) / 2, rtol=RTOL, atol=ATOL)
    assert diag.n_duplicates == 1 and diag.n_mapped == mapped.size


@pytest.mark.parametrize(
    "mapping_change, match",
    [
        (lambda m, n: np.where(m == m[0], n, m), r"outside 0\.\."),  # one index = N
        (lambda m, n: m - m.min() - 1, r"outside 0\.\."),  # a negative index
        (lambda m, n: m[:-1], "mapping has .* entries but the expression model has"),
        (lambda m, n: m.astype(float) + 0.5, "integer vertex indices"),
    ],
)
def test_bad_mappings_raise_prep_error(mapping_change, match):
    V, F = bumpy_disk(9)
    mapped, _ = split(V, interior_region(V, 8.0))
    W = smooth_field(V, 1)[mapped]
    with pytest.raises(PrepError, match=match):
        transfer_expression(V, F, W, mapping_change(mapped, V.shape[0]))


def test_bad_component_shape_raises_prep_error():
    V, F = bumpy_disk(9)
    with pytest.raises(PrepError, match=r"\(V, 3, D\)"):
        transfer_expression(V, F, np.zeros((V.shape[0], 2, 1)), np.arange(V.shape[0]))


def test_unreferenced_vertices_mapped_keep_their_value_unmapped_get_zero():
    V, F = bumpy_disk(11, hole=True)
    V = np.vstack([V, [[90.0, 0.0, 0.0], [95.0, 0.0, 0.0]]])  # two vertices no triangle uses
    n = V.shape[0]
    mapped, hidden = split(V, np.concatenate([interior_region(V, 10.0), [n - 1]]))
    W = smooth_field(V, 2)[mapped] + 1.0
    with pytest.warns(UserWarning, match="1 mesh vertices lie in pieces of the mesh without"):
        d, diag = transfer_expression(V, F, W, mapped, return_diagnostics=True)
    assert np.isfinite(d).all()
    np.testing.assert_allclose(d[n - 2], W[mapped == n - 2][0], rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(d[n - 1], 0.0)
    assert diag.n_unconstrained == 1
    assert diag.n_extrapolated == hidden.sum() - 1


def test_the_system_uses_only_sparse_matrices(monkeypatch):
    # nothing N x N is ever made dense (the Basel mesh has 53,490 vertices)
    calls = []
    real = expression._factorise

    def checking_factorise(A):
        calls.append(sp.issparse(A))
        return real(A)

    monkeypatch.setattr(expression, "_factorise", checking_factorise)
    V, F = bumpy_disk(9, hole=True)
    mapped, _ = split(V, interior_region(V, 8.0))
    transfer_expression(V, F, smooth_field(V, 1)[mapped], mapped)
    assert calls == [True]


# --------------------------------------------------------------------------------------------
# the Surrey Face Model: a real face mesh with a mouth opening


def _load_sfm():
    shape = np.load(reference_file("sfm/sfm_shape_3448.npz"))
    blend = np.load(reference_file("sfm/expression_blendshapes_3448.npz"))
    V = shape["mean"].reshape(-1, 3).astype(np.float64)
    F = shape["triangles"].astype(np.int64)
    W = blend["deformations"].reshape(-1, 3, blend["deformations"].shape[1]).astype(np.float64)
    return V, F, W, [str(s) for s in blend["names"]]


def _mouth_region(V, F, radius_mm):
    """Vertices within ``radius_mm`` of the mouth opening (the shorter of the two boundary
    loops; the other is the outer border of the face)."""
    import igl

    loops = igl.boundary_loop_all(np.ascontiguousarray(F))
    assert len(loops) == 2, "the SFM mesh has an outer border and a mouth opening"
    mouth = np.asarray(min(loops, key=len))
    dist = cKDTree(V[mouth]).query(V)[0]
    return np.flatnonzero(dist < radius_mm)


# The region: every vertex within 8 mm of the mouth opening -- the lips and the skin around
# them, where expressions move most (336 of 3448 vertices; the mesh's median edge is 3.6 mm,
# so the region reaches about two edges from the opening). It plays the part of the Basel
# mouth interior that the 3DDFA expression model does not cover.
SFM_RADIUS_MM = 8.0
# The bound, per expression: half the median edge length of the SFM mesh (3.56 mm / 2). An
# extrapolation cannot be expected to resolve detail finer than the mesh's sampling; errors
# under half an edge mean the hidden lips move as they truly do to within that resolution.
# Measured (lambda = 1): 0.9 - 1.5 mm, against 3.6 - 18.8 mm for copying zero and
# 1.2 - 6.1 mm for copying the nearest known vertex.
SFM_BOUND_MM = 1.78


@pytest.mark.reference
@pytest.mark.parametrize("weight", [1.0, math.inf])
def test_sfm_mouth_region_extrapolation_against_the_true_blendshapes(weight, capsys):
    V, F, W, names = _load_sfm()
    hidden = _mouth_region(V, F, SFM_RADIUS_MM)
    assert 250 <= hidden.size <= 450, hidden.size
    mapped, hidden_mask = split(V, hidden)

    d, diag = transfer_expression(V, F, W[mapped], mapped, weight=weight, return_diagnostics=True)
    assert diag.n_extrapolated == hidden.size

    def rms(x):  # per expression, over the hidden vertices: sqrt(mean |error|^2), mm
        return np.sqrt((x**2).sum(axis=1).mean(axis=0))

    err = rms(d[hidden] - W[hidden])
    zero = rms(W[hidden])
    nearest = mapped[cKDTree(V[mapped]).query(V[hidden])[1]]
    nn = rms(W[nearest] - W[hidden])
    pooled = lambda e: float(np.sqrt(np.mean(e**2)))  # noqa: E731

    with capsys.disabled():
        print(
            f"\nSFM mouth region ({hidden.size} vertices within {SFM_RADIUS_MM} mm of the "
            f"mouth opening), lambda = {weight}: RMS error in mm per expression"
        )
        for name, e, z, m in zip(names, err, zero, nn, strict=True):
            print(f"  {name:10s} transfer {e:5.2f}   zero {z:5.2f}   nearest vertex {m:5.2f}")
        print(
            f"  {'all':10s} transfer {pooled(err):5.2f}   zero {pooled(zero):5.2f}   "
            f"nearest vertex {pooled(nn):5.2f};  mapped-vertex deviation max "
            f"{diag.mapped_max_deviation_mm:.2f} mm, rms {diag.mapped_rms_deviation_mm:.3f} mm"
        )

    assert (err < SFM_BOUND_MM).all(), err
    assert (err < 0.5 * zero).all(), (err, zero)  # every expression: far better than nothing
    # pooled over the six expressions, clearly better than copying the nearest known vertex
    # (per expression it is better for five of six; for anger, whose mouth motion is small,
    # both are within about 0.2 mm)
    assert pooled(err) < 0.6 * pooled(nn), (pooled(err), pooled(nn))
