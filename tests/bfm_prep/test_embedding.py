"""symmetric_tutte / embed_model: zero flips, exact symmetry, boundary on the square, line on
u = 0.5, axes (u with x, v with y), holes, noisy meshes, the synthetic model and the Surrey
Face Model."""

from __future__ import annotations

import numpy as np
import pytest
from bfm_prep.artifact import read_uv, write_uv
from bfm_prep.embedding import embed_mesh, embed_model, symmetric_tutte
from bfm_prep.errors import PrepError
from bfm_prep.mesh_checks import check_mesh
from bfm_prep.model import MorphableModel
from bfm_prep.symmetry import find_symmetry

from tests.bfm_prep.test_symmetry import VARIANTS, face_grid, perturb, sfm_mean, synthetic_face
from tests.tolerances import TOL

RTOL, ATOL = TOL[np.float64]


def signed_areas(uv, F):
    a, b, c = uv[F[:, 0]], uv[F[:, 1]], uv[F[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def check_embedding(emb, V, F, *, boundary_exact=True, orientation=1):
    """Everything the embedding promises, recomputed here from the UV."""
    uv = emb.uv
    n = len(V)
    assert uv.shape == (n, 2) and np.isfinite(uv).all()
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    # no flipped or degenerate triangle, orientation as the mesh's faces seen from the front
    area = signed_areas(uv, F) * orientation
    assert (area > 0).all()
    assert emb.checks["flipped_triangles"] == 0
    assert emb.checks["uv_orientation"] == orientation
    # exact mirror symmetry through the mirror map
    phi = emb.mirror
    np.testing.assert_allclose(uv[phi, 0], 1.0 - uv[:, 0], rtol=0, atol=ATOL)
    np.testing.assert_array_equal(uv[phi, 1], uv[:, 1])
    assert emb.checks["symmetry_error"] <= ATOL
    # the symmetry line on u = 0.5, from v = 0 (chin) up to v = 1 (forehead)
    line = emb.symmetry_line
    np.testing.assert_array_equal(uv[line, 0], 0.5)
    assert np.all(np.diff(uv[line, 1]) > 0)
    # the outer boundary on the square
    outer = check_mesh(V, F).outer
    d = np.minimum.reduce([uv[outer, 0], 1 - uv[outer, 0], uv[outer, 1], 1 - uv[outer, 1]])
    if boundary_exact:
        assert d.max() == 0.0
        assert emb.checks["boundary_error"] == 0.0
        for corner in ([0, 0], [1, 0], [0, 1], [1, 1]):
            assert (np.abs(uv[outer] - corner).max(axis=1) == 0).any()
    assert emb.checks["boundary_error"] == pytest.approx(d.max(), abs=1e-15)
    # axes: u grows with x, v with y
    assert np.corrcoef(uv[:, 0], V[:, 0])[0, 1] > 0.9
    assert np.corrcoef(uv[:, 1], V[:, 1])[0, 1] > 0.9


@pytest.mark.parametrize(
    "kw",
    [k for k in VARIANTS if k.get("outline") != "mask"],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain",
)
def test_symmetric_meshes(kw):
    V, F, mirror = face_grid(**kw)
    emb = embed_mesh(V, F)
    np.testing.assert_array_equal(emb.mirror, mirror)
    check_embedding(emb, V, F)
    if kw.get("swapped"):
        assert emb.checks["line_error"] == 0.0
    if kw.get("mouth", True):
        assert emb.checks["n_holes"] >= 1


def test_arc_length_spacing_of_line_and_boundary():
    V, F, _ = face_grid(eyes=True)
    emb = embed_mesh(V, F)
    line = emb.symmetry_line
    s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(V[line], axis=0), axis=1))])
    # steps joined by a mesh edge have v proportional to 3D length; the step across the
    # mouth (a hole on the line) goes through the hole's centre, so it is longer
    edges = {tuple(e) for e in np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]).tolist()}
    joined = np.array(
        [
            (a, b) in edges or (b, a) in edges
            for a, b in zip(line[:-1].tolist(), line[1:].tolist(), strict=True)
        ]
    )
    assert (~joined).sum() == 1
    ratio = np.diff(emb.uv[line, 1]) / np.diff(s)
    np.testing.assert_allclose(ratio[joined], ratio[joined].mean(), rtol=1e-9)
    assert ratio[~joined][0] > ratio[joined].mean()
    # the outer boundary: equal spacing per 3D length along each side of the square
    outer = check_mesh(V, F).outer
    uv = emb.uv[outer]
    seg3 = np.linalg.norm(V[outer] - V[np.roll(outer, -1)], axis=1)
    seg2 = np.abs(uv - np.roll(uv, -1, axis=0)).sum(axis=1)  # along one side: |du| + |dv|
    left_side = (uv[:, 0] == 0) & (np.roll(uv, -1, axis=0)[:, 0] == 0)
    r = seg2[left_side] / seg3[left_side]
    np.testing.assert_allclose(r, r.mean(), rtol=1e-9)


def test_jagged_boundary_with_ears():
    """A boundary with ears (triangles with three boundary vertices) and chords: the ends of
    a chord that would squash triangles to zero area move inside the square; still no flip."""
    for kw in (dict(outline="mask"), dict(outline="mask", swapped=True, eyes=True)):
        V, F, mirror = face_grid(**kw)
        emb = embed_mesh(V, F)
        np.testing.assert_array_equal(emb.mirror, mirror)
        check_embedding(emb, V, F, boundary_exact=False)
        assert 0 < emb.checks["boundary_error"] < 0.15


def test_mean_value_weights():
    V, F, _ = face_grid(eyes=True)
    emb = embed_mesh(V, F, weights="mean-value")
    check_embedding(emb, V, F)
    assert emb.provenance["parameters"]["weights"] == "mean-value"
    with pytest.raises(PrepError, match="unknown weights"):
        embed_mesh(V, F, weights="uniform")


@pytest.mark.parametrize("swapped", [False, True])
def test_nearly_symmetric_mesh_gives_exactly_symmetric_uv(swapped):
    V, F, mirror = face_grid(20, 51, swapped=swapped, eyes=True)
    W = perturb(V, 1.0, rigid=False)
    emb = embed_mesh(W, F)
    np.testing.assert_array_equal(emb.mirror, mirror)
    check_embedding(emb, W, F)
    assert 0.5 < emb.checks["mirror_residual_rms_mm"] < 3.0


def test_clockwise_faces():
    """Faces clockwise seen from the front (as in the Basel file): same UV, reported
    orientation -1, no flips."""
    V, F, _ = face_grid(eyes=True)
    emb = embed_mesh(V, F)
    emb_cw = embed_mesh(V, F[:, ::-1])
    check_embedding(emb_cw, V, F[:, ::-1], orientation=-1)
    np.testing.assert_allclose(emb_cw.uv, emb.uv, rtol=0, atol=1e-9)


def test_symmetric_tutte_with_given_symmetry_and_roundtrip(tmp_path):
    V, F, mirror = face_grid()
    sym = find_symmetry(
        V, F, pairs=np.column_stack([np.arange(len(V)), mirror])[mirror > np.arange(len(V))]
    )
    emb = symmetric_tutte(V, F, sym)
    check_embedding(emb, V, F)
    path = write_uv(tmp_path / "uv.h5", emb)
    back = read_uv(path)
    np.testing.assert_array_equal(back.uv, emb.uv)
    np.testing.assert_array_equal(back.mirror, emb.mirror)
    np.testing.assert_array_equal(back.symmetry_line, emb.symmetry_line)
    assert back.checks["flipped_triangles"] == 0
    with pytest.raises(PrepError, match="the symmetry has"):
        symmetric_tutte(V[:-1], F[F.max(axis=1) < len(V) - 1], sym)


def test_embed_model():
    V, F, _ = face_grid(eyes=True)
    model = MorphableModel(
        shape_mean=V,
        shape_basis=np.zeros((len(V), 3, 1)),
        shape_std=np.ones(1),
        shape_kind=["identity"],
        faces=F,
    )
    emb = embed_model(model)
    check_embedding(emb, V, F)
    np.testing.assert_array_equal(emb.faces, F)


def test_synthetic_model():
    face = synthetic_face()
    V, F = face.vertices, face.mesh.faces
    emb = embed_mesh(V, F)
    np.testing.assert_array_equal(emb.mirror, face.mesh.mirror)
    check_embedding(emb, V, F)
    assert emb.checks["symmetry_error"] <= 1e-12


@pytest.mark.reference
def test_surrey_face_model():
    V, F = sfm_mean()
    emb = embed_mesh(V, F)
    check_embedding(emb, V, F)
    assert emb.checks["n_holes"] == 1  # the mouth
    # the mouth stays open: its rim is inside the square, around the line
    mouth = check_mesh(V, F).holes[0]
    uvm = emb.uv[mouth]
    assert uvm.min() > 0.2 and uvm.max() < 0.8
    assert uvm[:, 0].min() < 0.5 < uvm[:, 0].max()
    assert emb.checks["mirror_residual_max_mm"] < 3.0
