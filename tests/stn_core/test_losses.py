"""The four losses: landmark, prior, symmetry, siamese."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stn_core.errors import StnError
from stn_core.losses import landmark_loss, prior_loss, siamese_loss, symmetry_loss

from tests.tolerances import GRADCHECK, TOL

F64 = TOL[np.float64]


def _close(a, b, tol=F64):
    torch.testing.assert_close(
        torch.as_tensor(a, dtype=torch.float64),
        torch.as_tensor(b, dtype=torch.float64),
        rtol=tol[0],
        atol=tol[1],
    )


class TestLandmarkLoss:
    def test_smoke_zero_for_perfect(self):
        p = torch.rand(2, 5, 2, dtype=torch.float64)
        out = landmark_loss(p, p.clone())
        assert out.shape == () and out == 0

    def test_hand_checked(self):
        """One landmark 3-4-5 off, one exact: mean squared distance (25 + 0) / 2."""
        p = torch.tensor([[[3.0, 4.0], [1.0, 1.0]]], dtype=torch.float64)
        q = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
        _close(landmark_loss(p, q), 12.5)
        # only the first visible: 25 / 1
        _close(landmark_loss(p, q, visibility=torch.tensor([[1.0, 0.0]])), 25.0)
        _close(landmark_loss(p, q, visibility=torch.tensor([[0.0, 1.0]])), 0.0)

    def test_selects_grid_indices(self):
        pts = torch.rand(2, 30, 2, dtype=torch.float64)
        idx = torch.tensor([4, 17, 29, 0])
        target = pts[:, idx] + torch.tensor([1.0, 0.0], dtype=torch.float64)
        _close(landmark_loss(pts, target, idx), 1.0)

    def test_batch_mean_over_visible(self):
        p = torch.zeros(2, 2, 2, dtype=torch.float64)
        q = torch.tensor([[[1.0, 0], [2, 0]], [[3, 0], [0, 4]]], dtype=torch.float64)
        vis = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
        _close(landmark_loss(p, q, visibility=vis), (1 + 4 + 16) / 3)

    def test_awkward_nothing_visible(self):
        p = torch.rand(1, 3, 2, requires_grad=True)
        out = landmark_loss(p, torch.zeros(1, 3, 2), visibility=torch.zeros(1, 3))
        assert out == 0
        out.backward()
        assert torch.all(p.grad == 0)

    def test_awkward_no_landmarks(self):
        """L = 0 (an empty landmark set): 0 with a zero gradient, not NaN."""
        p = torch.rand(2, 0, 2, dtype=torch.float64, requires_grad=True)
        out = landmark_loss(p, torch.zeros(2, 0, 2, dtype=torch.float64))
        assert out == 0
        out.backward()
        assert p.grad.shape == (2, 0, 2)

    def test_awkward_shape_mismatch(self):
        with pytest.raises(StnError, match="shape"):
            landmark_loss(torch.rand(1, 3, 2), torch.rand(1, 4, 2))

    def test_gradcheck(self):
        p = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)
        q = torch.randn(2, 3, 2, dtype=torch.float64)
        idx = torch.tensor([1, 5, 2])
        vis = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda x: landmark_loss(x, q, idx, vis), (p,), **GRADCHECK)


class TestPriorLoss:
    def test_hand_checked(self):
        _close(prior_loss(torch.tensor([[1.0, 2.0], [0.0, 3.0]])), (5 + 9) / 2)

    def test_zero_at_mean(self):
        assert prior_loss(torch.zeros(4, 7)) == 0

    def test_gradcheck(self):
        a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(prior_loss, (a,), **GRADCHECK)


class TestSymmetryLoss:
    def test_zero_for_symmetric(self):
        x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
        x = x + x.flip(-1)
        _close(symmetry_loss(x), 0.0)
        _close(symmetry_loss(x, torch.ones(2, 1, 6, 6)), 0.0)

    def test_hand_checked(self):
        """1 x 1 x 1 x 2: both pixels contribute (a - b)^2, the mean is (a - b)^2."""
        x = torch.tensor([[[[1.0, 4.0]]]], dtype=torch.float64)
        _close(symmetry_loss(x), 9.0)

    def test_mask_respected(self):
        """Pixels invisible on either side of the mirror do not count, whatever their value."""
        x = torch.tensor([[[[1.0, 4.0, 100.0, 2.0]]]], dtype=torch.float64)
        vis = torch.tensor([[[[1.0, 1.0, 0.0, 1.0]]]])
        # visible in both: columns 0 and 3 (pair 1 <-> 2 loses column 2): (1 - 2)^2 each
        _close(symmetry_loss(x, vis), 1.0)
        x2 = x.clone()
        x2[..., 1:3] = -50
        _close(symmetry_loss(x2, vis), 1.0)

    def test_fractional_weights_are_a_weighted_mean(self):
        """Mask values are weights: the result is sum(w (a - b)^2) / (C sum w), also when the
        weights sum to less than 1 (9 here, whatever the common weight)."""
        x = torch.tensor([[[[1.0, 4.0]]]], dtype=torch.float64)
        for weight in (1.0, 0.5, 0.01):
            _close(symmetry_loss(x, torch.full((1, 1, 1, 2), weight)), 9.0)
        # Unequal weights: pixel pair weights w0 * w1 both ways, the mean stays 9.
        _close(symmetry_loss(x, torch.tensor([[[[0.2, 0.7]]]])), 9.0)

    def test_default_mask_is_nonzero_pixels(self):
        x = torch.tensor([[[[1.0, 4.0, 0.0, 2.0]]]], dtype=torch.float64)
        _close(symmetry_loss(x), 1.0)

    def test_awkward_nothing_visible(self):
        x = torch.rand(1, 2, 4, 4, requires_grad=True)
        out = symmetry_loss(x, torch.zeros(1, 1, 4, 4))
        assert out == 0
        out.backward()
        assert torch.all(x.grad == 0)

    def test_gradcheck(self):
        x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
        vis = (torch.rand(2, 1, 3, 4) > 0.3).double()
        assert torch.autograd.gradcheck(lambda t: symmetry_loss(t, vis), (x,), **GRADCHECK)

    def test_bfloat16(self):
        x = torch.rand(2, 3, 8, 8)
        out = symmetry_loss(x.bfloat16())
        assert out.dtype == torch.bfloat16
        _close(out.float(), symmetry_loss(x.bfloat16().float()), tol=TOL["bfloat16"])


class TestSiameseLoss:
    def test_zero_for_identical(self):
        x = torch.rand(3, 3, 5, 5)
        assert siamese_loss(x, x.clone()) == 0

    def test_symmetric_in_its_arguments(self):
        a, b = (
            torch.rand(2, 3, 5, 5, dtype=torch.float64),
            torch.rand(2, 3, 5, 5, dtype=torch.float64),
        )
        va, vb = (torch.rand(2, 1, 5, 5) > 0.5).double(), (torch.rand(2, 1, 5, 5) > 0.5).double()
        _close(siamese_loss(a, b, va, vb), siamese_loss(b, a, vb, va))

    def test_hand_checked_with_masks(self):
        a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
        b = torch.tensor([[[[2.0, 0.0], [3.0, 9.0]]]], dtype=torch.float64)
        va = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
        vb = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
        # both: (0,0) and (1,0): (1 - 2)^2 + 0 over 2 pixels
        _close(siamese_loss(a, b, va, vb), 0.5)

    def test_channels_counted(self):
        a = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
        b = torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64).reshape(1, 3, 1, 1)
        _close(siamese_loss(a, b, torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1)), 3.0)

    def test_gradcheck(self):
        a = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
        b = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
        v = torch.ones(2, 1, 3, 3, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda x, y: siamese_loss(x, y, v, v), (a, b), **GRADCHECK)

    def test_awkward_shape_mismatch(self):
        with pytest.raises(StnError, match="shape"):
            siamese_loss(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))
