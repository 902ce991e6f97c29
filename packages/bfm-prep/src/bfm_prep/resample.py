"""Resample a morphable model onto a regular R x R grid in its UV flattening.

Conventions (docs/uv-grid.md):
- grid order: vertex k is row ``k // R`` counted from the top (v = 1 - row / (R - 1)) and
  column ``k % R`` (u = col / (R - 1)); the vertex order of the original MATLAB
  ``resampleModel`` output;
- grid faces: two triangles per cell, cells column by column and, within a column, row by row
  from the top (the original's face order); each triangle is oriented like the source mesh,
  i.e. counter-clockwise in UV when the source triangles are counter-clockwise in UV;
- a grid point inside a source triangle gets that triangle's barycentric interpolation of
  every per-vertex quantity (mean, all shape components, colour); a grid point on no triangle
  (a hole, beyond the boundary) is marked outside and gets the value at the nearest point of
  the mesh in UV (a point on a boundary edge, interpolated linearly along that edge);
- a grid point within ``INSIDE_TOL_CELLS`` of a grid cell of the mesh counts as inside;
- landmarks: a source vertex maps to the inside grid vertex nearest to it in UV (ties: the
  smallest grid index).

Everything is vectorised: the point location uses a uniform bucket grid over the triangles'
bounding boxes, the nearest-boundary search a k-d tree, and the interpolation is one sparse
(R*R, N) matrix of barycentric weights applied to every per-vertex array.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from bfm_prep.artifact import UVGridModel
from bfm_prep.errors import PrepError
from bfm_prep.model import MorphableModel

MIN_RES = 8
# The largest grid: 4096 x 4096 is 16.8 million grid vertices, already 400 MB per component in
# float64; beyond it the resampling runs out of memory on any ordinary machine.
MAX_RES = 4096


def grid_memory_bytes(res: int, n_components: int, n_color_components: int = 0) -> int:
    """Bytes the R x R grid model takes in memory (float64): mean, shape components and, with
    colour, mean and colour components, 3 values per grid vertex each, plus the grid's UV."""
    per_field = int(res) * int(res) * 3 * 8
    fields = 1 + int(n_components) + (1 + int(n_color_components) if n_color_components else 0)
    return per_field * fields + int(res) * int(res) * 2 * 8


def check_res(res, n_components: int | None = None, n_color_components: int = 0) -> int:
    """``res`` as an int in MIN_RES..MAX_RES, or a one-line PrepError naming the parameter
    ``res`` (:meth:`PrepError.naming`)."""
    if isinstance(res, bool) or not isinstance(res, (int, np.integer)) or res < MIN_RES:
        raise PrepError.naming(
            "{res} {value} is too small; use an integer R >= {min_res} "
            "(112 and 224 are the usual sizes).",
            value=res,
            min_res=MIN_RES,
        )
    if res > MAX_RES:
        k = 0 if n_components is None else n_components
        need = grid_memory_bytes(res, k, n_color_components) / 2**30
        what = "the grid's mean alone" if n_components is None else "the grid model"
        raise PrepError.naming(
            "{res} {value} is too large: {what} would need {need:,.1f} GiB of memory "
            "({value} x {value} grid vertices); use R <= {max_res} (112 and 224 are "
            "the usual sizes).",
            value=res,
            what=what,
            need=need,
            max_res=MAX_RES,
        )
    return int(res)


# A grid point counts as inside a triangle when its smallest barycentric coordinate is at least
# -BARY_EPS: points exactly on an edge (the square's sides, shared edges) must not fall
# through the crack between two triangles because of rounding.
BARY_EPS = 1e-9
# Triangles whose UV area is below this fraction of the median area are skipped by the point
# location (their barycentric coordinates are meaningless); their neighbours cover the point.
DEGENERATE_AREA_FRACTION = 1e-12
# A grid point this close to the mesh (in UV, as a fraction of a grid cell) still counts as
# inside: a boundary computed in floating point may sit a rounding error inside the square.
INSIDE_TOL_CELLS = 1e-3
# Upper bound on (point, candidate triangle) pairs handled at once, to bound memory.
_PAIR_CHUNK = 4_000_000

LANDMARK_RULE = (
    "each source landmark vertex -> the inside grid vertex nearest to it in UV "
    "(ties: the smallest grid index)"
)


# ---------------------------------------------------------------------------------------------
# the grid


def grid_uv(res: int) -> np.ndarray:
    """(R*R, 2) float64 UV of the grid vertices in grid order (row from the top, then column)."""
    t = np.linspace(0.0, 1.0, res)
    rows, cols = np.divmod(np.arange(res * res), res)
    return np.stack([t[cols], 1.0 - t[rows]], axis=1)


def grid_faces(res: int, ccw: bool = True) -> np.ndarray:
    """(2 (R-1)^2, 3) int64 faces of the grid, two per cell.

    Cells are listed column by column, each column from the top row down, and each cell
    (top-left a, top-right b, bottom-left c, bottom-right d) gives the triangles (a, c, b) and
    (d, b, c): counter-clockwise in UV (u right, v up). ``ccw=False`` gives (a, b, c), (d, c, b),
    exactly the faces of the original MATLAB ``resampleModel`` output (clockwise in UV).
    """
    cols, rows = np.meshgrid(np.arange(res - 1), np.arange(res - 1), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    a = rows * res + cols
    b = a + 1
    c = a + res
    d = c + 1
    if ccw:
        tris = np.stack([np.stack([a, c, b], 1), np.stack([d, b, c], 1)], axis=1)
    else:
        tris = np.stack([np.stack([a, b, c], 1), np.stack([d, c, b], 1)], axis=1)
    return np.ascontiguousarray(tris.reshape(-1, 3), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# point location in a planar triangle mesh


def signed_areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(M,) signed UV area of each triangle (> 0: counter-clockwise with v up)."""
    a, b, c = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    e1, e2 = b - a, c - a
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def locate_points(
    uv: np.ndarray, faces: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Find the triangle under each point of a planar mesh.

    Args:
        uv: (N, 2) float64 vertex positions in the plane.
        faces: (M, 3) int64, 0-based.
        points: (P, 2) float64 query points.

    Returns:
        tri: (P,) int64, the containing triangle, -1 where none contains the point.
        bary: (P, 3) float64 barycentric coordinates in that triangle (zeros where tri = -1).
        Where several triangles contain a point (shared edges, overlaps) the one in which the
        point is deepest (largest smallest coordinate) is chosen.
    """
    uv = np.asarray(uv, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    n_points = len(points)
    tri_out = np.full(n_points, -1, dtype=np.int64)
    bary_out = np.zeros((n_points, 3))
    if len(faces) == 0 or n_points == 0:
        return tri_out, bary_out

    a = uv[faces[:, 0]]
    e1 = uv[faces[:, 1]] - a
    e2 = uv[faces[:, 2]] - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    usable = np.abs(det) > DEGENERATE_AREA_FRACTION * max(np.median(np.abs(det)), 1e-300)
    tri_ids = np.flatnonzero(usable)
    if tri_ids.size == 0:
        return tri_out, bary_out

    # Uniform buckets over the mesh's bounding box, about two triangles per bucket.
    corners = uv[faces[tri_ids]]  # (M', 3, 2)
    lo, hi = corners.min(axis=1), corners.max(axis=1)
    box_lo, box_hi = lo.min(axis=0), hi.max(axis=0)
    n_b = int(np.clip(np.sqrt(tri_ids.size / 2.0), 1, 1024))
    while True:
        size = np.maximum((box_hi - box_lo) / n_b, 1e-300)

        def bucket_of(x: np.ndarray, size=size, n_b=n_b) -> np.ndarray:
            return np.clip(np.floor((x - box_lo) / size).astype(np.int64), 0, n_b - 1)

        b_lo, b_hi = bucket_of(lo), bucket_of(hi)
        span = b_hi - b_lo + 1  # (M', 2) buckets along u and v
        counts = span[:, 0] * span[:, 1]
        # Long thin triangles cover many buckets; coarsen the buckets if they would make the
        # registration table large (never for a sensible embedding).
        if n_b == 1 or counts.sum() <= 16 * tri_ids.size + _PAIR_CHUNK:
            break
        n_b = max(1, n_b // 2)
    owner = np.repeat(np.arange(tri_ids.size), counts)
    offset = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts)
    bu = b_lo[owner, 0] + offset % span[owner, 0]
    bv = b_lo[owner, 1] + offset // span[owner, 0]
    bucket = bv * n_b + bu
    order = np.argsort(bucket, kind="stable")
    bucket_tris = tri_ids[owner[order]]
    starts = np.searchsorted(bucket[order], np.arange(n_b * n_b + 1))

    # Candidate (point, triangle) pairs: the triangles registered in the point's bucket.
    in_box = np.all((points >= box_lo) & (points <= box_hi), axis=1)
    q = np.flatnonzero(in_box)
    qb = bucket_of(points[q])
    qb = qb[:, 1] * n_b + qb[:, 0]
    n_cand = starts[qb + 1] - starts[qb]

    inv_det = np.zeros_like(det)
    inv_det[usable] = 1.0 / det[usable]
    # Chunks of query points whose pair count stays under _PAIR_CHUNK.
    cum = np.cumsum(n_cand)
    cuts = np.searchsorted(cum, np.arange(_PAIR_CHUNK, cum[-1] if cum.size else 0, _PAIR_CHUNK))
    for sel in np.split(np.arange(q.size), np.unique(cuts)):
        if sel.size == 0:
            continue
        nc = n_cand[sel]
        pts = np.repeat(q[sel], nc)
        first = np.repeat(starts[qb[sel]], nc)
        within = np.arange(pts.size) - np.repeat(np.cumsum(nc) - nc, nc)
        tris = bucket_tris[first + within]
        d = points[pts] - a[tris]
        l1 = (d[:, 0] * e2[tris, 1] - d[:, 1] * e2[tris, 0]) * inv_det[tris]
        l2 = (e1[tris, 0] * d[:, 1] - e1[tris, 1] * d[:, 0]) * inv_det[tris]
        l0 = 1.0 - l1 - l2
        score = np.minimum(np.minimum(l0, l1), l2)
        hit = score >= -BARY_EPS
        pts, tris, score = pts[hit], tris[hit], score[hit]
        lam = np.stack([l0[hit], l1[hit], l2[hit]], axis=1)
        # Deepest triangle per point: sort by (point, -score) and keep each point's first pair
        # (a point's candidates all lie in one chunk).
        o = np.lexsort((-score, pts))
        pts, tris, lam = pts[o], tris[o], lam[o]
        keep = np.ones(pts.size, dtype=bool)
        keep[1:] = pts[1:] != pts[:-1]
        pts, tris, lam = pts[keep], tris[keep], lam[keep]
        tri_out[pts] = tris
        # Clamp the tolerance band so weights stay a convex combination.
        lam = np.clip(lam, 0.0, None)
        bary_out[pts] = lam / lam.sum(axis=1, keepdims=True)
    return tri_out, bary_out


def boundary_edges(faces: np.ndarray) -> np.ndarray:
    """(E, 2) int64 vertex pairs of the edges that belong to exactly one triangle."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = np.sort(e, axis=1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    return e[cnt[inv.reshape(-1)] == 1]


def nearest_on_boundary(
    uv: np.ndarray, edges: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nearest point on a set of boundary edges for each query point (exact).

    Args:
        uv: (N, 2) vertex positions; edges: (E, 2) vertex pairs; points: (P, 2).

    Returns:
        edge: (P,) int64 index into ``edges``; t: (P,) float64 in [0, 1], the nearest point is
        ``(1 - t) uv[a] + t uv[b]``; dist: (P,) float64 UV distance to it.
    """
    pa, pb = uv[edges[:, 0]], uv[edges[:, 1]]
    seg = pb - pa
    seg_len2 = np.maximum(np.einsum("ij,ij->i", seg, seg), 1e-300)
    half_max = 0.5 * np.sqrt(seg_len2.max())
    # The nearest endpoint bounds the distance d0; any edge with a point within d0 of q has its
    # midpoint within d0 + (its length) / 2, so this ball holds every candidate.
    d0, _ = cKDTree(uv[np.unique(edges)]).query(points)
    mids = cKDTree(0.5 * (pa + pb))
    cand = mids.query_ball_point(points, d0 + half_max + 1e-12, return_sorted=False)
    n_cand = np.fromiter((len(c) for c in cand), dtype=np.int64, count=len(points))
    pts = np.repeat(np.arange(len(points)), n_cand)
    eds = np.fromiter((i for c in cand for i in c), dtype=np.int64, count=int(n_cand.sum()))
    t = np.clip(np.einsum("ij,ij->i", points[pts] - pa[eds], seg[eds]) / seg_len2[eds], 0.0, 1.0)
    near = pa[eds] + t[:, None] * seg[eds]
    dist = np.linalg.norm(points[pts] - near, axis=1)
    o = np.lexsort((dist, pts))
    first = np.ones(o.size, dtype=bool)
    first[1:] = pts[o][1:] != pts[o][:-1]
    o = o[first]
    return eds[o], t[o], dist[o]


# ---------------------------------------------------------------------------------------------
# resampling


def interpolation_matrix(
    uv: np.ndarray, faces: np.ndarray, points: np.ndarray, inside_tol: float = 0.0
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Sparse weights that interpolate per-vertex values of a UV mesh at ``points``.

    Args:
        uv: (N, 2) float64; faces: (M, 3) int64; points: (P, 2) float64.

    Returns:
        W: (P, N) CSR, at most three non-zeros per row, rows summing to 1; ``W @ values``
        interpolates (N, ...) per-vertex values.
        inside: (P,) bool, True where a triangle contains the point or the point lies within
        ``inside_tol`` (UV units) of the mesh.
        fill_distance: (P,) float64, UV distance from an outside point to the mesh point its
        value is taken from (0 inside).
    """
    n_points = len(points)
    tri, bary = locate_points(uv, faces, points)
    inside = tri >= 0
    cols = np.zeros((n_points, 3), dtype=np.int64)
    weights = np.zeros((n_points, 3))
    cols[inside] = faces[tri[inside]]
    weights[inside] = bary[inside]
    fill_distance = np.zeros(n_points)
    out = np.flatnonzero(~inside)
    if out.size:
        edges = boundary_edges(faces)
        if edges.size == 0:
            raise PrepError(
                "The UV mesh has no boundary edges (a closed surface) and does not cover every "
                "grid point; pass a UV embedding of an open face mesh."
            )
        e, t, dist = nearest_on_boundary(uv, edges, points[out])
        cols[out, 0], cols[out, 1], cols[out, 2] = edges[e, 0], edges[e, 1], edges[e, 0]
        weights[out, 0], weights[out, 1] = 1.0 - t, t
        fill_distance[out] = dist
        inside[out[dist <= inside_tol]] = True
    w = sp.csr_matrix(
        (weights.ravel(), (np.repeat(np.arange(n_points), 3), cols.ravel())),
        shape=(n_points, len(uv)),
    )
    w.sum_duplicates()
    w.eliminate_zeros()
    return w, inside, fill_distance


def _apply(w: sp.csr_matrix, per_vertex: np.ndarray) -> np.ndarray:
    """``w @ per_vertex`` for (N, ...) arrays, as one sparse-dense product."""
    flat = per_vertex.reshape(per_vertex.shape[0], -1)
    return np.ascontiguousarray(w @ flat).reshape((w.shape[0],) + per_vertex.shape[1:])


def map_landmarks(
    source_uv: np.ndarray, landmarks: dict[str, np.ndarray], res: int, inside: np.ndarray
) -> dict[str, np.ndarray]:
    """Source-mesh landmark vertex indices -> grid vertex indices (``LANDMARK_RULE``).

    Args:
        source_uv: (N, 2) UV of the source vertices; landmarks: name -> (L,) 0-based source
        vertex indices; res: R; inside: (R*R,) bool.

    Returns:
        name -> (L,) int64 grid vertex indices (0-based, grid order).
    """
    g = grid_uv(res)
    candidates = np.flatnonzero(inside) if inside.any() else np.arange(res * res)
    tree = cKDTree(g[candidates])
    out = {}
    for name, idx in landmarks.items():
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(source_uv)):
            raise PrepError(
                f"Landmark set {name!r} indexes vertices {idx.min()}..{idx.max()}, outside the "
                f"source mesh's 0..{len(source_uv) - 1}; pass landmarks of this model's mesh."
            )
        if idx.size == 0:
            out[name] = np.zeros(0, dtype=np.int64)
            continue
        # Ties (a landmark on the symmetry line of an even grid lies half-way between two
        # columns) go to the smallest grid index, so the result does not depend on rounding
        # inside the k-d tree.
        k = min(4, candidates.size)
        dist, j = tree.query(source_uv[idx], k=k)
        dist, j = dist.reshape(idx.size, k), j.reshape(idx.size, k)
        tied = dist <= dist[:, :1] * (1.0 + 1e-9) + 1e-15
        cand = np.where(tied, candidates[j], np.iinfo(np.int64).max)
        out[name] = cand.min(axis=1)
    return out


def orientation_agreement(source: MorphableModel, uv: np.ndarray, grid: UVGridModel) -> float:
    """Fraction of the grid's drawn triangles (:attr:`UVGridModel.drawn_faces`, all three
    vertices inside) whose 3D normal on the mean shape points the same way (positive dot
    product) as that of the source triangle under the grid triangle's UV centroid. 1.0 for a
    correct resampling of a fold-free embedding."""
    f = grid.drawn_faces
    if f.size == 0:
        return float("nan")
    tri, _ = locate_points(uv, source.faces, grid.uv[f].mean(axis=1))
    ok = tri >= 0
    f, tri = f[ok], tri[ok]
    xg = grid.model.shape_mean
    ng = np.cross(xg[f[:, 1]] - xg[f[:, 0]], xg[f[:, 2]] - xg[f[:, 0]])
    xs, fs = source.shape_mean, source.faces[tri]
    ns = np.cross(xs[fs[:, 1]] - xs[fs[:, 0]], xs[fs[:, 2]] - xs[fs[:, 0]])
    return float(np.mean(np.einsum("ij,ij->i", ng, ns) > 0)) if f.size else float("nan")


def resample_to_grid(
    model: MorphableModel,
    uv: np.ndarray,
    res: int,
    landmarks: dict[str, np.ndarray] | None = None,
) -> UVGridModel:
    """Resample ``model`` onto the R x R grid of its UV flattening ``uv``.

    Args:
        model: the source model (N vertices, faces (M, 3)).
        uv: (N, 2) float64 UV of the model's vertices, in [0, 1]^2 (u with model x, v with y).
        res: R in MIN_RES..MAX_RES (8..4096), the grid size.
        landmarks: extra landmark sets (name -> (L,) 0-based source vertex indices), mapped
            with the model's own ``model.landmarks`` (an extra set replaces one of the same name).

    Returns:
        UVGridModel with R*R vertices in grid order; mean, every shape component and the colour
        model interpolated; faces ``grid_faces(R, ccw)`` oriented like the source;
        ``inside`` marks grid points on the mesh. ``model.provenance["parameters"]`` records
        ``res``, the landmark rule and the checks (``n_outside``, ``max_fill_distance`` in
        grid cells, ``orientation_agreement``, ``source_flipped_uv``).
    """
    res = check_res(res, model.n_components, model.color_basis.shape[2] if model.has_color else 0)
    uv = np.asarray(uv, dtype=np.float64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise PrepError(f"UV must be an (N, 2) array, got shape {uv.shape}.")
    if len(uv) != model.n_vertices:
        raise PrepError(
            f"The UV embedding has {len(uv)} vertices but the model has {model.n_vertices}; "
            "pass the embedding of this model's mesh."
        )
    if not np.isfinite(uv).all():
        raise PrepError("The UV embedding contains NaN or infinite values; recompute it.")
    if len(model.faces) == 0:
        raise PrepError("The model has no faces; a UV grid needs a triangle mesh.")

    areas = signed_areas(uv, model.faces)
    ccw = bool(np.sum(areas > 0) >= np.sum(areas < 0))
    source_flipped = int(np.sum(areas < 0) if ccw else np.sum(areas > 0))

    g_uv = grid_uv(res)
    w, inside, fill_distance = interpolation_matrix(
        uv, model.faces, g_uv, inside_tol=INSIDE_TOL_CELLS / (res - 1)
    )

    color = {}
    if model.has_color:
        color = dict(
            color_mean=_apply(w, model.color_mean),
            color_basis=_apply(w, model.color_basis),
            color_std=model.color_std.copy(),
        )
    all_landmarks = dict(model.landmarks)
    all_landmarks.update(landmarks or {})
    grid_landmarks = map_landmarks(uv, all_landmarks, res, inside)

    checks = {
        "n_grid_points": res * res,
        "n_outside": int((~inside).sum()),
        "max_fill_distance_cells": float(fill_distance[~inside].max() * (res - 1))
        if (~inside).any()
        else 0.0,
        "source_flipped_uv": source_flipped,
        "faces_ccw_in_uv": ccw,
    }
    parameters = {
        "res": res,
        "landmark_rule": LANDMARK_RULE,
        "outside_fill": "nearest point of the mesh in UV (on a boundary edge)",
        "source_parameters": model.provenance.get("parameters", {}),
    }
    grid_model = MorphableModel(
        shape_mean=_apply(w, model.shape_mean),
        shape_basis=_apply(w, model.shape_basis),
        shape_std=model.shape_std.copy(),
        shape_kind=list(model.shape_kind),
        faces=grid_faces(res, ccw=ccw),
        landmarks=grid_landmarks,
        provenance={"inputs": dict(model.provenance.get("inputs", {})), "parameters": parameters},
        **color,
    )
    grid = UVGridModel(model=grid_model, res=res, uv=g_uv, inside=inside)
    checks["orientation_agreement"] = orientation_agreement(model, uv, grid)
    parameters["checks"] = checks
    return grid
