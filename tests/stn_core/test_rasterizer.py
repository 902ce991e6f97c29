"""The z-buffer rasteriser: coverage against analytic triangles, the fill rule, depth order,
culling, interpolation of barycentrics and depth, and the pixel by triangle reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_core.rasterizer import rasterize, rasterize_reference

from tests.tolerances import TOL

F64 = TOL[np.float64]


def grid_faces(res: int) -> torch.Tensor:
    """Two triangles per cell of a res x res grid (row 0 at the top, y up), counter-clockwise
    seen from +z, in the artifact's order: cell by cell, [k, k + R, k + 1] then
    [k + R + 1, k + 1, k + R] (a pair sharing the cell's diagonal)."""
    k = torch.arange(res * res).reshape(res, res)[:-1, :-1].reshape(-1)
    first = torch.stack([k, k + res, k + 1], 1)
    second = torch.stack([k + res + 1, k + 1, k + res], 1)
    return torch.stack([first, second], 1).reshape(-1, 3)


def _tri(points, z=None):
    """(1, 3, 3) vertices from three (x, y) pixel positions (z 0 unless given)."""
    p = torch.tensor(points, dtype=torch.float64)
    z = torch.zeros(3, 1, dtype=torch.float64) if z is None else torch.tensor(z)[:, None]
    return torch.cat([p, z.double()], 1)[None]


def _inside_analytic(points, h, w):
    """(H, W) bool: pixel centres strictly inside the triangle, by float64 half-plane tests
    written independently of the library."""
    p = np.asarray(points, dtype=np.float64)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sign = None
    ok = np.ones((h, w), bool)
    for i in range(3):
        a, b = p[i], p[(i + 1) % 3]
        s = (b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0])
        if sign is None:
            c = p[(i + 2) % 3]
            sign = np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
        ok &= s * sign > 0
    return ok


def signed_area(v, f):
    """Signed area of face f[0] of v in (x, y), y down: negative when counter-clockwise seen
    from the front."""
    p = v[f[0]]
    d1, d2 = p[1] - p[0], p[2] - p[0]
    return float(d1[0] * d2[1] - d1[1] * d2[0])


class TestRasterizeCoverage:
    # Counter-clockwise seen from the front (y up) = negative signed area with y down.
    TRI = [(3.3, 4.1), (10.7, 57.9), (58.2, 30.6)]

    def test_big_triangle_matches_analytic_coverage(self):
        frags = rasterize(_tri(self.TRI), torch.tensor([[0, 1, 2]]), (64, 64))
        expected = _inside_analytic(self.TRI, 64, 64)
        got = (frags.face[0] >= 0).numpy()
        assert expected.sum() > 1000
        np.testing.assert_array_equal(got, expected)

    def test_many_sizes_against_reference(self):
        """Triangle soups from sub-pixel to larger than the image, all window classes and the
        exact path, with depths: same winning face as the pixel-by-triangle reference."""
        g = torch.Generator().manual_seed(0)
        for scale in (1.5, 3.0, 7.0, 20.0, 90.0):
            n = 40
            centre = torch.rand(2, n, 1, 2, generator=g, dtype=torch.float64) * torch.tensor(
                [50.0, 40.0], dtype=torch.float64
            )
            offset = torch.rand(2, n, 3, 2, generator=g, dtype=torch.float64) - 0.5
            corners = centre + offset * scale
            depth = torch.rand(2, n, 3, 1, generator=g, dtype=torch.float64) * 10
            v = torch.cat([corners, depth], -1).reshape(2, 3 * n, 3)
            f = torch.arange(3 * n).reshape(n, 3)
            fast = rasterize(v, f, (40, 50))
            ref = rasterize_reference(v, f, (40, 50))
            bad = (fast.face != ref.face).nonzero()
            assert bad.numel() == 0, f"scale {scale}: mismatches at {bad[:5].tolist()}"
            assert (fast.face >= 0).sum() > 0
            torch.testing.assert_close(fast.bary, ref.bary, rtol=0, atol=0)

    def test_grid_quads_with_folds_against_reference(self):
        """Grid meshes in the artifact's face order (cells rasterised as quads), jittered so
        that cells fold over (one triangle back-facing) and overlap at random depths: same
        winning face as the reference, triangle by triangle."""
        res = 12
        g = torch.Generator().manual_seed(3)
        ys, xs = torch.meshgrid(
            torch.linspace(2, 40, res, dtype=torch.float64),
            torch.linspace(3, 45, res, dtype=torch.float64),
            indexing="ij",
        )
        f = grid_faces(res)  # front-facing in these y-down pixel coordinates
        for _ in range(3):
            jitter = (torch.rand(res, res, 2, generator=g, dtype=torch.float64) - 0.5) * 6
            z = torch.rand(res, res, 1, generator=g, dtype=torch.float64) * 20
            v = torch.cat([torch.stack([xs, ys], -1) + jitter, z], -1).reshape(1, -1, 3)
            fast = rasterize(v, f, (44, 48))
            ref = rasterize_reference(v, f, (44, 48))
            bad = (fast.face != ref.face).nonzero()
            assert bad.numel() == 0, f"mismatches at {bad[:5].tolist()}"

    def test_large_quad(self):
        """A single cell larger than every window: its two triangles are enumerated exactly."""
        v = torch.tensor(
            [[[3.2, 2.7, 0], [51.6, 4.1, 1], [2.4, 41.9, 2], [50.3, 44.8, 3]]], dtype=torch.float64
        )
        f = grid_faces(2)
        fast = rasterize(v, f, (48, 56))
        ref = rasterize_reference(v, f, (48, 56))
        assert torch.equal(fast.face, ref.face)
        assert (fast.face[0] == 0).sum() > 500 and (fast.face[0] == 1).sum() > 500

    def test_top_left_rule_on_an_axis_aligned_square(self):
        """Square [2, 10] x [3, 9] (pixel centres on its edges): left and top edges belong to
        it, right and bottom ones do not; the diagonal's centres go to exactly one triangle."""
        v = torch.tensor([[2, 3, 0], [10, 3, 0], [2, 9, 0], [10, 9, 0]], dtype=torch.float64)
        f = torch.tensor([[0, 2, 1], [1, 2, 3]])  # counter-clockwise seen from the front
        frags = rasterize(v[None], f, (12, 12))
        expected = torch.zeros(12, 12, dtype=torch.bool)
        expected[3:9, 2:10] = True
        assert torch.equal(frags.face[0] >= 0, expected)
        # Each triangle alone: their coverages are disjoint and add up to the square.
        a = rasterize(v[None], f[:1], (12, 12)).face[0] >= 0
        b = rasterize(v[None], f[1:], (12, 12)).face[0] >= 0
        assert not (a & b).any() and torch.equal(a | b, expected)

    def test_watertight_jittered_grid(self):
        """A grid mesh with jittered interior vertices covers the pixel centres of its fixed
        rectangular outline exactly once (no cracks, no double coverage)."""
        res = 9
        g = torch.Generator().manual_seed(1)
        ys, xs = torch.meshgrid(
            torch.linspace(2, 34, res, dtype=torch.float64),
            torch.linspace(3, 43, res, dtype=torch.float64),
            indexing="ij",
        )
        jitter = (torch.rand(res, res, 2, generator=g, dtype=torch.float64) - 0.5) * 3
        jitter[[0, -1], :, :] = 0
        jitter[:, [0, -1], :] = 0
        pts = torch.stack([xs, ys], -1) + jitter
        # y down in the image: reverse the rows so that "row 0 at the top" holds for faces
        v = torch.cat([pts.reshape(-1, 2), torch.zeros(res * res, 1, dtype=torch.float64)], 1)
        f = grid_faces(res)
        f = f[:, [0, 2, 1]] if signed_area(v, f[:1]) > 0 else f
        hits = torch.zeros(40, 48, dtype=torch.int64)
        for k in range(f.shape[0]):
            hits += (rasterize(v[None], f[k : k + 1], (40, 48)).face[0] >= 0).long()
        expected = torch.zeros(40, 48, dtype=torch.int64)
        expected[2:34, 3:43] = 1
        assert torch.equal(hits, expected)
        assert torch.equal((rasterize(v[None], f, (40, 48)).face[0] >= 0).long(), expected)


class TestDepthAndCulling:
    def _planes(self, order):
        """Two overlapping squares: A at z = 10 over [4, 20]^2, B at z = 20 over [12, 28]^2."""
        va = [[4, 4, 10], [20, 4, 10], [4, 20, 10], [20, 20, 10]]
        vb = [[12, 12, 20], [28, 12, 20], [12, 28, 20], [28, 28, 20]]
        v = torch.tensor(va + vb, dtype=torch.float64)
        fa = [[0, 2, 1], [1, 2, 3]]
        fb = [[4, 6, 5], [5, 6, 7]]
        f = torch.tensor(fa + fb if order == "ab" else fb + fa)
        return v, f

    @pytest.mark.parametrize("order", ["ab", "ba"])
    def test_nearer_plane_wins_whatever_the_order(self, order):
        v, f = self._planes(order)
        frags = rasterize(v[None], f, (32, 32))
        overlap = (slice(12, 20), slice(12, 20))
        torch.testing.assert_close(
            frags.depth[0][overlap], torch.full((8, 8), 20.0, dtype=torch.float64)
        )
        torch.testing.assert_close(
            frags.depth[0, 5:12, 5:12], torch.full((7, 7), 10.0, dtype=torch.float64)
        )
        assert torch.all(torch.isinf(frags.depth[0, 0:4, :]))
        near = [2, 3] if order == "ab" else [0, 1]
        assert torch.isin(frags.face[0][overlap], torch.tensor(near)).all()

    def test_back_faces_are_culled(self):
        v = _tri([(2, 2), (2, 20), (20, 11)])
        front = torch.tensor([[0, 1, 2]])
        assert signed_area(v[0], front) < 0  # counter-clockwise seen from the front
        assert (rasterize(v, front, (24, 24)).face >= 0).sum() > 50
        assert (rasterize(v, front[:, [0, 2, 1]], (24, 24)).face >= 0).sum() == 0

    def test_degenerate_and_nan_triangles_draw_nothing(self):
        v = torch.tensor([[[1, 1, 0], [5, 5, 0], [9, 9, 0], [math.nan, 2, 0]]])
        f = torch.tensor([[0, 2, 1], [0, 3, 1]])
        assert (rasterize(v, f, (12, 12)).face >= 0).sum() == 0

    def test_off_image_triangles(self):
        """Triangles partly or wholly outside the image: only the pixel centres inside it."""
        tri = [(-30.4, -20.2), (-25.1, 40.3), (40.6, 10.7)]
        frags = rasterize(_tri(tri), torch.tensor([[0, 1, 2]]), (16, 20))
        np.testing.assert_array_equal((frags.face[0] >= 0).numpy(), _inside_analytic(tri, 16, 20))
        far = _tri([(100.0, 100.0), (100.0, 130.0), (130.0, 110.0)])
        assert (rasterize(far, torch.tensor([[0, 1, 2]]), (16, 20)).face >= 0).sum() == 0


class TestInterpolation:
    def test_barycentrics_sum_to_one_and_reconstruct_the_pixel(self):
        v = _tri([(3.3, 4.1), (10.7, 57.9), (58.2, 30.6)], z=[1.0, 2.0, 3.0])
        frags = rasterize(v, torch.tensor([[0, 1, 2]]), (64, 64))
        m = frags.face[0] >= 0
        lam = frags.bary[0][m]
        _close = torch.testing.assert_close
        _close(lam.sum(-1), torch.ones(lam.shape[0], dtype=torch.float64))
        xy = lam @ v[0, :, :2]
        yy, xx = torch.nonzero(m, as_tuple=True)
        _close(xy, torch.stack([xx, yy], -1).double())
        _close(frags.depth[0][m], lam @ v[0, :, 2])
        assert (lam >= -F64[1]).all()
