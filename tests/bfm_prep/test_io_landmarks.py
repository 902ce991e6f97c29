"""Landmark definitions: the real .anl and eos files, plain index lists, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from bfm_prep.errors import PrepError
from bfm_prep.io.landmarks import (
    default_landmark_name,
    landmark_base,
    load_landmark_mapping,
    load_landmarks,
)
from hypothesis import given, settings
from hypothesis import strategies as st

BASEL_N = 53490


@pytest.mark.reference
def test_real_anl_files(ref):
    l21 = load_landmarks(ref("3dmmasstn/landmarks/Landmarks21_BFM.anl"), n_vertices=BASEL_N)
    l68 = load_landmarks(ref("3dmmasstn/landmarks/Landmarks68_BFM.anl"), n_vertices=BASEL_N)
    assert l21.shape == (21,) and l68.shape == (68,) and l21.dtype == np.int64
    assert l21[0] == 38792 - 1  # first index in the file (1-based) -> 0-based
    assert l68[30] == 8320 - 1  # iBUG 31, the nose tip
    assert default_landmark_name("Landmarks21_BFM.anl", 21) == "aflw21"
    assert default_landmark_name("Landmarks68_BFM.anl", 68) == "ibug68"
    g112 = load_landmarks(ref("3dmmasstn/landmarks/Landmarks68_112.anl"), n_vertices=112 * 112)
    assert g112.max() < 112 * 112
    with pytest.raises(
        PrepError,
        match=r"Landmarks68_BFM\.anl: line \d+: vertex index \d+ is out of "
        r"range \(valid 1-based indices: 1\.\.12544\)",
    ):
        load_landmarks(ref("3dmmasstn/landmarks/Landmarks68_BFM.anl"), n_vertices=112 * 112)


@pytest.mark.reference
def test_real_eos_mappings_are_zero_based(ref):
    bfm = load_landmark_mapping(ref("sfm/ibug_to_bfm2009.txt"), n_vertices=BASEL_N)
    anl = load_landmarks(ref("3dmmasstn/landmarks/Landmarks68_BFM.anl"))
    assert bfm[31] == 8319 == anl[30]  # the nose tip: eos 0-based == 3DMM-STN 1-based 8320
    sfm_file = ref("sfm/ibug_to_sfm.txt")
    mapping = load_landmark_mapping(sfm_file, n_vertices=3448)
    assert len(mapping) == 50 and mapping[9] == 33 and mapping[31] == 114
    assert landmark_base(sfm_file) == 0
    # geometry decides the base: read 0-based, mirror pairs land on mirror-image vertices
    z = np.load(ref("sfm/sfm_shape_3448.npz"))
    v = z["mean"].reshape(-1, 3)
    assert abs(v[mapping[31], 0]) < 1.0 and v[mapping[31], 2] > v[:, 2].max() - 0.1
    for right, left in [(18, 27), (37, 46), (49, 55), (32, 36)]:
        a, b = v[mapping[right]], v[mapping[left]]
        assert abs(a[0] + b[0]) < 1.0 and abs(a[1] - b[1]) < 1.0 and abs(a[2] - b[2]) < 1.0
    midline = [9, 28, 29, 30, 31, 34, 52, 58, 63, 67]  # iBUG points on the symmetry plane
    x0 = np.abs([v[mapping[i], 0] for i in midline])
    x1 = np.abs([v[mapping[i] - 1, 0] for i in midline])  # what a 1-based reading would use
    assert (x0 < 1.0).all()
    assert np.count_nonzero(x1 > 5.0) >= len(midline) // 2
    lm = load_landmarks(sfm_file, n_vertices=3448)
    np.testing.assert_array_equal(lm, list(mapping.values()))


def test_plain_lists_and_bases(tmp_path):
    anl = tmp_path / "pts.anl"
    anl.write_text("%3 points\n%\n5\n1\n  7\n")
    np.testing.assert_array_equal(load_landmarks(anl, n_vertices=7), [4, 0, 6])
    txt = tmp_path / "pts.txt"
    txt.write_text("# indices of my mesh\n5\n0\n7\n")
    np.testing.assert_array_equal(load_landmarks(txt, n_vertices=8), [5, 0, 7])
    one = tmp_path / "one.txt"
    one.write_text("# 1-based vertex indices\n5 1 7\n")
    np.testing.assert_array_equal(load_landmarks(one, n_vertices=7), [4, 0, 6])
    assert landmark_base(one) == 1 and landmark_base(txt) == 0 and landmark_base(anl) == 1
    with pytest.raises(
        PrepError,
        match=r"pts\.txt: line 3: vertex index 0 is out of range \(valid "
        r"1-based indices: >= 1\)",
    ):
        load_landmarks(txt, base=1)
    with pytest.raises(PrepError, match=r"pts\.txt: base=2 is not 0 or 1"):
        load_landmarks(txt, base=2)


def test_eos_style_written(tmp_path):
    p = tmp_path / "ibug_to_mine.txt"
    p.write_text(
        "# comment\n[landmark_mappings] # ibug -> vertex\n 9 = 33  # chin\n31 = 0\n"
        "[contour_landmarks]\nright = [ 1,\n 2 ]\n"
    )
    assert load_landmark_mapping(p, n_vertices=34) == {9: 33, 31: 0}
    np.testing.assert_array_equal(load_landmarks(p), [33, 0])
    with pytest.raises(
        PrepError,
        match=r"ibug_to_mine\.txt: line 3: vertex index 33 is out of range "
        r"\(valid 0-based indices: 0\.\.32\)",
    ):
        load_landmarks(p, n_vertices=33)


@pytest.mark.parametrize(
    "text, message",
    [
        ("12\nabc\n", r"line 2: 'abc' is not a vertex index"),
        ("12\n3.5\n", r"line 2: '3\.5' is not a whole number"),
        ("% only comments\n", r"holds no vertex indices"),
        ("[landmark_mappings]\n9 = 33\n9 = 34\n", r"line 3: landmark 9 is mapped twice"),
        (
            "[landmark_mappings]\n9 = 33\nnine = 34\n",
            r"line 3 is not '<landmark> = <vertex index>'",
        ),
    ],
)
def test_bad_lists(tmp_path, text, message):
    p = tmp_path / "bad.anl"
    p.write_text(text)
    with pytest.raises(PrepError, match=r"bad\.anl: " + message):
        load_landmarks(p)


def test_binary_and_missing(tmp_path):
    p = tmp_path / "bin.txt"
    p.write_bytes(b"\xff\xfe\x00\x01" * 10)
    with pytest.raises(PrepError, match=r"bin\.txt: is not a text file"):
        load_landmarks(p)
    with pytest.raises(PrepError, match=r"gone\.anl: no such file"):
        load_landmarks(tmp_path / "gone.anl")


@settings(max_examples=30, deadline=None)
@given(idx=st.lists(st.integers(1, 200), min_size=1, max_size=30), n=st.integers(1, 200))
def test_anl_range_property(tmp_path_factory, idx, n):
    p = tmp_path_factory.mktemp("anl") / "p.anl"
    p.write_text("%header\n" + "\n".join(map(str, idx)) + "\n")
    if max(idx) <= n:
        np.testing.assert_array_equal(load_landmarks(p, n_vertices=n), np.array(idx) - 1)
    else:
        first_bad = next(i for i in idx if i > n)
        with pytest.raises(
            PrepError,
            match=rf"p\.anl: line \d+: vertex index {first_bad} is out of "
            rf"range \(valid 1-based indices: 1\.\.{n}\)",
        ):
            load_landmarks(p, n_vertices=n)
