"""UV-grid resampling (bfm_prep.resample) and ``bfm-prep uv-resample``."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from bfm_prep.artifact import UVEmbedding, read_grid, write_model, write_uv
from bfm_prep.errors import PrepError
from bfm_prep.model import MorphableModel
from bfm_prep.resample import (
    MIN_RES,
    boundary_edges,
    grid_faces,
    grid_uv,
    locate_points,
    resample_to_grid,
)
from scipy.spatial import Delaunay

from tests.tolerances import ARTIFACT_RTOL, TOL

RTOL, ATOL = TOL[np.float64]


# ---------------------------------------------------------------------------------------------
# test meshes: a planar triangulation of the unit square lifted to a face-sized surface


def square_mesh(n_side=13, seed=0, hole=None, extra_uv=()):
    """Delaunay triangulation of a jittered grid covering [0, 1]^2 exactly (the boundary on the
    square's sides), plus ``extra_uv`` points; triangles counter-clockwise in UV. ``hole``:
    (centre, radius) removes the triangles whose centroid lies in that disc."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n_side)
    u, v = np.meshgrid(t, t)
    uv = np.stack([u.ravel(), v.ravel()], 1)
    interior = (uv > 0).all(1) & (uv < 1).all(1)
    uv[interior] += rng.uniform(-0.3, 0.3, (interior.sum(), 2)) / (n_side - 1)
    uv = np.concatenate([uv, np.asarray(extra_uv, dtype=float).reshape(-1, 2)])
    faces = Delaunay(uv).simplices.astype(np.int64)
    a, b, c = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    cross = (b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]
    faces[cross < 0] = faces[cross < 0][:, [0, 2, 1]]
    if hole is not None:
        centre, radius = hole
        keep = np.linalg.norm((a + b + c) / 3 - np.asarray(centre), axis=1) > radius
        faces = faces[keep]
    return uv, faces


def linear_field(uv, coef):
    """(N, 3, K) values linear in UV: coef (3, K, 3) applied to (u, v, 1)."""
    h = np.concatenate([uv, np.ones((len(uv), 1))], 1)
    return np.einsum("nj,ckj->nck", h, coef)


def make_model(uv, faces, k=4, kc=2, seed=1, landmarks=None, color=True):
    """Vertices: x, y proportional to u, v (a face-sized patch), z a bump; components and
    colour linear in UV so that barycentric interpolation reproduces them exactly."""
    rng = np.random.default_rng(seed)
    x = 150.0 * (uv[:, 0] - 0.5)
    y = 190.0 * (uv[:, 1] - 0.5)
    z = 40.0 * np.exp(-((uv[:, 0] - 0.5) ** 2 + (uv[:, 1] - 0.55) ** 2) / 0.08)
    kw = {}
    if color:
        kw = dict(
            color_mean=linear_field(uv, rng.uniform(0, 0.5, (3, 1, 3)))[:, :, 0],
            color_basis=linear_field(uv, rng.normal(0, 0.05, (3, kc, 3))),
            color_std=np.ones(kc),
        )
    return MorphableModel(
        shape_mean=np.stack([x, y, z], 1),
        shape_basis=linear_field(uv, rng.normal(0, 2, (3, k, 3))),
        shape_std=rng.uniform(1, 3, k),
        shape_kind=["identity"] * (k - k // 2) + ["expression"] * (k // 2),
        faces=faces,
        landmarks=landmarks or {},
        provenance={"inputs": {}, "parameters": {"test": True}},
        **kw,
    )


def at_grid(uv, values, points):
    """A field linear in UV, known at the vertices, evaluated at ``points`` (exact fit)."""
    h = np.concatenate([uv, np.ones((len(uv), 1))], 1)
    coef, *_ = np.linalg.lstsq(h, values.reshape(len(uv), -1), rcond=None)
    hp = np.concatenate([points, np.ones((len(points), 1))], 1)
    return (hp @ coef).reshape((len(points),) + values.shape[1:])


def normals(x, f):
    return np.cross(x[f[:, 1]] - x[f[:, 0]], x[f[:, 2]] - x[f[:, 0]])


# ---------------------------------------------------------------------------------------------


class TestGrid:
    def test_order(self):
        r = 9
        g = grid_uv(r)
        k = np.arange(r * r)
        np.testing.assert_allclose(g[:, 0], (k % r) / (r - 1), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(g[:, 1], 1 - (k // r) / (r - 1), rtol=RTOL, atol=ATOL)
        assert tuple(g[0]) == (0.0, 1.0) and tuple(g[-1]) == (1.0, 0.0)

    @pytest.mark.parametrize("ccw", [True, False])
    def test_faces(self, ccw):
        r = 10
        f = grid_faces(r, ccw=ccw)
        assert f.shape == (2 * (r - 1) ** 2, 3) and f.dtype == np.int64
        area = normals(np.concatenate([grid_uv(r), np.zeros((r * r, 1))], 1), f)[:, 2]
        assert (area > 0).all() if ccw else (area < 0).all()
        # every cell covered once: total area 1
        np.testing.assert_allclose(np.abs(area).sum() / 2, 1.0, rtol=RTOL)

    def test_faces_match_the_original_order(self):
        """The original resampleModel's faces (model_112.mat, 1-based) start 1 2 113 / 114 113 2."""
        f = grid_faces(112, ccw=False)
        np.testing.assert_array_equal(
            f[:4] + 1, [[1, 2, 113], [114, 113, 2], [113, 114, 225], [226, 225, 114]]
        )


class TestLocate:
    def test_points_on_vertices_edges_and_outside(self):
        uv, faces = square_mesh(7)
        pts = np.concatenate([uv, [[0.5, 0.0], [0.0, 0.37], [1.2, 0.5], [-0.01, 0.5]]])
        tri, bary = locate_points(uv, faces, pts)
        assert (tri[:-2] >= 0).all() and (tri[-2:] == -1).all()
        back = np.einsum("pk,pkd->pd", bary[:-2], uv[faces[tri[:-2]]])
        np.testing.assert_allclose(back, pts[:-2], rtol=RTOL, atol=1e-12)
        assert (bary[:-2] >= 0).all()
        np.testing.assert_allclose(bary.sum(1)[:-2], 1.0, rtol=RTOL)


class TestResample:
    @pytest.mark.parametrize("res", [MIN_RES, 23, 64])
    def test_linear_fields_exact_and_all_inside(self, res):
        uv, faces = square_mesh(15)
        m = make_model(uv, faces)
        g = resample_to_grid(m, uv, res)
        gm, guv = g.model, grid_uv(res)
        assert g.res == res and gm.n_vertices == res * res
        assert g.inside.all()
        np.testing.assert_allclose(g.uv, guv, rtol=RTOL, atol=ATOL)
        # x, y are linear in UV: reproduced exactly
        xy = np.stack([150 * (guv[:, 0] - 0.5), 190 * (guv[:, 1] - 0.5)], 1)
        np.testing.assert_allclose(gm.shape_mean[:, :2], xy, rtol=RTOL, atol=1e-10)
        # every component and the colour model are linear fields: reproduced exactly
        for name in ("shape_basis", "color_mean", "color_basis"):
            np.testing.assert_allclose(
                getattr(gm, name),
                at_grid(uv, getattr(m, name), guv),
                rtol=1e-9,
                atol=1e-11,
                err_msg=name,
            )
        np.testing.assert_array_equal(gm.shape_std, m.shape_std)
        assert gm.shape_kind == m.shape_kind
        c = gm.provenance["parameters"]["checks"]
        assert c["n_outside"] == 0 and c["orientation_agreement"] == 1.0

    def test_z_interpolated_barycentrically(self):
        """A non-linear field: each grid value is the barycentric mix of its triangle's corners."""
        uv, faces = square_mesh(11, seed=3)
        m = make_model(uv, faces, color=False)
        g = resample_to_grid(m, uv, 17)
        tri, bary = locate_points(uv, faces, grid_uv(17))
        want = np.einsum("pk,pk->p", bary, m.shape_mean[faces[tri], 2])
        np.testing.assert_allclose(g.model.shape_mean[:, 2], want, rtol=RTOL, atol=1e-10)
        assert g.model.color_mean is None

    @pytest.mark.parametrize("flip", [False, True])
    def test_faces_oriented_like_the_source(self, flip):
        uv, faces = square_mesh(12, seed=2)
        if flip:
            faces = faces[:, [0, 2, 1]]
        m = make_model(uv, faces)
        g = resample_to_grid(m, uv, 20)
        gm = g.model
        # each grid triangle's 3D normal against the source triangle under its UV centroid
        tri, _ = locate_points(uv, faces, g.uv[gm.faces].mean(1))
        dots = np.einsum(
            "ij,ij->i", normals(gm.shape_mean, gm.faces), normals(m.shape_mean, faces[tri])
        )
        assert (dots > 0).all()
        np.testing.assert_array_equal(gm.faces, grid_faces(20, ccw=not flip))
        assert gm.provenance["parameters"]["checks"]["orientation_agreement"] == 1.0

    def test_landmarks_land_where_expected(self):
        r = 21
        # extra vertices exactly on grid points (row, col) and one between grid points
        rc = np.array([[0, 0], [3, 17], [10, 10], [20, 20]])
        extra = np.stack([rc[:, 1] / (r - 1), 1 - rc[:, 0] / (r - 1)], 1)
        extra = np.concatenate([extra, [[5.2 / (r - 1), 1 - 7.9 / (r - 1)]]])
        uv, faces = square_mesh(9, seed=4, extra_uv=extra)
        ids = np.arange(len(uv) - len(extra), len(uv))
        m = make_model(uv, faces, landmarks={"own": ids[:3]})
        g = resample_to_grid(m, uv, r, landmarks={"extra": ids[3:]})
        np.testing.assert_array_equal(g.model.landmarks["own"], rc[:3, 0] * r + rc[:3, 1])
        np.testing.assert_array_equal(g.model.landmarks["extra"], [20 * r + 20, 8 * r + 5])
        # the landmark's grid vertex carries (nearly) the landmark vertex's position
        np.testing.assert_allclose(
            g.model.shape_mean[g.model.landmarks["own"]],
            m.shape_mean[ids[:3]],
            rtol=RTOL,
            atol=1e-9,
        )

    def test_hole_marked_and_filled_from_nearest_mesh_point(self):
        centre, radius = (0.5, 0.4), 0.17
        uv, faces = square_mesh(25, seed=5, hole=(centre, radius))
        m = make_model(uv, faces)
        r = 41
        g = resample_to_grid(m, uv, r)
        guv = grid_uv(r)
        out = ~g.inside
        assert out.any() and g.model.provenance["parameters"]["checks"]["n_outside"] == out.sum()
        # outside points lie in the hole, inside points do not lie deep in it
        assert (np.linalg.norm(guv[out] - centre, axis=1) < radius + 0.05).all()
        assert (np.linalg.norm(guv[g.inside] - centre, axis=1) > radius - 0.1).all()
        # filled from the nearest point on the hole boundary (brute force): linear fields match
        e = boundary_edges(faces)
        pa, pb = uv[e[:, 0]], uv[e[:, 1]]
        q = guv[out][:, None, :]
        t = np.clip(np.einsum("qed,ed->qe", q - pa, pb - pa) / ((pb - pa) ** 2).sum(1), 0, 1)
        near = pa + t[..., None] * (pb - pa)
        best = near[np.arange(out.sum()), np.linalg.norm(q - near, axis=2).argmin(1)]
        xy = np.stack([150 * (best[:, 0] - 0.5), 190 * (best[:, 1] - 0.5)], 1)
        np.testing.assert_allclose(g.model.shape_mean[out, :2], xy, rtol=RTOL, atol=1e-9)
        # a landmark next to the hole maps to an inside grid vertex
        edge_vertex = e[0, 0]
        g2 = resample_to_grid(make_model(uv, faces, landmarks={"lip": [edge_vertex]}), uv, r)
        assert g2.inside[g2.model.landmarks["lip"]].all()

    def test_uv_not_covering_the_square(self):
        uv, faces = square_mesh(9)
        small = 0.25 + 0.5 * uv  # the mesh covers only the middle of the square
        g = resample_to_grid(make_model(uv, faces), small, 16)
        assert 0 < g.inside.sum() < 16 * 16
        assert np.isfinite(g.model.shape_basis).all()

    def test_boundary_a_rounding_error_inside_the_square(self):
        """A boundary computed in floating point may miss the square's sides by a rounding
        error: the grid points on the sides still count as inside; a real gap does not."""
        uv, faces = square_mesh(9)
        m = make_model(uv, faces)
        assert resample_to_grid(m, 0.5 + (uv - 0.5) * (1 - 1e-9), 16).inside.all()
        g = resample_to_grid(m, 0.5 + (uv - 0.5) * 0.99, 16)
        border = np.zeros((16, 16), bool)
        border[[0, -1], :] = border[:, [0, -1]] = True
        np.testing.assert_array_equal(g.inside, ~border.ravel())

    def test_bad_inputs(self):
        uv, faces = square_mesh(6)
        m = make_model(uv, faces)
        with pytest.raises(PrepError, match=f"{len(uv) - 1} vertices but the model has {len(uv)}"):
            resample_to_grid(m, uv[:-1], 16)
        for bad in (MIN_RES - 1, 0, -3):
            with pytest.raises(PrepError, match="too small"):
                resample_to_grid(m, uv, bad)
        nan = uv.copy()
        nan[3, 0] = np.nan
        with pytest.raises(PrepError, match="NaN"):
            resample_to_grid(m, nan, 16)


# ---------------------------------------------------------------------------------------------
# the synthetic model, end to end (synth -> build -> embed -> resample)

AFLW_BROWS, AFLW_EYES = np.arange(0, 6), np.arange(6, 12)
AFLW_NOSE, AFLW_MOUTH, AFLW_CHIN = np.arange(13, 16), np.arange(17, 20), 20


def assert_aflw21_layout(idx, res):
    """Rows from the top: brows, eyes, nose, mouth, chin; columns: each group from the image's
    left (the subject's right, column 0 side) to its right."""
    row, col = idx // res, idx % res
    assert row[AFLW_BROWS].max() < row[AFLW_EYES].min()
    assert row[AFLW_EYES].max() < row[AFLW_NOSE].min()
    assert row[AFLW_NOSE].max() < row[AFLW_MOUTH].min()
    assert row[AFLW_MOUTH].max() < row[AFLW_CHIN]
    for group in (AFLW_BROWS, AFLW_EYES, np.arange(12, 17), AFLW_MOUTH):
        assert (np.diff(col[group]) > 0).all(), group + 1


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from bfm_prep.build import build_model
    from bfm_prep.embedding import embed_model
    from bfm_prep.synth import write_synthetic

    d = tmp_path_factory.mktemp("synth")
    files = write_synthetic(d, seed=0, n_vertices=2000, n_shape=8, n_color=4, n_exp=6)
    model = build_model(
        files["bfm"],
        expression_path=files["expression"],
        mapping_path=files["mapping"],
        n_shape=8,
        n_exp=6,
        landmarks={"aflw21": files["aflw21"], "ibug68": files["ibug68"]},
    )
    return model, embed_model(model)


class TestSynthetic:
    @pytest.mark.parametrize("res", [48, 112])
    def test_grid(self, synthetic, res):
        model, emb = synthetic
        g = resample_to_grid(model, emb.uv, res)
        c = g.model.provenance["parameters"]["checks"]
        assert g.inside.all() and c["n_outside"] == 0  # the embedding fills the square
        # A grid triangle spanning a sharp crease (lips, nostrils) may tilt past the source
        # normal at its centroid; all but a handful agree.
        assert c["orientation_agreement"] > 0.999 and c["source_flipped_uv"] == 0
        # the model follows the artifact convention (counter-clockwise from the front), so
        # does the grid
        x, f = g.model.shape_mean, g.model.faces
        assert normals(x, f)[:, 2].sum() > 0
        assert g.model.n_identity == 8 and g.model.n_expression == 6 and g.model.has_color
        # landmarks: the mapped grid vertex is the grid point nearest the landmark in UV (at
        # most half a cell diagonal away), and the AFLW layout is upright, left to right
        assert sorted(g.model.landmarks) == ["aflw21", "ibug68"]
        for name, src in model.landmarks.items():
            gi = g.model.landmarks[name]
            cells = np.abs(g.uv[gi] - emb.uv[src]) * (res - 1)
            assert cells.max() <= 0.5 + 1e-9, (name, cells.max())
        assert_aflw21_layout(g.model.landmarks["aflw21"], res)
        # the exactly symmetric model gives a mirror-symmetric grid: column c <-> R-1-c
        m = g.model.shape_mean.reshape(res, res, 3)
        np.testing.assert_allclose(m[:, ::-1, 0], -m[..., 0], atol=1e-6 * np.abs(m).max())
        np.testing.assert_allclose(m[:, ::-1, 1:], m[..., 1:], atol=1e-6 * np.abs(m).max())


# ---------------------------------------------------------------------------------------------
# the original's files


def _anl(path):
    from bfm_prep.io.landmarks import load_landmarks

    return load_landmarks(path)


@pytest.mark.reference
class TestAgainstTheOriginal:
    """BFM_UV.mat + the landmarks on the Basel mesh, mapped by our grid convention, against the
    original's landmark files for its 112 and 224 grids: checks the grid's row-from-the-top and
    column order against the original."""

    @pytest.mark.parametrize("res", [112, 224])
    @pytest.mark.parametrize("count", [21, 68])
    def test_landmarks_agree_with_the_original_grids(self, ref, res, count):
        from bfm_prep.io.bfm_uv import load_bfm_uv
        from bfm_prep.resample import map_landmarks

        uv = load_bfm_uv(ref("3dmmasstn/BFM_UV.mat"), n_vertices=53490)
        src = _anl(ref(f"3dmmasstn/landmarks/Landmarks{count}_BFM.anl"))
        want = _anl(ref(f"3dmmasstn/landmarks/Landmarks{count}_{res}.anl"))
        got = map_landmarks(uv, {"x": src}, res, np.ones(res * res, bool))["x"]
        drow, dcol = got // res - want // res, got % res - want % res
        cheb = np.maximum(np.abs(drow), np.abs(dcol))
        if count == 68:
            # The original's own 68-point files disagree on the lower inner lip (points 66-68:
            # the BFM file's upper/lower lip vertices sit 3 (112) to 6 (224) rows from the grid
            # file's); every other point agrees within one grid cell.
            lips = np.array([65, 66, 67])
            assert cheb[lips].max() <= res // 35
            cheb = np.delete(cheb, lips)
        assert cheb.max() <= 1, f"landmarks off by more than a cell: {np.flatnonzero(cheb > 1) + 1}"
        assert (cheb == 0).mean() > 0.8

    def test_surrey_face_model_with_a_mouth_hole(self, ref):
        """The SFM mesh has a mouth opening and a nearly symmetric mean: grid points in the
        mouth are outside, filled from the lips; the iBUG landmarks map to inside points."""
        from bfm_prep.embedding import embed_model
        from bfm_prep.io.landmarks import load_landmarks
        from bfm_prep.io.sfm import load_sfm

        m = load_sfm(ref("sfm/sfm_shape_3448.npz"), ref("sfm/expression_blendshapes_3448.npz"))
        emb = embed_model(m)
        lm = load_landmarks(ref("sfm/ibug_to_sfm.txt"), n_vertices=m.n_vertices)
        g = resample_to_grid(m, emb.uv, 112, landmarks={"ibug": lm})
        c = g.model.provenance["parameters"]["checks"]
        out = np.flatnonzero(~g.inside)
        assert 10 < out.size < 200 and c["n_outside"] == out.size
        rows, cols = out // 112, out % 112
        assert np.abs(cols - 55.5).max() < 15 and rows.min() > 56  # a slit in the lower middle
        assert c["max_fill_distance_cells"] < 4
        assert c["orientation_agreement"] > 0.999
        assert g.inside[g.model.landmarks["ibug"]].all()

    def test_resample_with_bfm_uv_cli(self, ref, tmp_path, run_cli):
        """BFM_UV.mat accepted as is, at the Basel size (its triangulation is not public, so a
        Delaunay triangulation of the UV stands in for the Basel triangles)."""
        uv_path = ref("3dmmasstn/BFM_UV.mat")
        uv = scipy.io.loadmat(uv_path)["UV"]
        faces = Delaunay(uv).simplices.astype(np.int64)
        lm = _anl(ref("3dmmasstn/landmarks/Landmarks21_BFM.anl"))
        m = make_model(uv, faces, k=6, landmarks={"aflw21": lm})
        write_model(tmp_path / "model.h5", m)
        res = run_cli(
            "uv-resample",
            "--model",
            tmp_path / "model.h5",
            "--uv",
            uv_path,
            "--res",
            "112",
            "--out",
            tmp_path / "grid.h5",
        )
        assert res.returncode == 0, res.stderr
        g = read_grid(tmp_path / "grid.h5")
        want = _anl(ref("3dmmasstn/landmarks/Landmarks21_112.anl"))
        got = g.model.landmarks["aflw21"]
        cells = np.maximum(np.abs(got // 112 - want // 112), np.abs(got % 112 - want % 112))
        assert cells.max() <= 1
        assert g.inside.all()


# ---------------------------------------------------------------------------------------------
# the command


@pytest.fixture
def model_files(tmp_path):
    uv, faces = square_mesh(15, seed=7)
    m = make_model(uv, faces, landmarks={"own": [0, 5]})
    write_model(tmp_path / "model.h5", m)
    emb = UVEmbedding(
        uv=uv,
        faces=faces,
        mirror=np.arange(len(uv)),
        symmetry_line=np.zeros(0, int),
        plane=np.array([1.0, 0, 0, 0]),
        checks={"flipped_triangles": 0},
    )
    write_uv(tmp_path / "uv.h5", emb)
    scipy.io.savemat(tmp_path / "UV.mat", {"UV": uv})
    (tmp_path / "lm.anl").write_text("% test landmarks, 1-based\n1\n16\n")
    return m, uv, tmp_path


class TestCommand:
    @pytest.mark.parametrize("uv_file", ["uv.h5", "UV.mat"])
    def test_writes_grid(self, model_files, run_cli, uv_file):
        m, uv, d = model_files
        res = run_cli(
            "uv-resample",
            "--model",
            d / "model.h5",
            "--uv",
            d / uv_file,
            "--res",
            "24",
            "--landmarks",
            f"extra={d / 'lm.anl'}",
            "--out",
            d / "grid.h5",
        )
        assert res.returncode == 0, res.stderr
        assert "0 grid points outside" in res.stdout
        g = read_grid(d / "grid.h5")
        assert g.res == 24 and g.inside.all()
        assert sorted(g.model.landmarks) == ["extra", "own"]
        want = resample_to_grid(m, uv, 24)
        np.testing.assert_allclose(
            g.model.shape_basis, want.model.shape_basis, rtol=ARTIFACT_RTOL, atol=ARTIFACT_RTOL * 10
        )
        p = g.model.provenance
        assert {"model", "uv", "landmarks_extra"} <= set(p["inputs"])
        assert p["parameters"]["res"] == 24 and "checks" in p["parameters"]

    @pytest.mark.parametrize(
        "case",
        ["short_uv", "small_res", "missing_model", "missing_uv", "uv_not_mat", "bad_landmarks"],
    )
    def test_bad_inputs_exit_2_one_line_no_output(self, model_files, run_cli, case):
        m, uv, d = model_files
        args = {"model": d / "model.h5", "uv": d / "uv.h5", "res": "16"}
        extra = []
        if case == "short_uv":
            scipy.io.savemat(d / "short.mat", {"UV": uv[:-3]})
            args["uv"] = d / "short.mat"
        elif case == "small_res":
            args["res"] = "7"
        elif case == "missing_model":
            args["model"] = d / "nope.h5"
        elif case == "missing_uv":
            args["uv"] = d / "nope.mat"
        elif case == "uv_not_mat":
            (d / "junk.mat").write_text("not a mat file")
            args["uv"] = d / "junk.mat"
        elif case == "bad_landmarks":
            (d / "bad.anl").write_text(f"{len(uv) + 5}\n")
            extra = ["--landmarks", f"bad={d / 'bad.anl'}"]
        res = run_cli(
            "uv-resample",
            "--model",
            args["model"],
            "--uv",
            args["uv"],
            "--res",
            args["res"],
            *extra,
            "--out",
            d / "grid.h5",
        )
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bfm-prep: error:"), res.stderr
        if case == "short_uv":
            assert str(len(uv) - 3) in lines[0] and str(len(uv)) in lines[0]
        assert not (d / "grid.h5").exists()
        assert not list(d.glob(".grid.h5*"))

    def test_entry_point(self, model_files):
        """The installed console script: a bad --res exits 2 with one line."""
        import subprocess
        import sys

        _, _, d = model_files
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "bfm_prep",
                "uv-resample",
                "--model",
                str(d / "model.h5"),
                "--uv",
                str(d / "uv.h5"),
                "--res",
                "4",
                "--out",
                str(d / "g.h5"),
            ],
            capture_output=True,
            text=True,
        )
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert not (d / "g.h5").exists()
