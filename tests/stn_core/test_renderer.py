"""The z-buffer rasteriser and renderer: coverage against analytic triangles, the fill rule,
depth order, culling, interpolation, agreement with project_theta, visibility, and the pixel
by triangle reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_core import StnError, UVGridModel, initial_theta, project_theta
from stn_core.renderer import (
    GREY,
    rasterize,
    rasterize_reference,
    render,
    render_mesh,
)
from stn_core.shading import sh_ambient, sh_directional

from tests.tolerances import DEVICE_MASK_PIXELS, TOL

F32 = TOL[np.float32]
F64 = TOL[np.float64]


def grid_faces(res: int) -> torch.Tensor:
    """Two triangles per cell of a res x res grid (row 0 at the top, y up), counter-clockwise
    seen from +z, in the artifact's order: cell by cell, [k, k + R, k + 1] then
    [k + R + 1, k + 1, k + R] (a pair sharing the cell's diagonal)."""
    k = torch.arange(res * res).reshape(res, res)[:-1, :-1].reshape(-1)
    first = torch.stack([k, k + res, k + 1], 1)
    second = torch.stack([k + res + 1, k + 1, k + res], 1)
    return torch.stack([first, second], 1).reshape(-1, 3)


# AFLW-21 landmarks of face_like_model as (row, col) fractions of the grid: brows, eyes, ears,
# nose, mouth, chin (column 0 is the subject's right, the viewer's left).
AFLW21_ROWCOL = [
    (0.28, 0.18),
    (0.25, 0.28),
    (0.27, 0.40),
    (0.27, 0.60),
    (0.25, 0.72),
    (0.28, 0.82),
    (0.38, 0.22),
    (0.38, 0.31),
    (0.38, 0.40),
    (0.38, 0.60),
    (0.38, 0.69),
    (0.38, 0.78),
    (0.50, 0.02),
    (0.58, 0.42),
    (0.56, 0.50),
    (0.58, 0.58),
    (0.50, 0.98),
    (0.74, 0.38),
    (0.74, 0.50),
    (0.74, 0.62),
    (0.93, 0.50),
]


def face_like_model(
    res: int = 32, color: bool = False, corners_outside: bool = True, dtype=torch.float32
) -> UVGridModel:
    """A small face-like grid model: an ellipsoidal cap (150 x 190 x 60 mm) with a nose, two
    identity and two expression components, AFLW-21 landmarks, optionally a colour model;
    the 2 x 2 corner blocks of the grid are outside the mesh."""
    u = torch.linspace(-1, 1, res, dtype=torch.float64)
    y, x = torch.meshgrid(-u, u, indexing="ij")  # row 0 at the top (y = +1)
    cap = torch.sqrt((1 - 0.55 * x**2 - 0.45 * y**2).clamp_min(0.05))
    nose = torch.exp(-(x**2 + (y + 0.1) ** 2 * 0.6) / 0.02)
    z = 60 * cap + 22 * nose
    mean = torch.stack([75 * x, 95 * y, z], -1).reshape(-1, 3)
    one = torch.ones_like(x)
    zero = torch.zeros_like(x)
    comps = [
        torch.stack([6 * x, zero, zero], -1),  # identity: wider
        torch.stack([zero, zero, 6 * cap], -1),  # identity: deeper
        torch.stack([zero, -4 * torch.exp(-((y + 0.45) ** 2) / 0.02) * one, zero], -1),  # mouth
        torch.stack([zero, 3 * torch.exp(-((y - 0.45) ** 2) / 0.02) * one, zero], -1),  # brows
    ]
    basis = torch.stack([c.reshape(-1, 3) for c in comps], -1)
    inside = torch.ones(res, res, dtype=torch.bool)
    if corners_outside:
        for r0 in (0, res - 2):
            for c0 in (0, res - 2):
                inside[r0 : r0 + 2, c0 : c0 + 2] = False
    lm = [round(r * (res - 1)) * res + round(c * (res - 1)) for r, c in AFLW21_ROWCOL]
    kw = {}
    if color:
        skin = torch.tensor([0.8, 0.6, 0.5], dtype=torch.float64)
        cmean = skin.expand(res * res, 3).clone()
        cbasis = torch.stack(
            [
                torch.tensor([0.05, 0.04, 0.03], dtype=torch.float64).expand(res * res, 3),
                (0.05 * x.reshape(-1, 1)) * torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64),
            ],
            -1,
        )
        kw = dict(color_mean=cmean, color_basis=cbasis)
    return UVGridModel.from_arrays(
        mean,
        basis,
        grid_faces(res),
        res,
        n_identity=2,
        inside=inside.reshape(-1),
        landmarks={"aflw21": lm},
        dtype=dtype,
        **kw,
    )


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
        f = f[:, [0, 2, 1]] if _signed_area(v, f[:1]) > 0 else f
        hits = torch.zeros(40, 48, dtype=torch.int64)
        for k in range(f.shape[0]):
            hits += (rasterize(v[None], f[k : k + 1], (40, 48)).face[0] >= 0).long()
        expected = torch.zeros(40, 48, dtype=torch.int64)
        expected[2:34, 3:43] = 1
        assert torch.equal(hits, expected)
        assert torch.equal((rasterize(v[None], f, (40, 48)).face[0] >= 0).long(), expected)


def _signed_area(v, f):
    p = v[f[0]]
    d1, d2 = p[1] - p[0], p[2] - p[0]
    return float(d1[0] * d2[1] - d1[1] * d2[0])


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
        assert _signed_area(v[0], front) < 0  # counter-clockwise seen from the front
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
    def test_linear_colours_are_exact(self):
        """Colours linear in the image position come out exactly as that function at every
        covered pixel centre (Gouraud with the pixel's barycentrics)."""
        res = 6
        g = torch.Generator().manual_seed(2)
        ys, xs = torch.meshgrid(
            torch.linspace(3, 27, res, dtype=torch.float64),
            torch.linspace(2, 29, res, dtype=torch.float64),
            indexing="ij",
        )
        pts = torch.stack([xs, ys], -1).reshape(1, -1, 2)
        pts = pts + (torch.rand(pts.shape, generator=g, dtype=torch.float64) - 0.5)
        depth = torch.rand(1, res * res, 1, generator=g, dtype=torch.float64)
        rotated = torch.cat([pts[..., :1], -pts[..., 1:], depth], -1)  # model axes: y up

        def colour(p):
            return torch.stack(
                [
                    0.01 * p[..., 0] + 0.1,
                    0.02 * p[..., 1] + 0.05,
                    0.005 * (p[..., 0] + p[..., 1]) + 0.3,
                ],
                -1,
            )

        f = grid_faces(res)
        if _signed_area(pts[0], f[:1]) > 0:
            f = f[:, [0, 2, 1]]
        out = render_mesh(pts, rotated, f, colour(pts), (32, 32))
        mask = out.mask[0, 0]
        assert mask.sum() > 400
        yy, xx = torch.meshgrid(
            torch.arange(32.0, dtype=torch.float64),
            torch.arange(32.0, dtype=torch.float64),
            indexing="ij",
        )
        expected = colour(torch.stack([xx, yy], -1)).permute(2, 0, 1)
        # Colours in [0, 1]: float64's absolute tolerance alone.
        torch.testing.assert_close(out.image[0][:, mask], expected[:, mask], rtol=0, atol=F64[1])

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


class TestRender:
    def test_projection_agrees_with_project_theta(self):
        """A planar model turned about the view axis: model (x, y) -> image is affine, so a
        colour linear in the model's x and y must appear, at every covered pixel, as that
        function of the point that project_theta maps to the pixel centre."""
        res = 12
        u = torch.linspace(-1, 1, res, dtype=torch.float64)
        y, x = torch.meshgrid(-u, u, indexing="ij")
        mean = torch.stack([40 * x, 30 * y, torch.zeros_like(x)], -1).reshape(-1, 3)
        model = UVGridModel.from_arrays(
            mean, torch.zeros(res * res, 3, 0), grid_faces(res), dtype=torch.float64
        )
        theta = initial_theta(1, 0, 48, 64, log_s=math.log(0.5), dtype=torch.float64)
        theta[0, 2] = 0.4  # roll
        theta[0, 3:5] += torch.tensor([2.3, -1.7], dtype=torch.float64)
        colors = torch.stack(
            [
                (mean[:, 0] + 40) / 80,
                (mean[:, 1] + 30) / 60,
                torch.full((res * res,), 0.5, dtype=torch.float64),
            ],
            -1,
        )[None]
        out = render(model, theta, colors, (48, 64))
        points, _ = project_theta(theta, model.mean, model.basis)
        # The affine map model (x, y) -> pixel from three vertices, inverted at the pixels.
        a = torch.cat([mean[:, :2], torch.ones(res * res, 1, dtype=torch.float64)], 1)
        affine = torch.linalg.lstsq(a, points[0]).solution  # (3, 2)
        mask = out.mask[0, 0]
        yy, xx = torch.nonzero(mask, as_tuple=True)
        pix = torch.stack([xx, yy], -1).double()
        model_xy = torch.linalg.solve(affine[:2].T, (pix - affine[2]).T).T
        expected = torch.stack([(model_xy[:, 0] + 40) / 80, (model_xy[:, 1] + 30) / 60], 0)
        assert mask.sum() > 500
        torch.testing.assert_close(out.image[0, :2][:, mask], expected, rtol=F64[0], atol=F64[1])
        # And the vertex positions: a vertex's pixel is covered (or it lies on the outline).
        inner = points[0].reshape(res, res, 2)[1:-1, 1:-1].reshape(-1, 2)
        r, c = inner[:, 1].round().long(), inner[:, 0].round().long()
        assert mask[r, c].all()

    def test_frontal_face_is_upright_and_symmetric(self):
        model = face_like_model(32)
        theta = initial_theta(1, model.n_components, 64, 64, log_s=math.log(0.28))
        # Colours linear in the model's y are linear in the image's y (frontal, orthographic):
        # exact whatever the triangulation, so the picture must be exactly symmetric.
        top = (model.mean[:, 1] + 95) / 190
        colors = torch.stack([top, 1 - top, torch.full_like(top, 0.5)], -1)[None]
        out = render(model, theta, colors, (64, 64))
        mask = out.mask[0, 0]
        img = out.image[0]
        rows = torch.nonzero(mask.any(1))[:, 0]
        first, last = int(rows.min()), int(rows.max())
        # Upright: model y up -> the red (top) half at the top of the image.
        assert img[0, first + 1][mask[first + 1]].mean() > 0.85
        assert img[1, last - 1][mask[last - 1]].mean() > 0.85
        # Symmetric about the centre column (the model and the ambient light are).
        flipped = mask.flip(-1)
        assert (mask ^ flipped).sum() <= 0.01 * mask.sum()
        both = mask & flipped
        # Colours in [0, 1]: float32's absolute tolerance alone.
        torch.testing.assert_close(img[:, both], img.flip(-1)[:, both], rtol=0, atol=F32[1])

    def test_default_colour_and_lighting(self):
        model = face_like_model(16)
        theta = initial_theta(2, model.n_components, 32, 32, log_s=math.log(0.15))
        out = render(model, theta, image_size=(32, 32))
        assert out.image.shape == (2, 3, 32, 32) and out.mask.shape == (2, 1, 32, 32)
        assert out.depth.shape == (2, 1, 32, 32) and out.vertex_visible.shape == (2, 256)
        m = out.mask[0, 0]
        torch.testing.assert_close(out.image[0][:, m], torch.full((3, int(m.sum())), GREY))
        assert (out.image[0][:, ~m] == 0).all()
        assert torch.equal(out.mask, torch.isfinite(out.depth))
        colored = face_like_model(16, color=True)
        out = render(colored, theta, image_size=(32, 32))
        torch.testing.assert_close(
            out.image[0][:, m].mean(1), torch.tensor([0.8, 0.6, 0.5]), rtol=F32[0], atol=F32[1]
        )

    def test_lighting_and_background(self):
        model = face_like_model(16)
        theta = initial_theta(1, model.n_components, 32, 32, log_s=math.log(0.15))
        bg = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
        keep = bg.clone()
        sh = sh_ambient(0.3) + sh_directional(torch.tensor([0.0, 0.0, 1.0]), 0.6)
        out = render(model, theta, image_size=(32, 32), sh=sh[None], background=bg)
        assert torch.equal(bg, keep)  # the caller's background is not written to
        m = out.mask[0, 0]
        assert torch.equal(out.image[0][:, ~m], bg[0][:, ~m])
        # A light from the camera: up to 0.3 + 0.6 * 1.0625 where the surface faces it, darker
        # at the rim.
        lit = out.image[0, 0][m]
        assert GREY * 0.85 < lit.max() <= GREY * (0.3 + 0.6 * 1.0625) + F32[1]
        assert lit.min() < lit.max() - 0.1

    def test_outside_faces_are_not_drawn(self):
        model = face_like_model(16)
        assert model.drawn_faces.shape[0] < model.faces.shape[0]
        assert bool(model.inside[model.drawn_faces].all())
        theta = initial_theta(1, model.n_components, 40, 40, log_s=math.log(0.2))
        points, _ = project_theta(theta, model.mean, model.basis)
        out = render(model, theta, image_size=(40, 40))
        corner = points[0, 0]  # vertex (0, 0): its 2 x 2 block is outside the mesh
        assert not out.mask[0, 0, int(corner[1].round()) + 1, int(corner[0].round()) + 1]
        assert not out.vertex_visible[0, 0]

    def test_float64_and_batch(self):
        model = face_like_model(16, dtype=torch.float64)
        theta = initial_theta(
            3, model.n_components, 32, 32, log_s=math.log(0.15), dtype=torch.float64
        )
        theta[:, 1] = torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64)
        out = render(model, theta, image_size=(32, 32))
        assert out.image.dtype == torch.float64 and out.depth.dtype == torch.float64
        for i in range(3):
            one = render(model, theta[i : i + 1], image_size=(32, 32))
            assert torch.equal(one.mask[0], out.mask[i])
            torch.testing.assert_close(one.image[0], out.image[i])
            assert torch.equal(one.vertex_visible[0], out.vertex_visible[i])

    def test_rejects_bad_inputs(self):
        model = face_like_model(16)
        theta = initial_theta(1, model.n_components, 32, 32)
        with pytest.raises(StnError, match="theta has"):
            render(model, theta[:, :-1], image_size=(32, 32))
        with pytest.raises(StnError, match="background must be"):
            render(model, theta, image_size=(32, 32), background=torch.zeros(1, 3, 16, 16))
        with pytest.raises(StnError, match="colors must be"):
            render(model, theta, torch.zeros(1, 5, 3), image_size=(32, 32))
        with pytest.raises(StnError, match="image_size"):
            render(model, theta, image_size=(0, 32))

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    def test_cuda_matches_cpu(self):
        model = face_like_model(32)
        theta = initial_theta(4, model.n_components, 64, 64, log_s=math.log(0.28))
        theta[:, 1] = torch.linspace(-1, 1, 4)
        cpu = render(model, theta, image_size=(64, 64))
        gpu = render(model.to("cuda"), theta.cuda(), image_size=(64, 64))
        assert (cpu.mask != gpu.mask.cpu()).sum() <= DEVICE_MASK_PIXELS
        assert (cpu.vertex_visible != gpu.vertex_visible.cpu()).sum() <= DEVICE_MASK_PIXELS


class TestVertexVisibility:
    def test_frontal_all_front_vertices_visible(self):
        model = face_like_model(32)
        theta = initial_theta(1, model.n_components, 64, 64, log_s=math.log(0.28))
        out = render(model, theta, image_size=(64, 64))
        # Specification: nearly all (all of them here; the bound spares the grazing rim).
        assert out.vertex_visible[0][model.inside].float().mean() > 0.97

    def test_far_side_hidden_at_large_yaw(self):
        """Positive yaw turns the face towards +x: the +x side (the subject's left) goes to
        the far side and its ear landmark is hidden, the other one visible."""
        model = face_like_model(32)
        theta = initial_theta(1, model.n_components, 64, 64, log_s=math.log(0.28))
        theta[0, 1] = math.radians(70)
        out = render(model, theta, image_size=(64, 64))
        lm = model.landmarks["aflw21"]
        vis = out.vertex_visible[0]
        assert not vis[lm[16]] and vis[lm[12]]
        far = model.inside & (model.mean[:, 0] > 60)
        near = model.inside & (model.mean[:, 0] < -20) & (model.mean[:, 1].abs() < 60)
        # Specification: nearly none of the far side, most of the near side (0 and 100 % here).
        assert vis[far].float().mean() < 0.05
        assert vis[near].float().mean() > 0.9

    def test_visible_for_a_subset(self):
        model = face_like_model(32)
        theta = initial_theta(2, model.n_components, 64, 64, log_s=math.log(0.28))
        theta[:, 1] = torch.tensor([0.3, 1.2])
        points, rotated = project_theta(theta, model.mean, model.basis)
        colors = torch.full_like(rotated, 0.5)
        lm = model.landmarks["aflw21"]
        full = render_mesh(
            points, rotated, model.drawn_faces, colors, (64, 64), inside=model.inside
        )
        some = render_mesh(
            points,
            rotated,
            model.drawn_faces,
            colors,
            (64, 64),
            inside=model.inside,
            visible_for=lm,
        )
        assert some.vertex_visible.shape == (2, 21)
        assert torch.equal(some.vertex_visible, full.vertex_visible[:, lm])
        assert torch.equal(some.image, full.image)

    def test_occluded_by_a_nearer_plane(self):
        """Vertices of a plane behind another are hidden exactly where they are covered."""
        res = 5
        u = torch.linspace(0, 1, res, dtype=torch.float64)
        yy, xx = torch.meshgrid(u, u, indexing="ij")
        back = torch.stack([4 + 24 * xx, 4 + 24 * yy, torch.full_like(xx, 1.0)], -1)
        front = torch.stack([16 + 14 * xx, 2 + 14 * yy, torch.full_like(xx, 9.0)], -1)
        v = torch.cat([back.reshape(-1, 3), front.reshape(-1, 3)])
        f = grid_faces(res)
        f = f[:, [0, 2, 1]] if _signed_area(v, f[:1]) > 0 else f
        faces = torch.cat([f, f + res * res])
        points = v[None, :, :2]
        rotated = v * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)  # model axes: y up
        out = render_mesh(
            points,
            rotated[None],
            faces,
            torch.full((1, 2 * res * res, 3), 0.5),
            (32, 32),
            pixels_per_mm=torch.ones(1, dtype=torch.float64),
        )
        vis = out.vertex_visible[0, : res * res].reshape(res, res)
        under = (back[..., 0] > 16.5) & (back[..., 0] < 29.5) & (back[..., 1] < 15.5)
        assert not vis[under].any()
        assert vis[~under & (back[..., 0] < 15)].all()
        assert out.vertex_visible[0, res * res :].all()
