"""Vertex normals: angle-weighted, accumulated over all incident faces, and their exact
Jacobian in the vertex positions (against central differences)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_core import UVGridModel
from stn_core.geometry import axis_angle_to_matrix, rotate
from stn_core.normals import normals_and_jacobian, one_ring, vertex_normals

from tests.stn_core.synthetic_faces import RES, synthetic_colour_model
from tests.tolerances import FD_STEP, FD_TOL, GRADCHECK, TOL

F64 = TOL[np.float64]
RTOL64, ATOL64 = F64
FD_RTOL, FD_ATOL = FD_TOL  # central differences with FD_STEP, on smooth rows


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> UVGridModel:
    """A small grid model through bfm-prep's own pipeline (a realistic face mesh)."""
    return synthetic_colour_model(tmp_path_factory.mktemp("synth"))


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


@pytest.mark.usefixtures("one_torch_thread")
class TestNormalsJacobian:
    def test_normals_are_vertex_normals_and_jacobian_matches_differences(self, model):
        g = torch.Generator().manual_seed(1)
        x = model.shape(0.5 * torch.randn(2, model.n_components, generator=g, dtype=torch.float64))
        faces = model.faces
        normals, jac = normals_and_jacobian(x, faces)
        torch.testing.assert_close(normals, vertex_normals(x, faces), rtol=RTOL64, atol=ATOL64)
        ring = one_ring(faces, model.n_vertices)
        for vertex in (0, RES * RES // 2 + 3, 5 * RES + 17, model.n_vertices - 1):
            for axis in range(3):
                xp, xm = x.clone(), x.clone()
                xp[:, vertex, axis] += FD_STEP
                xm[:, vertex, axis] -= FD_STEP
                fd = (vertex_normals(xp, faces) - vertex_normals(xm, faces)) / (2 * FD_STEP)
                hit = (ring.index == vertex).to(x.dtype)  # (N, S); padded slots carry zeros
                an = torch.einsum("ns,bnsi->bni", hit, jac[..., axis])
                torch.testing.assert_close(an, fd, rtol=FD_RTOL, atol=FD_ATOL)
