"""Evaluation: `evaluate` end to end (the metrics themselves: test_metrics.py)."""

from __future__ import annotations

import csv
import json
import math
import shutil

import h5py
import numpy as np
import pytest
from stn_train.errors import TrainError
from stn_train.evaluate import (
    evaluate,
)

from tests.stn_train.train_helpers import grid_model_file, tiny_checkpoint
from tests.tolerances import TOL

RTOL64, ATOL64 = TOL[np.float64]


class TestEvaluate:
    def test_synthetic(self, tmp_path):
        result = evaluate(
            tiny_checkpoint(), grid_model_file(), tmp_path / "ev", synthetic=12, batch_size=5
        )
        s = result.summary
        for key in (
            "nme_box",
            "nme_interocular",
            "pose_error_deg",
            "shape_error_mm",
            "auc_box_0.08",
        ):
            assert math.isfinite(s[key]), key
        assert s["images"] == 12 and s["landmarks"] == 21
        saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
        assert saved["nme_box"] == s["nme_box"]
        rows = list(csv.reader(open(tmp_path / "ev" / "per_landmark.csv")))
        assert len(rows) == 22 and rows[0] == ["landmark", "mean_error_px", "mean_nme_box"]
        rows = list(csv.reader(open(tmp_path / "ev" / "per_image.csv")))
        assert len(rows) == 13 and "pose_error_deg" in rows[0]
        assert (tmp_path / "ev" / "ced.png").read_bytes()[:4] == b"\x89PNG"

    def test_manifest_has_no_pose_errors(self, tmp_path):
        from tests.stn_train.train_helpers import render_manifest

        s = evaluate(
            tiny_checkpoint(), grid_model_file(), tmp_path / "ev", data=render_manifest(8, 64, 1)
        ).summary
        assert s["images"] == 8 and "pose_error_deg" not in s

    def test_bad_manifest_entry_is_named(self, tmp_path):
        from tests.stn_train.train_helpers import render_manifest

        lines = render_manifest(8, 64, 1).read_text().splitlines()
        first = json.loads(lines[0])
        first["image"] = str(tmp_path / "gone.png")
        path = tmp_path / "m.jsonl"
        path.write_text(json.dumps(first) + "\n")
        with pytest.raises(TrainError, match="gone.png"):
            evaluate(tiny_checkpoint(), grid_model_file(), tmp_path / "ev", data=path)

    def test_checkpoint_of_another_model(self, tmp_path):
        other = tmp_path / "other.h5"
        shutil.copy(grid_model_file(), other)
        with h5py.File(other, "r+") as f:
            f["shape/basis"][...] = f["shape/basis"][()] * 1.01
        with pytest.raises(TrainError, match="another grid model"):
            evaluate(tiny_checkpoint(), other, tmp_path / "ev", synthetic=4)

    def test_needs_one_data_source(self, tmp_path):
        with pytest.raises(TrainError, match="exactly one of data") as e:
            evaluate(tiny_checkpoint(), grid_model_file(), tmp_path / "ev")
        assert "exactly one of --data" in e.value.for_cli()
