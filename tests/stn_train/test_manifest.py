"""The JSON-lines manifest: round trip, paths, and refusal of malformed lines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from stn_train.data.manifest import ManifestEntry, read_manifest, write_manifest
from stn_train.errors import TrainError


def _entries(tmp_path):
    pts = np.array([[1.5, 2.25], [math.nan, math.nan], [10.0, -3.0]])
    return [
        ManifestEntry(tmp_path / "imgs" / "a.jpg", pts, [1, 0, 1], subject="id7"),
        ManifestEntry(tmp_path / "b.png", pts[[0, 2, 0]], [1, 1, 1], subject=12),
        ManifestEntry(tmp_path.parent / "elsewhere.png", pts * 2, [1, 0, 1]),
    ]


class TestRoundTrip:
    def test_round_trip(self, tmp_path):
        entries = _entries(tmp_path)
        path = write_manifest(entries, tmp_path / "m.jsonl")
        back = read_manifest(path)
        assert len(back) == 3
        for a, b in zip(entries, back, strict=True):
            assert b.image == a.image.absolute()
            np.testing.assert_array_equal(b.landmarks, a.landmarks)  # NaN == NaN here
            np.testing.assert_array_equal(b.visible, a.visible)
            assert b.subject == a.subject
        assert back[1].subject == "12"  # ids are strings
        assert [b.line for b in back] == [1, 2, 3]

    def test_text_is_readable(self, tmp_path):
        """Relative paths inside the manifest's folder, absolute outside; null for NaN."""
        write_manifest(_entries(tmp_path), tmp_path / "m.jsonl")
        lines = [json.loads(t) for t in (tmp_path / "m.jsonl").read_text().splitlines()]
        assert lines[0]["image"] == "imgs/a.jpg"
        assert lines[0]["landmarks"][1] == [None, None, 0]
        assert lines[0]["subject"] == "id7"
        assert lines[2]["image"] == str(tmp_path.parent / "elsewhere.png")
        assert "subject" not in lines[2]

    def test_hand_written(self, tmp_path):
        """What a researcher writes by hand: comments, blank lines, [x, y] pairs meaning
        visible, true/false visibility, extra keys kept."""
        (tmp_path / "m.jsonl").write_text(
            "# my faces\n\n"
            '{"image": "x.jpg", "landmarks": [[1, 2], [3, 4, 0], [5, 6, true]], "bbox": [0, 1]}\n'
        )
        (e,) = read_manifest(tmp_path / "m.jsonl")
        assert e.image == tmp_path / "x.jpg" and e.line == 3
        np.testing.assert_array_equal(e.landmarks, [[1, 2], [3, 4], [5, 6]])
        np.testing.assert_array_equal(e.visible, [1, 0, 1])
        assert e.subject is None and e.extra == {"bbox": [0, 1]}

    def test_nan_literal_is_read(self, tmp_path):
        (tmp_path / "m.jsonl").write_text('{"image": "x.jpg", "landmarks": [[NaN, 2, 1]]}\n')
        (e,) = read_manifest(tmp_path / "m.jsonl")
        assert math.isnan(e.landmarks[0, 0])  # the dataset decides that this is bad


class TestRefusals:
    @pytest.mark.parametrize(
        "line,match",
        [
            ("{not json", "line 2 is not valid JSON"),
            ("[1, 2]", "line 2 is not a JSON object"),
            ('{"landmarks": []}', 'line 2 has no "image" path'),
            ('{"image": "a.jpg"}', 'line 2 has no "landmarks" list'),
            ('{"image": "a.jpg", "landmarks": [[1, 2, 3, 4]]}', "landmark 0 is \\[1, 2, 3, 4\\]"),
            ('{"image": "a.jpg", "landmarks": [[1, "2", 1]]}', "coordinate '2'; use a number"),
            ('{"image": "a.jpg", "landmarks": [[1, 2, 2]]}', "visibility 2; use 0 or 1"),
            ('{"image": "a.jpg", "landmarks": [], "subject": [1]}', "subject \\[1\\]"),
        ],
    )
    def test_bad_line(self, tmp_path, line, match):
        path = tmp_path / "m.jsonl"
        path.write_text('{"image": "ok.jpg", "landmarks": [[1, 2, 1]]}\n' + line + "\n")
        with pytest.raises(TrainError, match=match) as info:
            read_manifest(path)
        assert str(path) in str(info.value)

    def test_missing_and_empty(self, tmp_path):
        with pytest.raises(TrainError, match="manifest not found"):
            read_manifest(tmp_path / "nope.jsonl")
        (tmp_path / "e.jsonl").write_text("# nothing\n\n")
        with pytest.raises(TrainError, match="has no entries"):
            read_manifest(tmp_path / "e.jsonl")

    def test_entry_shapes(self, tmp_path):
        with pytest.raises(ValueError, match="visible has 2 values for 3 landmarks"):
            ManifestEntry(tmp_path / "a.jpg", np.zeros((3, 2)), [1, 1])
