"""Spherical-harmonics Lambertian shading: the basis against an independent projection of the
clamped cosine, its constants on the axes, and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_core.shading import (
    sh_ambient,
    sh_basis,
    sh_basis_gradient,
    sh_directional,
    shade,
    shading,
)

from tests.tolerances import GRADCHECK, SH_QUADRATURE_ATOL, TOL

F64 = TOL[np.float64]


def _close(a, b, tol=F64, msg=None):
    torch.testing.assert_close(a, b, rtol=tol[0], atol=tol[1], msg=msg)


def _unit(v):
    v = torch.as_tensor(v, dtype=torch.float64)
    return v / v.norm(dim=-1, keepdim=True)


def _sphere_quadrature(n_theta: int = 240, n_phi: int = 480):
    """Points (P, 3) and weights (P,) integrating polynomials of degree < 2 n_theta exactly
    over the unit sphere (Gauss-Legendre in cos(theta) times the trapezoid rule in phi)."""
    x, w = np.polynomial.legendre.leggauss(n_theta)
    phi = (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    ct = np.repeat(x, n_phi)
    st = np.sqrt(1 - ct**2)
    ph = np.tile(phi, n_theta)
    pts = np.stack([st * np.cos(ph), st * np.sin(ph), ct], 1)
    wts = np.repeat(w, n_phi) * (2 * np.pi / n_phi)
    return pts, wts


def _degree2_projection(f_values, pts, wts, at):
    """The L2(sphere) projection of f onto the polynomials of degree <= 2 (spherical harmonics
    of order <= 2, a 9-dimensional space), evaluated at ``at`` (Q, 3). Computed with plain
    monomials and their Gram matrix, so that it shares nothing with stn_core.shading."""

    def mono(p):
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        return np.stack(
            [np.ones_like(x), x, y, z, x * y, y * z, x * z, x * x - y * y, 3 * z * z - 1], 1
        )

    m = mono(pts)
    gram = m.T @ (m * wts[:, None])
    rhs = m.T @ (f_values * wts)
    coef = np.linalg.solve(gram, rhs)
    return mono(at) @ coef


class TestShBasis:
    def test_smoke(self):
        n = _unit(
            torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        )
        b = sh_basis(n)
        assert b.shape == (2, 5, 9) and b.dtype == torch.float64
        assert sh_basis(n.float()).dtype == torch.float32
        _close(b[..., 0], torch.ones(2, 5, dtype=torch.float64))

    def test_constants_on_the_axes(self):
        """Order [1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2] with k1 = 2 / sqrt(3),
        k3 = sqrt(5) / 8, k4 = sqrt(15) / 8 (Ramamoorthi-Hanrahan with A_l folded in)."""
        k1, k3, k4 = 1.1547005383792515, 0.27950849718747373, 0.4841229182759271
        axes = torch.eye(3, dtype=torch.float64)  # +x, +y, +z
        expected = torch.tensor(
            [
                [1, 0, 0, k1, 0, 0, -k3, 0, k4],
                [1, k1, 0, 0, 0, 0, -k3, 0, -k4],
                [1, 0, k1, 0, 0, 0, 2 * k3, 0, 0],
            ],
            dtype=torch.float64,
        )
        _close(sh_basis(axes), expected)

    def test_mixed_terms(self):
        """xy, yz and xz carry k2 = sqrt(15) / 4 on the diagonal directions."""
        k2 = 0.9682458365518543
        d = _unit([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
        b = sh_basis(d)
        _close(b[0, 4], torch.tensor(k2 / 2, dtype=torch.float64))
        _close(b[1, 5], torch.tensor(k2 / 2, dtype=torch.float64))
        _close(b[2, 7], torch.tensor(k2 / 2, dtype=torch.float64))

    @pytest.mark.parametrize("direction", [(0.0, 0.0, 1.0), (0.3, -0.5, 0.8), (-1.0, 0.2, -0.1)])
    def test_directional_light_is_the_order2_projection_of_the_clamped_cosine(self, direction):
        """sh_basis(n) @ sh_directional(d) must be the L2 projection of max(n . d, 0) onto
        spherical harmonics of order <= 2, computed here by quadrature on the sphere."""
        pts, wts = _sphere_quadrature()
        d = np.asarray(direction) / np.linalg.norm(direction)
        clamped = np.maximum(pts @ d, 0.0)
        at = _unit(
            torch.randn(64, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        )
        expected = _degree2_projection(clamped, pts, wts, at.numpy())
        ours = (sh_basis(at) @ sh_directional(torch.tensor(d), 1.0))[:, 0]
        # The kink of the clamped cosine limits the quadrature's accuracy.
        np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=SH_QUADRATURE_ATOL)

    def test_directional_known_values(self):
        """For a light along n: 1/4 + 1/2 + 5/16 = 1.0625 (the order-2 clamped cosine's
        peak); at 90 degrees 1/4 - 5/32; exactly opposite 1/4 - 1/2 + 5/16."""
        d = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        sh = sh_directional(d, 1.0)
        n = torch.tensor([[0, 0, 1.0], [1.0, 0, 0], [0, 0, -1.0]], dtype=torch.float64)
        _close(
            shading(n[None], sh)[0, :, 0],
            torch.tensor([1.0625, 0.25 - 5 / 32, 0.0625], dtype=torch.float64),
        )
        _close(sh[0], torch.full((3,), 0.25, dtype=torch.float64))

    def test_ambient_is_coefficient_zero(self):
        n = _unit(torch.randn(1, 7, 3, dtype=torch.float64))
        sh = sh_ambient([0.2, 0.5, 0.9], dtype=torch.float64)
        _close(shading(n, sh), torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64).expand(1, 7, 3))
        assert sh_ambient(0.3, batch=4).shape == (4, 9, 3)

    def test_rejects_bad_shape(self):
        with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
            sh_basis(torch.zeros(4, 2))


class TestShBasisGradient:
    def test_is_the_derivative_of_the_basis(self):
        """Against autograd's Jacobian of sh_basis, batched, at unit and non-unit normals."""
        g = torch.Generator().manual_seed(4)
        n = torch.randn(2, 6, 3, generator=g, dtype=torch.float64)
        n[0] = _unit(n[0])
        grad = sh_basis_gradient(n)
        assert grad.shape == (2, 6, 9, 3) and grad.dtype == torch.float64
        auto = torch.autograd.functional.jacobian(lambda v: sh_basis(v).sum((0, 1)), n)
        _close(grad, auto.permute(1, 2, 0, 3))  # (9, B, N, 3) -> (B, N, 9, 3)


class TestShade:
    def test_batch_and_broadcast(self):
        g = torch.Generator().manual_seed(2)
        albedo = torch.rand(3, 10, 3, generator=g, dtype=torch.float64)
        n = _unit(torch.randn(3, 10, 3, generator=g, dtype=torch.float64))
        sh = torch.randn(3, 9, 3, generator=g, dtype=torch.float64)
        out = shade(albedo, n, sh)
        for i in range(3):
            _close(out[i], albedo[i] * (sh_basis(n[i]) @ sh[i]))
        _close(shade(albedo, n, sh[0]), albedo * (sh_basis(n) @ sh[0]))

    def test_gradcheck(self):
        g = torch.Generator().manual_seed(3)
        albedo = torch.rand(2, 5, 3, generator=g, dtype=torch.float64, requires_grad=True)
        n = _unit(torch.randn(2, 5, 3, generator=g, dtype=torch.float64)).requires_grad_()
        sh = torch.randn(2, 9, 3, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(shade, (albedo, n, sh), **GRADCHECK)

    def test_gradcheck_directional(self):
        d = torch.tensor([0.2, 0.4, 0.9], dtype=torch.float64, requires_grad=True)
        i = torch.tensor([0.5, 0.6, 0.7], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(sh_directional, (d, i), **GRADCHECK)

    def test_rejects_mismatched_shapes(self):
        with pytest.raises(ValueError, match="albedo and normals"):
            shade(torch.zeros(1, 4, 3), torch.zeros(1, 5, 3), torch.zeros(1, 9, 3))
        with pytest.raises(ValueError, match="sh must be"):
            shade(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), torch.zeros(1, 4, 3))


def test_directional_constants_match_the_basis():
    """pi c0 Y_lm(d) divided by the basis' A_l Y_lm / (pi c0): the ratio is pi^2 c0^2 / A_l,
    i.e. 1/4, 3/8, 1 for l = 0, 1, 2 (the Funk-Hecke factors)."""
    d = _unit(torch.tensor([0.3, 0.5, 0.7]))
    ratio = sh_directional(d, 1.0)[:, 0] / sh_basis(d)
    expected = torch.tensor([1 / 4] + [3 / 8] * 3 + [1.0] * 5, dtype=torch.float64)
    _close(ratio, expected, msg="Funk-Hecke ratios")
    assert math.isclose(float(sh_directional(d, 2.0)[0, 1]), 0.5)
