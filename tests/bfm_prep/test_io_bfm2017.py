"""BFM 2017/2019 .h5 (statismo layout): small files in the exact layout, scaling worked out
by hand, bad inputs."""

from __future__ import annotations

import os
import warnings

import h5py
import numpy as np
import pytest
from bfm_prep.errors import PrepError
from bfm_prep.io.bfm2017 import load_bfm2017
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bfm_prep.test_io_bfm2009 import N, grid_faces_clockwise
from tests.bfm_prep.test_io_formats import truncated_copy, write_bfm2017


def small_2017(expression=True, color=True, **over) -> dict:
    xy = np.array([[c * 10.0, r * 10.0] for r in range(3) for c in range(4)])
    mean = np.column_stack([xy, 5.0 - 0.01 * ((xy - xy.mean(0)) ** 2).sum(1)])
    basis = np.zeros((3 * N, 3))
    basis[6, 0], basis[7, 0] = 0.6, 0.8
    basis[0, 1] = 1.0
    basis[[3, 4, 5, 9], 2] = 0.5
    e_basis = np.zeros((3 * N, 2))
    e_basis[13, 0] = 1.0  # vertex 4, y
    e_basis[[15, 16], 1] = np.sqrt(0.5)  # vertex 5, x and y
    e_mean = np.zeros(3 * N)
    e_mean[17] = 0.25  # vertex 5, z
    c_basis = np.zeros((3 * N, 1))
    c_basis[0, 0] = 1.0
    kw = dict(
        mean=mean.reshape(-1),
        basis=basis,
        variance=np.array([400.0, 100.0, 16.0]),
        cells=grid_faces_clockwise()[:, [0, 2, 1]].T,  # 3 x M, 0-based, counter-clockwise
        points=mean.T,
        exp=(e_mean, e_basis, np.array([4.0, 1.0])) if expression else None,
        color=(np.full(3 * N, 0.5), c_basis, np.array([0.01])) if color else None,
    )
    kw.update(over)
    return kw


def test_scaling_by_hand(tmp_path):
    p = write_bfm2017(tmp_path / "model2017-1_bfm_nomouth.h5", **small_2017())
    m = load_bfm2017(p)
    assert m.shape_kind == ["identity"] * 3 + ["expression"] * 2
    np.testing.assert_allclose(m.shape_std, [20.0, 10.0, 4.0, 2.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(m.shape_basis[2, :, 0], [12.0, 16.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(m.shape_basis[1, :, 2], [2.0, 2.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(m.shape_basis[4, :, 3], [0.0, 2.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(m.shape_basis[5, :, 4], [np.sqrt(0.5), np.sqrt(0.5), 0.0], rtol=1e-6)
    # expression mean added to the shape mean; units stay mm
    kw = small_2017()
    expected = kw["mean"].reshape(N, 3).copy()
    expected[5, 2] += 0.25
    np.testing.assert_allclose(m.shape_mean, expected, rtol=1e-6)
    np.testing.assert_allclose(m.color_mean, 0.5)
    np.testing.assert_allclose(m.color_basis[0, 0, 0], 0.1, rtol=1e-6)
    np.testing.assert_allclose(m.color_std, [0.1], rtol=1e-6)
    np.testing.assert_array_equal(m.faces, kw["cells"].T)
    assert m.provenance["parameters"]["faces_reversed"] is False


def test_clockwise_cells_are_reversed(tmp_path):
    p = write_bfm2017(tmp_path / "m.h5", **small_2017(cells=grid_faces_clockwise().T))
    m = load_bfm2017(p)
    assert m.provenance["parameters"]["faces_reversed"] is True
    np.testing.assert_array_equal(m.faces, grid_faces_clockwise()[:, [0, 2, 1]])


def test_component_selection(tmp_path):
    p = write_bfm2017(tmp_path / "m.h5", **small_2017())
    m = load_bfm2017(p, n_shape=1, n_exp=1, n_color=0)
    assert m.shape_kind == ["identity", "expression"] and not m.has_color
    m0 = load_bfm2017(p, n_exp=0)
    assert m0.n_expression == 0
    np.testing.assert_allclose(m0.shape_mean, small_2017()["mean"].reshape(N, 3), rtol=1e-6)
    with pytest.raises(
        PrepError,
        match=r"^n_exp 3 asks for more expression components than the 2 "
        r"in .*m\.h5; pass at most 2",
    ):
        load_bfm2017(p, n_exp=3)


def test_without_expression_or_colour(tmp_path):
    p = write_bfm2017(tmp_path / "m.h5", **small_2017(expression=False, color=False))
    m = load_bfm2017(p)
    assert m.n_expression == 0 and not m.has_color
    with pytest.raises(
        PrepError,
        match=r"m\.h5: has no expression model \(expression/model\); "
        r"drop n_exp\.",
    ):
        load_bfm2017(p, n_exp=2)
    with pytest.raises(PrepError, match=r"m\.h5: has no colour model"):
        load_bfm2017(p, n_color=1)


def test_bfm2009_h5_export_cells_location(tmp_path):
    p = write_bfm2017(tmp_path / "m.h5", **small_2017())
    with h5py.File(p, "r+") as f:
        f.move("shape/representer/cells", "representer_cells_tmp")
        f.create_group("representer")
        f.move("representer_cells_tmp", "representer/cells")
    assert load_bfm2017(p).faces.shape == (2 * 2 * 3, 3)


@pytest.mark.parametrize(
    "name",
    [
        "shape/model/mean",
        "shape/model/pcaBasis",
        "shape/model/pcaVariance",
        "shape/representer/cells",
        "expression/model/pcaVariance",
        "color/model/mean",
    ],
)
def test_missing_dataset(tmp_path, name):
    p = write_bfm2017(tmp_path / "m.h5", **small_2017())
    with h5py.File(p, "r+") as f:
        del f[name]
    with pytest.raises(
        PrepError,
        match=rf"m\.h5: missing dataset '{name}'; pass a Basel Face "
        r"Model 2017/2019 \.h5 file\.",
    ):
        load_bfm2017(p)


@pytest.mark.parametrize(
    "over, message",
    [
        (
            dict(variance=np.array([400.0, 100.0])),
            r"shape/model/pcaVariance has the wrong shape \(2,\): 2 entries, expected 3",
        ),
        (
            dict(cells=grid_faces_clockwise()),
            r"shape/representer/cells has the wrong shape \(12, 3\): "
            r"expected 3 rows",
        ),
        (
            dict(points=np.zeros((3, N + 1))),
            r"shape/representer/points has the wrong shape \(3, 13\): "
            r"expected 12 columns",
        ),
        (
            dict(basis=np.zeros((3 * N - 3, 3))),
            r"shape/model/pcaBasis has the wrong shape \(33, 3\): "
            r"expected 36 rows",
        ),
    ],
)
def test_wrong_shape(tmp_path, over, message):
    p = write_bfm2017(tmp_path / "m.h5", **small_2017(**over))
    with pytest.raises(PrepError, match=r"m\.h5: " + message):
        load_bfm2017(p)


def test_wrong_dtype(tmp_path):
    p = write_bfm2017(tmp_path / "m.h5", **small_2017())
    with h5py.File(p, "r+") as f:
        del f["shape/model/pcaVariance"]
        f["shape/model/pcaVariance"] = np.array([b"400", b"100", b"16"])
    with pytest.raises(PrepError, match=r"m\.h5: shape/model/pcaVariance has the wrong data type"):
        load_bfm2017(p)


def test_index_out_of_range_and_negative_variance(tmp_path):
    cells = grid_faces_clockwise().T.copy()
    cells[1, 3] = N
    p = write_bfm2017(tmp_path / "m.h5", **small_2017(cells=cells))
    with pytest.raises(
        PrepError,
        match=r"m\.h5: shape/representer/cells has an index out of range: "
        r"values run from 0 to 12, valid 0-based indices are 0\.\.11",
    ):
        load_bfm2017(p)
    p2 = write_bfm2017(tmp_path / "v.h5", **small_2017(variance=np.array([400.0, -1.0, 16.0])))
    with pytest.raises(PrepError, match=r"v\.h5: shape/model/pcaVariance has negative values"):
        load_bfm2017(p2)


def test_not_hdf5(tmp_path):
    p = tmp_path / "model.h5"
    p.write_text("not an hdf5 file at all")
    with pytest.raises(
        PrepError, match=r"model\.h5: is not an HDF5 file; pass the \.h5 file itself\."
    ):
        load_bfm2017(p)


@pytest.fixture(scope="module")
def whole_2017(tmp_path_factory):
    return write_bfm2017(tmp_path_factory.mktemp("bfm2017") / "whole.h5", **small_2017())


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(frac=st.floats(0.0, 0.999))
def test_truncated_anywhere(tmp_path, whole_2017, frac):
    size = int(frac * os.path.getsize(whole_2017))
    t = truncated_copy(whole_2017, tmp_path / f"cut-{size}.h5", size)
    with pytest.raises(PrepError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_bfm2017(t)
    msg = str(e.value)
    assert msg.startswith(str(t)) and "\n" not in msg
    assert any(w in msg for w in ("truncated", "empty", "not an HDF5 file")), msg
