"""Angle-weighted vertex normals of a triangle mesh, and their exact Jacobian.

Convention (docs/conventions.md, "Visibility"):

- The normal of vertex v is ``m / |m|`` with ``m = sum over all faces incident to v of the
  corner angle at v times the unit face normal``, the face normal being ``(v1 - v0) x
  (v2 - v0)``: faces wound counter-clockwise seen from the side the normals point to (the
  artifact's faces, seen from the front, give normals towards +z). Every incident face is
  added (``index_add``), not just the last one written (the public port's bug); the original
  weighted by angle times twice the area.
- Degenerate faces (zero area) contribute nothing; a vertex without a non-degenerate face has
  the zero normal.

:func:`vertex_normals` is the differentiable front used by visibility, the renderer and the
shading; :func:`normals_and_jacobian` gives the same unit normals with their closed-form
derivative in the vertex positions over each vertex's 1-ring (:func:`one_ring`), which the
image fit chains into its Jacobian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["vertex_normals", "normals_and_jacobian", "OneRing", "one_ring"]


def vertex_normals(
    vertices: torch.Tensor, faces: torch.Tensor, normalize: bool = True
) -> torch.Tensor:
    """Angle-weighted vertex normals, accumulated over all incident faces.

    Args:
        vertices: (B, N, 3) or (N, 3) float.
        faces: (F, 3) long, 0-based, counter-clockwise seen from the side the normal points to.
        normalize: return unit normals (zero where a vertex has no non-degenerate face).

    Returns:
        Same shape as ``vertices``: ``sum over incident faces of angle_at_vertex * unit face
        normal``, the face normal being ``(v1 - v0) x (v2 - v0)`` normalised. Every incident face
        is added (``index_add``), not just the last one written (the public port's bug). The
        original weighted by angle times twice the face area; the direction differs little and
        the visibility test only uses the sign of z.
    """
    squeeze = vertices.dim() == 2
    v = vertices[None] if squeeze else vertices
    f = faces.to(device=v.device, dtype=torch.long)
    b, n, _ = v.shape
    nf = f.shape[0]
    if b == 0 or n == 0:
        return torch.zeros_like(vertices)
    tiny = torch.finfo(v.dtype).tiny
    # Structure of arrays: one contiguous (B N,) row per coordinate, faces' corners as flat
    # indices b * N + vertex, and the accumulation as one 1-D index_add_ per component and
    # corner (several times faster on CPU than (B, F, 3) gathers, torch.cross, a norm over a
    # size-3 dimension and index_add along dim 1). Images are processed a few at a time so
    # that the per-face temporaries stay cache-sized; every image's arithmetic is its own,
    # so results do not depend on the batch.
    coords = torch.stack(v.reshape(b * n, 3).unbind(1))  # (3, B N); faster than .T.contiguous()
    safe = torch.is_grad_enabled() and v.requires_grad
    step = max(1, min(b, _NORMALS_CHUNK // max(1, nf)))
    ft = f.T.contiguous()  # (3, F)
    idx_cache: dict[int, torch.Tensor] = {}
    parts = []
    for s0 in range(0, b, step):
        bb = min(step, b - s0)
        if bb not in idx_cache:
            off = torch.arange(0, bb * n, n, device=v.device)
            idx_cache[bb] = (ft[:, None, :] + off[None, :, None]).reshape(3, bb * nf)
        parts.append(
            _accumulate_normals(
                coords[:, s0 * n : (s0 + bb) * n], idx_cache[bb], bb * n, tiny, safe
            )
        )
    out = parts[0] if len(parts) == 1 else torch.cat(parts, 1)  # (3, B N)
    if normalize:
        out = out / _norm3(out[0], out[1], out[2], safe).clamp_min(tiny)
    out = out.T.reshape(b, n, 3).contiguous()
    return out[0] if squeeze else out


# Faces times images per chunk of vertex_normals (about a few hundred kB per temporary).
_NORMALS_CHUNK = 1 << 17


def _norm3(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, safe: bool) -> torch.Tensor:
    """sqrt(x^2 + y^2 + z^2); with ``safe``, its gradient is 0 (not NaN) where it is 0, like
    ``Tensor.norm``'s."""
    sq = x * x + y * y + z * z
    if not safe:
        return torch.sqrt(sq)
    zero = sq == 0
    return torch.where(zero, 0.0, torch.sqrt(torch.where(zero, 1.0, sq)))


def _accumulate_normals(coords, idx, n_out, tiny, safe) -> torch.Tensor:
    """(3, n_out): sum over faces of angle_at_corner * unit face normal, per vertex.

    coords: (3, n_out) vertex coordinates; idx: (3, M) the faces' corner indices into them.
    """
    cx, cy, cz = coords[0], coords[1], coords[2]
    x0, x1, x2 = (cx.index_select(0, idx[k]) for k in range(3))
    y0, y1, y2 = (cy.index_select(0, idx[k]) for k in range(3))
    z0, z1, z2 = (cz.index_select(0, idx[k]) for k in range(3))
    ax, ay, az = x1 - x0, y1 - y0, z1 - z0  # e01
    bx, by, bz = x2 - x0, y2 - y0, z2 - z0  # e02
    # n = e01 x e02, component-wise.
    nx = ay * bz - az * by
    ny = az * bx - ax * bz
    nz = ax * by - ay * bx
    twice_area = _norm3(nx, ny, nz, safe)
    # atan2(|a x b|, a . b) is the angle between a and b, accurate for small and obtuse angles.
    ang0 = torch.atan2(twice_area, ax * bx + ay * by + az * bz)
    # The angle at p1, between -e01 and e12 = p2 - p1.
    ang1 = torch.atan2(twice_area, (x1 - x2) * ax + (y1 - y2) * ay + (z1 - z2) * az)
    ang2 = math.pi - ang0 - ang1
    # Degenerate faces (zero area) contribute nothing: clamp the divisor, the numerator is 0.
    denom = twice_area.clamp_min(tiny)
    out = coords.new_zeros(3, n_out)
    for comp, nc in enumerate((nx, ny, nz)):
        unit = nc / denom
        row = out[comp]
        for k, ang in enumerate((ang0, ang1, ang2)):
            row.index_add_(0, idx[k], unit * ang)
    return out


@dataclass
class OneRing:
    """The 1-ring structure of a triangle mesh for sparse normal Jacobians.

    index: (N, S) long, the vertices of each vertex's ring (itself included; padded with
    itself). pair_slot: (F, 3, 3) long, slot of vertex faces[f, j] in the ring of vertex
    faces[f, c] at [f, c, j]. self_slot: (N,) long, each vertex's own slot. sources: (N * S,
    C) long, the flat (f, c, j) entries (into F * 9) whose derivative blocks add up to each
    (vertex, slot), padded with 0; source_weight: (N * S, C) bool, True for an entry. The sum
    is an ``embedding_bag`` with these as weights: an order of magnitude faster on the CPU
    than index_add or an indexed gather. incident: (N, V) long, the flat (f, c) corners
    (into F * 3) at each vertex, padded with 0; incident_weight: (N, V) bool.
    """

    index: torch.Tensor
    pair_slot: torch.Tensor
    self_slot: torch.Tensor
    sources: torch.Tensor
    source_weight: torch.Tensor
    incident: torch.Tensor
    incident_weight: torch.Tensor

    @property
    def size(self) -> int:
        return self.index.shape[1]


def one_ring(faces: torch.Tensor, n: int) -> OneRing:
    """The :class:`OneRing` of a mesh of ``n`` vertices with faces (F, 3) long, 0-based (on
    the faces' device). Built once per mesh; :func:`normals_and_jacobian` reuses it."""
    dev = faces.device
    nf = faces.shape[0]
    src = torch.cat([faces[:, :, None].expand(nf, 3, 3).reshape(-1), torch.arange(n, device=dev)])
    dst = torch.cat([faces[:, None, :].expand(nf, 3, 3).reshape(-1), torch.arange(n, device=dev)])
    uniq, inverse = torch.unique(src * n + dst, return_inverse=True)
    us, ud = uniq // n, uniq % n
    counts = torch.bincount(us, minlength=n)
    first = torch.cumsum(counts, 0) - counts
    slot = torch.arange(uniq.numel(), device=dev) - first[us]
    size = int(counts.max()) if n else 1
    index = torch.arange(n, device=dev)[:, None].repeat(1, size)
    index[us, slot] = ud
    pair_slot = slot[inverse[: 9 * nf]].reshape(nf, 3, 3)
    # Gather plan: entry e = (f, c, j) feeds (vertex faces[f, c], slot pair_slot[f, c, j]).
    target = (faces[:, :, None] * size + pair_slot).reshape(-1)
    order = torch.argsort(target, stable=True)
    tcount = torch.bincount(target, minlength=n * size)
    width = max(1, int(tcount.max())) if target.numel() else 1
    tfirst = torch.cumsum(tcount, 0) - tcount
    rank = torch.arange(order.numel(), device=dev) - tfirst[target[order]]
    sources = torch.zeros((n * size, width), dtype=torch.long, device=dev)
    weight = torch.zeros((n * size, width), dtype=torch.bool, device=dev)
    sources[target[order], rank] = order
    weight[target[order], rank] = True
    incident, incident_weight = _bags(faces.reshape(-1), n)
    return OneRing(
        index, pair_slot, slot[inverse[9 * nf :]], sources, weight, incident, incident_weight
    )


def _bags(target: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries grouped by target: (n, width) entry indices padded with 0, and a bool mask."""
    dev = target.device
    order = torch.argsort(target, stable=True)
    count = torch.bincount(target, minlength=n)
    width = max(1, int(count.max())) if target.numel() else 1
    first = torch.cumsum(count, 0) - count
    rank = torch.arange(order.numel(), device=dev) - first[target[order]]
    index = torch.zeros((n, width), dtype=torch.long, device=dev)
    mask = torch.zeros((n, width), dtype=torch.bool, device=dev)
    index[target[order], rank] = order
    mask[target[order], rank] = True
    return index, mask


def _cross_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product along dim 1 of (B, 3, ...) arrays (faces innermost: vectorised)."""
    ax, ay, az = a.unbind(1)
    bx, by, bz = b.unbind(1)
    return torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], 1)


def _face_blocks(vertices, faces, angles, unit, twice_area) -> torch.Tensor:
    """d(angle_c * unit normal) / d v_j of every face f, corner c and vertex j, as a
    (B * F * 9, 9) table: row (b, f, c, j), the 3 x 3 block row-major.

    Computed with the faces innermost (arrays (B, 3, ..., F)), where every operation is
    vectorised; the result is transposed once for the gather.
    """
    b = vertices.shape[0]
    tiny = torch.finfo(vertices.dtype).tiny
    p = vertices.transpose(1, 2)[:, :, faces.T]  # (B, 3 xyz, 3 corners, F)
    u = unit.transpose(1, 2)  # (B, 3, F)
    # Degenerate faces contribute nothing (their unit normal is already zero).
    ok = (twice_area > tiny * 1e6).to(vertices.dtype)  # (B, F)
    inv_area = ok / twice_area.clamp_min(tiny)
    ang = [a * ok for a in angles]  # (B, F) each
    uo = u * ok[:, None]
    # Edges at corner c: a = p_{c+1} - p_c, b = p_{c+2} - p_c; d angle_c = -(u x a) . da /
    # |a|^2 + (u x b) . db / |b|^2.
    ga, gb = [], []
    for c in range(3):
        a_ = p[:, :, (c + 1) % 3] - p[:, :, c]
        b_ = p[:, :, (c + 2) % 3] - p[:, :, c]
        ga.append(-_cross_t(u, a_) / (a_ * a_).sum(1, keepdim=True).clamp_min(tiny))
        gb.append(_cross_t(u, b_) / (b_ * b_).sum(1, keepdim=True).clamp_min(tiny))
    out = torch.empty(
        b, 3, 3, 3, 3, faces.shape[0], dtype=vertices.dtype, device=vertices.device
    )  # (B, c, j, x, y, F)
    for j in range(3):
        # d unit / d v_j = ([d]_x - u (u x d)^T) / |n|, d = p_{j+2} - p_{j+1}.
        d = p[:, :, (j + 2) % 3] - p[:, :, (j + 1) % 3]
        dx, dy, dz = d.unbind(1)
        zero = torch.zeros_like(dx)
        sk = torch.stack(
            [
                torch.stack([zero, -dz, dy], 1),
                torch.stack([dz, zero, -dx], 1),
                torch.stack([-dy, dx, zero], 1),
            ],
            1,
        )  # (B, 3, 3, F)
        du = (sk - u[:, :, None] * _cross_t(u, d)[:, None]) * inv_area[:, None, None]
        for c in range(3):
            # d angle_c / d v_j: v_c gets -(ga + gb), v_{c+1} ga, v_{c+2} gb.
            k = (j - c) % 3
            dth = -(ga[c] + gb[c]) if k == 0 else (ga[c] if k == 1 else gb[c])
            blk = out[:, c, j]
            torch.mul(uo[:, :, None], dth[:, None], out=blk)
            blk.addcmul_(ang[c][:, None, None], du)
    return out.permute(0, 5, 1, 2, 3, 4).reshape(-1, 9)


def normals_and_jacobian(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    ring: OneRing | None = None,
    jacobian: bool = True,
    rows: torch.Tensor | None = None,
):
    """Unit angle-weighted vertex normals and their exact derivative in the vertex positions.

    Args:
        vertices: (B, N, 3). faces: (F, 3) long, counter-clockwise seen from the front.
        ring: the mesh's :class:`OneRing` (built from the faces when None).
        jacobian: also return the derivative.
        rows: optional (M,) vertex indices: the derivative of those vertices' normals only.

    Returns:
        ``(normals, jac)``: normals (B, N, 3), equal to ``vertex_normals(vertices, faces)``;
        jac (B, M, S, 3, 3) (M = N without ``rows``) with ``jac[b, i, s] = d normals[b, n] /
        d vertices[b, ring.index[n, s]]`` for n = rows[i] (zero for padded slots), or None.
        The normal is ``m / |m|`` with ``m = sum over incident faces of corner angle * unit
        face normal``; at a corner with edges a, b and unit face normal u, d angle = -(u x a)
        . da / |a|^2 + (u x b) . db / |b|^2, and d u = (I - u u^T) / |n| dn with dn = d(e1 x
        e2).
    """
    b, n, _ = vertices.shape
    f = faces
    tiny = torch.finfo(vertices.dtype).tiny
    p = vertices[:, f]  # (B, F, 3 corners, 3)
    e01 = p[:, :, 1] - p[:, :, 0]
    e02 = p[:, :, 2] - p[:, :, 0]
    e12 = p[:, :, 2] - p[:, :, 1]
    nf = torch.cross(e01, e02, dim=-1)
    twice_area = nf.norm(dim=-1)
    # Corner angles exactly as vertex_normals computes them.
    ang0 = torch.atan2(twice_area, (e01 * e02).sum(-1))
    ang1 = torch.atan2(twice_area, (-e01 * e12).sum(-1))
    ang2 = math.pi - ang0 - ang1
    unit = nf / twice_area.clamp_min(tiny)[..., None]
    angles = (ang0, ang1, ang2)
    if ring is None:
        ring = one_ring(f, n)
    # Sum of angle * unit face normal over each vertex's corners: an embedding_bag over the
    # face normals with the corner angles as weights (one pass, no scatter).
    idx = (
        torch.div(ring.incident, 3, rounding_mode="floor")[None]
        + (f.shape[0] * torch.arange(b, device=f.device))[:, None, None]
    )
    wts = torch.stack(angles, -1).reshape(b, -1)[:, ring.incident]  # flat (f, c) -> (B, N, V)
    wts = wts * ring.incident_weight
    acc = F.embedding_bag(
        idx.reshape(b * n, -1),
        unit.reshape(-1, 3),
        mode="sum",
        per_sample_weights=wts.reshape(b * n, -1),
    ).reshape(b, n, 3)
    norm = acc.norm(dim=-1, keepdim=True)
    normals = acc / norm.clamp_min(tiny)
    if not jacobian:
        return normals, None
    g = _face_blocks(vertices, f, angles, unit, twice_area)
    s = ring.size
    nf9 = f.shape[0] * 9
    src = ring.sources.view(n, s, -1)
    wt = ring.source_weight.view(n, s, -1)
    if rows is not None:
        src, wt = src[rows], wt[rows]
    m = src.shape[0]
    src = src.reshape(1, m * s, -1) + nf9 * torch.arange(b, device=src.device)[:, None, None]
    wt = wt.reshape(1, m * s, -1).expand(b, -1, -1).to(g.dtype)
    dm = F.embedding_bag(
        src.reshape(b * m * s, -1), g, mode="sum", per_sample_weights=wt.reshape(b * m * s, -1)
    ).reshape(b, m, s, 3, 3)
    # Through the normalisation: (I - n n^T) dm / |m|, elementwise.
    nr = normals if rows is None else normals[:, rows]
    inv = 1.0 / (norm if rows is None else norm[:, rows]).clamp_min(tiny)  # (B, M, 1)
    nt_dm = torch.einsum("bmi,bmsij->bmsj", nr, dm)
    jac = (dm - nr[:, :, None, :, None] * nt_dm[..., None, :]) * inv[..., None, None]
    return normals, jac
