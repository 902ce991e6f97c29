"""BFM 2009 01_MorphableModel.mat: small files in the exact format (v5 and v7.3), unit
conversions against numbers worked out by hand, and every kind of bad input."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import scipy.io
from bfm_prep.errors import PrepError
from bfm_prep.io.bfm2009 import load_bfm2009
from bfm_prep.provenance import sha256_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bfm_prep.test_io_formats import truncated_copy, write_mat5, write_mat73
from tests.tolerances import TOL

RTOL, ATOL = TOL[np.float64]
ROWS, COLS = 3, 4  # a 4 x 3 grid of vertices
N = ROWS * COLS


def grid_faces_clockwise() -> np.ndarray:
    """0-based triangles of the grid, wound clockwise seen from +z (like the real BFM tl)."""
    tris = []
    for r in range(ROWS - 1):
        for c in range(COLS - 1):
            a, b = r * COLS + c, r * COLS + c + 1
            d, e = (r + 1) * COLS + c + 1, (r + 1) * COLS + c
            tris += [[a, d, b], [a, e, d]]
    return np.array(tris)


def small_bfm(n_extra: int = 0) -> dict:
    """The variables of a small 01_MorphableModel.mat, in file units (µm, 0..255, 1-based)."""
    n = N + n_extra
    xy = np.array(
        [[c * 10.0, r * 10.0] for r in range(ROWS) for c in range(COLS)] + [[50.0, 50.0]] * n_extra
    )
    z = 5.0 - 0.1 * ((xy - xy.mean(0)) ** 2).sum(1) / 10
    mean_mm = np.column_stack([xy, z])
    mean_mm[3] = [30.0, 0.0, 1.5]
    shape_mu = (mean_mm * 1000.0).reshape(-1, 1).astype(np.float32)

    pc = np.zeros((3 * n, 3), dtype=np.float32)  # orthonormal columns with disjoint support
    pc[6, 0], pc[7, 0] = 0.6, 0.8  # vertex 2: x, y
    pc[0, 1] = 1.0  # vertex 0: x
    pc[[3, 4, 5, 9], 2] = 0.5  # vertex 1: x y z, vertex 3: x
    shape_ev = np.array([[20000.0], [10000.0], [4000.0]], dtype=np.float32)

    tex_mu = np.full((3 * n, 1), 127.5, dtype=np.float32)
    tex_mu[0] = 255.0
    tpc = np.zeros((3 * n, 2), dtype=np.float32)
    tpc[1, 0] = 1.0
    tpc[[2, 5], 1] = np.sqrt(0.5)
    tex_ev = np.array([[51.0], [25.5]], dtype=np.float32)
    return dict(
        shapeMU=shape_mu,
        shapePC=pc,
        shapeEV=shape_ev,
        texMU=tex_mu,
        texPC=tpc,
        texEV=tex_ev,
        tl=(grid_faces_clockwise() + 1).astype(np.int32),
        segbin=np.zeros((n, 4), dtype=np.uint8),
    )


WRITERS = {
    "v5": lambda p, d: write_mat5(p, d, compress=False),
    "v5-compressed": lambda p, d: write_mat5(p, d, compress=True),
    "v7.3": write_mat73,
}


@pytest.fixture(params=sorted(WRITERS))
def writer(request):
    return WRITERS[request.param]


def test_units_and_scaling_by_hand(tmp_path, writer):
    p = writer(tmp_path / "01_MorphableModel.mat", small_bfm())
    m = load_bfm2009(p)
    assert m.n_vertices == N and m.n_identity == 3 and m.n_expression == 0
    # mean: µm -> mm
    np.testing.assert_allclose(m.shape_mean[3], [30.0, 0.0, 1.5], rtol=RTOL, atol=ATOL)
    # basis: shapePC * shapeEV / 1000, xyz interleaved per vertex
    np.testing.assert_allclose(m.shape_basis[2, :, 0], [12.0, 16.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(m.shape_basis[0, :, 1], [10.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(m.shape_basis[1, :, 2], [2.0, 2.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(m.shape_basis[3, :, 2], [2.0, 0.0, 0.0], rtol=1e-6)
    assert np.count_nonzero(m.shape_basis) == 2 + 1 + 4
    np.testing.assert_allclose(m.shape_std, [20.0, 10.0, 4.0], rtol=1e-6)
    # the unit component is shapePC itself (orthonormal)
    unit = (m.shape_basis / m.shape_std).reshape(3 * N, 3)
    np.testing.assert_allclose(unit.T @ unit, np.eye(3), atol=1e-6)
    # colour: /255, components scaled by texEV/255
    np.testing.assert_allclose(m.color_mean[0], [1.0, 0.5, 0.5], rtol=1e-6)
    np.testing.assert_allclose(m.color_basis[0, 1, 0], 0.2, rtol=1e-6)
    np.testing.assert_allclose(m.color_basis[0, 2, 1], np.sqrt(0.5) * 0.1, rtol=1e-6)
    np.testing.assert_allclose(m.color_basis[1, 2, 1], np.sqrt(0.5) * 0.1, rtol=1e-6)
    np.testing.assert_allclose(m.color_std, [0.2, 0.1], rtol=1e-6)


def test_faces_zero_based_and_front_facing(tmp_path, writer):
    p = writer(tmp_path / "01_MorphableModel.mat", small_bfm())
    m = load_bfm2009(p)
    assert m.faces.dtype == np.int64 and m.faces.min() == 0 and m.faces.max() == N - 1
    cw = grid_faces_clockwise()
    np.testing.assert_array_equal(m.faces, cw[:, [0, 2, 1]])  # reversed to counter-clockwise
    v = m.shape_mean
    e1, e2 = v[m.faces[:, 1]] - v[m.faces[:, 0]], v[m.faces[:, 2]] - v[m.faces[:, 0]]
    assert (np.cross(e1, e2)[:, 2] > 0).all()
    par = m.provenance["parameters"]
    assert par["faces_reversed"] is True and par["source"] == "bfm2009"
    assert m.provenance["inputs"]["bfm"]["sha256"] == sha256_file(p)


def test_v5_and_v73_agree(tmp_path):
    d = small_bfm()
    a = load_bfm2009(write_mat5(tmp_path / "a.mat", d))
    b = load_bfm2009(write_mat73(tmp_path / "b.mat", d))
    for name in ("shape_mean", "shape_basis", "shape_std", "faces", "color_mean", "color_basis"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_component_selection(tmp_path):
    p = write_mat5(tmp_path / "m.mat", small_bfm())
    m = load_bfm2009(p, n_shape=2, n_color=1)
    assert m.shape_basis.shape == (N, 3, 2) and m.color_basis.shape == (N, 3, 1)
    assert load_bfm2009(p, n_shape=0).n_components == 0
    with pytest.raises(
        PrepError,
        match=r"^n_shape 4 asks for more identity components than the "
        r"3 in .*m\.mat; pass at most 3",
    ):
        load_bfm2009(p, n_shape=4)
    with pytest.raises(PrepError, match=r"^n_color 3 asks for more colour components"):
        load_bfm2009(p, n_color=3)
    with pytest.raises(PrepError, match=r"^n_shape -1 is not a valid component count"):
        load_bfm2009(p, n_shape=-1)


def test_without_colour_model(tmp_path):
    d = {k: v for k, v in small_bfm().items() if not k.startswith("tex")}
    m = load_bfm2009(write_mat5(tmp_path / "m.mat", d))
    assert not m.has_color


def test_unused_vertex_warns_with_count(tmp_path):
    p = write_mat5(tmp_path / "m.mat", small_bfm(n_extra=2))
    with pytest.warns(
        UserWarning,
        match=r"m\.mat: 2 of the 14 vertices of the mesh are used by no "
        r"triangle",
    ):
        m = load_bfm2009(p)
    assert m.n_vertices == 14 and m.provenance["parameters"]["unused_vertices"] == 2


def test_non_orthonormal_components_warn(tmp_path):
    d = small_bfm()
    d["shapePC"] = d["shapePC"] * 2
    with pytest.warns(UserWarning, match=r"the columns of shapePC have norms 2\.\.2"):
        load_bfm2009(write_mat5(tmp_path / "m.mat", d))


# ---------------------------------------------------------------------------------------------
# bad input: one sentence naming the file and what is wrong


@pytest.mark.parametrize("key", ["shapeMU", "shapePC", "shapeEV", "tl", "texPC"])
@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_missing_variable(tmp_path, key, fmt):
    d = small_bfm()
    del d[key]
    p = WRITERS[fmt](tmp_path / "bfm.mat", d)
    with pytest.raises(
        PrepError,
        match=rf"bfm\.mat: missing variable '{key}' \(found: .*\); pass "
        r"the Basel Face Model 2009 file 01_MorphableModel\.mat\.",
    ):
        load_bfm2009(p)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d.update(shapePC=d["shapePC"][:-3]),
            r"shapePC has the wrong shape \(33, 3\): expected 36 rows \(the length of shapeMU\)",
        ),
        (
            lambda d: d.update(shapeEV=d["shapeEV"][:2]),
            r"shapeEV has the wrong shape \(2, 1\): 2 entries, expected 3 "
            r"\(one per column of shapePC\)",
        ),
        (
            lambda d: d.update(shapeMU=d["shapeMU"][:-1]),
            r"shapeMU has 35 entries, not a positive "
            r"multiple of 3",
        ),
        (
            lambda d: d.update(shapeMU=np.ones((6, 6), np.float32)),
            r"shapeMU has the wrong shape \(6, 6\)",
        ),
        (
            lambda d: d.update(tl=np.hstack([d["tl"], d["tl"][:, :1]])),
            r"tl has the wrong shape \(12, 4\): expected 3 columns",
        ),
        (
            lambda d: d.update(texMU=d["texMU"][:30]),
            r"texMU has the wrong shape \(30, 1\): 30 entries, "
            r"expected 36",
        ),
    ],
)
def test_wrong_shape(tmp_path, change, message):
    d = small_bfm()
    change(d)
    p = write_mat5(tmp_path / "bfm.mat", d)
    with pytest.raises(PrepError, match=r"bfm\.mat: " + message):
        load_bfm2009(p)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(shapeEV="twenty"), r"variable 'shapeEV' has the wrong data type text"),
        (
            lambda d: d.update(shapePC=d["shapePC"] * (1 + 1j)),
            r"variable 'shapePC' has the wrong data "
            r"type complex",
        ),
        (
            lambda d: d.update(tl=d["tl"] + 0.5),
            r"tl has the wrong data type: it holds fractional values",
        ),
        (lambda d: d.update(shapeMU={"a": 1.0}), r"variable 'shapeMU' has the wrong data type"),
    ],
)
def test_wrong_dtype(tmp_path, change, message):
    d = small_bfm()
    change(d)
    p = write_mat5(tmp_path / "bfm.mat", d)
    with pytest.raises(PrepError, match=r"bfm\.mat: " + message):
        load_bfm2009(p)


def test_wrong_dtype_v73_char(tmp_path):
    d = small_bfm()
    d["shapeEV"] = "twenty"
    p = write_mat73(tmp_path / "bfm.mat", d)
    with pytest.raises(
        PrepError, match=r"bfm\.mat: variable 'shapeEV' has the wrong data type text"
    ):
        load_bfm2009(p)


@pytest.mark.parametrize("bad, shown", [(0, "0 to 12"), (13, "1 to 13")])
def test_triangle_index_out_of_range(tmp_path, bad, shown):
    d = small_bfm()
    d["tl"][4, 1] = bad
    p = write_mat5(tmp_path / "bfm.mat", d)
    with pytest.raises(
        PrepError,
        match=rf"bfm\.mat: tl has an index out of range: values run from "
        rf"{shown}, valid 1-based indices are 1\.\.12",
    ):
        load_bfm2009(p)


def test_non_finite_and_negative(tmp_path):
    d = small_bfm()
    d["shapeMU"][5] = np.nan
    with pytest.raises(PrepError, match=r"bfm\.mat: shapeMU contains 1 NaN or infinite values"):
        load_bfm2009(write_mat5(tmp_path / "bfm.mat", d))
    d = small_bfm()
    d["shapeEV"][1] = -1
    with pytest.raises(PrepError, match=r"b2\.mat: shapeEV has negative values"):
        load_bfm2009(write_mat5(tmp_path / "b2.mat", d))


def test_not_a_mat_file(tmp_path):
    p = tmp_path / "01_MorphableModel.mat"
    p.write_bytes(b"PK\x03\x04" + os.urandom(300))
    with pytest.raises(PrepError, match=r"01_MorphableModel\.mat: is not a MATLAB MAT-file"):
        load_bfm2009(p)


@pytest.fixture(scope="module")
def whole_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bfm2009")
    d = small_bfm()
    return {fmt: WRITERS[fmt](root / f"whole-{fmt}.mat", d) for fmt in WRITERS}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fmt=st.sampled_from(sorted(WRITERS)), frac=st.floats(0.0, 0.999))
def test_truncated_anywhere(tmp_path, whole_files, fmt, frac):
    src = whole_files[fmt]
    size = int(frac * os.path.getsize(src))
    t = truncated_copy(src, tmp_path / f"cut-{fmt}-{size}.mat", size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            load_bfm2009(t)
        except PrepError as err:
            msg = str(err)
        else:
            # Only a cut exactly between two v5 variables leaves a valid file (the earlier
            # variables, whole); that is all a loader can accept, and only if the dropped
            # ones were optional (segbin here).
            assert fmt.startswith("v5"), f"a {fmt} file cut at byte {size} loaded"
            kept = [name for name, _, _ in scipy.io.whosmat(str(t))]
            whole = [name for name, _, _ in scipy.io.whosmat(str(src))]
            assert kept == whole[: len(kept)] and set(whole[len(kept) :]) <= {"segbin"}, kept
            return
    assert msg.startswith(str(t)) and msg.endswith(".") and "\n" not in msg
    assert any(w in msg for w in ("truncated", "is empty", "missing variable", "not a MATLAB")), msg
