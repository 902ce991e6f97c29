"""The symmetric Tutte embedding: a mirror-symmetric flattening of a face mesh onto [0, 1]^2.

Construction (docs/uv-embedding.md has the full statement and the reasons):

- holes (a mouth opening, eye holes) are closed for the solve by a fan around a virtual
  vertex at the hole's centroid, and the virtual vertices are dropped afterwards, so the
  solve is on a disk and Tutte's theorem applies; a hole that the symmetry line crosses
  gets its virtual vertex on the line;
- Dirichlet boundary: the symmetry line on u = 0.5 from v = 0 (chin) to v = 1 (forehead),
  spaced by 3D arc length; each half's outer boundary, from the chin end of the line round
  to the forehead end, on its three sides of the square ((0.5, 0) -> (0, 0) -> (0, 1) ->
  (0.5, 1) for the low-x half, the mirror image for the other), spaced by 3D arc length
  averaged over the two halves (so that mirror partners get mirror positions); the corners
  are the boundary vertices nearest to 1/4 and 3/4 of that length;
- one system for both halves: every vertex's harmonic (Tutte) equation, written for the
  high-x half in reflected coordinates ``(1 - u, v)``, and mirror partners sharing one
  unknown, so that ``uv[mirror[i]] == (1 - u[i], v[i])`` exactly. A vertex with no partner
  (a mesh whose halves are triangulated differently) has its own unknown. Each unknown's
  equation is the sum of its vertices' equations, so neither half is preferred: the result
  is the same whichever half is called "low";
- edge weights: cotangent weights of the 3D shape, summed over the partners' edges; sums
  <= 0 (obtuse triangles) are raised to a small positive floor, which keeps every weight
  positive; if a solve still left flipped triangles, mean-value weights (always positive)
  are tried; and for a symmetry found from the shape, the partners of vertices of flipped
  triangles are then released (each solved on its own half) until none is flipped.
"""

from __future__ import annotations

import time

import igl
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from bfm_prep.artifact import UVEmbedding
from bfm_prep.errors import PrepError
from bfm_prep.mesh_checks import MeshTopology, check_mesh
from bfm_prep.model import MorphableModel
from bfm_prep.symmetry import (
    METHODS,
    Midline,
    Symmetry,
    find_symmetry,
    midline,
    read_pairs,
    sides,
)

WEIGHTS = ("cotangent", "mean-value")
#: Cotangent weights <= 0 are raised to this fraction of the median positive weight.
WEIGHT_FLOOR = 1e-3
#: Corner positions along the half's outer boundary, as fractions of its 3D length.
CORNERS = (0.25, 0.75)
#: Rounds of repairing flipped triangles (a symmetry from the shape; see ``_repair_flips``):
#: with intrinsic Delaunay weights (then, if triangles are still flipped, with the mesh's own).
INTRINSIC_ROUNDS = 4
RELEASE_ROUNDS = 8


def embed_model(
    model: MorphableModel,
    symmetry="auto",
    *,
    weights: str = "cotangent",
    name: str = "the model's mean shape",
) -> UVEmbedding:
    """Flatten a model's mean shape: :func:`symmetric_tutte` after resolving ``symmetry``.

    Args:
        model: the morphable model (its ``shape_mean`` and ``faces`` are flattened).
        symmetry: ``"auto"`` (the exact search, then from the shape), ``"exact"``,
            ``"geometry"``, a pairs-file path, a (P, 2) pairs array or a :class:`Symmetry`.
        weights: ``"cotangent"`` (default, with the mean-value fallback) or ``"mean-value"``.
    """
    return embed_mesh(model.shape_mean, model.faces, symmetry, weights=weights, name=name)


def embed_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    symmetry="auto",
    *,
    weights: str = "cotangent",
    name: str = "mesh",
) -> UVEmbedding:
    """Check the mesh, resolve the symmetry and flatten (see :func:`embed_model`)."""
    t0 = time.perf_counter()
    v = np.asarray(vertices, dtype=np.float64)
    topo = check_mesh(v, faces, name)
    sym = resolve_symmetry(v, topo, symmetry, name=name)
    t_sym = time.perf_counter() - t0
    emb = symmetric_tutte(v, topo.faces, sym, weights=weights, topology=topo, name=name)
    emb.checks["time_symmetry_s"] = t_sym
    emb.checks["time_total_s"] = time.perf_counter() - t0
    return emb


def resolve_symmetry(
    vertices: np.ndarray, topo: MeshTopology, symmetry, name: str = "mesh"
) -> Symmetry:
    """``"auto"`` / ``"exact"`` / ``"geometry"`` / pairs-file path / (P, 2) pairs /
    :class:`Symmetry` -> :class:`Symmetry` (see :func:`~bfm_prep.symmetry.find_symmetry`)."""
    if isinstance(symmetry, Symmetry):
        return symmetry
    if symmetry is None:
        symmetry = "auto"
    if isinstance(symmetry, str) and symmetry in METHODS:
        return find_symmetry(vertices, topo.faces, method=symmetry, topology=topo, name=name)
    if isinstance(symmetry, np.ndarray):
        return find_symmetry(vertices, topo.faces, pairs=symmetry, topology=topo, name=name)
    pairs = read_pairs(symmetry, topo.n_vertices)
    return find_symmetry(vertices, topo.faces, pairs=pairs, topology=topo, name=name)


def symmetric_tutte(
    vertices: np.ndarray,
    faces: np.ndarray,
    symmetry: Symmetry,
    *,
    weights: str = "cotangent",
    topology: MeshTopology | None = None,
    name: str = "mesh",
    intrinsic: bool | None = None,
) -> UVEmbedding:
    """The symmetric Tutte embedding of a mesh with a known mirror symmetry.

    Args:
        vertices: (N, 3) the 3D shape (its geometry gives the weights and arc lengths).
        faces: (M, 3) int, 0-based.
        symmetry: from :func:`~bfm_prep.symmetry.find_symmetry` (exact, or from the shape
            with ``midline`` and ``sides`` set and some vertices unpaired).
        weights: ``"cotangent"`` (with a fallback to mean-value weights if triangles flip)
            or ``"mean-value"``.
        intrinsic: cotangent weights of each half's intrinsic Delaunay triangulation (see
            ``_weights``); default: when the symmetry is not exact (the halves are
            triangulated differently).

    Returns:
        A :class:`UVEmbedding`; ``checks`` holds ``flipped_triangles``, ``symmetry_error``
        (over the pairs and the line), ``boundary_error``, ``line_error``, the pairing's
        counts, the weights used and timings.
    """
    if weights not in WEIGHTS:
        raise PrepError(f"unknown weights {weights!r}; use one of {WEIGHTS}.")
    t0 = time.perf_counter()
    v = np.asarray(vertices, dtype=np.float64)
    topo = topology if topology is not None else check_mesh(v, faces, name)
    n = topo.n_vertices
    phi = np.asarray(symmetry.mirror, dtype=np.int64)
    if phi.shape != (n,):
        raise PrepError(
            f"{name}: the symmetry has {phi.shape[0]} vertices, the mesh {n}; "
            "compute it for this mesh."
        )
    plane = np.asarray(symmetry.plane, dtype=np.float64)
    if symmetry.midline is not None and symmetry.sides is not None:
        ml, side = symmetry.midline, np.asarray(symmetry.sides, dtype=np.int8)
    else:
        ml = midline(v, topo, phi, plane, name=name)
        side = sides(topo, phi, v, plane, name=name)
    exact = bool(symmetry.stats.get("exact", not symmetry.unpaired.any()))

    filled = _fill_holes(v, topo, phi, side, ml)
    pins = _pins(filled, topo, ml, name)
    t_setup = time.perf_counter() - t0

    used = weights
    intrinsic = (not exact) if intrinsic is None else bool(intrinsic)
    halves = filled.side if intrinsic else None
    w = _weights(filled.v, filled.f, weights, halves)  # for every solve below
    uv, n_clamped, t_solve = _solve(filled, pins, weights, w)
    flips = _flipped(uv[:n], topo.faces)
    phi_f = filled.phi
    if flips[0] > 0 and not exact:
        # from the shape, flips come from pairs whose reflection the two triangulations cannot
        # both follow (a wrong nearest partner), and with intrinsic weights also from mesh
        # triangles the intrinsic triangulation does not have (at a vertex of degree 3, say)
        mesh_w = _weights(filled.v, filled.f, weights) if intrinsic else w
        uv, flips, phi_f, n_local, t3 = _repair_flips(
            filled,
            pins,
            weights,
            w,
            mesh_w,
            uv,
            flips,
            topo.faces,
            INTRINSIC_ROUNDS if intrinsic else RELEASE_ROUNDS,
        )
        t_solve += t3
        if n_local and flips[0] == 0:
            used = (
                f"cotangent (of the intrinsic Delaunay triangulation; the mesh's own for "
                f"{n_local} vertices around triangles that flipped with them)"
            )
        if flips[0] > 0 and intrinsic:
            # with the mesh's own weights everywhere, releasing every pair would leave two
            # Tutte embeddings, so this ends without flips
            w = mesh_w
            used = "cotangent (the mesh's own: intrinsic Delaunay weights left flipped triangles)"
            intrinsic = False
            uv, _, t4 = _solve(filled.with_mirror(phi_f), pins, weights, w)
            flips = _flipped(uv[:n], topo.faces)
            t_solve += t4
            if flips[0] > 0:
                uv, flips, phi_f, _, t5 = _repair_flips(
                    filled.with_mirror(phi_f),
                    pins,
                    weights,
                    w,
                    w,
                    uv,
                    flips,
                    topo.faces,
                    RELEASE_ROUNDS,
                )
                t_solve += t5
    n_released = int((phi_f[:n] != phi).sum()) // 2
    phi = phi_f[:n]  # the pairs that hold in UV
    filled = filled.with_mirror(phi_f)
    if flips[0] > 0 and weights == "cotangent":
        uv2, _, t2 = _solve(filled, pins, "mean-value")
        flips2 = _flipped(uv2[:n], topo.faces)
        t_solve += t2
        if flips2[0] < flips[0]:
            uv, flips = uv2, flips2
            used = "mean-value (fallback: cotangent weights left flipped triangles)"
    uv = uv[:n]

    refl = np.column_stack([1.0 - uv[phi, 0], uv[phi, 1]])
    line = np.asarray(symmetry.line, dtype=np.int64)
    unpaired = phi == np.arange(n)
    unpaired[line] = False
    outer = topo.outer
    ou = uv[outer]
    stats = symmetry.stats
    checks = {
        "flipped_triangles": int(flips[0]),
        "uv_orientation": int(flips[1]),
        "symmetry_error": float(np.abs(uv - refl)[~unpaired].max()) if (~unpaired).any() else 0.0,
        "boundary_error": float(
            np.minimum.reduce([ou[:, 0], 1 - ou[:, 0], ou[:, 1], 1 - ou[:, 1]]).max()
        ),
        "line_error": float(np.abs(uv[line, 0] - 0.5).max()) if len(line) else 0.0,
        "uv_min": float(uv.min()),
        "uv_max": float(uv.max()),
        "clamped_weights": int(n_clamped),
        "n_vertices": int(n),
        "n_faces": int(topo.faces.shape[0]),
        "n_holes": len(topo.holes),
        "n_line_vertices": int(len(line)),
        "n_pairs": int((phi > np.arange(n)).sum()),
        "n_unpaired": int(unpaired.sum()),
        "n_pairs_released": n_released,
        "symmetry_exact": exact,
        "mirror_residual_rms_mm": float(stats.get("residual_rms_mm", np.nan)),
        "mirror_residual_max_mm": float(stats.get("residual_max_mm", np.nan)),
        "time_setup_s": t_setup,
        "time_solve_s": t_solve,
        "time_embed_s": time.perf_counter() - t0,
    }
    if intrinsic and used == "cotangent":
        used = "cotangent (of the intrinsic Delaunay triangulation)"
    elif used.startswith("cotangent (of the intrinsic") and not intrinsic:
        used = "cotangent"
    params = {
        "method": "symmetric Tutte embedding",
        "weights": used,
        "weight_floor": WEIGHT_FLOOR,
        "holes": "closed by a fan around a virtual vertex at the centroid for the solve, then "
        "dropped: the rim is solved like interior vertices and the hole stays open",
        "corners": f"outer-boundary vertices nearest to {CORNERS[0]} and {CORNERS[1]} of the "
        "half boundary's 3D length (averaged over the two halves)",
        "symmetry": stats.get("method", "given"),
        "pairing": {
            k: (float(x) if isinstance(x, float) else x)
            for k, x in stats.items()
            if k not in ("method",)
        },
        "plane": [float(x) for x in plane],
    }
    return UVEmbedding(
        uv=uv,
        faces=topo.faces.copy(),
        mirror=phi.copy(),
        symmetry_line=line.copy(),
        plane=plane.copy(),
        checks=checks,
        provenance={"inputs": {}, "parameters": params},
    )


# ---------------------------------------------------------------------------------------------
# steps


class _Filled:
    """The mesh with its holes closed by virtual fan vertices (indices N, N + 1, ...)."""

    def __init__(self, v, f, phi, side, hole_vertex, line_hole_vertices):
        self.v = v
        self.f = f
        self.phi = phi  # mirror partner (itself on the line and without a partner)
        self.side = side  # -1 / +1 halves, 0 on the line
        self.hole_vertex = hole_vertex  # hole t -> its virtual vertex
        self.line_hole_vertices = line_hole_vertices  # virtual vertices on the line

    def with_mirror(self, phi: np.ndarray) -> _Filled:
        return _Filled(self.v, self.f, phi, self.side, self.hole_vertex, self.line_hole_vertices)


def _fill_holes(v, topo: MeshTopology, phi, side, ml: Midline) -> _Filled:
    """Close the holes; a hole's virtual vertex is paired with the virtual vertex of the hole
    that most of its rim's partners lie on, when that hole's rim points back and lies on the
    other half (with a mirrored triangulation: the mirrored hole)."""
    n = topo.n_vertices
    holes = topo.holes
    if not holes:
        return _Filled(v, topo.faces, phi, side, [], set())
    loop_id = np.full(n, -1, dtype=np.int64)
    for t, lp in enumerate(holes):
        loop_id[lp] = t
    centres = np.array([v[lp].mean(axis=0) for lp in holes])
    fan = []
    for t, lp in enumerate(holes):
        # the loop follows its boundary half-edges a -> b; the fan face (b, a, c) closes it
        a, b = lp, np.roll(lp, -1)
        fan.append(np.column_stack([b, a, np.full(len(lp), n + t)]))
    vf = np.vstack([v, centres])
    ff = np.vstack([topo.faces] + fan)
    on_line = {x for kind, x in ml.nodes if kind == "hole"}
    hole_side = np.array(
        [
            0 if t in on_line else int(side[lp][np.argmax(np.abs(side[lp]))])
            for t, lp in enumerate(holes)
        ],
        dtype=np.int8,
    )
    votes = []
    for t, lp in enumerate(holes):
        ids = loop_id[phi[lp]]
        ids = ids[(ids >= 0) & (phi[lp] != lp)]
        votes.append(int(np.bincount(ids).argmax()) if ids.size else t)
    hole_map = np.arange(len(holes), dtype=np.int64)
    for t, s in enumerate(votes):
        if t not in on_line and votes[s] == t and hole_side[t] == -hole_side[s] != 0:
            hole_map[t] = s
    phif = np.concatenate([phi, n + hole_map])
    sidef = np.concatenate([side, hole_side])
    return _Filled(
        vf, ff, phif, sidef, [n + t for t in range(len(holes))], {n + t for t in on_line}
    )


def _pins(
    filled: _Filled, topo: MeshTopology, ml: Midline, name: str
) -> dict[int, tuple[float, float]]:
    """Dirichlet values, in the low half's frame (u <= 0.5; a high-half vertex's value is its
    reflection): the line on u = 0.5 and both halves' outer boundaries."""
    v = filled.v
    n = topo.n_vertices
    pins: dict[int, tuple[float, float]] = {}
    # the symmetry line, by 3D arc length
    seg = np.linalg.norm(np.diff(ml.points, axis=0), axis=1)
    t = np.concatenate([[0.0], np.cumsum(seg)])
    if t[-1] <= 0:
        raise PrepError(f"{name}: the symmetry line has zero length; check the mesh.")
    t /= t[-1]
    for (kind, x), tv in zip(ml.nodes, t, strict=True):
        if kind == "vertex":
            pins[int(x)] = (0.5, float(tv))
        elif kind == "hole":
            pins[n + int(x)] = (0.5, float(tv))

    # each half's outer boundary: chin end -> (0, 0) -> (0, 1) -> forehead end (reflected)
    loop = topo.outer
    size = len(loop)
    where = {int(k): i for i, k in enumerate(loop)}

    def loop_pos(key) -> float:
        kind, x = key
        if kind == "vertex":
            return float(where[int(x)])
        i, j = where[int(x[0])], where[int(x[1])]
        return float(i + 0.5) if (i + 1) % size == j else float(j + 0.5)

    p0, p1 = loop_pos(ml.nodes[0]), loop_pos(ml.nodes[-1])
    side = filled.side
    phi = filled.phi

    def arc(a: float, b: float, step: int) -> np.ndarray:
        """Loop indices strictly between positions a and b, walking in direction step."""
        dist = (step * (b - a)) % size
        first = 1.0 if a == int(a) else 0.5
        offs = np.arange(first, dist - 1e-9, 1.0)
        return np.rint((a + step * offs) % size).astype(np.int64)

    paths = {}
    for step in (1, -1):
        path = loop[arc(p0, p1, step)]
        s = set(side[path].tolist())
        if path.size >= 2 and len(s) == 1 and s != {0}:
            paths[s.pop()] = path
    if set(paths) != {-1, 1}:
        raise PrepError(
            f"{name}: the outer boundary does not run round each half between the ends of the "
            "symmetry line; check the mesh."
        )

    def own_length(path: np.ndarray) -> np.ndarray:
        pts = np.vstack([ml.points[0], v[path], ml.points[-1]])
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
        return s[1:-1] / s[-1]

    low, high = paths[-1], paths[1]
    t_low, t_high = own_length(low), own_length(high)
    at_high = {int(k): i for i, k in enumerate(high)}
    li = np.array([i for i, k in enumerate(low.tolist()) if int(phi[k]) in at_high], dtype=int)
    hj = np.array([at_high[int(phi[low[i]])] for i in li], dtype=int)
    # partners share one position: the mean of their own; the others are placed between
    # the partners around them in proportion to their own arc length
    shared = 0.5 * (t_low[li] + t_high[hj])
    if len(li) and (np.diff(hj) <= 0).any():
        raise PrepError(
            f"{name}: outer-boundary partners cross each other along the boundary; check the "
            "symmetry pairs."
        )
    t_low = np.interp(t_low, np.r_[0.0, t_low[li], 1.0], np.r_[0.0, shared, 1.0])
    t_high = np.interp(t_high, np.r_[0.0, t_high[hj], 1.0], np.r_[0.0, shared, 1.0])

    def corners(tt: np.ndarray) -> tuple[float, float]:
        c1 = int(np.argmin(np.abs(tt - CORNERS[0])))
        c2 = int(np.argmin(np.abs(tt - CORNERS[1])))
        if c2 <= c1:
            if c1 + 1 < len(tt):
                c2 = c1 + 1
            else:
                c1, c2 = c1 - 1, c1
        return float(tt[c1]), float(tt[c2])

    if len(li) >= 2:  # corners at partners, so that both halves have them
        s1, s2 = corners(shared)
        c_low = c_high = (s1, s2)
    else:
        c_low, c_high = corners(t_low), corners(t_high)
    for path, tt, (s1, s2) in ((low, t_low, c_low), (high, t_high, c_high)):
        for k, sk in zip(path.tolist(), tt.tolist(), strict=True):
            if sk <= s1:
                pins[k] = (0.5 * (1.0 - sk / s1), 0.0)
            elif sk < s2:
                pins[k] = (0.0, (sk - s1) / (s2 - s1))
            else:
                pins[k] = (0.5 * (sk - s2) / (1.0 - s2), 1.0)

    # Chords: an interior edge joining two boundary vertices pinned on the same side of the
    # square would squash the triangles between it and the boundary to zero area. Such an
    # end (unless it is a corner or an end of the line) is left free, with its partner: the
    # solve moves it slightly inside the square.
    ends = [x for kind, x in (ml.nodes[0], ml.nodes[-1]) if kind == "vertex"]
    ring = np.concatenate([ends, low, high]).astype(np.int64)
    on_ring = np.zeros(filled.v.shape[0], dtype=bool)
    on_ring[ring] = True
    he = topo.halfedges
    cand = on_ring[he.src] & on_ring[he.dst] & (he.src < he.dst)
    a, b = he.src[cand], he.dst[cand]
    interior = he.find(b, a) >= 0
    unpinned = set()
    for p, q in zip(a[interior].tolist(), b[interior].tolist(), strict=True):
        if side[p] * side[q] < 0:
            continue  # across the line: not the same side of the square
        sp_, sq = _sides_of(pins[p]), _sides_of(pins[q])
        if sp_ & sq:
            for x, sx in ((p, sp_), (q, sq)):
                if len(sx) == 1 and "line" not in sx:
                    unpinned.update((x, int(phi[x])))
    for x in unpinned:
        pins.pop(x, None)
    return pins


def _sides_of(p: tuple[float, float]) -> set[str]:
    u, v = p
    out = set()
    if v == 0.0:
        out.add("bottom")
    if v == 1.0:
        out.add("top")
    if u == 0.0:
        out.add("left")
    if u == 0.5:
        out.add("line")
    return out


def _weights(
    v: np.ndarray, f: np.ndarray, kind: str, side: np.ndarray | None = None
) -> sp.coo_matrix:
    """Edge weights W[i, j] for neighbour j of i (cotangent: symmetric; mean-value: not).

    With ``side`` (a symmetry from the shape, the halves triangulated differently), the
    cotangent weights are those of each half's intrinsic Delaunay triangulation
    (``igl.intrinsic_delaunay_cotmatrix`` of the half's triangles: the same surface, its edges
    flipped along it until every one is Delaunay; the line, the halves' common boundary, is
    never flipped, so no weight joins the two halves). They are never negative and they do
    not depend on which way a quad's diagonal runs, so the two halves get nearly mirror-image
    weights; a neighbour may be a vertex across a flipped edge. Otherwise the mesh's own
    cotangent weights (with a mirrored triangulation the halves' are mirror images already).
    """
    nv = v.shape[0]
    if kind == "cotangent" and side is not None:
        low = side[f].max(axis=1) <= 0  # the low half's triangles (and any on the line)
        parts = []
        for half in (f[low], f[~low]):
            if len(half):
                lap = sp.coo_matrix(igl.intrinsic_delaunay_cotmatrix(v, half)[0])
                off = lap.row != lap.col
                parts.append((lap.row[off], lap.col[off], lap.data[off]))
        rows, cols, vals = (np.concatenate(x) for x in zip(*parts, strict=True))
        w = sp.coo_matrix((vals, (rows, cols)), shape=(nv, nv)).tocsr()
        w.sum_duplicates()  # a line edge: its two triangles, one in each half
        return w.tocoo()
    if kind == "cotangent":
        c = igl.cotmatrix_entries(v, f)  # columns: edges (1,2), (2,0), (0,1)
        rows = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
        cols = np.concatenate([f[:, 2], f[:, 0], f[:, 1]])
        vals = np.concatenate([c[:, 0], c[:, 1], c[:, 2]])
        rows, cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
        vals = np.concatenate([vals, vals])
        w = sp.coo_matrix((vals, (rows, cols)), shape=(nv, nv)).tocsr()
        w.sum_duplicates()
        return w.tocoo()
    ang = igl.internal_angles(v, f)  # column c: angle at corner c
    rows, cols, vals = [], [], []
    for c in range(3):
        a, b, d = f[:, c], f[:, (c + 1) % 3], f[:, (c + 2) % 3]
        tn = np.tan(ang[:, c] / 2.0)
        for o in (b, d):
            rows.append(a)
            cols.append(o)
            vals.append(tn / np.linalg.norm(v[a] - v[o], axis=1))
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    w = sp.coo_matrix((vals, (rows, cols)), shape=(nv, nv)).tocsr()
    w.sum_duplicates()
    return w.tocoo()


def _solve(filled: _Filled, pins: dict, weights: str, w: sp.coo_matrix | None = None):
    """Solve the harmonic equations of both halves at once.

    Unknowns ``z`` are in the low half's frame: vertex a's UV is ``z[rep[a]]`` on the low half
    and the line, and ``(1 - z_u, z_v)[rep[a]]`` on the high half, where ``rep[a]`` is a
    itself, or its partner for a paired high-half vertex. Vertex a's equation
    ``sum_b w_ab (x_a - x_b) = 0``, with its u component negated on the high half, is added to
    the row of ``rep[a]``. Weights are summed per (row, column, across-the-line) before the
    floor is applied; with a mirrored triangulation this is twice the mirror-averaged system
    of one half, and across edges whose ends are partners u and v get different matrices.
    """
    t0 = time.perf_counter()
    nv = filled.v.shape[0]
    phi, side = filled.phi, filled.side
    hi = side == 1
    rep = np.where(hi, phi, np.arange(nv))
    if w is None:
        w = _weights(filled.v, filled.f, weights)
    a, b = w.row.astype(np.int64), w.col.astype(np.int64)
    cross = hi[a] != hi[b]
    key = (rep[a] * nv + rep[b]) * 2 + cross
    uniq, inv = np.unique(key, return_inverse=True)
    wq = np.bincount(inv, weights=w.data)
    p, q, crossq = (uniq // 2) // nv, (uniq // 2) % nv, (uniq % 2).astype(bool)
    n_clamped = 0
    if weights == "cotangent":
        bad = wq <= 0
        n_clamped = int(bad.sum()) // 2
        if bad.any():
            pos = wq[~bad]
            wq[bad] = WEIGHT_FLOOR * (float(np.median(pos)) if pos.size else 1.0)

    pin_idx = np.fromiter(pins.keys(), dtype=np.int64, count=len(pins))
    pin_val = np.array(list(pins.values()), dtype=np.float64).reshape(-1, 2)
    z = np.full((nv, 2), np.nan)
    z[rep[pin_idx]] = pin_val
    pinned = np.zeros(nv, dtype=bool)
    pinned[rep[pin_idx]] = True
    if (side[~pinned[rep]] == 0).any():
        raise PrepError("internal: a vertex on the symmetry line was not pinned.")
    free = np.unique(rep[~pinned[rep]])
    col = np.full(nv, -1, dtype=np.int64)
    col[free] = np.arange(free.size)

    row = col[p] >= 0
    p, q, crossq, wq = p[row], q[row], crossq[row], wq[row]
    i = col[p]
    j = col[q]
    qfree = j >= 0
    rhs = np.zeros((free.size, 2))
    mats = []
    for comp in (0, 1):
        flip = crossq & (comp == 0)  # across the line, u -> 1 - u: sign and constant
        sgn = np.where(flip, -1.0, 1.0)
        m_rows = np.concatenate([i, i[qfree]])
        m_cols = np.concatenate([i, j[qfree]])
        m_vals = np.concatenate([wq, -(wq * sgn)[qfree]])
        mats.append(sp.coo_matrix((m_vals, (m_rows, m_cols)), shape=(free.size, free.size)).tocsc())
        b_ = np.bincount(i, weights=wq * flip, minlength=free.size)
        pq = ~qfree
        b_ += np.bincount(i[pq], weights=(wq * sgn)[pq] * z[q[pq], comp], minlength=free.size)
        rhs[:, comp] = b_
    if free.size:
        if not (crossq & qfree).any():  # u and v have one matrix (pinned columns: rhs only)
            sol = spla.splu(mats[0]).solve(rhs)
        else:
            sol = np.column_stack([spla.splu(mats[c]).solve(rhs[:, c]) for c in (0, 1)])
        z[free] = sol
    uv = z[rep].copy()
    uv[hi, 0] = 1.0 - uv[hi, 0]
    if not np.all(np.isfinite(uv)):
        raise PrepError(
            "the embedding solve failed (singular system); check that the mesh is connected."
        )
    return uv, n_clamped, time.perf_counter() - t0


def _repair_flips(filled: _Filled, pins, weights, w, mesh_w, uv, flips, faces, rounds):
    """Repair flipped triangles of a symmetry from the shape, in up to ``rounds`` rounds: the
    pairs of the flipped triangles' vertices are released (each vertex then solved on its
    own half, with its own triangles); from the second round on, those vertices and their
    neighbours also take the mesh's own weights ``mesh_w`` in their equations instead of
    ``w`` (when they differ). With the mesh's own weights everywhere and every pair released,
    the halves are two Tutte embeddings with convex boundaries, so the rounds end without
    flips.

    Returns the best (uv, flips, mirror of the filled mesh with the released pairs undone,
    how many vertices took the mesh's weights, seconds).
    """
    t0 = time.perf_counter()
    n = int(faces.max()) + 1
    nv = filled.v.shape[0]
    phi = filled.phi.copy()
    local = np.zeros(nv, dtype=bool)
    adj = sp.coo_matrix(
        (np.ones(len(mesh_w.row)), (mesh_w.row, mesh_w.col)), shape=(nv, nv)
    ).tocsr()
    best = (uv, flips, phi.copy(), 0)
    for r in range(rounds):
        if flips[0] == 0:
            break
        verts = np.unique(faces[_areas(uv[:n], faces) * flips[1] <= 0])
        paired = verts[phi[verts] != verts]
        partners = phi[paired]
        phi[paired] = paired
        phi[partners] = partners
        hybrid = w
        if r > 0 and mesh_w is not w:
            local[verts] = True
            local |= (adj @ local.astype(np.float64)) > 0  # and their neighbours
            keep_a, keep_b = ~local[w.row], local[mesh_w.row]
            hybrid = sp.coo_matrix(
                (
                    np.concatenate([w.data[keep_a], mesh_w.data[keep_b]]),
                    (
                        np.concatenate([w.row[keep_a], mesh_w.row[keep_b]]),
                        np.concatenate([w.col[keep_a], mesh_w.col[keep_b]]),
                    ),
                ),
                shape=(nv, nv),
            )
        uv, _, _ = _solve(filled.with_mirror(phi), pins, weights, hybrid)
        flips = _flipped(uv[:n], faces)
        if flips[0] < best[1][0]:
            best = (uv, flips, phi.copy(), int(local[:n].sum()))
    uv, flips, phi, n_local = best
    return uv, flips, phi, n_local, time.perf_counter() - t0


def _areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def _flipped(uv: np.ndarray, faces: np.ndarray) -> tuple[int, int]:
    """(number of flipped or degenerate triangles, overall orientation +1 CCW / -1 CW)."""
    area = _areas(uv, faces)
    orient = 1 if area.sum() >= 0 else -1
    return int((area * orient <= 0).sum()), orient
