"""The STN module: shapes, dtypes, devices, gradients, upright output."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_core import STN, StnError, UVGridModel
from stn_core.sampler.reference import stn_flatten_reference

from tests.tolerances import TOL

R = 9


def grid_faces(res: int) -> np.ndarray:
    k = np.arange(res * res).reshape(res, res)[:-1, :-1].reshape(-1)
    return np.concatenate(
        [np.stack([k, k + res, k + 1], 1), np.stack([k + 1, k + res, k + res + 1], 1)]
    )


def dome_model(res=R, k=3, dtype=torch.float32, inside=None) -> UVGridModel:
    """A dome of 80 x 80 mm facing the camera, row 0 at the top (y up)."""
    rng = np.random.default_rng(0)
    rows, cols = np.divmod(np.arange(res * res), res)
    x = cols / (res - 1) * 2 - 1
    y = 1 - rows / (res - 1) * 2
    mean = np.stack([40 * x, 40 * y, -20 * (x**2 + y**2)], 1)
    return UVGridModel.from_arrays(
        mean, rng.normal(size=(res * res, 3, k)), grid_faces(res), inside=inside, dtype=dtype
    )


def theta_for(model, b=2, h=48, w=40, dtype=torch.float32):
    th = torch.zeros(b, model.n_params, dtype=dtype)
    th[:, 3], th[:, 4], th[:, 5] = (w - 1) / 2, (h - 1) / 2, math.log(0.4)
    return th


class TestSTN:
    def test_smoke_shapes_dtypes(self):
        m = dome_model()
        stn = STN(m)
        images = torch.rand(2, 3, 48, 40)
        out = stn(images, theta_for(m))
        n = R * R
        assert out.points.shape == (2, n, 2) and out.rotated.shape == (2, n, 3)
        assert out.flattened.shape == (2, 3, R, R) and out.masked.shape == (2, 3, R, R)
        assert out.visibility.shape == (2, 1, R, R)
        for t in out:
            assert t.dtype == torch.float32 and t.device == images.device
        assert set(out.visibility.unique().tolist()) <= {0.0, 1.0}
        torch.testing.assert_close(out.masked, out.flattened * out.visibility)

    def test_matches_reference(self):
        m = dome_model(dtype=torch.float64)
        images = torch.rand(2, 3, 48, 40, dtype=torch.float64)
        th = theta_for(m, dtype=torch.float64)
        th[:, 6:] = torch.randn(2, 3, dtype=torch.float64)
        out = STN(m)(images, th)
        ref = stn_flatten_reference(images, th, m.mean, m.basis).reshape(2, 3, R, R)
        rtol, atol = TOL[np.float64]
        torch.testing.assert_close(out.flattened, ref, rtol=rtol, atol=atol)

    def test_gradient_to_theta_and_images_only_when_asked(self):
        m = dome_model()
        stn = STN(m)
        images = torch.rand(2, 3, 48, 40)
        theta = theta_for(m).requires_grad_()
        out = stn(images, theta)
        (out.masked.sum() + out.points.sum()).backward()
        assert theta.grad is not None and torch.isfinite(theta.grad).all()
        assert (theta.grad.abs().sum(0) > 0).all(), theta.grad  # every parameter matters
        assert images.grad is None
        assert not out.visibility.requires_grad

        images = images.requires_grad_()
        stn(images, theta_for(m)).masked.sum().backward()
        assert images.grad is not None and images.grad.abs().sum() > 0

    def test_inside_mask_applied(self):
        inside = np.ones(R * R, bool)
        inside[:R] = False  # the top row fell outside the source mesh
        m = dome_model(inside=inside)
        out = STN(m)(torch.rand(1, 1, 48, 40) + 0.1, theta_for(m, b=1))
        assert torch.all(out.visibility[0, 0, 0] == 0) and torch.all(out.visibility[0, 0, 1:] == 1)
        assert torch.all(out.masked[0, 0, 0] == 0)

    def test_conventions_upright_and_unmirrored(self):
        """Row 0 of the flattened image is the top of the face, column 0 the image's left
        (the subject's right) in a frontal view."""
        m = dome_model()
        h, w = 48, 40
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=torch.float32),
            torch.arange(w, dtype=torch.float32),
            indexing="ij",
        )
        images = torch.stack([ys, xs])[None]  # channel 0 = row index, channel 1 = column index
        out = STN(m)(images, theta_for(m, b=1, h=h, w=w))
        flat = out.flattened[0]
        assert torch.all(flat[0].diff(dim=0) > 0)  # rows go down the image
        assert torch.all(flat[1].diff(dim=1) > 0)  # columns go right

    def test_bfloat16_images(self):
        m = dome_model()
        theta = theta_for(m).requires_grad_()
        out = STN(m)(torch.rand(2, 3, 48, 40).bfloat16(), theta)
        assert out.flattened.dtype == torch.bfloat16 and out.visibility.dtype == torch.bfloat16
        assert out.points.dtype == torch.float32
        out.masked.float().sum().backward()
        assert torch.isfinite(theta.grad).all()

    def test_depth_mode_and_yaw(self):
        m = dome_model(res=15)
        th = theta_for(m, b=1)
        th[0, 1] = math.radians(80)
        normals = STN(m)(torch.rand(1, 1, 48, 40), th).visibility
        depth = STN(m, visibility_mode="depth")(torch.rand(1, 1, 48, 40), th).visibility
        assert 0 < normals.mean() < 1 and torch.all(depth <= normals)

    def test_module_device_move_and_repr(self):
        stn = STN(dome_model())
        assert {n for n, _ in stn.named_buffers()} == {"mean", "basis", "faces", "inside"}
        assert "res=9" in repr(stn) and stn.n_params == 9
        th = stn.initial_theta(3, 48, 40)
        assert th.shape == (3, 9) and th[0, 3] == 19.5 and th[0, 4] == 23.5
        stn64 = stn.double()
        assert stn64.mean.dtype == torch.float64 and stn64.faces.dtype == torch.long

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this environment")
    def test_cuda(self):
        m = dome_model()
        stn = STN(m).cuda()
        images = torch.rand(2, 3, 48, 40, device="cuda")
        theta = theta_for(m).cuda().requires_grad_()
        out = stn(images, theta)
        assert all(t.is_cuda for t in out)
        ref = STN(m)(images.cpu(), theta.detach().cpu())
        rtol, atol = TOL[np.float32]
        torch.testing.assert_close(out.masked.cpu(), ref.masked, rtol=100 * rtol, atol=10 * atol)
        out.masked.sum().backward()
        assert torch.isfinite(theta.grad).all()

    def test_awkward_bad_inputs(self):
        m = dome_model()
        stn = STN(m)
        with pytest.raises(StnError, match="columns"):
            stn(torch.rand(2, 3, 8, 8), torch.zeros(2, 7))
        with pytest.raises(StnError, match="batch size"):
            stn(torch.rand(2, 3, 8, 8), torch.zeros(3, 9))
        with pytest.raises(StnError, match="B, C, H, W"):
            stn(torch.rand(3, 8, 8), torch.zeros(1, 9))
        with pytest.raises(StnError, match="visibility_mode"):
            STN(m, visibility_mode="zbuffer")
