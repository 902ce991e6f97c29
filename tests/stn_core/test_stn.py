"""The STN module: shapes, dtypes, devices, gradients, upright output."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_core import STN, StnError, UVGridModel
from stn_core.geometry import axis_angle_to_matrix

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

    def test_matches_grid_sample(self):
        """The flattened image is torch's grid_sample (align_corners=True, zeros outside) at
        the returned points, which are those of the independent layer composition."""
        m = dome_model(dtype=torch.float64)
        images = torch.rand(2, 3, 48, 40, dtype=torch.float64)
        th = theta_for(m, dtype=torch.float64)
        th[:, 6:] = torch.randn(2, 3, dtype=torch.float64)
        out = STN(m)(images, th)
        rot = axis_angle_to_matrix(th[:, :3])
        shape = m.mean + torch.einsum("nck,bk->bnc", m.basis, th[:, 6:])
        y = torch.einsum("bij,bnj->bni", rot, shape)
        s = torch.exp(th[:, 5])[:, None]
        pts = torch.stack([s * y[..., 0] + th[:, 3:4], -s * y[..., 1] + th[:, 4:5]], -1)
        rtol, atol = TOL[np.float64]
        torch.testing.assert_close(out.points, pts, rtol=rtol, atol=atol)
        grid = torch.stack([2 * pts[..., 0] / (40 - 1) - 1, 2 * pts[..., 1] / (48 - 1) - 1], -1)
        ref = torch.nn.functional.grid_sample(
            images, grid[:, None], mode="bilinear", padding_mode="zeros", align_corners=True
        )
        torch.testing.assert_close(out.flattened, ref.reshape(2, 3, R, R), rtol=rtol, atol=atol)

    def test_autocast_keeps_the_geometry_in_float32(self):
        """Under autocast (bfloat16 matmuls) the points, visibility and flattened image are
        those computed without it; a bfloat16 theta is read as float32."""
        m = dome_model(k=3)
        stn = STN(m)
        images = torch.rand(2, 3, 48, 40)
        th = theta_for(m)
        th[:, :3] = torch.tensor([0.1, 0.5, -0.2])
        th[:, 6:] = torch.randn(2, 3)
        plain = stn(images, th)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cast = stn(images, th)
        for a, b in zip(plain, cast, strict=True):
            assert a.dtype == b.dtype
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        low = stn(images, th.bfloat16())
        ref = stn(images, th.bfloat16().float())
        assert low.points.dtype == torch.float32
        for a, b in zip(low, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)

    def test_empty_batch(self):
        m = dome_model()
        for mode in ("normals", "depth"):
            out = STN(m, visibility_mode=mode)(torch.rand(0, 3, 48, 40), torch.zeros(0, 9))
            assert out.masked.shape == (0, 3, R, R) and out.visibility.shape == (0, 1, R, R)

    def test_reference_backend_gives_second_derivatives(self):
        """backend='reference' (needed for gradient penalties): double backward works."""
        m = dome_model()
        stn = STN(m, backend="reference")
        assert "backend='reference'" in repr(stn)
        images = torch.rand(2, 3, 48, 40, dtype=torch.float64)
        th = theta_for(m, dtype=torch.float64).requires_grad_()
        (g,) = torch.autograd.grad(
            stn.double()(images, th).masked.square().sum(), th, create_graph=True
        )
        (gg,) = torch.autograd.grad(g.square().sum(), th)
        assert torch.isfinite(gg).all() and gg.abs().sum() > 0
        with pytest.raises(StnError, match="backend must be one of"):
            STN(m, backend="cuda")

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
        assert stn.state_dict() == {}  # the model is data of its artifact, not saved state
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
