"""The bilinear sampler and the PyTorch reference of the fused STN sampler.

The sampler is checked against torch.nn.functional.grid_sample (align_corners=True, zeros) and
against an independent implementation of MatConvNet's vl_nnbilinearsampler convention written
here from its rules: the grid is 2 x Ho x Wo x N, its first channel is the vertical coordinate,
-1 and +1 are the centres of the corner pixels, and samples outside the image read zeros.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stn_core.conventions import points_from_matconvnet_grid
from stn_core.errors import StnError
from stn_core.geometry import project_theta
from stn_core.sampler.bilinear import bilinear_sample, sample_with_gradient
from stn_core.sampler.reference import stn_flatten_reference

from tests.tolerances import GRADCHECK, TOL

F64 = TOL[np.float64]
RTOL64, ATOL64 = F64


def _close(a, b, tol=F64, msg=None):
    torch.testing.assert_close(a, b, rtol=tol[0], atol=tol[1], msg=msg)


def _points(b, n, h, w, seed, margin=2.0, dtype=torch.float64):
    """Random points over the image and up to ``margin`` pixels beyond it."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(b, n, 2, generator=g, dtype=dtype)
    span = torch.tensor([w - 1 + 2 * margin, h - 1 + 2 * margin], dtype=dtype)
    return u * span - margin


def _away_from_integers(p, eps=1e-3):
    """Move points off integer coordinates (where the bilinear derivative jumps)."""
    frac = p - torch.floor(p)
    return torch.where(frac < eps, p + 2 * eps, torch.where(frac > 1 - eps, p - 2 * eps, p))


def _grid_sample(images, points):
    h, w = images.shape[-2:]
    gx = 2 * points[..., 0] / (w - 1) - 1
    gy = 2 * points[..., 1] / (h - 1) - 1
    grid = torch.stack([gx, gy], -1)[:, None].to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[
        :, :, 0
    ]


def _matconvnet_bilinear(images: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """vl_nnbilinearsampler from its rules, with plain loops (independent of the library).

    images: (H, W, C, N) as MATLAB stores them; grid: (2, Ho, Wo, N), grid[0] vertical, in
    [-1, 1] at the corner pixel centres. Returns (Ho, Wo, C, N).
    """
    h, w, c, n = images.shape
    _, ho, wo, _ = grid.shape
    out = np.zeros((ho, wo, c, n))
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                y = (grid[0, i, j, b] + 1) / 2 * (h - 1)  # 0-based row
                x = (grid[1, i, j, b] + 1) / 2 * (w - 1)  # 0-based column
                y0, x0 = math.floor(y), math.floor(x)
                for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                    for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                        if 0 <= yy < h and 0 <= xx < w:
                            out[i, j, :, b] += wy * wx * images[yy, xx, :, b]
    return out


class TestBilinearSample:
    def test_smoke(self):
        images = torch.rand(2, 3, 11, 13)
        out = bilinear_sample(images, _points(2, 17, 11, 13, 0, dtype=torch.float32))
        assert out.shape == (2, 3, 17) and out.dtype == torch.float32

    def test_batch_items_independent(self):
        images = torch.rand(3, 2, 7, 9, dtype=torch.float64)
        pts = _points(3, 10, 7, 9, 1)
        out = bilinear_sample(images, pts)
        for i in range(3):
            _close(out[i : i + 1], bilinear_sample(images[i : i + 1], pts[i : i + 1]))

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    @pytest.mark.parametrize("size", [(7, 7), (11, 13), (3, 17), (2, 2)])
    def test_against_grid_sample(self, dtype, size):
        h, w = size
        seed = torch.seed()
        images = torch.randn(2, 3, h, w, dtype=dtype, generator=torch.Generator().manual_seed(seed))
        pts = _points(2, 61, h, w, 2, dtype=dtype)
        rtol, atol = TOL[np.float64 if dtype == torch.float64 else np.float32]
        # grid_sample normalises the points to [-1, 1] and back: each coordinate gains a
        # rounding error of a few ulps of max(H, W), which the interpolant's slope (at most
        # 2 max|image| per pixel) passes on to the value.
        coord_err = 4 * torch.finfo(dtype).eps * max(h, w)
        atol += coord_err * 2 * float(images.abs().max())
        _close(
            bilinear_sample(images, pts),
            _grid_sample(images, pts),
            tol=(rtol, atol),
            msg=lambda m: f"{m}\nimages seed {seed}",
        )

    def test_awkward_one_pixel_row(self):
        """A 1 x W image (grid_sample cannot normalise it): taps above/below read zeros."""
        images = torch.arange(5, dtype=torch.float64).reshape(1, 1, 1, 5) + 1
        pts = torch.tensor([[[2, 0], [2.5, 0], [2, 0.25], [2, -0.5], [2, 1]]], dtype=torch.float64)
        _close(
            bilinear_sample(images, pts)[0, 0],
            torch.tensor([3, 3.5, 2.25, 1.5, 0], dtype=torch.float64),
        )

    def test_gradients_against_grid_sample(self):
        images = torch.randn(2, 3, 9, 10, dtype=torch.float64, requires_grad=True)
        pts = _away_from_integers(_points(2, 40, 9, 10, 3)).requires_grad_()
        up = torch.randn(2, 3, 40, dtype=torch.float64)
        gi, gp = torch.autograd.grad((bilinear_sample(images, pts) * up).sum(), (images, pts))
        gi2, gp2 = torch.autograd.grad((_grid_sample(images, pts) * up).sum(), (images, pts))
        _close(gi, gi2)
        _close(gp, gp2)

    def test_against_matconvnet_rules(self):
        rng = np.random.default_rng(4)
        h, w, c, n, ho, wo = 9, 12, 3, 2, 5, 7
        images = rng.normal(size=(h, w, c, n))
        grid = rng.uniform(-1.3, 1.3, size=(2, ho, wo, n))
        grid[:, 0, 0, 0] = (-1, -1)  # top-left pixel centre
        grid[:, 0, 1, 0] = (1, 1)  # bottom-right pixel centre
        grid[:, 0, 2, 0] = (-1, 1)  # top-right: vertical first
        expected = _matconvnet_bilinear(images, grid)  # (Ho, Wo, C, N)
        ours = bilinear_sample(
            torch.from_numpy(images).permute(3, 2, 0, 1),
            torch.from_numpy(points_from_matconvnet_grid(grid, h, w)),
        )  # (N, C, Ho*Wo)
        got = ours.reshape(n, c, ho, wo).permute(2, 3, 1, 0).numpy()
        np.testing.assert_allclose(got, expected, rtol=F64[0], atol=F64[1])
        np.testing.assert_allclose(
            got[0, 2, :, 0], images[0, w - 1, :, 0], rtol=F64[0], atol=F64[1]
        )

    def test_conventions_pixel_centres(self):
        images = torch.arange(12, dtype=torch.float64).reshape(1, 1, 3, 4)
        pts = torch.tensor(
            [
                [
                    [0, 0],
                    [3, 2],
                    [1, 0],
                    [0, 1],
                    [0.5, 0],
                    [0, 0.5],
                    [-0.5, 0],
                    [-1, 0],
                    [3.5, 2],
                    [4, 2],
                ]
            ],
            dtype=torch.float64,
        )
        out = bilinear_sample(images, pts)[0, 0]
        _close(out, torch.tensor([0, 11, 1, 4, 0.5, 2, 0, 0, 5.5, 0], dtype=torch.float64))

    def test_gradcheck(self):
        images = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
        pts = _away_from_integers(_points(2, 9, 5, 6, 5)).requires_grad_()
        assert torch.autograd.gradcheck(bilinear_sample, (images, pts), **GRADCHECK)

    def test_bfloat16_accumulates_in_float32(self):
        images = torch.rand(2, 3, 16, 17)
        pts = _points(2, 50, 16, 17, 6, dtype=torch.float32)
        out = bilinear_sample(images.bfloat16(), pts)
        assert out.dtype == torch.bfloat16
        # Float32 arithmetic on the bf16 values, rounded once: exactly that (a bf16
        # accumulation would differ by an ulp or more in many elements).
        ref = bilinear_sample(images.bfloat16().float(), pts)
        torch.testing.assert_close(out, ref.bfloat16(), rtol=0, atol=0)

    def test_no_image_gradient_unless_requested(self):
        images = torch.rand(1, 1, 4, 4)
        pts = torch.rand(1, 3, 2, requires_grad=True)
        bilinear_sample(images, pts).sum().backward()
        assert images.grad is None and pts.grad is not None

    def test_awkward_far_and_non_finite_points(self):
        images = torch.rand(1, 2, 4, 5)
        pts = torch.tensor(
            [[[1e30, 0], [-1e30, 2], [float("nan"), 1], [float("inf"), 1], [2, 1e9]]]
        )
        out = bilinear_sample(images, pts)
        assert out.shape == (1, 2, 5)
        assert torch.all(out[..., [0, 1, 4]] == 0)

    def test_awkward_bad_shapes(self):
        with pytest.raises(StnError, match="B, C, H, W"):
            bilinear_sample(torch.rand(3, 4, 4), torch.rand(1, 2, 2))
        with pytest.raises(StnError, match="B, N, 2"):
            bilinear_sample(torch.rand(1, 3, 4, 4), torch.rand(1, 2, 3))
        with pytest.raises(StnError, match="batch size"):
            bilinear_sample(torch.rand(2, 3, 4, 4), torch.rand(1, 2, 2))


class TestSampleWithGradient:
    def test_value_is_the_sampler_and_gradient_its_derivative(self):
        g = torch.Generator().manual_seed(0)
        images = torch.rand(2, 3, 9, 11, generator=g, dtype=torch.float64)
        # Non-integer points, some beyond the border (zeros outside).
        pts = (
            torch.rand(2, 17, 2, generator=g, dtype=torch.float64)
            * torch.tensor([13.0, 11.0], dtype=torch.float64)
            - 1.3
        )
        pts = torch.where((pts - pts.round()).abs() < 0.01, pts + 0.05, pts)
        value, grad = sample_with_gradient(images, pts)
        torch.testing.assert_close(value, bilinear_sample(images, pts), rtol=RTOL64, atol=ATOL64)
        p = pts.clone().requires_grad_(True)
        out = bilinear_sample(images, p)
        for c in range(3):
            (auto,) = torch.autograd.grad(out[:, c].sum(), p, retain_graph=True)
            torch.testing.assert_close(grad[:, c], auto, rtol=RTOL64, atol=ATOL64)


def _model(n=23, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, 3, generator=g, dtype=torch.float64) * 6
    basis = torch.randn(n, 3, k, generator=g, dtype=torch.float64)
    return mean, basis


def _theta(b, k, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(b, 6 + k, generator=g, dtype=torch.float64) * 0.3
    theta[:, 3] += (w - 1) / 2
    theta[:, 4] += (h - 1) / 2
    return theta


class TestStnFlattenReference:
    def test_smoke(self):
        mean, basis = _model()
        images = torch.rand(2, 3, 19, 17)
        out = stn_flatten_reference(
            images, _theta(2, 3, 19, 17).float(), mean.float(), basis.float()
        )
        assert out.shape == (2, 3, 23) and out.dtype == torch.float32

    @pytest.mark.parametrize("mask_shape", ["none", "shared", "batch"])
    def test_matches_composition(self, mask_shape):
        mean, basis = _model()
        images = torch.randn(2, 3, 19, 17, dtype=torch.float64)
        theta = _theta(2, 3, 19, 17)
        mask = {
            "none": None,
            "shared": torch.rand(23, dtype=torch.float64),
            "batch": torch.rand(2, 23, dtype=torch.float64),
        }[mask_shape]
        points, _ = project_theta(theta, mean, basis)
        expected = bilinear_sample(images, points)
        if mask is not None:
            expected = expected * (mask if mask.dim() == 2 else mask[None])[:, None]
        _close(stn_flatten_reference(images, theta, mean, basis, mask), expected)

    def test_gradcheck(self):
        mean, basis = _model(n=11, k=2)
        images = torch.randn(2, 2, 7, 8, dtype=torch.float64, requires_grad=True)
        theta = _theta(2, 2, 7, 8, seed=3).requires_grad_()
        mask = (torch.rand(2, 11, dtype=torch.float64) > 0.3).double()
        assert torch.autograd.gradcheck(
            lambda im, th: stn_flatten_reference(im, th, mean, basis, mask),
            (images, theta),
            **GRADCHECK,
        )

    def test_mask_is_a_constant(self):
        mean, basis = _model()
        mask = torch.rand(23, requires_grad=True)
        theta = _theta(1, 3, 9, 9).float().requires_grad_()
        stn_flatten_reference(
            torch.rand(1, 1, 9, 9), theta, mean.float(), basis.float(), mask
        ).sum().backward()
        assert mask.grad is None and theta.grad is not None and theta.grad.abs().sum() > 0

    def test_bfloat16(self):
        mean, basis = _model()
        images = torch.rand(2, 3, 19, 17)
        theta = _theta(2, 3, 19, 17).float()
        out = stn_flatten_reference(
            images.bfloat16(), theta, mean.float(), basis.float(), torch.rand(23)
        )
        assert out.dtype == torch.bfloat16
        theta = theta.requires_grad_()
        stn_flatten_reference(
            images.bfloat16(), theta, mean.float(), basis.float()
        ).float().sum().backward()
        assert theta.grad.dtype == torch.float32 and torch.isfinite(theta.grad).all()

    def test_awkward_shapes(self):
        mean, basis = _model()
        images = torch.rand(2, 3, 9, 9)
        with pytest.raises(StnError, match="columns"):
            stn_flatten_reference(images, torch.zeros(2, 8), mean, basis)
        with pytest.raises(StnError, match="batch size"):
            stn_flatten_reference(images, torch.zeros(3, 9), mean, basis)
        with pytest.raises(StnError, match="mask"):
            stn_flatten_reference(images, torch.zeros(2, 9), mean, basis, torch.ones(22))
