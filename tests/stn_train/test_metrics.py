"""The evaluation metrics (stn_train.metrics) on hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_train.metrics import (
    ced_area,
    landmark_errors,
    normalisers,
    rotation_error_deg,
    shape_error_mm,
    summarise,
)

from tests.stn_train.train_helpers import load_model
from tests.tolerances import TOL

RTOL64, ATOL64 = TOL[np.float64]


def square_face(side: float = 10.0, eyes: float = 8.0) -> torch.Tensor:
    """(1, 21, 2): landmarks spread over a side x side box, outer eye corners 6 and 11
    ``eyes`` apart."""
    g = torch.Generator().manual_seed(0)
    t = torch.rand(1, 21, 2, generator=g, dtype=torch.float64) * side
    t[0, 0] = torch.tensor([0.0, 0.0])
    t[0, 1] = torch.tensor([side, side])
    t[0, 6] = torch.tensor([1.0, 5.0])
    t[0, 11] = torch.tensor([1.0 + eyes, 5.0])
    return t


class TestLandmarkMetrics:
    def test_errors_and_normalisers(self):
        target = square_face()
        visible = torch.ones(1, 21)
        pred = target + torch.tensor([3.0, 4.0], dtype=torch.float64)
        err = landmark_errors(pred, target, visible)
        torch.testing.assert_close(err, torch.full((1, 21), 5.0, dtype=torch.float64))
        box, io = normalisers(target, visible, "aflw21")
        torch.testing.assert_close(box, torch.tensor([10.0], dtype=torch.float64))
        torch.testing.assert_close(io, torch.tensor([8.0], dtype=torch.float64))

    def test_invisible_landmarks_do_not_count(self):
        target = square_face()
        visible = torch.ones(1, 21)
        visible[0, 1] = 0  # the box's far corner and an eye corner
        visible[0, 11] = 0
        pred = target.clone()
        pred[0, 1] += 100.0
        err = landmark_errors(pred, target, visible)
        assert math.isnan(err[0, 1]) and torch.nanmean(err) == 0
        box, io = normalisers(target, visible, "aflw21")
        assert box[0] < 10.0 and math.isnan(io[0])

    def test_unknown_set_has_no_interocular(self):
        _, io = normalisers(square_face(), torch.ones(1, 21), None)
        assert math.isnan(io[0])

    def test_summary(self):
        target = square_face().repeat(2, 1, 1)
        pred = target.clone()
        pred[1] += torch.tensor([0.6, 0.8], dtype=torch.float64)  # 1 px off: NME 0.1
        res = {
            "pred": pred,
            "target": target,
            "visible": torch.ones(2, 21),
            "index": torch.arange(2),
            "theta": torch.zeros(2, 8),
            "symmetry": torch.zeros(2),
        }
        s, arrays = summarise(res, "aflw21")
        assert s["nme_box"] == pytest.approx(0.05) and s["mean_error_px"] == pytest.approx(0.5)
        assert s["nme_interocular"] == pytest.approx(1 / 16)
        assert s["landmark_rmse_px"] == pytest.approx(math.sqrt(0.5))
        assert s["failure_rate_box_0.1"] == 0.0
        np.testing.assert_allclose(arrays["per_landmark_px"], 0.5)

    def test_ced_area(self):
        assert ced_area(np.zeros(5)) == pytest.approx(1.0, abs=1e-3)
        assert ced_area(np.full(5, 0.2)) == 0.0
        assert ced_area(np.array([0.0, 1.0])) == pytest.approx(0.5, abs=1e-3)


class TestPoseAndShape:
    def test_rotation_error(self):
        a = math.radians(30)
        r_true = torch.tensor([[0.0, 0.0, 0.0], [0.1, -0.2, 0.3]], dtype=torch.float64)
        r_pred = torch.tensor([[0.0, a, 0.0], [0.1, -0.2, 0.3]], dtype=torch.float64)
        torch.testing.assert_close(
            rotation_error_deg(r_pred, r_true),
            torch.tensor([30.0, 0.0], dtype=torch.float64),
            rtol=RTOL64,
            atol=1e-6,
        )

    def test_shape_error(self):
        model = load_model()
        k = model.n_components
        a = torch.zeros(2, k)
        b = torch.zeros(2, k)
        b[1, 0] = 1.0
        err = shape_error_mm(a, b, model)
        expect = model.basis[:, :, 0].double().norm(dim=-1)[model.inside].mean()
        assert err[0] == 0
        torch.testing.assert_close(err[1], expect, rtol=1e-6, atol=1e-9)
