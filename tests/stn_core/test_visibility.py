"""Visibility: angle-weighted vertex normals accumulated over all faces, the n_z > 0 test,
and the stricter depth-buffer mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_core.geometry import axis_angle_to_matrix, rotate
from stn_core.visibility import Visibility, depth_visibility, vertex_normals, visibility

from tests.tolerances import GRADCHECK, TOL

F64 = TOL[np.float64]


def _close(a, b, tol=F64, msg=None):
    torch.testing.assert_close(a, b, rtol=tol[0], atol=tol[1], msg=msg)


def grid_faces(res: int) -> torch.Tensor:
    """Two triangles per cell of a res x res grid (row 0 at the top, y up), counter-clockwise
    seen from +z (the orientation the artifact promises)."""
    k = torch.arange(res * res).reshape(res, res)[:-1, :-1].reshape(-1)
    return torch.cat(
        [torch.stack([k, k + res, k + 1], 1), torch.stack([k + 1, k + res, k + res + 1], 1)]
    )


def bowl(res: int = 21, depth: float = 30.0, concave: bool = False) -> torch.Tensor:
    """A dome (convex towards the camera, like a face) or a bowl on a res x res grid, mm."""
    u = torch.linspace(-1, 1, res, dtype=torch.float64)
    y, x = torch.meshgrid(-u, u, indexing="ij")  # row 0 at the top: y = +1
    z = depth * (x**2 + y**2) * (1 if concave else -1)
    return torch.stack([50 * x, 50 * y, z], -1).reshape(-1, 3)


def _loop_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Angle-weighted normals with explicit loops (independent of the library)."""
    out = np.zeros_like(v)
    for tri in f:
        p = v[tri]
        n = np.cross(p[1] - p[0], p[2] - p[0])
        n = n / np.linalg.norm(n)
        for i in range(3):
            a, b = p[(i + 1) % 3] - p[i], p[(i + 2) % 3] - p[i]
            ang = math.acos(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
            out[tri[i]] += ang * n
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class TestVertexNormals:
    def test_smoke(self):
        v = bowl(5)
        n = vertex_normals(v, grid_faces(5))
        assert n.shape == (25, 3) and n.dtype == torch.float64
        _close(n.norm(dim=-1), torch.ones(25, dtype=torch.float64))

    def test_accumulates_over_all_incident_faces(self):
        """A pyramid apex shared by four faces: its normal is the angle-weighted sum of all
        four face normals (straight up), not the last face's."""
        v = torch.tensor(
            [[0, 0, 1], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], dtype=torch.float64
        )
        f = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1]])
        n = vertex_normals(v, f)
        _close(n[0], torch.tensor([0, 0, 1], dtype=torch.float64))
        single = vertex_normals(v, f[-1:])[0]
        assert abs(single[0]) > 0.5 or abs(single[1]) > 0.5  # one face alone tilts it

    def test_against_loops(self):
        g = torch.Generator().manual_seed(0)
        v = bowl(6) + torch.randn(36, 3, generator=g, dtype=torch.float64)
        f = grid_faces(6)
        _close(vertex_normals(v, f), torch.from_numpy(_loop_normals(v.numpy(), f.numpy())))

    def test_batch(self):
        v = torch.stack(
            [
                bowl(6),
                rotate(
                    bowl(6)[None],
                    axis_angle_to_matrix(torch.tensor([[0.3, 0.2, 0.1]], dtype=torch.float64)),
                )[0],
            ]
        )
        n = vertex_normals(v, grid_faces(6))
        _close(n[1], vertex_normals(v[1], grid_faces(6)))

    def test_rotation_equivariant(self):
        R = axis_angle_to_matrix(torch.tensor([0.4, -0.7, 0.2], dtype=torch.float64))
        v = bowl(7)
        _close(vertex_normals(v @ R.T, grid_faces(7)), vertex_normals(v, grid_faces(7)) @ R.T)

    def test_gradcheck(self):
        g = torch.Generator().manual_seed(1)
        v = (bowl(4) + torch.randn(16, 3, generator=g, dtype=torch.float64)).requires_grad_()
        assert torch.autograd.gradcheck(
            lambda x: vertex_normals(x, grid_faces(4)), (v,), **GRADCHECK
        )

    def test_awkward_degenerate_face_and_unused_vertex(self):
        v = torch.tensor(
            [[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [5, 5, 5]], dtype=torch.float64
        )
        f = torch.tensor([[0, 1, 2], [0, 1, 3]])  # the second face has zero area
        n = vertex_normals(v, f)
        assert torch.isfinite(n).all()
        _close(n[3], torch.zeros(3, dtype=torch.float64))
        _close(n[4], torch.zeros(3, dtype=torch.float64))
        _close(n[0], torch.tensor([0, 0, 1.0], dtype=torch.float64))


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
