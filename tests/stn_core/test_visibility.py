"""Visibility: the n_z > 0 test of the angle-weighted normals and the stricter depth-buffer
mode (the normals themselves: test_normals.py)."""

from __future__ import annotations

import math

import pytest
import torch
from stn_core.geometry import axis_angle_to_matrix, rotate
from stn_core.visibility import Visibility, depth_visibility, visibility

from tests.stn_core.test_normals import bowl, grid_faces


class TestVisibility:
    @pytest.mark.parametrize("mode", ["normals", "depth"])
    @pytest.mark.parametrize("concave", [False, True])
    def test_frontal_bowl_fully_visible(self, mode, concave):
        v = bowl(21, concave=concave)[None]
        vis = visibility(v, grid_faces(21), mode)
        assert vis.shape == (1, 441) and vis.dtype == torch.bool
        assert vis.all()

    @pytest.mark.parametrize("mode", ["normals", "depth"])
    def test_back_facing_bowl_invisible(self, mode):
        R = axis_angle_to_matrix(torch.tensor([[0.0, math.pi, 0.0]], dtype=torch.float64))
        v = rotate(bowl(21)[None], R)
        assert not visibility(v, grid_faces(21), mode).any()

    def test_conventions_winding_decides(self):
        """Reversed winding means normals towards -z: nothing faces the camera."""
        f = grid_faces(9)[:, [0, 2, 1]]
        assert not visibility(bowl(9)[None], f).any()

    def test_yawed_dome_hides_its_far_side(self):
        res = 21
        R = axis_angle_to_matrix(torch.tensor([[0.0, math.radians(70), 0.0]], dtype=torch.float64))
        vis = visibility(rotate(bowl(res, depth=50)[None], R), grid_faces(res)).reshape(res, res)
        # +yaw turns the face's front towards +x: the -x columns (col 0) come nearer.
        assert vis[:, :5].float().mean() > 0.9 and vis[:, -5:].float().mean() < 0.1

    def test_batch_and_float32(self):
        R = axis_angle_to_matrix(torch.tensor([[0.0, 0, 0], [0, math.pi, 0]]))
        v = rotate(bowl(9).float()[None].expand(2, -1, -1), R)
        vis = visibility(v, grid_faces(9))
        assert vis[0].all() and not vis[1].any()

    def test_depth_batch_items_independent(self):
        """An image's depth visibility does not depend on the rest of its batch."""
        r = torch.tensor([[0.0, 1.2, 0.0], [0.3, -0.8, 0.1], [0.0, 0.0, 0.0]], dtype=torch.float64)
        v = rotate(bowl(15, depth=60)[None].expand(3, -1, -1), axis_angle_to_matrix(r))
        v = v * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)[:, None, None]  # sizes differ
        together = visibility(v, grid_faces(15), "depth")
        alone = torch.cat([visibility(v[i : i + 1], grid_faces(15), "depth") for i in range(3)])
        assert torch.equal(together, alone)

    def test_no_gradient(self):
        v = bowl(5)[None].clone().requires_grad_()
        out = visibility(v, grid_faces(5), "depth")
        assert not out.requires_grad
        assert not Visibility(grid_faces(5))(v).requires_grad

    def test_depth_mode_occlusion(self):
        """A small plate hovering in front of a larger one hides the vertices behind it only
        in depth mode."""
        res = 11
        back = bowl(res, depth=0.0)  # flat plate at z = 0, 100 mm wide
        front = bowl(res, depth=0.0) * torch.tensor([0.3, 0.3, 1.0], dtype=torch.float64)
        front[:, 2] = 40.0
        v = torch.cat([back, front])[None]
        f = torch.cat([grid_faces(res), grid_faces(res) + res * res])
        assert visibility(v, f, "normals").all()
        vis = visibility(v, f, "depth")[0]
        assert vis[res * res :].all()  # the front plate is all visible
        xy = back[:, :2].abs()
        hidden = (xy < 13).all(1)  # behind the 30 mm front plate, with a margin
        clear = (xy > 17).any(1)
        assert not vis[: res * res][hidden].any()
        assert vis[: res * res][clear].all()

    def test_depth_keeps_steep_front_faces(self):
        """Vertices on a steep but front-facing slope are not occluded by their own surface."""
        res = 25
        u = torch.linspace(-1, 1, res, dtype=torch.float64)
        y, x = torch.meshgrid(-u, u, indexing="ij")
        z = -200 * x  # about 76 degrees from the view direction, facing the camera
        v = torch.stack([50 * x, 50 * y, z], -1).reshape(1, -1, 3)
        assert depth_visibility(v, grid_faces(res)).all()

    def test_awkward_bad_mode(self):
        with pytest.raises(ValueError, match="normals"):
            visibility(bowl(3)[None], grid_faces(3), "zbuffer")
