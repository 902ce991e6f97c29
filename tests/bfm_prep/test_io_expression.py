"""Expression sources: 3DDFA Model_Expression.mat, CoarseData Exp_Pca.bin + std_exp.txt,
recognition by content, and the 3DDFA-to-Basel mapping (real file and bad ones)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from bfm_prep.errors import PrepError
from bfm_prep.io.coarsedata import load_coarsedata_expression
from bfm_prep.io.expression import detect_expression_format, load_expression
from bfm_prep.io.tddfa import load_mapping, load_tddfa_expression
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.bfm_prep.test_io_formats import truncated_copy, write_coarsedata, write_mat5, write_mat73

V, D = 6, 3


def tddfa_vars(sigma=True) -> dict:
    w = np.zeros((3 * V, D), dtype=np.float32)
    w[4, 0] = 2500.0  # vertex 1, y: 2.5 mm per unit coefficient
    w[15, 2] = -800.0  # vertex 5, x
    w[0:3, 1] = [100.0, 200.0, 300.0]
    mu = np.zeros((3 * V, 1), dtype=np.float32)
    mu[0] = 1000.0
    d = dict(w_exp=w, mu_exp=mu)
    if sigma:
        d["sigma_exp"] = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    return d


# ---------------------------------------------------------------------------------------------
# 3DDFA


@pytest.mark.parametrize("writer", [write_mat5, write_mat73])
def test_tddfa_as_stored_in_mm(tmp_path, writer):
    p = writer(tmp_path / "Model_Expression.mat", tddfa_vars())
    b = load_tddfa_expression(p)
    assert b.source == "3ddfa" and b.components.shape == (V, 3, D)
    np.testing.assert_allclose(b.components[1, :, 0], [0.0, 2.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(b.components[5, :, 2], [-0.8, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(b.components[0, :, 1], [0.1, 0.2, 0.3], rtol=1e-6)
    assert np.count_nonzero(b.components) == 5
    np.testing.assert_allclose(b.mean[0], [1.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(b.std, np.ones(D))
    np.testing.assert_array_equal(b.file_std, [1.0, 2.0, 3.0])  # kept, not applied
    assert "as stored" in b.scaling
    assert b.provenance["inputs"]["expression"]["sha256"]


def test_tddfa_n_exp_and_no_sigma(tmp_path):
    p = write_mat5(tmp_path / "e.mat", tddfa_vars(sigma=False))
    b = load_tddfa_expression(p, n_exp=2)
    assert b.components.shape == (V, 3, 2) and b.file_std is None
    with pytest.raises(PrepError, match=r"^n_exp 4 asks for more expression components than the 3"):
        load_tddfa_expression(p, n_exp=4)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d.pop("w_exp"),
            r"missing variable 'w_exp' \(found: mu_exp, sigma_exp\); pass the "
            r"3DDFA expression model Model_Expression\.mat\.",
        ),
        (lambda d: d.pop("mu_exp"), r"missing variable 'mu_exp'"),
        (
            lambda d: d.update(w_exp=d["w_exp"][:-1]),
            r"w_exp has the wrong shape \(17, 3\): 17 rows is "
            r"not a positive multiple of 3",
        ),
        (
            lambda d: d.update(mu_exp=d["mu_exp"][:-3]),
            r"mu_exp has the wrong shape \(15, 1\): 15 "
            r"entries, expected 18",
        ),
        (lambda d: d.update(w_exp="abc"), r"variable 'w_exp' has the wrong data type text"),
        (
            lambda d: d.update(w_exp=np.ones((3 * V, D, 2))),
            r"w_exp has the wrong shape \(18, 3, 2\)",
        ),
    ],
)
def test_tddfa_bad(tmp_path, change, message):
    d = tddfa_vars()
    change(d)
    p = write_mat5(tmp_path / "Model_Expression.mat", d)
    with pytest.raises(PrepError, match=r"Model_Expression\.mat: " + message):
        load_tddfa_expression(p)


# ---------------------------------------------------------------------------------------------
# mapping


@pytest.mark.reference
def test_real_mapping(ref):
    p = ref("3dmmasstn/map_tddfa_to_basel.mat")
    m = load_mapping(p, n_target=53490, n_source=53215)
    assert m.shape == (53215,) and m.dtype == np.int64
    assert m.min() == 0 and m.max() < 53490
    assert np.unique(m).size == m.size  # 3DDFA vertices are distinct Basel vertices
    with pytest.raises(
        PrepError,
        match=r"map_tddfa_to_basel\.mat: map_tddfa_to_basel has an index out "
        r"of range: values run from 0 to 53489, valid 0-based "
        r"indices are 0\.\.52999",
    ):
        load_mapping(p, n_target=53000)
    with pytest.raises(
        PrepError, match=r"has 53215 entries but the expression model has 100 vertices"
    ):
        load_mapping(p, n_source=100)


@pytest.mark.parametrize("writer", [write_mat5, write_mat73])
def test_mapping_written_like_the_real_one(tmp_path, writer):
    m = np.array([[4, 0, 7, 2]], dtype=np.uint16)  # 1 x V uint16, 0-based
    p = writer(tmp_path / "map_tddfa_to_basel.mat", {"map_tddfa_to_basel": m})
    np.testing.assert_array_equal(load_mapping(p, n_target=8), [4, 0, 7, 2])


@pytest.mark.parametrize(
    "value, message",
    [
        (
            np.array([[0.0, 1.5, 2.0]]),
            r"map_tddfa_to_basel has the wrong data type: it holds fractional",
        ),
        (np.ones((2, 3), dtype=np.uint16), r"map_tddfa_to_basel has the wrong shape \(2, 3\)"),
        (
            np.array([[0, 9, 2]], dtype=np.uint16),
            r"map_tddfa_to_basel has an index out of range: values "
            r"run from 0 to 9, valid 0-based indices are 0\.\.7",
        ),
        ("text", r"variable 'map_tddfa_to_basel' has the wrong data type text"),
    ],
)
def test_mapping_bad(tmp_path, value, message):
    p = write_mat5(tmp_path / "map.mat", {"map_tddfa_to_basel": value})
    with pytest.raises(PrepError, match=r"map\.mat: " + message):
        load_mapping(p, n_target=8)


def test_mapping_missing_and_duplicates(tmp_path):
    p = write_mat5(tmp_path / "map.mat", {"other": np.ones(3)})
    with pytest.raises(PrepError, match=r"map\.mat: missing variable 'map_tddfa_to_basel'"):
        load_mapping(p)
    p2 = write_mat5(
        tmp_path / "dup.mat", {"map_tddfa_to_basel": np.array([[1, 1, 2, 2, 3]], np.uint16)}
    )
    with pytest.warns(UserWarning, match=r"dup\.mat: 2 Basel vertices are named more than once"):
        load_mapping(p2)


# ---------------------------------------------------------------------------------------------
# CoarseData


def coarse_arrays(v=5, d=3):
    mean = np.zeros(3 * v, dtype=np.float32)
    mean[2] = 4000.0  # vertex 0, z: 4 mm
    comps = np.zeros((d, 3 * v), dtype=np.float32)
    comps[1, 7] = 0.5  # component 1, vertex 2, y
    comps[0, 0] = 1.0  # component 0, vertex 0, x
    comps[d - 1, 3 * v - 1] = -0.25  # last component, last vertex, z
    return mean, comps


def test_coarsedata_layout_and_scaling(tmp_path):
    mean, comps = coarse_arrays()
    b_path = write_coarsedata(tmp_path / "Exp_Pca.bin", mean, comps)
    s_path = tmp_path / "std_exp.txt"
    s_path.write_text("100 200\n 300.5 ")
    b = load_coarsedata_expression(b_path, s_path)
    assert b.source == "coarsedata" and b.components.shape == (5, 3, 3)
    # component * std / 1000, worked out by hand
    np.testing.assert_allclose(b.components[2, :, 1], [0.0, 0.1, 0.0], rtol=1e-6)
    np.testing.assert_allclose(b.components[0, :, 0], [0.1, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(b.components[4, :, 2], [0.0, 0.0, -0.25 * 0.3005], rtol=1e-6)
    assert np.count_nonzero(b.components) == 3
    np.testing.assert_allclose(b.mean[0], [0.0, 0.0, 4.0], rtol=1e-6)
    np.testing.assert_allclose(b.std, [0.1, 0.2, 0.3005], rtol=1e-12)
    assert set(b.provenance["inputs"]) == {"expression", "expression_std"}
    assert load_coarsedata_expression(b_path, s_path, n_exp=1).components.shape == (5, 3, 1)


@pytest.mark.reference
def test_coarsedata_with_real_std(tmp_path, ref):
    std_path = ref("coarsedata/std_exp.txt")
    real_std = np.array(open(std_path).read().split(), dtype=np.float64)
    assert real_std.size == 79
    rng = np.random.default_rng(0)
    v = 7
    mean = rng.normal(0, 1000, 3 * v).astype(np.float32)
    comps = rng.normal(0, 1, (79, 3 * v)).astype(np.float32)
    p = write_coarsedata(tmp_path / "Exp_Pca.bin", mean, comps)
    b = load_expression(p, std_path=std_path)
    assert b.source == "coarsedata" and b.components.shape == (v, 3, 79)
    expected = comps.astype(np.float64).reshape(79, v, 3).transpose(1, 2, 0) * real_std / 1000
    np.testing.assert_allclose(b.components, expected, rtol=1e-12)
    np.testing.assert_allclose(b.std, real_std / 1000, rtol=1e-12)
    np.testing.assert_allclose(b.std[0], 453.980, rtol=1e-12)  # first line of std_exp.txt, in mm


def test_coarsedata_bad_std(tmp_path):
    mean, comps = coarse_arrays()
    p = write_coarsedata(tmp_path / "Exp_Pca.bin", mean, comps)
    bad = {
        "short.txt": (
            "1 2",
            r"short\.txt: holds 2 standard deviations but the basis has 3 "
            r"components",
        ),
        "word.txt": ("1 two 3", r"word\.txt: value 2 is 'two', not a number"),
        "neg.txt": ("1 -2 3", r"neg\.txt: holds a value that is not a positive finite number"),
        "none.txt": ("", r"none\.txt: holds no numbers"),
    }
    for name, (text, message) in bad.items():
        s = tmp_path / name
        s.write_text(text)
        with pytest.raises(PrepError, match=message):
            load_coarsedata_expression(p, s)


@pytest.mark.parametrize("count", [0, -5])
def test_coarsedata_bad_count(tmp_path, count):
    p = tmp_path / "Exp_Pca.bin"
    p.write_bytes(np.int32(count).tobytes() + np.zeros(36, np.float32).tobytes())
    s = tmp_path / "std.txt"
    s.write_text("1")
    with pytest.raises(
        PrepError,
        match=rf"Exp_Pca\.bin: starts with the component count {count}, "
        r"which is not positive",
    ):
        load_coarsedata_expression(p, s)


def test_coarsedata_truncated_message(tmp_path):
    mean, comps = coarse_arrays()
    p = write_coarsedata(tmp_path / "Exp_Pca.bin", mean, comps)
    t = truncated_copy(p, tmp_path / "cut.bin", os.path.getsize(p) - 6)
    s = tmp_path / "std.txt"
    s.write_text("1 2 3")
    with pytest.raises(
        PrepError,
        match=r"cut\.bin: is truncated or not in the Exp_Pca\.bin layout: "
        r"after the count D = 3 there are 234 bytes, not \(D \+ 1\) x "
        r"3 x V float32 values for any whole V \(53215 vertices would "
        r"take 2554324 bytes in all\)",
    ):
        load_coarsedata_expression(t, s)


@pytest.fixture(scope="module")
def coarse_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("coarse")
    mean, comps = coarse_arrays(v=11, d=4)
    s = root / "std_exp.txt"
    s.write_text("1 2 3 4")
    return write_coarsedata(root / "Exp_Pca.bin", mean, comps), s


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=st.integers(0, 4 + 4 * 3 * 11 * 5 - 1))
def test_coarsedata_truncated_anywhere(tmp_path, coarse_files, size):
    src, std = coarse_files
    # a cut that leaves a whole number of vertices is a smaller valid file: not detectable here
    assume(size < 4 or (size - 4) % (4 * 3 * 5) != 0 or size == 4)
    t = truncated_copy(src, tmp_path / f"cut-{size}.bin", size)
    with pytest.raises(PrepError) as e:
        load_expression(t, std_path=std)
    msg = str(e.value)
    assert msg.startswith(str(t)) and "\n" not in msg
    assert "truncated" in msg or "neither" in msg, msg


# ---------------------------------------------------------------------------------------------
# recognition by content


def test_recognised_by_content_not_extension(tmp_path):
    mean, comps = coarse_arrays()
    disguised_bin = write_coarsedata(tmp_path / "Model_Expression.mat", mean, comps)
    disguised_mat = write_mat73(tmp_path / "Exp_Pca.bin", tddfa_vars())
    assert detect_expression_format(disguised_bin) == "coarsedata"
    assert detect_expression_format(disguised_mat) == "3ddfa"
    s = tmp_path / "std.txt"
    s.write_text("1 1 1")
    assert load_expression(disguised_bin, std_path=s).source == "coarsedata"
    with pytest.warns(UserWarning, match=r"only used with a CoarseData Exp_Pca\.bin"):
        assert load_expression(disguised_mat, std_path=s).source == "3ddfa"


def test_coarsedata_without_std_asks_for_it(tmp_path):
    mean, comps = coarse_arrays()
    p = write_coarsedata(tmp_path / "Exp_Pca.bin", mean, comps)
    with pytest.raises(
        PrepError,
        match=r"Exp_Pca\.bin: is a CoarseData Exp_Pca\.bin, which needs its "
        r"standard deviations; pass std_exp\.txt with "
        r"std_path\.",
    ):
        load_expression(p)


def test_neither_format(tmp_path):
    p = tmp_path / "expr.mat"
    p.write_text("hello, this is text")
    with pytest.raises(
        PrepError,
        match=r"expr\.mat: is neither a 3DDFA Model_Expression\.mat .* nor "
        r"a CoarseData Exp_Pca\.bin",
    ):
        load_expression(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = truncated_copy(write_mat5(tmp_path / "e.mat", tddfa_vars()), tmp_path / "t.mat", 50)
        with pytest.raises(PrepError, match=r"t\.mat: is truncated"):
            load_expression(t)


@pytest.mark.parametrize("loader", [load_tddfa_expression, load_mapping])
def test_tddfa_files_not_mat_or_truncated(tmp_path, loader):
    p = tmp_path / "x.mat"
    p.write_bytes(b"\x00\x01garbage" * 30)
    with pytest.raises(PrepError, match=r"x\.mat: is not a MATLAB MAT-file"):
        loader(p)
    src = write_mat5(
        tmp_path / "whole.mat",
        {**tddfa_vars(), "map_tddfa_to_basel": np.arange(50, dtype=np.uint16)[None]},
        compress=False,
    )
    t = truncated_copy(src, tmp_path / "cut.mat", os.path.getsize(src) - 20)
    with pytest.raises(PrepError, match=r"cut\.mat: is truncated: a variable stored at byte"):
        loader(t)
