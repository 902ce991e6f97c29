"""A batched z-buffer triangle rasteriser in plain PyTorch: per pixel, the nearest
front-facing triangle that covers its centre, with its barycentric coordinates and depth.

It is a real rasteriser, not a splatter; :mod:`stn_core.renderer` draws the UV-grid model
with it.

Conventions (docs/conventions.md):

- Vertices are pixels, x right, y down, (0, 0) the centre of the top-left pixel, with a depth
  z. Pixel (i, j) (row i, column j) is covered by a triangle when its centre (x, y) = (j, i)
  is inside it.
- Larger z is nearer the camera: the z-buffer keeps the largest z. Depth is interpolated
  linearly in the image, which is exact for an orthographic camera.
- Faces are counter-clockwise seen from the front in the model's y-up frame, so a triangle
  faces the camera when its signed area in the image, ``cross(p1 - p0, p2 - p0)`` with y
  down, is negative. Back-facing and degenerate triangles are culled.
- Fill rule: a pixel centre exactly on an edge shared by two triangles belongs to exactly one
  of them (the top-left rule, as Direct3D and OpenGL): a centre on an edge counts as inside
  when the edge is a *top* edge (horizontal, the triangle below it) or a *left* edge. Edge
  functions are evaluated so that a shared edge gives exactly opposite values in its two
  triangles and exactly zero at its endpoints, so meshes render without cracks or double
  coverage along edges and at vertices.
- Ties in depth are broken by the larger face index, so results are deterministic.

Method (:func:`rasterize`): for every front-facing triangle, the pixel centres of its bounding
box are enumerated with a window from the box's corner (rows and columns 1, 2 or 4, or 8 x 8,
or 16 x 16: a grid mesh's triangles cover a few pixels), or exactly for larger boxes; each
candidate is tested with the three edge functions, its depth interpolated, and the pair
(depth, face index) packed into one int64 key that a single ``scatter_reduce(amax)`` over
flat pixel indices reduces to the nearest face per pixel. The winner's barycentric coordinates
are then recomputed per pixel. Triangles are held as structures of arrays sorted by window,
and work is chunked so that temporaries stay around a million elements whatever the batch.
:func:`rasterize_reference` is the same contract evaluated pixel by triangle, for tests.

Nothing here is differentiable (``torch.no_grad``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from stn_core._validate import expect

__all__ = ["Fragments", "Hits", "rasterize", "rasterize_hits", "rasterize_reference"]

# Candidate windows (rows, columns of pixel centres from the box corner): a grid mesh's
# triangles have boxes of 1 to 4 centres a side, whose rows and columns are rounded up to 1, 2
# or 4; larger boxes get a square window of 8 or 16; larger still are enumerated exactly.
_SIDES = (1, 2, 4)
_LARGE = (8, 16)
_SHAPES = [(r, c) for r in _SIDES for c in _SIDES] + [(s, s) for s in _LARGE]
_PAD = 15  # candidates of a window may run past the clipped box by this much
_CAP = _LARGE[-1] + 1


def _class_table() -> torch.Tensor:
    """uint8 (_CAP * _CAP,): the class of a box of (rows, cols) pixel centres at
    (min(rows, _CAP) - 1) * _CAP + min(cols, _CAP) - 1: 1 + the index in _SHAPES of the first
    window holding it, len(_SHAPES) + 1 when none does."""
    table = torch.empty(_CAP * _CAP, dtype=torch.uint8)
    for rows in range(1, _CAP + 1):
        for cols in range(1, _CAP + 1):
            fits = [k for k, (r, c) in enumerate(_SHAPES) if rows <= r and cols <= c]
            table[(rows - 1) * _CAP + cols - 1] = 1 + (fits[0] if fits else len(_SHAPES))
    return table


_CLASS_OF = _class_table()
# Aim for about this many candidate pixels per chunk: large enough to amortise per-operation
# overhead, small enough for the temporaries to stay in cache-sized pieces.
_CHUNK = 1 << 19
_EMPTY = torch.iinfo(torch.int64).min


class Fragments(NamedTuple):
    """What :func:`rasterize` returns for a (B, H, W) image batch.

    face: (B, H, W) int64, the index (into ``faces``) of the nearest front-facing triangle
        covering each pixel centre, -1 where none does.
    bary: (B, H, W, 3) barycentric coordinates of the pixel centre in that triangle, in its
        vertex order (sum 1; zeros where ``face`` is -1), the vertices' dtype.
    depth: (B, H, W) the interpolated z of the visible surface, the vertices' dtype; -inf where
        ``face`` is -1.
    """

    face: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor


class Hits(NamedTuple):
    """What :func:`rasterize_hits` returns: the P covered pixels of a (B, H, W) batch, compactly.

    pixel: (P,) int64 flat index ``b * H * W + row * W + col``, in increasing order.
    face: (P,) int64 the index (into ``faces``) of the winning triangle.
    vertex: (3, P) int64 flat indices ``b * N + v`` of its three vertices, in its vertex order.
    bary: (3, P) barycentric coordinates of the pixel centre in it, the vertices' dtype.
    depth: (P,) the interpolated z, the vertices' dtype.
    """

    pixel: torch.Tensor
    face: torch.Tensor
    vertex: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor


@torch.no_grad()
def rasterize(
    vertices: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int]
) -> Fragments:
    """Rasterise triangles with a z-buffer: the nearest front-facing triangle per pixel.

    Args:
        vertices: (B, N, 3) float: x, y in pixels (x right, y down, (0, 0) the centre of the
            top-left pixel) and z, the depth (larger = nearer, kept by the z-buffer).
        faces: (F, 3) int64, counter-clockwise seen from the front in the model's y-up frame,
            i.e. signed area ``cross(p1 - p0, p2 - p0) < 0`` in these y-down pixel
            coordinates; others (back-facing, degenerate) are culled.
        image_size: (H, W).

    Returns:
        :class:`Fragments` (face index, barycentrics, interpolated depth per pixel).
    """
    hits = rasterize_hits(vertices, faces, image_size)
    h, w = (int(v) for v in image_size)
    return _dense(hits, vertices.shape[0], h, w, vertices.dtype, vertices.device)


@torch.no_grad()
def rasterize_hits(
    vertices: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int]
) -> Hits:
    """:func:`rasterize` for the covered pixels only (:class:`Hits`): what a renderer needs to
    write colours straight into its image, without the dense (B, H, W) arrays.

    Args:
        vertices, faces, image_size: as :func:`rasterize`.
    """
    h, w = (int(v) for v in image_size)
    expect(h > 0 and w > 0, f"image_size must be two positive integers, got {image_size}.")
    expect(
        vertices.dim() == 3 and vertices.shape[-1] == 3,
        f"vertices must be (B, N, 3), got {tuple(vertices.shape)}.",
    )
    faces = faces.to(device=vertices.device, dtype=torch.long)
    keys = _z_buffer(vertices, faces, h, w)
    return _resolve(vertices, faces, keys, h, w)


# ---------------------------------------------------------------------------------------------
# the fast path


def _cross2(ax, ay, bx, by):
    return ax * by - ay * bx


def _z_buffer(vertices: torch.Tensor, faces: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, H * W) int64 keys: (float32 depth bits << 32) | face of the nearest triangle per
    pixel centre; negative where no triangle covers it."""
    b, n, _ = vertices.shape
    hp, wp = h + _PAD, w + _PAD  # padded buffer: window candidates past the image land here
    buf = torch.full((b * hp * wp,), _EMPTY, dtype=torch.int64, device=vertices.device)
    if faces.shape[0] and n:
        _scatter_keys(buf, vertices, faces, h, w, hp, wp)
    return buf.view(b, hp, wp)[:, :h, :w].reshape(b, h * w)


def _resolve(vertices, faces, keys, h, w) -> Hits:
    """Barycentrics and depth of each covered pixel centre in its winning face."""
    b, n, _ = vertices.shape
    dtype = vertices.dtype
    img, cy, cx = (keys >= 0).view(b, h, w).nonzero().unbind(1)
    pixel = (img * h + cy) * w + cx
    face = keys.view(-1).index_select(0, pixel) & 0xFFFFFFFF
    cx = cx.to(dtype)
    cy = cy.to(dtype)
    # (3, P) and (3, B N), built row by row (faster than (P, 3) then .T.contiguous()).
    base = img * n
    vertex = torch.stack([faces[:, k].index_select(0, face) + base for k in range(3)])
    coords = torch.stack(vertices.detach().reshape(b * n, 3).unbind(1))
    x0, x1, x2 = (coords[0].index_select(0, vertex[k]) for k in range(3))
    y0, y1, y2 = (coords[1].index_select(0, vertex[k]) for k in range(3))
    dx1, dy1, dx2, dy2 = x1 - x0, y1 - y0, x2 - x0, y2 - y0
    qx, qy = cx - x0, cy - y0
    area = _cross2(dx1, dy1, dx2, dy2)
    l1 = _cross2(qx, qy, dx2, dy2) / area
    l2 = _cross2(dx1, dy1, qx, qy) / area
    bary = torch.stack([1 - l1 - l2, l1, l2])
    depth = sum(bary[k] * coords[2].index_select(0, vertex[k]) for k in range(3))
    return Hits(pixel, face, vertex, bary, depth)


def _dense(hits: Hits, b, h, w, dtype, device) -> Fragments:
    face = torch.full((b * h * w,), -1, dtype=torch.int64, device=device)
    face.index_copy_(0, hits.pixel, hits.face)
    bary = torch.zeros(b * h * w, 3, dtype=dtype, device=device)
    bary.index_copy_(0, hits.pixel, hits.bary.T.contiguous())
    depth = torch.full((b * h * w,), -math.inf, dtype=dtype, device=device)
    depth.index_copy_(0, hits.pixel, hits.depth)
    return Fragments(face.view(b, h, w), bary.view(b, h, w, 3), depth.view(b, h, w))


def _scatter_keys(buf, vertices, faces, h, w, hp, wp) -> None:
    """Reduce every candidate (pixel, front-facing triangle) into ``buf`` with amax.

    Data are laid out as structures of arrays, one (M,) vector per quantity over the M
    instances (image, face or quad), and candidates as (rows, columns, M), so that every
    operation runs over long contiguous rows. Consecutive faces that form a quad (a grid
    cell's two triangles, sharing an edge) are tested together on the pixel centres of the
    quad's box: half the instances and candidates of the triangles taken one by one, with
    exactly the same edge functions, so the same pixels are covered.
    """
    b, n, _ = vertices.shape
    v = vertices.detach().to(torch.float32)
    # Depth made positive per image (>= 1 inside every triangle), so that the IEEE bits of the
    # float32 depth order like the depths themselves and can be packed into an int64 key.
    z = v[..., 2]
    zmin = torch.where(torch.isnan(z), math.inf, z).amin(1, keepdim=True)
    coords = (v[..., 0], v[..., 1], z - zmin + 1.0)  # (B, N) each
    # The faces reversed to (p0, p2, p1): front-facing then means positive signed area.
    fr = faces[:, [0, 2, 1]]
    quads, quad_faces, singles = _pair_faces(fr)
    inst_img = [torch.arange(b, device=v.device).repeat_interleave(singles.shape[0])]
    inst_face = [singles.repeat(b)]
    if quads.shape[0]:
        big_img, big_quad = _scatter_quads(buf, coords, quads, quad_faces, h, w, hp, wp)
        # Quads too large for a window: their two triangles go the triangle way.
        inst_img += [big_img, big_img]
        inst_face += [quad_faces[big_quad, 0], quad_faces[big_quad, 1]]
    inst_img = torch.cat(inst_img)
    if inst_img.numel():
        _scatter_triangles(buf, coords, fr, inst_img, torch.cat(inst_face), h, w, hp, wp)


def _pair_faces(fr: torch.Tensor):
    """Split faces (F, 3) (front-facing order) into quads and single triangles.

    Faces i and i + 1 form a quad when the second is (q0, p2, p1) for the first (p0, p1, p2):
    they share the edge p1-p2 (the artifact writes a grid cell's two triangles so; faces
    dropped outside the mesh leave the others in order). A face joins at most one quad.
    Returns ``quads`` (Q, 4) vertices (p0, p1, p2, q0), ``quad_faces`` (Q, 2) their face
    indices, ``singles`` (S,) the indices of the other faces.
    """
    nf = fr.shape[0]
    dev = fr.device
    idx = torch.arange(nf, device=dev)
    match = (fr[1:, 1] == fr[:-1, 2]) & (fr[1:, 2] == fr[:-1, 1])
    # Two matches in a row would put face i + 1 in two quads: keep the first.
    match &= ~torch.cat([torch.zeros(1, dtype=torch.bool, device=dev), match[:-1]])
    first = idx[:-1][match]
    quads = torch.cat([fr[first], fr[first + 1, :1]], 1)
    quad_faces = torch.stack([first, first + 1], 1)
    in_quad = torch.zeros(nf, dtype=torch.bool, device=dev)
    in_quad[quad_faces.reshape(-1)] = True
    return quads, quad_faces, idx[~in_quad]


def _box(xs, ys, w, h):
    """Clipped box of pixel centres of the corners xs, ys: (x_lo, y_lo, nx, ny)."""
    lo_x, hi_x, lo_y, hi_y = xs[0], xs[0], ys[0], ys[0]
    for x_, y_ in zip(xs[1:], ys[1:], strict=True):
        lo_x, hi_x = torch.minimum(lo_x, x_), torch.maximum(hi_x, x_)
        lo_y, hi_y = torch.minimum(lo_y, y_), torch.maximum(hi_y, y_)
    x_lo = torch.ceil(lo_x).clamp_min_(0)
    y_lo = torch.ceil(lo_y).clamp_min_(0)
    nx = torch.floor(hi_x).clamp_max_(w - 1) - x_lo + 1
    ny = torch.floor(hi_y).clamp_max_(h - 1) - y_lo + 1
    return x_lo, y_lo, nx, ny


def _classes(nx, ny, keep):
    """Window class per instance (0 culled; 1 + index in _SHAPES of the first window holding
    its box; len(_SHAPES) + 1 larger), sorted: (order, counts per class)."""
    cap = float(_CAP)
    size = (ny.clamp(1, cap) - 1) * cap + (nx.clamp(1, cap) - 1)
    size = torch.where(keep, size, 0.0)  # culled ones may be NaN
    cls = _CLASS_OF.to(size.device).index_select(0, size.to(torch.int64))
    cls = torch.where(keep, cls, 0)
    counts = torch.bincount(cls, minlength=len(_SHAPES) + 2).tolist()
    # uint8 class codes: sorting them is several times faster than sorting int64.
    return torch.sort(cls, stable=True).indices, counts


def _edge(ax, ay, bx, by, out, e):
    """Edge e (from a to b) of M instances into ``out``'s (E, M) rows ``ea, eb, ox, oy, thr``.

    w(p) = cross(b - a, p - o) = B (p_y - o_y) + A (p_x - o_x), A = a_y - b_y, B = b_x - a_x,
    measured from o, the endpoint that comes first in (y, x) order, so that o is the same for
    both directions of an edge. Then (i) the two triangles sharing an edge see exactly opposite
    values (A and B flip sign exactly), so every centre on it goes to exactly one of them, and
    (ii) w is exactly 0 at both endpoints (at o trivially; at the other, the two products are
    exact negatives), so a centre on a vertex is decided by the fill rule alone, in exactly one
    triangle of its fan.
    """
    a_ = torch.sub(ay, by, out=out["ea"][e])
    b_ = torch.sub(bx, ax, out=out["eb"][e])
    # (A, B) > (0, 0) lexicographically is A + B 2^-60 > 0 for pixel coordinates (|A| is 0
    # or far above |B| 2^-60; B != 0 when A = 0), odd in (A, B) like the edge function.
    b_small = b_ * 2.0**-60
    swap = (a_ - b_small) > 0  # b before a in (y, x) order
    torch.where(swap, bx, ax, out=out["ox"][e])
    torch.where(swap, by, ay, out=out["oy"][e])
    # Top-left rule (y down, triangles clockwise on screen): left edges go up (A > 0), top
    # edges are horizontal going right (A = 0, B > 0). A centre on any other edge is outside:
    # it needs w >= the smallest normal float, i.e. w > 0.
    torch.mul((a_ + b_small) <= 0, torch.finfo(torch.float32).tiny, out=out["thr"][e])


def _edges(n_edges: int, m: int, like: torch.Tensor) -> dict:
    return {k: like.new_empty(n_edges, m) for k in ("ea", "eb", "ox", "oy", "thr")}


def _plane(x0, y0, z0, x1, y1, z1, x2, y2, z2, x_lo, y_lo):
    """Depth plane of a triangle, ``(zc + bz (y - y_lo)) + az (x - x_lo)``: (zc, az, bz).
    Relative to the box corner, which keeps steep triangles accurate."""
    dx1, dy1, dz1 = x1 - x0, y1 - y0, z1 - z0
    dx2, dy2, dz2 = x2 - x0, y2 - y0, z2 - z0
    area = dx1 * dy2 - dy1 * dx2
    az = (dz1 * dy2 - dz2 * dy1) / area
    bz = (dx1 * dz2 - dx2 * dz1) / area
    return z0 + az * (x_lo - x0) + bz * (y_lo - y0), az, bz


def _keys(inside, z, fid):
    """Pack (depth, face) into int64 keys; candidates outside every triangle get a negative
    key."""
    z = torch.where(inside, z, -1.0)
    return (z.view(torch.int32).long() << 32) | fid


def _edge_values(t, cy, cx, e):
    # B (y - oy) + A (x - ox): the same operations on every path and in the reference.
    return t["eb"][e] * (cy - t["oy"][e]) + t["ea"][e] * (cx - t["ox"][e])


def _inside(t, cy, cx, edges):
    """Candidates inside the triangle of edges ``edges`` (w_e >= thr_e for each)."""
    ok = _edge_values(t, cy, cx, edges[0]) >= t["thr"][edges[0]]
    for e in edges[1:]:
        ok &= _edge_values(t, cy, cx, e) >= t["thr"][e]
    return ok


def _window(t, shape):
    """Candidate rows (rows, 1, M) and columns (1, cols, M) of window ``shape`` from each
    box corner, and the offsets oy (rows, 1, 1), ox (1, cols, 1)."""
    dev = t["x_lo"].device
    oy = torch.arange(shape[0], device=dev, dtype=torch.float32)[:, None, None]
    ox = torch.arange(shape[1], device=dev, dtype=torch.float32)[None, :, None]
    return t["y_lo"] + oy, t["x_lo"] + ox, oy, ox


def _scatter_quads(buf, coords, quads, quad_faces, h, w, hp, wp):
    """Rasterise the quads of every image with windows; returns (image, quad) index vectors
    of the instances whose box is larger than the largest window."""
    x, y, z = coords
    nq = quads.shape[0]
    # Corners p0, p1, p2, q0 of every (image, quad) instance, flattened to (B Q,) vectors.
    cx_, cy_, cz_ = (
        [c.index_select(1, quads[:, k]).reshape(-1) for k in range(4)] for c in (x, y, z)
    )
    area1 = _cross2(cx_[1] - cx_[0], cy_[1] - cy_[0], cx_[2] - cx_[0], cy_[2] - cy_[0])
    area2 = _cross2(cx_[2] - cx_[3], cy_[2] - cy_[3], cx_[1] - cx_[3], cy_[1] - cy_[3])
    x_lo, y_lo, nx, ny = _box(cx_, cy_, w, h)
    keep = ((area1 > 0) | (area2 > 0)) & (nx > 0) & (ny > 0)  # NaN fails these tests
    order, counts = _classes(nx, ny, keep)
    start = counts[0]
    big = torch.zeros(0, dtype=torch.long, device=x.device)
    for c in range(1, len(_SHAPES) + 2):
        m = counts[c]
        if m == 0:
            continue
        sel = order[start : start + m]
        start += m
        if c > len(_SHAPES):
            big = sel
            continue
        g = [t.index_select(0, sel) for t in (*cx_, *cy_, *cz_, x_lo, y_lo, area1, area2)]
        q = _quad_setup(*g, sel, nq, quad_faces, hp, wp)
        shape = _SHAPES[c - 1]
        step = max(1, _CHUNK // (shape[0] * shape[1]))
        for s0 in range(0, m, step):
            _scatter_quad_window(buf, {k: v[..., s0 : s0 + step] for k, v in q.items()}, shape, wp)
    img = torch.div(big, nq, rounding_mode="floor")
    return img, big - img * nq


def _quad_setup(
    x0,
    x1,
    x2,
    x3,
    y0,
    y1,
    y2,
    y3,
    z0,
    z1,
    z2,
    z3,
    x_lo,
    y_lo,
    area1,
    area2,
    sel,
    nq,
    quad_faces,
    hp,
    wp,
) -> dict:
    """Per-quad constants: the five edges (0: p1 -> p2, shared; 1: p2 -> p0; 2: p0 -> p1 of
    T1 = (p0, p1, p2); 3: p1 -> q0; 4: q0 -> p2 of T2 = (q0, p2, p1)), ``thr_s2`` the fill
    threshold of the shared edge in T2's direction, both depth planes, the box and faces.
    A back-facing triangle gets an infinite threshold: no candidate is inside it."""
    m = x0.shape[0]
    t = _edges(5, m, x0)
    _edge(x1, y1, x2, y2, t, 0)
    _edge(x2, y2, x0, y0, t, 1)
    _edge(x0, y0, x1, y1, t, 2)
    _edge(x1, y1, x3, y3, t, 3)
    _edge(x3, y3, x2, y2, t, 4)
    a_s, b_s = t["ea"][0], t["eb"][0]
    # T2 sees the shared edge reversed: (-A, -B); its test w' = -w >= thr' is w <= -thr'.
    t["thr_s2"] = ((-a_s - b_s * 2.0**-60) <= 0) * -torch.finfo(torch.float32).tiny
    t["thr"][1].masked_fill_(~(area1 > 0), math.inf)
    t["thr"][3].masked_fill_(~(area2 > 0), math.inf)
    t["zc1"], t["az1"], t["bz1"] = _plane(x0, y0, z0, x1, y1, z1, x2, y2, z2, x_lo, y_lo)
    t["zc2"], t["az2"], t["bz2"] = _plane(x3, y3, z3, x2, y2, z2, x1, y1, z1, x_lo, y_lo)
    img = torch.div(sel, nq, rounding_mode="floor")
    faces = quad_faces.index_select(0, sel - img * nq)
    t.update(
        x_lo=x_lo,
        y_lo=y_lo,
        base=img * (hp * wp) + y_lo.long() * wp + x_lo.long(),
        fid1=faces[:, 0],
        fid2=faces[:, 1],
    )
    return t


def _scatter_quad_window(buf, q, shape, wp) -> None:
    """Candidates of a quad: a window from its box corner, each in T1, T2 or neither."""
    cy, cx, oy, ox = _window(q, shape)
    in1 = _inside(q, cy, cx, (0, 1, 2))
    w_s = _edge_values(q, cy, cx, 0)
    in2 = (w_s <= q["thr_s2"]) & _inside(q, cy, cx, (3, 4))
    z1 = (q["zc1"] + q["bz1"] * oy) + q["az1"] * ox
    z2 = (q["zc2"] + q["bz2"] * oy) + q["az2"] * ox
    # z is already -1 outside both triangles: pack it directly (what _keys(in1 | in2, ...)
    # would give, without its second where).
    z = torch.where(in1, z1, torch.where(in2, z2, -1.0))
    key = (z.view(torch.int32).long() << 32) | torch.where(in1, q["fid1"], q["fid2"])
    flat = q["base"] + (oy * wp + ox).long()
    buf.scatter_reduce_(0, flat.reshape(-1), key.reshape(-1), reduce="amax")


def _scatter_triangles(buf, coords, fr, inst_img, inst_face, h, w, hp, wp) -> None:
    """Rasterise triangle instances (image, face): windows by box size, larger ones exactly."""
    n = coords[0].shape[1]
    flat = [c.reshape(-1) for c in coords]
    corner = [inst_img * n + fr[:, k].index_select(0, inst_face) for k in range(3)]
    xs, ys, zs = ([c.index_select(0, g) for g in corner] for c in flat)
    area = _cross2(xs[1] - xs[0], ys[1] - ys[0], xs[2] - xs[0], ys[2] - ys[0])
    x_lo, y_lo, nx, ny = _box(xs, ys, w, h)
    keep = (area > 0) & (nx > 0) & (ny > 0)  # NaN vertices fail these tests
    order, counts = _classes(nx, ny, keep)
    start = counts[0]
    for c in range(1, len(_SHAPES) + 2):
        m = counts[c]
        if m == 0:
            continue
        sel = order[start : start + m]
        start += m
        g = [t.index_select(0, sel) for t in (*xs, *ys, *zs, x_lo, y_lo)]
        tri = _triangle_setup(
            *g, inst_img.index_select(0, sel), inst_face.index_select(0, sel), hp, wp
        )
        if c > len(_SHAPES):
            tri["nx"] = nx.index_select(0, sel)
            tri["ny"] = ny.index_select(0, sel)
            _scatter_exact(buf, tri, wp)
            continue
        shape = _SHAPES[c - 1]
        step = max(1, _CHUNK // (shape[0] * shape[1]))
        for s0 in range(0, m, step):
            _scatter_window(buf, {k: t[..., s0 : s0 + step] for k, t in tri.items()}, shape, wp)


def _triangle_setup(x0, x1, x2, y0, y1, y2, z0, z1, z2, x_lo, y_lo, img, fid, hp, wp) -> dict:
    """Per-triangle constants for the candidate tests: the edges from corner e+1 to e+2
    (:func:`_edge`), the depth plane, the box corner, its flat buffer index and the face."""
    t = _edges(3, x0.shape[0], x0)
    xs, ys = (x0, x1, x2), (y0, y1, y2)
    for e in range(3):
        _edge(xs[(e + 1) % 3], ys[(e + 1) % 3], xs[(e + 2) % 3], ys[(e + 2) % 3], t, e)
    t["zc"], t["az"], t["bz"] = _plane(x0, y0, z0, x1, y1, z1, x2, y2, z2, x_lo, y_lo)
    t.update(x_lo=x_lo, y_lo=y_lo, base=img * (hp * wp) + y_lo.long() * wp + x_lo.long(), fid=fid)
    return t


def _scatter_window(buf, tri, shape, wp) -> None:
    """Candidates: the rows x cols pixel centres from each triangle's box corner, laid out
    (rows, cols, M)."""
    cy, cx, oy, ox = _window(tri, shape)
    inside = _inside(tri, cy, cx, (0, 1, 2))
    z = (tri["zc"] + tri["bz"] * oy) + tri["az"] * ox
    key = _keys(inside, z, tri["fid"])
    flat = tri["base"] + (oy * wp + ox).long()
    buf.scatter_reduce_(0, flat.reshape(-1), key.reshape(-1), reduce="amax")


def _scatter_exact(buf, tri, wp) -> None:
    """Candidates: exactly the pixel centres of each (large) triangle's clipped box."""
    dev = buf.device
    nx = tri["nx"].long()
    count = nx * tri["ny"].long()
    ends = torch.cumsum(count, 0)
    total = int(ends[-1])
    m = count.shape[0]
    # Chunks of whole triangles with about _CHUNK candidates each (one triangle may exceed it).
    cuts = torch.searchsorted(ends, torch.arange(_CHUNK, max(total, _CHUNK), _CHUNK, device=dev))
    bounds = sorted({0, m, *cuts.tolist()})
    for i0, i1 in zip(bounds[:-1], bounds[1:], strict=True):
        c = count[i0:i1]
        k_tri = torch.repeat_interleave(torch.arange(i1 - i0, device=dev), c)
        first = torch.cumsum(c, 0) - c
        k = torch.arange(int(c.sum()), device=dev) - first[k_tri]
        nxt = nx[i0:i1][k_tri]
        dy = torch.div(k, nxt, rounding_mode="floor")
        dx = k - dy * nxt
        # Each candidate's triangle constants (the triangles of this chunk, repeated).
        t = {key: val[..., i0:i1][..., k_tri] for key, val in tri.items()}
        cy = t["y_lo"] + dy.float()
        cx = t["x_lo"] + dx.float()
        inside = _inside(t, cy, cx, (0, 1, 2))
        z = (t["zc"] + t["bz"] * dy.float()) + t["az"] * dx.float()
        key = _keys(inside, z, t["fid"])
        buf.scatter_reduce_(0, t["base"] + dy * wp + dx, key, reduce="amax")


# ---------------------------------------------------------------------------------------------
# the reference


@torch.no_grad()
def rasterize_reference(
    vertices: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int]
) -> Fragments:
    """:func:`rasterize`'s contract evaluated for every (pixel, triangle) pair (small inputs).

    Same fill rule and tie-break (nearest depth, then the larger face index); depth compared
    as the barycentric interpolation in float64. Memory is H * W * F per image.
    """
    h, w = (int(v) for v in image_size)
    b = vertices.shape[0]
    faces = faces.to(device=vertices.device, dtype=torch.long)
    v = vertices.to(torch.float32)  # the fast path's edge tests run in float32
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32, device=v.device),
        torch.arange(w, dtype=torch.float32, device=v.device),
        indexing="ij",
    )
    cx, cy = xs.reshape(-1, 1), ys.reshape(-1, 1)  # (P, 1)
    out_face = torch.full((b, h * w), -1, dtype=torch.long, device=v.device)
    for i in range(b):
        p = v[i][faces[:, [0, 2, 1]]]  # reversed: front-facing has positive area
        a_, b_ = p[:, [1, 2, 0]], p[:, [2, 0, 1]]
        A = a_[..., 1] - b_[..., 1]
        B = b_[..., 0] - a_[..., 0]
        first_b = (A - B * 2.0**-60) > 0
        o = torch.where(first_b[..., None], b_, a_)
        ok = torch.ones(h * w, faces.shape[0], dtype=torch.bool, device=v.device)
        for e in range(3):
            we = B[:, e] * (cy - o[:, e, 1]) + A[:, e] * (cx - o[:, e, 0])
            tl = (A[:, e] > 0) | ((A[:, e] == 0) & (B[:, e] > 0))
            ok &= torch.where(tl, we >= 0, we > 0)
        area = (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (
            p[:, 2, 0] - p[:, 0, 0]
        )
        ok &= area > 0
        pd = vertices[i].to(torch.float64)[faces]  # original order for barycentrics
        d1 = pd[:, 1, :2] - pd[:, 0, :2]
        d2 = pd[:, 2, :2] - pd[:, 0, :2]
        den = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
        qx = cx.double() - pd[:, 0, 0]
        qy = cy.double() - pd[:, 0, 1]
        l1 = (qx * d2[:, 1] - qy * d2[:, 0]) / den
        l2 = (d1[:, 0] * qy - d1[:, 1] * qx) / den
        z = (1 - l1 - l2) * pd[:, 0, 2] + l1 * pd[:, 1, 2] + l2 * pd[:, 2, 2]
        z = torch.where(ok, z, -math.inf)
        best = z.amax(1, keepdim=True)
        hit = ok & (z == best)
        idx = torch.arange(faces.shape[0], device=v.device).expand_as(hit)
        winner = torch.where(hit, idx, -1).amax(1)
        out_face[i] = torch.where(ok.any(1), winner, -1)
    keys = torch.where(out_face >= 0, out_face, _EMPTY)
    return _dense(_resolve(vertices, faces, keys, h, w), b, h, w, vertices.dtype, vertices.device)
