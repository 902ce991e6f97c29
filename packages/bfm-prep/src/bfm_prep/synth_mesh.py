"""The synthetic face mesh: a mirror-symmetric triangulated disk and its face-shaped surface.

Used by :mod:`bfm_prep.synth`. Two steps, both deterministic (they depend only on the vertex
count):

1. :func:`make_param_mesh` triangulates a planar *parameter domain* (u, v) in millimetres: a
   convex, egg-shaped face outline with a lens-shaped *mouth opening* (the mouth interior).
   The left half (u <= 0) is triangulated by Delaunay and mirrored, so the connectivity and
   the parameter positions are exactly symmetric about u = 0. Vertex spacing grows towards
   the outer boundary (like the Basel mesh, whose 512 boundary vertices are coarser than its
   interior), through a few rings parallel to the outline.
2. :func:`face_surface` maps the domain to 3D: the lens is closed so that the two lips meet
   (up to a small gap) and the lens interior becomes a pocket behind the lips, and a height
   field (forehead, brows, eye sockets and eyes, nose, cheeks, lips, chin) is laid on a
   cylinder-like base. The mesh stays a topological disk; the pocket is inside it, as in the
   Basel mesh.

Convention (Basel): x to the viewer's right in a frontal view, y up, z towards the viewer, mm.
u grows with x, v with y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import Delaunay, cKDTree

# ---------------------------------------------------------------------------------------------
# layout (mm)

# Outline of the parameter domain: two superellipse halves joined at v = OUTLINE_V0 (both have
# a vertical tangent there), convex so that the half domain is the convex hull of its points.
OUTLINE_HALF_WIDTH = 95.0  # arc length from the midline to the side of the face
OUTLINE_V0 = -5.0
OUTLINE_TOP = 100.0  # forehead boundary
OUTLINE_BOTTOM = -112.0  # under the chin
OUTLINE_P_TOP = 2.6  # squarer forehead
OUTLINE_P_BOTTOM = 1.9  # narrower jaw

# The mouth opening in the domain: a lens between v = MOUTH_V +- MOUTH_B * s(u),
# s(u) = 1 - (u / MOUTH_A)^2; closed in 3D onto the lip line y = MOUTH_V.
MOUTH_V = -45.0
MOUTH_A = 24.0
MOUTH_B = 8.0

# The Basel Face Model 2009 mesh size. A disk has F = 2 V - B - 2 triangles, so its outer
# boundary has B = 512 vertices; other sizes scale B with sqrt(V) (coarser than the interior).
BASEL_VERTICES = 53490
BASEL_TRIANGLES = 106466
BASEL_BOUNDARY = 512


@dataclass
class ParamMesh:
    """A planar, mirror-symmetric triangulated disk.

    Attributes:
        uv: (N, 2) float64 parameter positions, mm; exactly symmetric: uv[mirror] = (-u, v).
        faces: (M, 3) int64, 0-based, counter-clockwise in (u, v).
        mirror: (N,) int64, the mirror partner of each vertex (itself when u == 0).
        pocket: (N,) bool, vertices strictly inside the mouth lens (the mouth interior).
        lip_edge: (N,) int8, +1 on the upper lens arc, -1 on the lower arc, 0 elsewhere
            (the two lens corners count as upper).
        boundary: (B,) int64, the outer boundary loop, counter-clockwise, starting at the
            bottom midline vertex.
        mouth_b: the lens half-height used, mm (grows on very coarse meshes).
    """

    uv: np.ndarray
    faces: np.ndarray
    mirror: np.ndarray
    pocket: np.ndarray
    lip_edge: np.ndarray
    boundary: np.ndarray
    mouth_b: float


# ---------------------------------------------------------------------------------------------
# curves


def outline_points(n: int) -> np.ndarray:
    """(n, 2) points on the left half of the outline, bottom midline to top midline, closely
    spaced by angle (used densely, then resampled by arc length)."""
    t = np.linspace(-np.pi / 2, np.pi / 2, n)
    c, s = np.cos(t), np.sin(t)
    top = s >= 0
    p = np.where(top, OUTLINE_P_TOP, OUTLINE_P_BOTTOM)
    height = np.where(top, OUTLINE_TOP - OUTLINE_V0, OUTLINE_V0 - OUTLINE_BOTTOM)
    u = -OUTLINE_HALF_WIDTH * np.abs(c) ** (2.0 / p)
    v = OUTLINE_V0 + height * np.sign(s) * np.abs(s) ** (2.0 / p)
    u[0] = u[-1] = 0.0
    return np.stack([u, v], axis=1)


def _resample(poly: np.ndarray, m: int) -> np.ndarray:
    """m points spaced evenly by arc length along an open polyline (ends included)."""
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, s[-1], m)
    return np.stack([np.interp(t, s, poly[:, 0]), np.interp(t, s, poly[:, 1])], axis=1)


def _arc_length(poly: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(poly, axis=0), axis=1).sum())


def _offset_inwards(poly: np.ndarray, d: float) -> np.ndarray:
    """The left-half outline moved inwards by d (its ends stay on u = 0)."""
    tang = np.gradient(poly, axis=0)
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    # The polyline runs bottom -> top on the left side (clockwise seen from +z): the inward
    # normal is the tangent turned clockwise.
    normal = np.stack([tang[:, 1], -tang[:, 0]], axis=1)
    out = poly + d * normal
    out[0] = (0.0, OUTLINE_BOTTOM + d)
    out[-1] = (0.0, OUTLINE_TOP - d)
    keep = out[:, 0] <= 0
    keep[0] = keep[-1] = True
    return out[keep]


def lens_s(u: np.ndarray) -> np.ndarray:
    """The lens profile s(u) = 1 - (u / MOUTH_A)^2 (0 outside |u| < MOUTH_A)."""
    return np.clip(1.0 - (np.asarray(u) / MOUTH_A) ** 2, 0.0, None)


def _lens_half_arc(n: int, b: float, upper: bool) -> np.ndarray:
    u = np.linspace(-MOUTH_A, 0.0, n)
    v = MOUTH_V + (b if upper else -b) * lens_s(u)
    return np.stack([u, v], axis=1)


# ---------------------------------------------------------------------------------------------
# planar triangulation


def _lattice_left(h: float) -> np.ndarray:
    """Triangular lattice points with u <= 0: columns u = -j * h * sqrt(3)/2 (j = 0 is the
    midline), spacing h along v, odd columns offset by h / 2."""
    dx = h * np.sqrt(3.0) / 2.0
    ncol = int(OUTLINE_HALF_WIDTH / dx) + 1
    j = np.arange(ncol)
    v0, v1 = OUTLINE_BOTTOM, OUTLINE_TOP
    i = np.arange(int((v1 - v0) / h) + 2)
    jj, ii = np.meshgrid(j, i, indexing="ij")
    u = -jj * dx
    v = v0 + ii * h + np.where(jj % 2 == 1, h / 2.0, 0.0) + 0.25 * h  # 0.25h: off the ends
    pts = np.stack([u.ravel(), v.ravel()], axis=1)
    pts[pts[:, 0] == 0.0, 0] = 0.0  # no -0.0
    return pts


class _Domain:
    """Distance queries to the outline and the lens, and the ring layout for a spacing h."""

    def __init__(self) -> None:
        self.outline = outline_points(6000)
        self.outline_tree = cKDTree(self.outline)
        self.outline_length = _arc_length(self.outline)

    def inside_outline(self, p: np.ndarray) -> np.ndarray:
        u, v = np.abs(p[:, 0]), p[:, 1]
        top = v >= OUTLINE_V0
        pw = np.where(top, OUTLINE_P_TOP, OUTLINE_P_BOTTOM)
        height = np.where(top, OUTLINE_TOP - OUTLINE_V0, OUTLINE_V0 - OUTLINE_BOTTOM)
        f = (u / OUTLINE_HALF_WIDTH) ** pw + (np.abs(v - OUTLINE_V0) / height) ** pw
        return f < 1.0

    def points(self, n_boundary: int, h: float, mouth_b: float) -> tuple[np.ndarray, dict]:
        """Left-half points (u <= 0) for boundary count n_boundary and interior spacing h.

        Returns the points and index ranges of the special groups.
        """
        h_b = self.outline_length * 2.0 / n_boundary
        groups = {}
        chunks = []
        # Outer boundary: n_boundary / 2 + 1 points on the left half (both midline ends).
        m0 = n_boundary // 2 + 1
        ring0 = _resample(self.outline, m0)
        ring0[0, 0] = ring0[-1, 0] = 0.0
        chunks.append(ring0)
        groups["boundary"] = (0, m0)
        # Transition rings: spacing from h_b down to h, each ring ~ a row of equilateral
        # triangles inside the previous one.
        ratio = h_b / h
        n_rings = max(1, int(np.ceil(np.log(max(ratio, 1.0)) / np.log(1.18))))
        d = 0.0
        h_prev = h_b
        for k in range(1, n_rings + 1):
            h_k = h_b * (h / h_b) ** (k / n_rings)
            d += np.sqrt(3.0) / 2.0 * 0.5 * (h_prev + h_k)
            poly = _offset_inwards(self.outline, d)
            m = max(3, int(round(_arc_length(poly) / h_k)) + 1)
            ring = _resample(poly, m)
            ring[0, 0] = ring[-1, 0] = 0.0
            chunks.append(ring)
            h_prev = h_k
        d_last = d
        # Lens (lip contact line): upper and lower half arcs, sharing the corner.
        lens_len = _arc_length(_lens_half_arc(400, mouth_b, True))
        m_l = max(3, int(round(lens_len / h)) + 1)
        # Spaced by arc length, then put exactly on the curve (resampling cuts corners).
        upper = _resample(_lens_half_arc(400, mouth_b, True), m_l)
        upper[-1, 0] = 0.0
        upper[:, 1] = MOUTH_V + mouth_b * lens_s(upper[:, 0])
        lower = _resample(_lens_half_arc(400, mouth_b, False), m_l)[1:]
        lower[-1, 0] = 0.0
        lower[:, 1] = MOUTH_V - mouth_b * lens_s(lower[:, 0])
        start = sum(len(c) for c in chunks)
        chunks += [upper, lower, np.array([[0.0, MOUTH_V]])]
        groups["lip_upper"] = (start, start + len(upper))
        groups["lip_lower"] = (start + len(upper), start + len(upper) + len(lower))
        # Interior lattice, clear of the rings and of the lens.
        lat = _lattice_left(h)
        lat = lat[self.inside_outline(lat)]
        # distance_upper_bound: only "farther than the threshold" matters, and it keeps the
        # query fast for the many points far from the curve.
        thr = d_last + 0.8 * h
        dist_out, _ = self.outline_tree.query(lat, distance_upper_bound=thr)
        lat = lat[dist_out > thr]
        lens_dense = np.concatenate(
            [_lens_half_arc(600, mouth_b, True), _lens_half_arc(600, mouth_b, False)]
        )
        dist_lens, _ = cKDTree(lens_dense).query(lat, distance_upper_bound=0.6 * h + 1e-9)
        dist_c = np.hypot(lat[:, 0], lat[:, 1] - MOUTH_V)
        lat = lat[(dist_lens > 0.6 * h) & (dist_c > 0.6 * h)]
        start = sum(len(c) for c in chunks)
        chunks.append(lat)
        groups["lattice"] = (start, start + len(lat))
        return np.concatenate(chunks), groups


def _full_count(pts: np.ndarray) -> int:
    n_axis = int(np.count_nonzero(pts[:, 0] == 0.0))
    return 2 * (len(pts) - n_axis) + n_axis


def _boundary_count(n_vertices: int) -> int:
    """Even boundary count: 512 at the Basel size, scaled with sqrt(N) otherwise."""
    if n_vertices == BASEL_VERTICES:
        return BASEL_BOUNDARY
    return max(24, 2 * int(round(BASEL_BOUNDARY / 2 * np.sqrt(n_vertices / BASEL_VERTICES))))


def make_param_mesh(n_vertices: int) -> ParamMesh:
    """Triangulate the parameter domain with exactly ``n_vertices`` vertices.

    The boundary has :func:`_boundary_count` vertices (512 at the Basel size, so that the
    triangle count is 2 N - B - 2 = 106,466 for N = 53,490).
    """
    dom = _Domain()
    n_boundary = _boundary_count(n_vertices)
    # Interior spacing from the area, then a search for the spacing whose point count is at
    # least n_vertices with the fewest extra points (removed below).
    area = 2.0 * 0.85 * OUTLINE_HALF_WIDTH * (OUTLINE_TOP - OUTLINE_BOTTOM)
    h0 = np.sqrt(area / (n_vertices * np.sqrt(3.0) / 2.0))
    mouth_b = max(MOUTH_B, 1.2 * h0)

    def count(h: float) -> int:
        pts, _ = dom.points(n_boundary, h, mouth_b)
        return _full_count(pts)

    # The count falls roughly as 1 / h^2: a few secant-like steps, then small steps down until
    # the count reaches n_vertices; keep the candidate with the fewest extra points.
    h = h0
    for _ in range(4):
        h *= np.sqrt(count(h) / n_vertices)
    c = count(h)
    while c < n_vertices:
        h *= 1.0 - 0.25 * (n_vertices - c) / n_vertices - 1e-4
        c = count(h)
    best_h, best_excess = h, c - n_vertices
    for hh in h * (1.0 + np.array([1.0, 2.0, 3.0, 4.0]) * 2e-4):
        e = count(hh) - n_vertices
        if 0 <= e < best_excess:
            best_h, best_excess = hh, e
    pts, groups = dom.points(n_boundary, best_h, mouth_b)
    pts = _remove_excess(pts, groups, best_excess)
    if _full_count(pts) != n_vertices:  # pragma: no cover - guarded by construction
        raise AssertionError("synthetic mesh vertex count mismatch")
    return _mirror_triangulate(pts, groups, mouth_b)


def _remove_excess(pts: np.ndarray, groups: dict, excess: int) -> np.ndarray:
    """Drop lattice points so that the full (mirrored) count falls by exactly ``excess``."""
    if excess == 0:
        return pts
    a, b = groups["lattice"]
    lat_idx = np.arange(a, b)
    lat = pts[lat_idx]
    drop = []
    # Keep clear of the face's features: remove from the upper forehead first.
    order = np.argsort(-lat[:, 1] + 0.01 * lat[:, 0], kind="stable")
    axis = lat_idx[order][lat[order, 0] == 0.0]
    left = lat_idx[order][lat[order, 0] < 0.0]
    if excess % 2 == 1:
        drop.append(axis[2])
        excess -= 1
    k = excess // 2
    if k:
        # Every third point of the upper forehead rows, so that no two removals touch (the
        # search above leaves only a few to remove); spread over the half if ever more.
        at = np.arange(k) * 3 + 7
        if at[-1] >= len(left):
            at = np.unique(np.linspace(0, len(left) - 1, k).astype(np.int64))
        drop.extend(left[at])
    keep = np.ones(len(pts), bool)
    keep[np.asarray(drop, dtype=np.int64)] = False
    # Group ranges above the lattice are unchanged; the lattice shrinks (not used later).
    return pts[keep]


def _mirror_triangulate(half: np.ndarray, groups: dict, mouth_b: float) -> ParamMesh:
    """Delaunay-triangulate the left half and mirror it into the full symmetric disk."""
    n_half = len(half)
    tri = Delaunay(half)
    if len(tri.coplanar):  # pragma: no cover - the construction keeps points apart
        raise AssertionError("synthetic mesh: Delaunay dropped points")
    f = tri.simplices.astype(np.int64)
    # Orient counter-clockwise.
    a, b, c = half[f[:, 0]], half[f[:, 1]], half[f[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    f = np.where((cross < 0)[:, None], f[:, [0, 2, 1]], f)
    area = np.abs(cross) / 2
    f = f[area > 1e-9]
    # Global numbering: half points first, then the mirrors of the strictly-left points.
    on_axis = half[:, 0] == 0.0
    left_idx = np.flatnonzero(~on_axis)
    mirror_of_half = np.arange(n_half)
    mirror_of_half[left_idx] = n_half + np.arange(len(left_idx))
    uv = np.concatenate([half, half[left_idx] * np.array([-1.0, 1.0])])
    uv[uv[:, 0] == 0.0, 0] = 0.0
    n = len(uv)
    mirror = np.empty(n, np.int64)
    mirror[:n_half] = mirror_of_half
    mirror[n_half:] = left_idx
    f_right = mirror_of_half[f][:, [0, 2, 1]]  # reflection reverses orientation
    faces = np.concatenate([f, f_right])
    # Tag the pocket and the lip edges.
    lip_edge = np.zeros(n, np.int8)
    for name, sign in (("lip_upper", 1), ("lip_lower", -1)):
        lo, hi = groups[name]
        idx = np.arange(lo, hi)
        lip_edge[idx] = sign
        lip_edge[mirror_of_half[idx]] = sign
    pocket = (np.abs(uv[:, 1] - MOUTH_V) < mouth_b * lens_s(uv[:, 0])) & (lip_edge == 0)
    # Reorder the vertices in scanline order (rows of v, then u), like a scanned mesh.
    order = np.lexsort((uv[:, 0], np.round(uv[:, 1], 6)))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    uv = uv[order]
    mirror = rank[mirror[order]]
    pocket = pocket[order]
    lip_edge = lip_edge[order]
    faces = rank[faces]
    boundary = rank[_boundary_loop(groups, mirror_of_half)]
    return ParamMesh(uv, faces, mirror, pocket, lip_edge, boundary, float(mouth_b))


def _boundary_loop(groups: dict, mirror_of_half: np.ndarray) -> np.ndarray:
    """The outer loop counter-clockwise from the bottom midline vertex (pre-reordering ids)."""
    a, b = groups["boundary"]
    left = np.arange(a, b)  # bottom -> top along the left side: clockwise
    right = mirror_of_half[left[::-1]][1:-1]  # top -> bottom along the right side
    # Counter-clockwise from the bottom: bottom -> right side up -> top -> left side down.
    return np.concatenate([[left[0]], right[::-1], [left[-1]], left[::-1][1:-1]])


# ---------------------------------------------------------------------------------------------
# the face surface

HEAD_RX = 80.0  # horizontal radius of the head cylinder (x = RX sin(u / RX))
HEAD_RZ = 95.0  # its depth radius (z = RZ (cos(u / RX) - 1))
FACE_Z0 = 90.0  # z of the midline at the nose level (origin near the head's centre)
LIP_GAP = 1.0  # mm between upper and lower lip at the middle of the mouth
CLOSE_LENGTH = 20.0  # mm over which the lens closure fades above and below the mouth
POCKET_DEPTH = 9.0  # mm behind the lip line at the middle of the mouth
POCKET_HEIGHT = 4.0  # how far the pocket bulges up (and down) behind the lips, mm

EYE_U, EYE_Y = 31.0, 25.0  # eye centres (|u|, y), mm
EYE_HALF_WIDTH = 14.0
EYE_UP, EYE_DOWN = 5.0, 3.8  # opening above / below the centre line
BROW_Y = 41.0
NOSE_TIP_Y = -8.0
SUBNASALE_Y = -21.0
NASION_Y = 24.0
CHIN_Y = -84.0


def _g(u, y, u0, y0, su, sy):
    return np.exp(-0.5 * (((u - u0) / su) ** 2 + ((y - y0) / sy) ** 2))


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def eye_opening(u, y):
    """Normalised almond coordinate of the eye opening: < 1 inside (|u| used, mm)."""
    du = (np.abs(u) - EYE_U) / EYE_HALF_WIDTH
    lid = np.clip(1.0 - du**2, 1e-6, None)
    dy = y - EYE_Y
    half = np.where(dy >= 0, EYE_UP, EYE_DOWN) * lid
    return np.maximum(np.abs(du), np.abs(dy) / half)


def face_height(u: np.ndarray, y: np.ndarray) -> np.ndarray:
    """z of the face surface at arc coordinate u and height y (both mm), mouth closed."""
    au = np.abs(u)
    # Base: a cylinder around the head, receding above the brows and under the chin.
    z = FACE_Z0 + HEAD_RZ * (np.cos(u / HEAD_RX) - 1.0)
    z = z - (y + 5.0) ** 2 / (2 * np.where(y > -5.0, 250.0, 320.0))
    z = z - 0.035 * np.clip(CHIN_Y - 4.0 - y, 0.0, None) ** 2
    z = z - 0.003 * np.clip(y - 55.0, 0.0, None) ** 2
    # Nose: a ridge from the nasion to the tip, a rounded tip, alae, columella.
    t = np.clip((NASION_Y - y) / (NASION_Y - NOSE_TIP_Y), 0.0, None)
    ridge_h = 19.0 * t**1.3 * np.exp(-(np.clip(NOSE_TIP_Y - y, 0.0, None) ** 2) / (2 * 4.5**2))
    ridge_w = 6.0 + 5.0 * np.clip(t, 0.0, 1.0)
    z = z + ridge_h * np.exp(-0.5 * (u / ridge_w) ** 2)
    z = z + 6.0 * _g(u, y, 0.0, NOSE_TIP_Y - 1.0, 7.0, 5.0)  # tip
    z = z + 7.0 * _g(au, y, 13.0, SUBNASALE_Y + 5.0, 5.0, 4.5)  # alae
    z = z + 5.0 * _g(u, y, 0.0, SUBNASALE_Y + 3.0, 4.0, 3.5)  # columella
    # Eye sockets, eyeballs, brow ridge, cheekbones, temples.
    z = z - 9.0 * _g(au, y, EYE_U - 1.0, EYE_Y + 2.0, 14.0, 10.0)
    z = z + 3.0 * _g(au, y, EYE_U, EYE_Y, 0.55 * EYE_HALF_WIDTH, 0.9 * EYE_UP)  # eyeball
    z = z + 6.0 * _g(au, y, 30.0, BROW_Y, 18.0, 6.0) + 3.0 * _g(u, y, 0.0, BROW_Y - 4, 12.0, 9.0)
    z = z + 6.0 * _g(au, y, 46.0, 2.0, 14.0, 13.0)
    z = z - 4.0 * _g(au, y, 66.0, 38.0, 10.0, 14.0)
    # Mouth: the muzzle, the lips (meeting at y = MOUTH_V), philtrum, labiomental fold, chin.
    z = z + 8.0 * _g(u, y, 0.0, MOUTH_V + 2.0, 30.0, 24.0)
    lip_w = _smoothstep((MOUTH_A + 3.0 - au) / 10.0)
    z = z + lip_w * (
        3.5 * _g(u, y, 0.0, MOUTH_V + 4.0, 40.0, 3.2)
        + 4.0 * _g(u, y, 0.0, MOUTH_V - 4.5, 40.0, 3.8)
    )
    z = z - 1.0 * _g(u, y, 0.0, MOUTH_V + 14.0, 3.0, 5.0)
    z = z - 3.0 * _g(u, y, 0.0, MOUTH_V - 14.0, 18.0, 3.5)
    z = z + 7.0 * _g(u, y, 0.0, CHIN_Y + 4.0, 17.0, 10.0)
    return z


def close_mouth(uv: np.ndarray, mouth_b: float) -> np.ndarray:
    """The closed-mouth height y (mm) of each non-pocket parameter point (pocket: the height
    of its lip contact point); u is unchanged."""
    u, v = uv[:, 0], uv[:, 1]
    s = lens_s(u)
    squeeze = (mouth_b - LIP_GAP / 2.0) * s
    above = v - (MOUTH_V + mouth_b * s)
    below = (MOUTH_V - mouth_b * s) - v
    y = v.copy()
    up = above >= 0
    y[up] = v[up] - squeeze[up] * np.exp(-above[up] / CLOSE_LENGTH)
    dn = below >= 0
    y[dn] = v[dn] + squeeze[dn] * np.exp(-below[dn] / CLOSE_LENGTH)
    inside = ~(up | dn)
    tau = (v[inside] - MOUTH_V) / np.maximum(mouth_b * s[inside], 1e-12)
    y[inside] = MOUTH_V + tau * LIP_GAP / 2.0 * s[inside]
    return y


def face_surface(pm: ParamMesh) -> tuple[np.ndarray, np.ndarray]:
    """The mean face (N, 3) float64 mm and the closed-mouth coordinates (N, 2) (u, y).

    Exactly mirror-symmetric: computed from |u| and the sign of u.
    """
    u = pm.uv[:, 0]
    y = close_mouth(pm.uv, pm.mouth_b)
    x = HEAD_RX * np.sin(np.abs(u) / HEAD_RX)
    z = face_height(np.abs(u), y)
    ys = y.copy()
    if pm.pocket.any():
        p = pm.pocket
        s = lens_s(u[p])
        tau = (pm.uv[p, 1] - MOUTH_V) / (pm.mouth_b * s)
        rho = 1.0 - tau**2
        x[p] = x[p] * (1.0 - 0.15 * rho)
        ys[p] = MOUTH_V + s * tau * (LIP_GAP / 2.0 + POCKET_HEIGHT * rho)
        z[p] = z[p] - POCKET_DEPTH * s * rho
    x = np.where(u < 0, -x, x)
    x[u == 0] = 0.0
    return np.stack([x, ys, z], axis=1), np.stack([u, y], axis=1)


# ---------------------------------------------------------------------------------------------
# colour and landmarks

SKIN = np.array([200.0, 156.0, 132.0])
BROW_RGB = np.array([72.0, 52.0, 42.0])
SCLERA_RGB = np.array([232.0, 224.0, 214.0])
IRIS_RGB = np.array([82.0, 60.0, 45.0])
PUPIL_RGB = np.array([18.0, 14.0, 14.0])
LASH_RGB = np.array([70.0, 50.0, 45.0])
LIP_RGB = np.array([168.0, 88.0, 88.0])
MOUTH_RGB = np.array([70.0, 22.0, 28.0])
NOSTRIL_RGB = np.array([80.0, 45.0, 40.0])


def brow_line(au: np.ndarray) -> np.ndarray:
    """Height (mm) of the brow's centre line at |u| = au."""
    return BROW_Y + 3.5 * (1.0 - ((au - 32.0) / 24.0) ** 2)


def lip_profile(au: np.ndarray) -> np.ndarray:
    """0..1 thickness profile of the lips' red part along the mouth (0 beyond the corners)."""
    return np.clip(1.0 - (au / (MOUTH_A + 1.5)) ** 2, 0.0, None) ** 0.6


def _blend(base, rgb, w):
    return base * (1.0 - w[:, None]) + rgb[None, :] * w[:, None]


def face_color(closed: np.ndarray, pm: ParamMesh) -> np.ndarray:
    """Mean colour (N, 3) float64 RGB in [0, 255]: skin with darker brows, eyes, lips and
    mouth interior; mirror-symmetric (a function of |u|)."""
    au, y = np.abs(closed[:, 0]), closed[:, 1]
    n = len(au)
    c = np.tile(SKIN, (n, 1))
    # Slightly redder cheeks and nose tip, a little lighter forehead.
    c = c + 14.0 * _g(au, y, 44.0, -8.0, 14.0, 14.0)[:, None] * np.array([1.0, -0.6, -0.5])
    c = c + 8.0 * _g(au, y, 0.0, NOSE_TIP_Y, 8.0, 8.0)[:, None] * np.array([1.0, -0.5, -0.5])
    c = c + 8.0 * _g(au, y, 0.0, 75.0, 40.0, 25.0)[:, None]
    # Brows: a band along the brow line, thinning towards the tail.
    along = np.clip((au - 10.0) / 46.0, 0.0, 1.0)
    half = 3.8 * (1.0 - 0.5 * along)
    inside = (au > 10.0) & (au < 57.0)
    w = _smoothstep((half - np.abs(y - brow_line(au))) / 1.5 + 0.5) * inside
    w *= _smoothstep((au - 10.0) / 3.0) * _smoothstep((57.0 - au) / 3.0)
    c = _blend(c, BROW_RGB, 0.85 * w)
    # Eyes: sclera inside the opening, iris and pupil, a dark lash line around it.
    r_eye = eye_opening(au, y)
    w = _smoothstep((1.0 - r_eye) / 0.15)
    c = _blend(c, SCLERA_RGB, w)
    d_iris = np.hypot(au - EYE_U, y - EYE_Y)
    c = _blend(c, IRIS_RGB, w * _smoothstep((5.5 - d_iris) / 0.8 + 0.5))
    c = _blend(c, PUPIL_RGB, w * _smoothstep((2.3 - d_iris) / 0.6 + 0.5))
    c = _blend(c, LASH_RGB, 0.8 * _smoothstep(1.0 - np.abs(r_eye - 1.0) / 0.25))
    # Lips: the red part between the outer lip line and the contact line.
    prof = lip_profile(au)
    top = MOUTH_V + 6.5 * prof
    bot = MOUTH_V - 8.0 * prof
    w = _smoothstep((top - y) / 1.2 + 0.5) * _smoothstep((y - bot) / 1.2 + 0.5)
    w *= prof > 0
    c = _blend(c, LIP_RGB, w)
    # Nostrils.
    nostril = 1.0 - ((au - 7.0) / 3.5) ** 2 - ((y - SUBNASALE_Y - 2.0) / 2.0) ** 2
    c = _blend(c, NOSTRIL_RGB, 0.9 * _smoothstep(nostril))
    # Mouth interior: dark red, darker deeper in.
    if pm.pocket.any():
        p = pm.pocket
        s = lens_s(pm.uv[p, 0])
        rho = 1.0 - ((pm.uv[p, 1] - MOUTH_V) / (pm.mouth_b * s)) ** 2
        c[p] = _blend(np.tile(LIP_RGB, (p.sum(), 1)), MOUTH_RGB, np.clip(0.4 + rho, 0, 1))
    return np.clip(c, 0.0, 255.0)


# Landmark targets in closed coordinates (u, y) for the image-left side (u < 0) and the
# midline; the image-right ones are the mirrors of the vertices picked on the left.
def _eye_lid(du: float, upper: bool) -> float:
    lid = 1.0 - (du / EYE_HALF_WIDTH) ** 2
    return EYE_Y + (EYE_UP if upper else -EYE_DOWN) * lid


_LEFT = "left"
_MID = "mid"
_UPPER_LIP = "upper"
_LOWER_LIP = "lower"
_TIP = "tip"

# iBUG 68 (1-based number -> (kind, (u, y)) or ("mirror", number)).
IBUG68 = {
    **{
        i + 1: (_LEFT, p)
        for i, p in enumerate(
            [
                (-70, 12),
                (-69, -5),
                (-67, -22),
                (-63, -38),
                (-56, -54),
                (-46, -68),
                (-33, -80),
                (-17, -88),
            ]
        )
    },
    9: (_MID, (0, -91)),
    **{
        18 + i: (_LEFT, (-a, float(brow_line(np.float64(a)))))
        for i, a in enumerate([54.0, 45.0, 35.0, 25.0, 15.0])
    },
    28: (_MID, (0, NASION_Y - 2)),
    29: (_MID, (0, 12)),
    30: (_MID, (0, 2)),
    31: (_TIP, None),
    32: (_LEFT, (-9, SUBNASALE_Y + 2)),
    33: (_LEFT, (-4.5, SUBNASALE_Y + 0.5)),
    34: (_MID, (0, SUBNASALE_Y)),
    37: (_LEFT, (-EYE_U - EYE_HALF_WIDTH, EYE_Y)),
    38: (_LEFT, (-EYE_U - 5, _eye_lid(5, True))),
    39: (_LEFT, (-EYE_U + 5, _eye_lid(5, True))),
    40: (_LEFT, (-EYE_U + EYE_HALF_WIDTH, EYE_Y)),
    41: (_LEFT, (-EYE_U + 5, _eye_lid(5, False))),
    42: (_LEFT, (-EYE_U - 5, _eye_lid(5, False))),
    49: (_LEFT, (-MOUTH_A - 1.5, MOUTH_V)),
    50: (_LEFT, (-16, MOUTH_V + 4.5)),
    51: (_LEFT, (-6, MOUTH_V + 6.3)),
    52: (_MID, (0, MOUTH_V + 6.5)),
    60: (_LEFT, (-16, MOUTH_V - 5.5)),
    59: (_LEFT, (-6, MOUTH_V - 7.8)),
    58: (_MID, (0, MOUTH_V - 8)),
    61: (_UPPER_LIP, (-MOUTH_A, MOUTH_V)),
    62: (_UPPER_LIP, (-11, MOUTH_V)),
    63: (_UPPER_LIP, (0, MOUTH_V)),
    67: (_LOWER_LIP, (0, MOUTH_V)),
    68: (_LOWER_LIP, (-11, MOUTH_V)),
}
_IBUG_MIRROR = {
    **{18 - i: i for i in range(1, 9)},
    **{27 - i: 18 + i for i in range(5)},
    35: 33,
    36: 32,
    43: 40,
    44: 39,
    45: 38,
    46: 37,
    47: 42,
    48: 41,
    53: 51,
    54: 50,
    55: 49,
    56: 60,
    57: 59,
    64: 62,
    65: 61,
    66: 68,
}
IBUG68.update({k: ("mirror", v) for k, v in _IBUG_MIRROR.items()})

# AFLW 21: 1-6 brows (image left to right), 7-12 eyes, 13 left ear, 14-16 nose, 17 right
# ear, 18-20 mouth, 21 chin. Entries: ("ibug", n), ("mirror", aflw n) or a target.
AFLW21 = {
    1: ("ibug", 18),
    2: ("ibug", 20),
    3: ("ibug", 22),
    4: ("ibug", 23),
    5: ("ibug", 25),
    6: ("ibug", 27),
    7: ("ibug", 37),
    8: (_LEFT, (-EYE_U, EYE_Y)),
    9: ("ibug", 40),
    10: ("ibug", 43),
    11: ("mirror", 8),
    12: ("ibug", 46),
    13: (_LEFT, (-87, -27)),
    14: (_LEFT, (-14, SUBNASALE_Y + 5)),
    15: ("ibug", 31),
    16: ("mirror", 14),
    17: ("mirror", 13),
    18: ("ibug", 49),
    19: ("ibug", 63),
    20: ("ibug", 55),
    21: (_MID, (0, CHIN_Y - 3)),
}


def pick_landmarks(pm: ParamMesh, vertices: np.ndarray, closed: np.ndarray) -> dict:
    """0-based vertex indices of the AFLW 21 and iBUG 68 landmarks: ``{"aflw21", "ibug68"}``.

    Left and midline landmarks are the vertices nearest their targets in closed (u, y)
    coordinates (inner-lip ones on the lip edge, the nose tip the highest vertex); the
    image-right ones are the mirrors of their left partners.
    """
    u = pm.uv[:, 0]
    ok = ~pm.pocket
    pools = {
        _LEFT: np.flatnonzero(ok & (u < 0)),
        _MID: np.flatnonzero(ok & (u == 0)),
        _UPPER_LIP: np.flatnonzero((pm.lip_edge > 0) & (u <= 0)),
        _LOWER_LIP: np.flatnonzero((pm.lip_edge < 0) & (u <= 0)),
    }
    trees = {k: cKDTree(closed[idx]) for k, idx in pools.items()}

    def target(kind, p):
        if kind == _TIP:
            return int(np.argmax(vertices[:, 2]))
        _, j = trees[kind].query(np.asarray(p, dtype=np.float64))
        return int(pools[kind][j])

    ibug = {}
    for k, (kind, p) in IBUG68.items():
        if kind != "mirror":
            ibug[k] = target(kind, p)
    for k, (kind, p) in IBUG68.items():
        if kind == "mirror":
            ibug[k] = int(pm.mirror[ibug[p]])
    aflw = {}
    for k, (kind, p) in AFLW21.items():
        if kind == "ibug":
            aflw[k] = ibug[p]
        elif kind != "mirror":
            aflw[k] = target(kind, p)
    for k, (kind, p) in AFLW21.items():
        if kind == "mirror":
            aflw[k] = int(pm.mirror[aflw[p]])
    return {
        "aflw21": np.array([aflw[k] for k in range(1, 22)], dtype=np.int64),
        "ibug68": np.array([ibug[k] for k in range(1, 69)], dtype=np.int64),
    }
