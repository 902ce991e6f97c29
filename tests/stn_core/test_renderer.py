"""The renderer: Gouraud interpolation, agreement with project_theta, colour, lighting and
background, the drawn faces, and vertex visibility (the rasteriser under it:
test_rasterizer.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_core import StnError, UVGridModel, initial_theta, project_theta
from stn_core.renderer import GREY, render, render_mesh
from stn_core.shading import sh_ambient, sh_directional

from tests.stn_core.test_rasterizer import grid_faces, signed_area
from tests.tolerances import DEVICE_MASK_PIXELS, TOL

F32 = TOL[np.float32]
F64 = TOL[np.float64]


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
        if signed_area(pts[0], f[:1]) > 0:
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
        f = f[:, [0, 2, 1]] if signed_area(v, f[:1]) > 0 else f
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
