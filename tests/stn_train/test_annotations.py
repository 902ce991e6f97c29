"""Annotation readers (.pts, landmark CSV, the original's demodata) and build_manifest,
against files written here in the exact formats; conversions computed independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from stn_train.data.annotations import (
    build_manifest,
    import_demodata,
    read_aflw21,
    read_landmark_csv,
    read_pts,
    write_landmark_csv,
    write_pts,
)
from stn_train.data.manifest import read_manifest
from stn_train.errors import TrainError

from tests.conftest import reference_file

# A 300-W file's layout (values made up), 1-based pixel coordinates.
PTS_300W = """version: 1
n_points:  4
{
446.000 91.000
449.459 119.344
450.957 150.614
1.000 1.000
}
"""
PTS_OURS = np.array([[445.0, 90.0], [448.459, 118.344], [449.957, 149.614], [0.0, 0.0]])


def _image(path, w=40, h=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (10, 20, 30)).save(path)
    return path


def _row(name, pts, vis, subject=None):
    fields = [name]
    for (x, y), v in zip(pts, vis, strict=True):
        fields += ["" if math.isnan(x) else str(x), "" if math.isnan(y) else str(y), str(v)]
    return ",".join(fields + ([subject] if subject is not None else []))


class TestPts:
    def test_300w_file(self, tmp_path):
        (tmp_path / "a.pts").write_text(PTS_300W)
        np.testing.assert_allclose(read_pts(tmp_path / "a.pts"), PTS_OURS, rtol=0, atol=1e-12)
        np.testing.assert_allclose(read_pts(tmp_path / "a.pts", one_based=False), PTS_OURS + 1)

    def test_crlf_and_npoints(self, tmp_path):
        text = PTS_300W.replace("n_points:  4", "npoints: 4").replace("\n", "\r\n")
        (tmp_path / "a.pts").write_bytes(text.encode())
        np.testing.assert_allclose(read_pts(tmp_path / "a.pts"), PTS_OURS, atol=1e-12)

    def test_round_trip(self, tmp_path):
        pts = np.random.default_rng(0).uniform(0, 500, (68, 2))
        write_pts(tmp_path / "b.pts", pts)
        text = (tmp_path / "b.pts").read_text()
        assert text.startswith("version: 1\nn_points:  68\n{\n") and text.endswith("}\n")
        np.testing.assert_allclose(read_pts(tmp_path / "b.pts"), pts, atol=1e-6)

    @pytest.mark.parametrize(
        "text,match",
        [
            (PTS_300W.replace("n_points:  4", "n_points:  5"), "says n_points: 5 but lists 4"),
            (PTS_300W.replace("{\n", ""), "not a .pts file"),
            (PTS_300W.replace("449.459 119.344", "449.459"), "point 2 is '449.459'"),
        ],
    )
    def test_bad(self, tmp_path, text, match):
        (tmp_path / "a.pts").write_text(text)
        with pytest.raises(TrainError, match=match):
            read_pts(tmp_path / "a.pts")
        with pytest.raises(TrainError, match="not found"):
            read_pts(tmp_path / "zzz.pts")


class TestLandmarkCsv:
    def _write(self, tmp_path, rows, header=True):
        head = ["image"] + [f"{a}{k}" for k in range(1, 22) for a in "xyv"]
        text = (",".join(head) + "\n" if header else "") + "\n".join(rows) + "\n"
        (tmp_path / "aflw.csv").write_text(text)
        return tmp_path / "aflw.csv"

    def test_conventions(self, tmp_path):
        _image(tmp_path / "img" / "a.png", w=40, h=30)
        pts = np.stack([np.arange(21) + 1.0, np.arange(21) * 0.5 + 2.0], 1)
        vis = [1] * 20 + [0]
        pts[20] = math.nan
        path = self._write(tmp_path, [_row("img/a.png", pts, vis, None)])
        ours = read_aflw21(path)
        (e,) = ours
        assert e.image == tmp_path / "img" / "a.png" and e.subject is None and e.line == 2
        np.testing.assert_array_equal(e.landmarks[:20], pts[:20])
        assert np.isnan(e.landmarks[20]).all() and e.visible.tolist() == vis
        one = read_aflw21(path, convention="one_based")[0]
        np.testing.assert_array_equal(one.landmarks[:20], pts[:20] - 1)
        # the original's labels: y up, 1-based; H = 30 read from the image
        orig = read_aflw21(path, convention="original")[0]
        np.testing.assert_array_equal(orig.landmarks[:20, 0], pts[:20, 0] - 1)
        np.testing.assert_array_equal(orig.landmarks[:20, 1], 30 - pts[:20, 1])

    def test_tabs_subject_no_header_and_round_trip(self, tmp_path):
        pts = np.random.default_rng(1).uniform(0, 50, (21, 2))
        rows = [
            _row("a.png", pts, [1] * 21, "p1").replace(",", "\t"),
            _row("b.png", pts + 1, [1] * 21, "p2").replace(",", "\t"),
        ]
        path = self._write(tmp_path, rows, header=False)
        a, b = read_aflw21(path)
        assert (a.subject, b.subject, b.line) == ("p1", "p2", 2)
        np.testing.assert_allclose(b.landmarks, pts + 1)
        out = write_landmark_csv([a, b], tmp_path / "out.csv")
        a2, b2 = read_aflw21(out)
        np.testing.assert_array_equal(a2.landmarks, a.landmarks)
        assert b2.subject == "p2" and a2.image == a.image

    def test_other_point_count(self, tmp_path):
        (tmp_path / "five.csv").write_text("a.png,1,2,1,3,4,1,5,6,1,7,8,1,9,10,0\n")
        (e,) = read_landmark_csv(tmp_path / "five.csv", 5)
        assert e.landmarks.shape == (5, 2) and e.visible[-1] == 0

    @pytest.mark.parametrize(
        "row,match",
        [
            ("a.png,1,2,1", "has 4 fields; expected image, then x y v for each of 21"),
            (_row("a.png", np.ones((21, 2)), [1] * 20 + [2]), "visibility values must be 0 or 1"),
            (
                _row("a.png", np.ones((21, 2)), [1] * 21).replace(",1.0,", ",one,", 1),
                "'one' is not a number",
            ),
        ],
    )
    def test_bad_rows(self, tmp_path, row, match):
        path = self._write(tmp_path, [row])
        with pytest.raises(TrainError, match=match) as info:
            read_aflw21(path)
        assert "line 2" in str(info.value)

    def test_original_needs_the_image(self, tmp_path):
        path = self._write(tmp_path, [_row("gone.png", np.ones((21, 2)), [1] * 21)])
        with pytest.raises(TrainError, match="convention='original' needs the image height"):
            read_aflw21(path, convention="original")
        with pytest.raises(TrainError, match="convention must be one of"):
            read_aflw21(path, convention="matlab")


class TestBuildManifest:
    def test_300w_layout(self, tmp_path):
        """Images and .pts side by side in nested folders (as 300-W ships)."""
        root = tmp_path / "300w"
        for name in ("afw/1.jpg", "helen/trainset/2.png", "helen/trainset/3.PNG"):
            _image(root / name)
            write_pts((root / name).with_suffix(".pts"), np.full((68, 2), 5.0))
        entries = build_manifest(root, out=tmp_path / "m.jsonl", subject_from="folder")
        assert sorted(e.image.name for e in entries) == ["1.jpg", "2.png", "3.PNG"]
        back = read_manifest(tmp_path / "m.jsonl")
        assert [e.image for e in back] == [e.image for e in entries]
        np.testing.assert_allclose(back[0].landmarks, 5.0, atol=1e-6)
        assert {e.subject for e in back} == {"afw", "helen/trainset"}

    def test_separate_annotation_folder_and_missing_image(self, tmp_path):
        _image(tmp_path / "img" / "a.png")
        (tmp_path / "ann").mkdir()
        write_pts(tmp_path / "ann" / "a.pts", np.zeros((68, 2)))
        write_pts(tmp_path / "ann" / "b.pts", np.zeros((68, 2)))
        with pytest.raises(
            TrainError, match=r"1 of 2 .pts files have no image .*\(first: .*b.pts\)"
        ):
            build_manifest(tmp_path / "img", tmp_path / "ann")
        (tmp_path / "ann" / "b.pts").unlink()
        (e,) = build_manifest(tmp_path / "img", tmp_path / "ann")
        assert e.image == tmp_path / "img" / "a.png" and e.subject is None

    def test_csv_and_errors(self, tmp_path):
        _image(tmp_path / "img" / "a.png")
        row = _row("a.png", np.ones((21, 2)), [1] * 21)
        (tmp_path / "l.csv").write_text(row + "\n" + row.replace("a.png", "b.png") + "\n")
        with pytest.raises(TrainError, match="1 of 2 images named in .* are missing"):
            build_manifest(tmp_path / "img", tmp_path / "l.csv")
        (tmp_path / "l.csv").write_text(row + "\n")
        (e,) = build_manifest(tmp_path / "img", tmp_path / "l.csv", out=tmp_path / "m.jsonl")
        assert read_manifest(tmp_path / "m.jsonl")[0].image == tmp_path / "img" / "a.png"
        with pytest.raises(TrainError, match="no .pts files under"):
            build_manifest(tmp_path / "img")
        with pytest.raises(TrainError, match="image folder not found"):
            build_manifest(tmp_path / "nope")


@pytest.mark.reference
def test_import_demodata(tmp_path):
    """The original's six demo photographs: PNGs plus a manifest whose landmarks are the
    labels converted by hand: (x - 1, 224 - y)."""
    import scipy.io as sio

    mat = reference_file("3dmmasstn/demodata.mat")
    entries = read_manifest(import_demodata(mat, tmp_path))
    d = sio.loadmat(mat)
    assert len(entries) == 6
    lab = d["Labels"][0]  # (2, 21, 6): x, y up, 1-based
    for k, e in enumerate(entries):
        np.testing.assert_allclose(e.landmarks[:, 0], lab[0, :, k] - 1, atol=1e-5)
        np.testing.assert_allclose(e.landmarks[:, 1], 224 - lab[1, :, k], atol=1e-5)
        pixels = np.asarray(Image.open(e.image))
        np.testing.assert_allclose(pixels, np.rint(d["Images"][..., k]), atol=0)
