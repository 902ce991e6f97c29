"""Self-occlusion visibility of the rotated grid mesh, computed in a batch on the device.

Two modes:

- ``"normals"`` (the original's test): a vertex is visible when its angle-weighted normal faces
  the camera. The camera looks along -z, so "faces the camera" is ``n_z > 0``. This needs faces
  wound counter-clockwise seen from the front (normals towards +z for a frontal face), which
  :class:`stn_core.UVGridModel` guarantees (it rewinds the original's ``model_112.mat`` faces,
  which are wound the other way; the original compensated with the opposite cross product).
- ``"depth"`` (stricter, not in the original): ``"normals"`` and, in addition, the vertex is
  not behind another part of the face (a nose in front of a cheek at large yaw). See
  :func:`depth_visibility` for the z-buffer and its tolerance.

Visibility is a mask: no gradient flows through it.
"""

from __future__ import annotations

import math

import torch

from stn_core.normals import vertex_normals

__all__ = ["visibility", "normal_visibility", "depth_visibility", "Visibility"]

MODES = ("normals", "depth")


@torch.no_grad()
def normal_visibility(rotated: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, N) bool: the angle-weighted normal of each rotated vertex has ``n_z > 0``.

    Args:
        rotated: (B, N, 3) rotated vertices (camera looking along -z). faces: (F, 3) long.
    """
    return vertex_normals(rotated.detach(), faces, normalize=False)[..., 2] > 0


@torch.no_grad()
def depth_visibility(
    rotated: torch.Tensor,
    faces: torch.Tensor,
    cell_size: float | None = None,
    tolerance: float = 0.5,
    max_cells: int = 1024,
) -> torch.Tensor:
    """(B, N) bool: ``n_z > 0`` and not hidden behind another part of the mesh (z-buffer).

    Method: the rotated mesh is rasterised orthographically (dropping z) into a depth buffer
    of square cells of side ``h`` (default: the median 3D edge length of each image's mesh, so
    a cell holds about one vertex). Every face writes the depth interpolated at each cell centre it
    covers (barycentric test, vectorised over faces and a window of cells around each face's
    bounding box) with ``scatter_reduce(amax)``: the buffer keeps the nearest surface (largest
    z). A vertex is occluded when the buffer at its cell is in front of it by more than

        tol = h * (tolerance + 0.75 * tan(angle between its normal and the view direction)),

    with the tangent capped at 10. The slope term allows for the vertex's own surface, whose
    depth at the cell centre differs from the vertex's by up to half a cell diagonal times the
    slope; real occluders (nose, cheek, chin at large angles) are in front by many cells.
    Cells no face covers count as empty. Faces wider than 16 cells (rare slivers) are
    rasterised only within a 16 x 16-cell window of their bounding box's corner.

    Args:
        rotated: (B, N, 3) rotated vertices, mm (y up, z towards the camera).
        faces: (F, 3) long, counter-clockwise seen from the front.
        cell_size: h in the units of ``rotated`` (None: each mesh's median edge length).
        tolerance: the constant part of the tolerance, in cells.
        max_cells: the buffer's side is at most this many cells (h grows if needed).
    """
    v = rotated.detach()
    f = faces.to(device=v.device, dtype=torch.long)
    b, n, _ = v.shape
    normals = vertex_normals(v, f, normalize=True)
    front = normals[..., 2] > 0
    if f.shape[0] == 0 or n == 0 or b == 0:
        return front
    acc = torch.promote_types(v.dtype, torch.float32)
    v = v.to(acc)
    # One cell size per image (not per batch), so an image's result does not depend on the
    # other images in its batch.
    if cell_size is None:
        edges = torch.cat([v[:, f[:, 1]] - v[:, f[:, 0]], v[:, f[:, 2]] - v[:, f[:, 1]]], 1)
        h = edges.norm(dim=-1).median(dim=1).values  # (B,)
    else:
        h = torch.full((b,), float(cell_size), dtype=acc, device=v.device)
    xy_min = v[..., :2].amin(1, keepdim=True)  # (B, 1, 2)
    extent = (v[..., :2].amax(1) - xy_min[:, 0]).amax(-1)  # (B,)
    h = torch.maximum(h, extent / (max_cells - 1)).clamp_min(1e-12)
    side = int((extent / h).floor().max()) + 2
    cells = (v[..., :2] - xy_min) / h[:, None, None]  # (B, N, 2); cell (i, j) centre (i+.5, j+.5)

    buf = torch.full((b, side * side), -math.inf, dtype=acc, device=v.device)
    # Rasterise a few images at a time so that the (images, faces, window cells) temporaries
    # stay around 2^25 elements whatever the batch size.
    tri_all = cells[:, f]  # (B, F, 3, 2)
    z_all = v[..., 2][:, f]  # (B, F, 3)
    lo_all = torch.floor(tri_all.amin(2)).long()  # (B, F, 2)
    span = int((torch.floor(tri_all.amax(2)).long() - lo_all).max().clamp(0, 15)) + 1
    off = torch.arange(span, device=v.device)
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    win = torch.stack([ox.reshape(-1), oy.reshape(-1)], -1)  # (S, 2)
    chunk = max(1, (1 << 25) // (f.shape[0] * win.shape[0]))
    for s0 in range(0, b, chunk):
        sl = slice(s0, s0 + chunk)
        _rasterise_depth(buf[sl], tri_all[sl], z_all[sl], lo_all[sl], win, side)

    vc = torch.floor(cells).long().clamp(0, side - 1)
    zb = buf.gather(1, vc[..., 1] * side + vc[..., 0])  # (B, N)
    nz = normals[..., 2].to(acc).clamp_min(0.0995)  # tan capped at 10
    tan = torch.sqrt((1 - nz * nz).clamp_min(0)) / nz
    tol = h[:, None] * (tolerance + 0.75 * tan)
    unoccluded = v[..., 2] >= zb - tol
    return front & unoccluded


def _rasterise_depth(buf, tri, z, lo, win, side) -> None:
    """Write the nearest depth of every face at the cell centres it covers into ``buf``.

    buf: (b, side * side), -inf where empty. tri: (b, F, 3, 2) corners in cell units.
    z: (b, F, 3) depths. lo: (b, F, 2) bounding-box corner cells. win: (S, 2) cell offsets.

    Not :mod:`stn_core.rasterizer`: this test draws faces of both windings, gives a cell centre
    on a shared edge to both faces, keeps depths in the vertices' precision (float64 too) and
    draws at most a 16 x 16-cell window per face, where the rasteriser culls back faces, applies
    the top-left rule and packs float32 depths into its keys, so sharing it would change the
    visibility.
    """
    acc = buf.dtype
    cell_idx = lo[:, :, None, :] + win  # (b, F, S, 2)
    centre = cell_idx.to(acc) + 0.5
    a, bb, c = tri[:, :, 0, None], tri[:, :, 1, None], tri[:, :, 2, None]  # (b, F, 1, 2)

    def cross2(p, q):
        return p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]

    denom = cross2(bb - a, c - a)  # (b, F, 1), signed twice the area
    w1 = cross2(centre - a, c - a) / denom
    w2 = cross2(bb - a, centre - a) / denom
    w0 = 1 - w1 - w2
    eps = 1e-6  # cell centres on a shared edge belong to both faces
    ok = (w0 >= -eps) & (w1 >= -eps) & (w2 >= -eps) & (denom.abs() > 1e-12)
    ok &= (cell_idx[..., 0] < side) & (cell_idx[..., 1] < side)
    depth = w0 * z[..., 0, None] + w1 * z[..., 1, None] + w2 * z[..., 2, None]
    depth = torch.where(ok, depth, torch.full_like(depth, -math.inf))
    flat = (cell_idx[..., 1] * side + cell_idx[..., 0]).clamp(0, side * side - 1)
    n = buf.shape[0]
    buf.scatter_reduce_(
        1, flat.reshape(n, -1), depth.reshape(n, -1), reduce="amax", include_self=True
    )


@torch.no_grad()
def visibility(
    rotated: torch.Tensor, faces: torch.Tensor, mode: str = "normals", **kwargs
) -> torch.Tensor:
    """Per-vertex visibility (B, N) bool of the rotated mesh, without gradient.

    Args:
        rotated: (B, N, 3) rotated vertices (model axes after rotation: y up, z towards the
            camera, which looks along -z).
        faces: (F, 3) long, 0-based, counter-clockwise seen from the front.
        mode: ``"normals"`` (the original's self-occlusion test, ``n_z > 0``) or ``"depth"``
            (adds occlusion by other parts of the face; keyword arguments go to
            :func:`depth_visibility`).
    """
    if mode == "normals":
        return normal_visibility(rotated, faces)
    if mode == "depth":
        return depth_visibility(rotated, faces, **kwargs)
    raise ValueError(f"visibility mode must be one of {MODES}, got {mode!r}.")


class Visibility(torch.nn.Module):
    """nn.Module front of :func:`visibility`: rotated (B, N, 3) -> (B, N) bool (``faces`` is
    a non-persistent buffer)."""

    def __init__(self, faces: torch.Tensor, mode: str = "normals"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"visibility mode must be one of {MODES}, got {mode!r}.")
        self.mode = mode
        self.register_buffer("faces", faces.to(torch.long), persistent=False)

    def forward(self, rotated: torch.Tensor) -> torch.Tensor:
        return visibility(rotated, self.faces, self.mode)
