"""``bfm-prep synth``: the synthetic face model, checked from the files it writes.

Exact formats (keys, shapes, dtypes, units, index bases), exact mirror symmetry of the mesh,
mean and every component, disk topology with a mouth interior, a face-like layout (landmark
order, nose tip, darker brows / eyes / lips), determinism, the Basel size, the CLI with bad
arguments, and a round trip through the loaders (bfm_prep.io).
"""

from __future__ import annotations

import warnings

import igl
import numpy as np
import pytest
import scipy.io
import scipy.sparse
import scipy.sparse.csgraph
from bfm_prep.cli import main
from bfm_prep.errors import PrepError
from bfm_prep.synth import (
    DEFAULT_N_COLOR,
    DEFAULT_N_EXP,
    DEFAULT_N_SHAPE,
    DEFAULT_VERTICES,
    FILES,
    make_synthetic,
    write_synthetic,
)
from bfm_prep.synth_mesh import (
    BASEL_BOUNDARY,
    BASEL_TRIANGLES,
    BASEL_VERTICES,
    make_param_mesh,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tolerances import TOL

F32_RTOL, F32_ATOL = TOL[np.float32]
SHAPE_MIRROR = np.array([-1.0, 1.0, 1.0])
# AFLW 21 horizontal flip (0-based), as stn-train defines it.
AFLW_FLIP = [5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20]
# iBUG 68 mirror pairs (1-based) and midline points.
IBUG_PAIRS = (
    [(i, 18 - i) for i in range(1, 9)]
    + [(18 + i, 27 - i) for i in range(5)]
    + [(32, 36), (33, 35), (37, 46), (38, 45), (39, 44), (40, 43), (41, 48), (42, 47)]
    + [(49, 55), (50, 54), (51, 53), (60, 56), (59, 57), (61, 65), (62, 64), (68, 66)]
)
IBUG_MIDLINE = [9, 28, 29, 30, 31, 34, 52, 58, 63, 67]


# --------------------------------------------------------------------------------------------
# helpers


def read_anl(path) -> np.ndarray:
    """0-based indices from an .anl file (% comments, one 1-based index per line)."""
    lines = [ln.strip() for ln in open(path).read().splitlines()]
    assert lines[0].startswith("%")
    return np.array([int(ln) for ln in lines if ln and not ln.startswith("%")]) - 1


def exact_mirror(X: np.ndarray) -> np.ndarray:
    """For each row (x, y, z), the index of the row that is exactly (-x, y, z)."""
    where = {tuple(r): i for i, r in enumerate(X.tolist())}
    assert len(where) == len(X), "two vertices share a position"
    return np.array([where[(-x, y, z)] for x, y, z in X.tolist()])


def directed_edges(F: np.ndarray) -> np.ndarray:
    return np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])


def boundary_loops(F: np.ndarray) -> list[list[int]]:
    """Boundary loops following directed boundary edges (each used by one face)."""
    e = directed_edges(F)
    key = np.minimum(e[:, 0], e[:, 1]) * (F.max() + 1) + np.maximum(e[:, 0], e[:, 1])
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    bnd = e[cnt[inv] == 1]
    nxt = dict(zip(bnd[:, 0].tolist(), bnd[:, 1].tolist(), strict=True))
    assert len(nxt) == len(bnd), "a boundary vertex with two outgoing boundary edges"
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        assert v == start
        loops.append(loop)
    return loops


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------------------------
# fixtures: the default model, written once


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def mats(files):
    return {k: scipy.io.loadmat(files[k]) for k in ("bfm", "expression", "mapping")}


@pytest.fixture(scope="module")
def geo(mats, files):
    """Mean (N, 3) mm, faces (0-based, as stored), exact mirror, landmarks, mapping."""
    bfm = mats["bfm"]
    X = bfm["shapeMU"].reshape(-1, 3)
    return dict(
        X=X.astype(np.float64) / 1000.0,
        F=bfm["tl"].astype(np.int64) - 1,
        mirror=exact_mirror(X),
        aflw=read_anl(files["aflw21"]),
        ibug=read_anl(files["ibug68"]),
        tddfa=mats["mapping"]["map_tddfa_to_basel"].ravel().astype(np.int64),
    )


# --------------------------------------------------------------------------------------------
# formats and units


class TestFormats:
    def test_smoke(self, files):
        assert {k: p.name for k, p in files.items()} == FILES
        assert all(p.is_file() and p.stat().st_size > 0 for p in files.values())
        assert not [p for p in files["bfm"].parent.iterdir() if p.name.startswith(".")]

    def test_bfm2009_variables(self, mats):
        d = mats["bfm"]
        n, k, kc = DEFAULT_VERTICES, DEFAULT_N_SHAPE, DEFAULT_N_COLOR
        expect = {
            "shapeMU": ((3 * n, 1), np.float32),
            "shapePC": ((3 * n, k), np.float32),
            "shapeEV": ((k, 1), np.float32),
            "texMU": ((3 * n, 1), np.float32),
            "texPC": ((3 * n, kc), np.float32),
            "texEV": ((kc, 1), np.float32),
        }
        assert {key for key in d if not key.startswith("__")} == set(expect) | {"tl"}
        for key, (shape, dtype) in expect.items():
            assert d[key].shape == shape, key
            assert d[key].dtype == dtype, key
        assert d["tl"].dtype == np.float64 and d["tl"].shape[1] == 3

    def test_units_and_ranges(self, mats):
        d = mats["bfm"]
        X = d["shapeMU"].reshape(-1, 3).astype(np.float64)
        extent = X.max(0) - X.min(0)  # micrometres
        assert 140e3 < extent[0] < 160e3  # face about 150 mm wide
        assert 190e3 < extent[1] < 220e3  # about 200 mm tall
        assert 0 <= d["texMU"].min() and d["texMU"].max() <= 255 and d["texMU"].max() > 200
        for key in ("shapeEV", "texEV"):
            ev = d[key].ravel()
            assert (ev > 0).all() and (np.diff(ev) < 0).all(), key
        # one standard deviation of the first identity component: millimetres per vertex
        rms_mm = d["shapeEV"][0, 0] / np.sqrt(d["shapeMU"].size) / 1000.0
        assert 0.5 < rms_mm < 5.0

    @pytest.mark.parametrize("key", ["shapePC", "texPC"])
    def test_orthonormal_columns(self, mats, key):
        pc = mats["bfm"][key].astype(np.float64)
        np.testing.assert_allclose(pc.T @ pc, np.eye(pc.shape[1]), atol=F32_RTOL)

    def test_triangles_one_based(self, mats):
        tl = mats["bfm"]["tl"]
        n = mats["bfm"]["shapeMU"].size // 3
        assert np.array_equal(tl, np.rint(tl))
        assert tl.min() == 1 and tl.max() == n
        assert np.array_equal(np.unique(tl), np.arange(1, n + 1))  # every vertex used

    def test_expression_variables(self, mats, geo):
        d = mats["expression"]
        v = geo["tddfa"].size
        assert {key for key in d if not key.startswith("__")} == {"w_exp", "mu_exp"}
        assert d["w_exp"].shape == (3 * v, DEFAULT_N_EXP) and d["w_exp"].dtype == np.float32
        assert d["mu_exp"].shape == (3 * v, 1) and d["mu_exp"].dtype == np.float32
        w = d["w_exp"].astype(np.float64)
        # micrometres: a unit coefficient of the first component moves vertices by millimetres
        peak_mm = np.abs(w[:, 0]).max() / 1000.0
        assert 3.0 < peak_mm < 30.0
        # orthogonal columns, mu_exp small and near zero mean
        g = w.T @ w
        nrm = np.sqrt(np.diag(g))
        np.testing.assert_allclose(g / np.outer(nrm, nrm), np.eye(len(g)), atol=F32_RTOL)
        mu = d["mu_exp"].reshape(-1, 3).astype(np.float64) / 1000.0
        assert np.abs(mu).max() < 2.0 and np.abs(mu.mean(0)).max() < 0.2

    def test_mapping(self, mats, geo):
        m = mats["mapping"]["map_tddfa_to_basel"]
        assert m.dtype == np.uint16 and m.shape == (1, geo["tddfa"].size)
        keys = {key for key in mats["mapping"] if not key.startswith("__")}
        assert keys == {"map_tddfa_to_basel"}
        idx = geo["tddfa"]
        n = len(geo["X"])
        assert idx.min() >= 0 and idx.max() < n  # 0-based
        assert np.unique(idx).size == idx.size
        assert not np.all(np.diff(idx) > 0)  # shuffled

    def test_mapping_covers_all_but_the_mouth_interior(self, geo):
        n = len(geo["X"])
        interior = np.setdiff1d(np.arange(n), geo["tddfa"])
        assert 0 < interior.size < 0.05 * n
        # the left-out vertices are the pocket: behind the lip line, between the mouth corners
        X = geo["X"]
        ibug = geo["ibug"]
        mouth_z = X[geo["aflw"][18], 2]  # AFLW 19, the middle of the lip line
        assert X[interior, 2].max() < mouth_z and X[interior, 2].min() < mouth_z - 5.0
        assert X[ibug[48], 0] < X[interior, 0].min() and X[interior, 0].max() < X[ibug[54], 0]

    @pytest.mark.parametrize("key,count", [("aflw21", 21), ("ibug68", 68)])
    def test_landmark_files(self, files, geo, key, count):
        text = files[key].read_text()
        body = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("%")]
        assert text.startswith("%") and len(body) == count
        idx = np.array([int(ln) for ln in body])
        assert idx.min() >= 1 and idx.max() <= len(geo["X"])  # 1-based

    def test_readme(self, files):
        text = files["readme"].read_text()
        for name in FILES.values():
            if name != "README.txt":
                assert name in text


# --------------------------------------------------------------------------------------------
# exact mirror symmetry


class TestSymmetry:
    def test_mesh_is_a_mirror_automorphism(self, geo):
        phi, F = geo["mirror"], geo["F"]
        n = len(phi)
        assert np.array_equal(phi[phi], np.arange(n))
        faces = {tuple(np.roll(f, -int(np.argmin(f)))) for f in F.tolist()}
        mirrored = phi[F][:, ::-1]  # a reflection reverses the winding
        assert all(tuple(np.roll(f, -int(np.argmin(f)))) in faces for f in mirrored.tolist())

    def test_symmetry_line(self, geo):
        """The vertices on x = 0 form one path from the chin boundary to the forehead one."""
        X, F, phi = geo["X"], geo["F"], geo["mirror"]
        line = np.flatnonzero(phi == np.arange(len(phi)))
        assert np.array_equal(line, np.flatnonzero(X[:, 0] == 0))
        e = directed_edges(F)
        on = np.isin(e, line).all(1)
        g = scipy.sparse.coo_matrix((np.ones(on.sum()), (e[on, 0], e[on, 1])), shape=(len(X),) * 2)
        g = ((g + g.T) > 0).tocsr()[line][:, line]
        deg = np.asarray(g.sum(1)).ravel()
        assert scipy.sparse.csgraph.connected_components(g)[0] == 1
        assert sorted(deg.tolist()) == [1, 1] + [2] * (len(line) - 2)  # a simple path
        ends = line[deg == 1]
        outer = set(max(boundary_loops(F), key=len))
        assert set(ends.tolist()) <= outer
        assert {X[ends, 1].argmin(), X[ends, 1].argmax()} == {0, 1}
        assert X[ends, 1].min() == X[line, 1].min() and X[ends, 1].max() == X[line, 1].max()

    def test_mean_shape_and_colour(self, mats, geo):
        phi = geo["mirror"]
        X = mats["bfm"]["shapeMU"].reshape(-1, 3)
        assert np.array_equal(X[phi], X * SHAPE_MIRROR.astype(np.float32))
        C = mats["bfm"]["texMU"].reshape(-1, 3)
        assert np.array_equal(C[phi], C)

    @pytest.mark.parametrize("key,mirror", [("shapePC", SHAPE_MIRROR), ("texPC", np.ones(3))])
    def test_components_symmetric_or_antisymmetric(self, mats, geo, key, mirror):
        phi = geo["mirror"]
        pc = mats["bfm"][key]
        n = len(phi)
        parities = []
        for k in range(pc.shape[1]):
            p = pc[:, k].reshape(n, 3)
            m = p * mirror.astype(np.float32)
            if np.array_equal(p[phi], m):
                parities.append(1)
            else:
                assert np.array_equal(p[phi], -m), f"{key} column {k} is neither"
                parities.append(-1)
        assert parities[0] == 1 and 1 in parities and -1 in parities

    def test_expression_symmetric_or_antisymmetric(self, mats, geo):
        idx, phi = geo["tddfa"], geo["mirror"]
        where = np.full(len(phi), -1)
        where[idx] = np.arange(idx.size)
        assert (where[phi[idx]] >= 0).all()  # the mouth interior is symmetric too
        w = mats["expression"]["w_exp"]
        mir = where[phi[idx]]
        for k in range(w.shape[1]):
            p = w[:, k].reshape(-1, 3)
            m = p[mir]
            assert np.array_equal(m, p * SHAPE_MIRROR.astype(np.float32)) or np.array_equal(
                m, -p * SHAPE_MIRROR.astype(np.float32)
            ), f"w_exp column {k}"
        mu = mats["expression"]["mu_exp"].reshape(-1, 3)
        assert np.array_equal(mu[mir], mu * SHAPE_MIRROR.astype(np.float32))

    def test_landmarks_are_mirror_pairs(self, geo):
        phi, X = geo["mirror"], geo["X"]
        aflw, ibug = geo["aflw"], geo["ibug"]
        assert np.array_equal(phi[aflw], aflw[AFLW_FLIP])
        for a, b in IBUG_PAIRS:
            assert phi[ibug[a - 1]] == ibug[b - 1], (a, b)
            assert X[ibug[a - 1], 0] < 0 < X[ibug[b - 1], 0], (a, b)  # image left first
        for a in IBUG_MIDLINE:
            assert X[ibug[a - 1], 0] == 0, a


# --------------------------------------------------------------------------------------------
# topology


class TestTopology:
    def test_disk(self, geo):
        F, n = geo["F"], len(geo["X"])
        e = np.sort(directed_edges(F), axis=1)
        n_edges = len(np.unique(e, axis=0))
        assert n - n_edges + len(F) == 1  # Euler characteristic of a disk
        loops = boundary_loops(F)
        assert len(loops) == 1
        assert len(F) == 2 * n - len(loops[0]) - 2

    def test_manifold_connected_every_vertex_used(self, geo):
        F, n = geo["F"], len(geo["X"])
        assert igl.is_edge_manifold(F)[0]
        assert np.asarray(igl.is_vertex_manifold(F)).all()
        assert np.array_equal(np.unique(F), np.arange(n))
        adj = igl.adjacency_matrix(F)
        assert scipy.sparse.csgraph.connected_components(adj)[0] == 1

    def test_consistent_orientation(self, geo):
        """Each directed edge once: neighbours agree; wound as the real file (clockwise
        seen from the front), so reversed the normals point to the viewer (+z)."""
        F, X = geo["F"], geo["X"]
        e = directed_edges(F)
        assert len(np.unique(e, axis=0)) == len(e)
        Fr = F[:, [0, 2, 1]]
        nrm = np.cross(X[Fr[:, 1]] - X[Fr[:, 0]], X[Fr[:, 2]] - X[Fr[:, 0]])
        assert nrm.sum(0)[2] > 0.9 * np.linalg.norm(nrm.sum(0))
        interior = np.isin(Fr, np.setdiff1d(np.arange(len(X)), geo["tddfa"])).any(1)
        assert (nrm[~interior, 2] > 0).mean() > 0.9

    def test_mouth_interior_is_a_pocket_inside_the_disk(self, geo):
        """The interior is one patch bordered by one loop of lip vertices, off the boundary."""
        F, X = geo["F"], geo["X"]
        pocket = np.setdiff1d(np.arange(len(X)), geo["tddfa"])
        outer = set(boundary_loops(F)[0])
        assert not outer & set(pocket.tolist())
        # the faces with a pocket vertex form a disk whose rim lies on the lip line: no pocket
        # vertex on it, the inner lip centres (iBUG 63, 67) on it, between the mouth corners,
        # and it is a line in 3D (closed lips, upper and lower within a small gap), not a hole
        touching = F[np.isin(F, pocket).any(1)]
        loops = boundary_loops(touching)
        assert len(loops) == 1
        rim = np.array(loops[0])
        assert not np.isin(rim, pocket).any()
        assert np.array_equal(np.sort(rim), np.setdiff1d(touching, pocket))
        ibug = geo["ibug"]
        assert {ibug[62], ibug[66]} <= set(rim.tolist())
        assert X[ibug[48], 0] < X[rim, 0].min() and X[rim, 0].max() < X[ibug[54], 0]
        assert X[rim, 1].max() - X[rim, 1].min() < 2.0
        adj = igl.adjacency_matrix(F)[pocket][:, pocket]
        assert scipy.sparse.csgraph.connected_components(adj)[0] == 1

    @given(n=st.integers(500, 6000))
    @settings(max_examples=6, deadline=None)
    def test_exact_vertex_count(self, n):
        pm = make_param_mesh(n)
        assert len(pm.uv) == n
        assert len(pm.faces) == 2 * n - len(pm.boundary) - 2
        assert np.array_equal(pm.mirror[pm.mirror], np.arange(n))
        assert np.array_equal(pm.uv[pm.mirror], pm.uv * [-1.0, 1.0])
        assert pm.pocket.any()

    def test_basel_size_mesh(self):
        pm = make_param_mesh(BASEL_VERTICES)
        assert len(pm.uv) == BASEL_VERTICES
        assert len(pm.faces) == BASEL_TRIANGLES
        assert len(pm.boundary) == BASEL_BOUNDARY
        loops = boundary_loops(pm.faces)
        assert len(loops) == 1 and set(loops[0]) == set(pm.boundary.tolist())


# --------------------------------------------------------------------------------------------
# face-like


class TestFaceLike:
    def test_nose_tip_is_the_highest_point(self, geo):
        X = geo["X"]
        tip = int(np.argmax(X[:, 2]))
        assert geo["aflw"][14] == tip and geo["ibug"][30] == tip
        assert X[tip, 0] == 0

    def test_vertical_order(self, geo):
        y = geo["X"][geo["aflw"], 1]
        brows, eyes, nose, mouth, chin = y[0:6], y[6:12], y[13:16], y[17:20], y[20]
        assert brows.min() > eyes.max() > eyes.min() > nose.max()
        assert nose.min() > mouth.max() and mouth.min() > chin

    def test_left_to_right(self, geo):
        x = geo["X"][:, 0]
        a, i = geo["aflw"], geo["ibug"]
        for group in ([0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 16], [17, 18, 19]):
            assert np.all(np.diff(x[a[group]]) > 0), group
        assert np.all(np.diff(x[i[0:17]]) > 0)  # the jaw line
        assert geo["X"][i[8], 1] == geo["X"][i[0:17], 1].min()  # iBUG 9: chin, lowest

    def test_colour_darker_at_brows_eyes_lips(self, mats, geo):
        X = geo["X"]
        lum = luminance(mats["bfm"]["texMU"].reshape(-1, 3).astype(np.float64))
        cheek = (np.abs(X[:, 0]) > 38) & (np.abs(X[:, 0]) < 52) & (X[:, 1] > -20) & (X[:, 1] < 0)
        ref = lum[cheek].mean()
        a, i = geo["aflw"], geo["ibug"]
        for name, idx in [
            ("brows", a[[1, 4]]),
            ("eyes", a[[7, 10]]),
            ("lips", np.r_[a[18], i[[62, 66]]]),
        ]:
            assert lum[idx].max() < ref - 30, name


# --------------------------------------------------------------------------------------------
# determinism, sizes


class TestDeterminism:
    def test_same_seed_same_model(self):
        kw = dict(n_vertices=1200, n_shape=6, n_color=5, n_exp=4)
        a, b = make_synthetic(seed=7, **kw), make_synthetic(seed=7, **kw)
        for part in ("bfm", "expression", "mapping"):
            for key, val in getattr(a, part).items():
                assert np.array_equal(val, getattr(b, part)[key]), key

    def test_other_seed_other_components_same_mesh(self):
        kw = dict(n_vertices=1200, n_shape=6, n_color=5, n_exp=4)
        a, b = make_synthetic(seed=1, **kw), make_synthetic(seed=2, **kw)
        for key in ("shapeMU", "texMU", "tl"):
            assert np.array_equal(a.bfm[key], b.bfm[key])
        for name in ("aflw21", "ibug68"):
            assert np.array_equal(a.landmarks[name], b.landmarks[name])
        assert not np.allclose(a.bfm["shapePC"], b.bfm["shapePC"])
        assert not np.array_equal(a.mapping["map_tddfa_to_basel"], b.mapping["map_tddfa_to_basel"])

    def test_written_files_match_memory(self, mats):
        face = make_synthetic()
        for key, val in face.bfm.items():
            assert np.array_equal(mats["bfm"][key], val), key
        for key, val in face.expression.items():
            assert np.array_equal(mats["expression"][key], val), key

    def test_smallest_size(self):
        """At 500 vertices every default component count still gives orthonormal, exactly
        (anti)symmetric components, a mouth interior and landmarks in order."""
        face = make_synthetic(n_vertices=500)
        for key in ("shapePC", "texPC"):
            pc = face.bfm[key].astype(np.float64)
            np.testing.assert_allclose(pc.T @ pc, np.eye(pc.shape[1]), atol=F32_RTOL)
        assert face.mesh.pocket.any()
        X = face.vertices
        aflw = face.landmarks["aflw21"]
        assert aflw[14] == np.argmax(X[:, 2])
        assert X[aflw[0:6], 1].min() > X[aflw[17:20], 1].max() > X[aflw[20], 1]

    @pytest.mark.slow
    def test_basel_size_files(self, tmp_path):
        paths = write_synthetic(tmp_path, n_vertices=BASEL_VERTICES)
        d = scipy.io.loadmat(paths["bfm"], variable_names=["shapeMU", "tl", "shapeEV"])
        assert d["shapeMU"].shape == (3 * BASEL_VERTICES, 1)
        assert d["tl"].shape == (BASEL_TRIANGLES, 3)
        assert d["shapeEV"].shape == (DEFAULT_N_SHAPE, 1)
        m = scipy.io.loadmat(paths["mapping"])["map_tddfa_to_basel"]
        assert m.dtype == np.uint16 and m.max() < BASEL_VERTICES


# --------------------------------------------------------------------------------------------
# command line


class TestCLI:
    def test_synth(self, tmp_path, capsys):
        with pytest.raises(SystemExit) as exc:
            main(
                [
                    "synth",
                    str(tmp_path / "out"),
                    "--seed",
                    "3",
                    "--vertices",
                    "800",
                    "--n-shape",
                    "5",
                    "--n-color",
                    "4",
                    "--n-exp",
                    "3",
                ]
            )
        assert exc.value.code in (0, None)
        out = capsys.readouterr().out
        for name in FILES.values():
            assert (tmp_path / "out" / name).is_file()
            assert name in out
        d = scipy.io.loadmat(tmp_path / "out" / FILES["bfm"])
        assert d["shapeMU"].shape == (2400, 1) and d["shapePC"].shape == (2400, 5)

    @pytest.mark.parametrize(
        "args,message",
        [
            (["--vertices", "100"], "--vertices must be between 500"),
            (["--vertices", "70000"], "--vertices must be between 500"),
            (["--seed", "-1"], "--seed must be a non-negative integer"),
            (["--n-shape", "0"], "--n-shape must be between 1 and 199"),
            (["--n-color", "200"], "--n-color must be between 1 and 199"),
            (["--n-exp", "0"], "--n-exp must be between 1 and 99"),
        ],
    )
    def test_bad_arguments(self, tmp_path, capsys, args, message):
        out = tmp_path / "out"
        with pytest.raises(SystemExit) as exc:
            main(["synth", str(out), *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err
        assert not out.exists()
        assert list(tmp_path.iterdir()) == []

    def test_outdir_is_a_file(self, tmp_path, capsys):
        target = tmp_path / "file"
        target.write_text("x")
        with pytest.raises(SystemExit) as exc:
            main(["synth", str(target), "--vertices", "600"])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is not a folder" in err
        assert target.read_text() == "x"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]

    def test_library_raises_prep_error(self, tmp_path):
        with pytest.raises(PrepError, match="^n_vertices must be between 500"):
            write_synthetic(tmp_path / "x", n_vertices=499)
        assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------
# round trip through the loaders


class TestLoaders:
    def test_round_trip(self, files, mats, geo):
        from bfm_prep.io.bfm2009 import load_bfm2009
        from bfm_prep.io.landmarks import load_landmarks
        from bfm_prep.io.tddfa import load_mapping, load_tddfa_expression

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the synthetic files raise no loader warning
            model = load_bfm2009(files["bfm"])
            exp = load_tddfa_expression(files["expression"])
            mapping = load_mapping(
                files["mapping"], n_target=model.n_vertices, n_source=exp.mean.shape[0]
            )
            aflw = load_landmarks(files["aflw21"], n_vertices=model.n_vertices)
            ibug = load_landmarks(files["ibug68"], n_vertices=model.n_vertices)
        bfm = mats["bfm"]
        np.testing.assert_allclose(model.shape_mean, geo["X"], rtol=F32_RTOL)
        np.testing.assert_allclose(model.shape_std, bfm["shapeEV"].ravel() / 1000.0, rtol=F32_RTOL)
        unit = model.shape_basis / model.shape_std
        np.testing.assert_allclose(
            unit.reshape(-1, unit.shape[2]), bfm["shapePC"], rtol=F32_RTOL, atol=F32_ATOL
        )
        np.testing.assert_allclose(
            model.color_mean.reshape(-1), bfm["texMU"].ravel() / 255.0, rtol=F32_RTOL
        )
        # the loader winds the faces counter-clockwise seen from the front
        assert model.provenance["parameters"]["faces_reversed"]
        np.testing.assert_array_equal(model.faces, geo["F"][:, [0, 2, 1]])
        np.testing.assert_array_equal(mapping, geo["tddfa"])
        w = mats["expression"]["w_exp"].astype(np.float64) / 1000.0
        np.testing.assert_allclose(exp.components.reshape(w.shape), w, rtol=F32_RTOL, atol=F32_ATOL)
        np.testing.assert_array_equal(aflw, geo["aflw"])
        np.testing.assert_array_equal(ibug, geo["ibug"])
