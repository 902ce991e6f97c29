"""Conversions for users of the original MATLAB 3DMM-STN: labels, MatConvNet grids, scale,
theta."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_core import conventions as C
from stn_core.geometry import project_theta

from tests.tolerances import TOL

F64 = TOL[np.float64]


def _close(a, b, tol=F64):
    np.testing.assert_allclose(
        np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=tol[0], atol=tol[1]
    )


class TestLabels:
    def test_corners(self):
        """Original (1, H) is the top-left pixel centre, (W, 1) the bottom-right one."""
        h = 224
        _close(C.labels_from_original(np.array([1.0, h]), h), [0, 0])
        _close(C.labels_from_original(np.array([224.0, 1]), h), [223, 223])

    @pytest.mark.parametrize("kind", ["numpy", "torch"])
    def test_round_trip(self, kind):
        rng = np.random.default_rng(0)
        lab = rng.uniform(1, 224, size=(6, 21, 2))
        x = torch.from_numpy(lab) if kind == "torch" else lab
        ours = C.labels_from_original(x, 224)
        assert type(ours) is type(x)
        _close(C.labels_to_original(ours, 224), lab)

    def test_row_from_top(self):
        """The README's rule: a label's 1-based row from the top is H + 1 - y."""
        y = 50.0
        assert C.labels_from_original(np.array([10.0, y]), 224)[1] + 1 == 224 + 1 - y


class TestMatConvNetGrid:
    def test_corner_pixel_centres_vertical_first(self):
        grid = np.zeros((2, 1, 3, 1))
        grid[:, 0, 0, 0] = (-1, -1)
        grid[:, 0, 1, 0] = (1, 1)
        grid[:, 0, 2, 0] = (-1, 1)  # vertical -1 (top), horizontal +1 (right)
        pts = C.points_from_matconvnet_grid(grid, height=9, width=13)
        assert pts.shape == (1, 3, 2)
        _close(pts[0], [[0, 0], [12, 8], [12, 0]])

    def test_output_pixel_order(self):
        """Output pixel (i, j) is point i * Wo + j (the flattened image's grid order)."""
        ho, wo = 3, 4
        grid = np.zeros((2, ho, wo, 1))
        grid[0, 2, 1, 0] = 0.5
        pts = C.points_from_matconvnet_grid(grid, 5, 5)
        assert pts[0, 2 * wo + 1, 1] == 3.0 and np.count_nonzero(pts[0, :, 1] != 2.0) == 1

    @pytest.mark.parametrize("kind", ["numpy", "torch"])
    def test_round_trip(self, kind):
        rng = np.random.default_rng(1)
        grid = rng.uniform(-1.2, 1.2, size=(2, 5, 7, 3))
        g = torch.from_numpy(grid) if kind == "torch" else grid
        pts = C.points_from_matconvnet_grid(g, 11, 17)
        back = C.points_to_matconvnet_grid(pts, 11, 17, (5, 7))
        assert type(back) is type(g)
        _close(back, grid)


class TestLogScale:
    def test_original_scale(self):
        q = np.array([-30.0, 0.0, 1.0, 12.5])
        _close(np.exp(C.log_scale_from_original(q)), 0.99**q)
        _close(C.log_scale_to_original(C.log_scale_from_original(q)), q)


def _original_points(theta_orig, mean, basis):
    """The original's pipeline, from its MATLAB layers: p = s R X (x, y) + t, y up, 1-based,
    s = 0.99^q, R = I + sin(th) K + (1 - cos(th)) K^2 for the unit axis."""
    out = []
    for th in theta_orig:
        r, t, q, alpha = th[:3], th[3:5], th[5], th[6:]
        X = mean + basis @ alpha
        angle = np.linalg.norm(r)
        k = r / angle
        K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        R = np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K
        Y = X @ R.T
        out.append(0.99**q * Y[:, :2] + t)
    return np.stack(out)


class TestTheta:
    def test_points_agree_with_original(self):
        rng = np.random.default_rng(2)
        n, k, h = 30, 4, 224
        mean = rng.normal(size=(n, 3)) * 40
        basis = rng.normal(size=(n, 3, k)) * 3
        theta_orig = np.concatenate(
            [
                rng.normal(size=(3, 3)) * 0.3,
                rng.uniform(90, 130, size=(3, 2)),
                rng.uniform(-20, 20, size=(3, 1)),
                rng.normal(size=(3, k)),
            ],
            1,
        )
        expected = C.labels_from_original(_original_points(theta_orig, mean, basis), h)
        ours = C.theta_from_original(torch.from_numpy(theta_orig), h)
        pts, _ = project_theta(ours, torch.from_numpy(mean), torch.from_numpy(basis))
        _close(pts.numpy(), expected)
        _close(C.theta_to_original(ours, h).numpy(), theta_orig)

    def test_original_initialisation(self):
        """The original's t = 112 on 224-pixel images is (111, 112) here, half a pixel off
        the centre (111.5, 111.5); its q = 1 is s = 0.99."""
        th = C.theta_from_original(np.array([[0, 0, 0, 112, 112, 1.0]]), 224)
        _close(th[0, 3:6], [111, 112, math.log(0.99)])
