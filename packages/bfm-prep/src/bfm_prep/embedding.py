"""The symmetric Tutte embedding: a mirror-symmetric flattening of a face mesh onto [0, 1]^2.

Construction (docs/uv-embedding.md has the full statement and the reasons):

- holes (a mouth opening, eye holes) are closed for the solve by a fan around a virtual
  vertex at the hole's centroid, and the virtual vertices are dropped afterwards, so the
  solve is on a disk and Tutte's theorem applies; a hole that the symmetry line crosses
  gets its virtual vertex on the line;
- edge weights: cotangent weights of the 3D mean shape, averaged with their mirror images
  (so both halves see the same weights); weights <= 0 (obtuse triangles) are raised to a
  small positive floor, which keeps every weight positive and the map one-to-one; if a
  solve still left flipped triangles, mean-value weights (always positive) are used instead;
- Dirichlet boundary on the low-x half (u <= 0.5): its outer boundary runs from the chin end
  of the symmetry line (0.5, 0) to the corner (0, 0), up to (0, 1) and across to the
  forehead end (0.5, 1), spaced by 3D arc length; the corners are the boundary vertices
  nearest to 1/4 and 3/4 of that path's 3D length; the symmetry line lies on u = 0.5 from
  v = 0 (chin) to v = 1 (forehead), spaced by 3D arc length;
- the other half is the reflection u -> 1 - u through the mirror map, so the result is
  exactly symmetric: ``uv[mirror[i]] == (1 - u[i], v[i])``.
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
from bfm_prep.symmetry import Midline, Symmetry, find_symmetry, midline, read_pairs, sides

WEIGHTS = ("cotangent", "mean-value")
#: Cotangent weights <= 0 are raised to this fraction of the median positive weight.
WEIGHT_FLOOR = 1e-3
#: Corner positions along the half's outer boundary, as fractions of its 3D length.
CORNERS = (0.25, 0.75)


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
        symmetry: ``"auto"``, a pairs-file path, a (P, 2) pairs array or a :class:`Symmetry`.
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
    """``"auto"`` / pairs-file path / (P, 2) pairs / :class:`Symmetry` -> :class:`Symmetry`."""
    if isinstance(symmetry, Symmetry):
        return symmetry
    if symmetry is None or (isinstance(symmetry, str) and symmetry == "auto"):
        return find_symmetry(vertices, topo.faces, topology=topo, name=name)
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
) -> UVEmbedding:
    """The symmetric Tutte embedding of a mesh with a known mirror symmetry.

    Args:
        vertices: (N, 3) the 3D shape (its geometry gives the weights and arc lengths).
        faces: (M, 3) int, 0-based.
        symmetry: from :func:`~bfm_prep.symmetry.find_symmetry`.
        weights: ``"cotangent"`` (with a fallback to mean-value weights if triangles flip)
            or ``"mean-value"``.

    Returns:
        A :class:`UVEmbedding`; ``checks`` holds ``flipped_triangles``, ``symmetry_error``,
        ``boundary_error``, ``line_error``, ``weights`` used and timings.
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
    ml = midline(v, topo, phi, plane, name=name)
    side = sides(topo, phi, v, plane, name=name)

    filled = _fill_holes(v, topo, phi, side, ml)
    pins = _pins(filled, topo, ml, name)
    t_setup = time.perf_counter() - t0

    used = weights
    uv, n_clamped, t_solve = _solve(filled, pins, weights)
    flips = _flipped(uv[:n], topo.faces)
    if flips[0] > 0 and weights == "cotangent":
        uv2, _, t2 = _solve(filled, pins, "mean-value")
        flips2 = _flipped(uv2[:n], topo.faces)
        t_solve += t2
        if flips2[0] < flips[0]:
            uv, flips = uv2, flips2
            used = "mean-value (fallback: cotangent weights left flipped triangles)"
    uv = uv[:n]

    refl = np.column_stack([1.0 - uv[phi, 0], uv[phi, 1]])
    outer = topo.outer
    ou = uv[outer]
    checks = {
        "flipped_triangles": int(flips[0]),
        "uv_orientation": int(flips[1]),
        "symmetry_error": float(np.abs(uv - refl).max()),
        "boundary_error": float(
            np.minimum.reduce([ou[:, 0], 1 - ou[:, 0], ou[:, 1], 1 - ou[:, 1]]).max()
        ),
        "line_error": float(np.abs(uv[symmetry.line, 0] - 0.5).max())
        if len(symmetry.line)
        else 0.0,
        "uv_min": float(uv.min()),
        "uv_max": float(uv.max()),
        "clamped_weights": int(n_clamped),
        "n_vertices": int(n),
        "n_faces": int(topo.faces.shape[0]),
        "n_holes": len(topo.holes),
        "n_line_vertices": int(len(symmetry.line)),
        "mirror_residual_rms_mm": float(symmetry.stats.get("residual_rms_mm", np.nan)),
        "mirror_residual_max_mm": float(symmetry.stats.get("residual_max_mm", np.nan)),
        "time_setup_s": t_setup,
        "time_solve_s": t_solve,
        "time_embed_s": time.perf_counter() - t0,
    }
    params = {
        "method": "symmetric Tutte embedding",
        "weights": used,
        "weight_floor": WEIGHT_FLOOR,
        "holes": "closed by a fan around a virtual vertex at the centroid for the solve, then "
        "dropped: the rim is solved like interior vertices and the hole stays open",
        "corners": f"outer-boundary vertices nearest to {CORNERS[0]} and {CORNERS[1]} of the "
        "half boundary's 3D length",
        "symmetry": symmetry.stats.get("method", "given"),
        "plane": [float(x) for x in plane],
    }
    return UVEmbedding(
        uv=uv,
        faces=topo.faces.copy(),
        mirror=phi.copy(),
        symmetry_line=np.asarray(symmetry.line, dtype=np.int64).copy(),
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
        self.phi = phi
        self.side = side
        self.hole_vertex = hole_vertex  # hole t -> its virtual vertex
        self.line_hole_vertices = line_hole_vertices  # virtual vertices on the line


def _fill_holes(v, topo: MeshTopology, phi, side, ml: Midline) -> _Filled:
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
    hole_map = np.array([loop_id[phi[lp[0]]] for lp in holes], dtype=np.int64)
    phif = np.concatenate([phi, n + hole_map])
    on_line = {x for kind, x in ml.nodes if kind == "hole"}
    hole_side = np.array(
        [
            0 if t in on_line else int(side[lp][np.argmax(np.abs(side[lp]))])
            for t, lp in enumerate(holes)
        ],
        dtype=np.int8,
    )
    sidef = np.concatenate([side, hole_side])
    return _Filled(
        vf, ff, phif, sidef, [n + t for t in range(len(holes))], {n + t for t in on_line}
    )


def _pins(
    filled: _Filled, topo: MeshTopology, ml: Midline, name: str
) -> dict[int, tuple[float, float]]:
    """Dirichlet values: the line on u = 0.5 and the low half's outer boundary."""
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

    # the low half's outer boundary: chin end -> (0, 0) -> (0, 1) -> forehead end
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

    def arc(a: float, b: float, step: int) -> np.ndarray:
        """Loop indices strictly between positions a and b, walking in direction step."""
        dist = (step * (b - a)) % size
        first = 1.0 if a == int(a) else 0.5
        offs = np.arange(first, dist - 1e-9, 1.0)
        return np.rint((a + step * offs) % size).astype(np.int64)

    path_idx = arc(p0, p1, 1)
    if path_idx.size == 0 or (side[loop[path_idx]] != -1).any():
        path_idx = arc(p0, p1, -1)
    path = loop[path_idx]
    if path.size < 2 or (side[path] != -1).any():
        raise PrepError(
            f"{name}: the outer boundary does not run round one half between the ends of the "
            "symmetry line; check the mesh."
        )
    pts = np.vstack([ml.points[0], v[path], ml.points[-1]])
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    length = s[-1]
    sv = s[1:-1]
    c1 = int(np.argmin(np.abs(sv - CORNERS[0] * length)))
    c2 = int(np.argmin(np.abs(sv - CORNERS[1] * length)))
    if c2 <= c1:
        if c1 + 1 < len(sv):
            c2 = c1 + 1
        else:
            c1, c2 = c1 - 1, c1
    s1, s2 = sv[c1], sv[c2]
    for k, sk in zip(path.tolist(), sv.tolist(), strict=True):
        if sk <= s1:
            pins[k] = (0.5 * (1.0 - sk / s1), 0.0)
        elif sk < s2:
            pins[k] = (0.0, (sk - s1) / (s2 - s1))
        else:
            pins[k] = (0.5 * (sk - s2) / (length - s2), 1.0)

    # Chords: an interior edge joining two boundary vertices pinned on the same side of the
    # square would squash the triangles between it and the boundary to zero area. Such an
    # end (unless it is a corner or an end of the line) is left free: the solve moves it
    # slightly inside the square.
    ring = np.concatenate(
        [
            [x for kind, x in (ml.nodes[0],) if kind == "vertex"],
            path,
            [x for kind, x in (ml.nodes[-1],) if kind == "vertex"],
        ]
    ).astype(np.int64)
    on_ring = np.zeros(filled.v.shape[0], dtype=bool)
    on_ring[ring] = True
    he = topo.halfedges
    cand = on_ring[he.src] & on_ring[he.dst] & (he.src < he.dst)
    a, b = he.src[cand], he.dst[cand]
    interior = he.find(b, a) >= 0
    unpinned = set()
    for p, q in zip(a[interior].tolist(), b[interior].tolist(), strict=True):
        sp_, sq = _sides_of(pins[p]), _sides_of(pins[q])
        if sp_ & sq:
            for x, sx in ((p, sp_), (q, sq)):
                if len(sx) == 1 and "line" not in sx:
                    unpinned.add(x)
    for x in unpinned:
        del pins[x]
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


def _weights(v: np.ndarray, f: np.ndarray, phi: np.ndarray, kind: str) -> tuple[sp.csr_matrix, int]:
    """Edge weights W (W[i, j] for neighbour j of i), mirror-averaged; clamped count."""
    nv = v.shape[0]
    if kind == "cotangent":
        c = igl.cotmatrix_entries(v, f)  # columns: edges (1,2), (2,0), (0,1)
        rows = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
        cols = np.concatenate([f[:, 2], f[:, 0], f[:, 1]])
        vals = np.concatenate([c[:, 0], c[:, 1], c[:, 2]])
        rows, cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
        vals = np.concatenate([vals, vals])
    else:
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
    wm = sp.coo_matrix((vals, (phi[rows], phi[cols])), shape=(nv, nv)).tocsr()
    w = ((w + wm) * 0.5).tocsr()
    w.eliminate_zeros()
    n_clamped = 0
    if kind == "cotangent":
        bad = w.data <= 0
        n_clamped = int(bad.sum()) // 2
        if bad.any():
            pos = w.data[~bad]
            floor = WEIGHT_FLOOR * (float(np.median(pos)) if pos.size else 1.0)
            w.data[bad] = floor
    return w, n_clamped


def _solve(filled: _Filled, pins: dict, weights: str):
    t0 = time.perf_counter()
    nv = filled.v.shape[0]
    phi = filled.phi
    w, n_clamped = _weights(filled.v, filled.f, phi, weights)

    pinned = np.zeros(nv, dtype=bool)
    pin_idx = np.fromiter(pins.keys(), dtype=np.int64, count=len(pins))
    pin_val = np.array(list(pins.values()), dtype=np.float64).reshape(-1, 2)
    pinned[pin_idx] = True
    uv = np.full((nv, 2), np.nan)
    uv[pin_idx] = pin_val
    side = filled.side
    if (side[~pinned] == 0).any():
        raise PrepError("internal: a vertex on the symmetry line was not pinned.")
    free = np.flatnonzero((side == -1) & ~pinned)
    col = np.full(nv, -1, dtype=np.int64)
    col[free] = np.arange(free.size)

    wf = w[free].tocoo()
    i = wf.row
    j = wf.col.astype(np.int64)
    val = wf.data
    deg = np.asarray(w[free].sum(axis=1)).ravel()
    # neighbours on the high side are the reflections of their mirror partners
    hi = side[j] == 1
    jj = np.where(hi, phi[j], j)
    jfree = col[jj] >= 0
    rhs = np.zeros((free.size, 2))
    mats = []
    for comp in (0, 1):
        sgn = np.where(hi & (comp == 0), -1.0, 1.0)  # u -> 1 - u flips the coefficient's sign
        const = np.where(hi & (comp == 0), 1.0, 0.0)  # ... and adds a constant 1
        # equation: deg_i x_i - sum_j w_ij x_j = 0, x_j = const + sgn * x_jj
        m_rows = np.concatenate([np.arange(free.size), i[jfree]])
        m_cols = np.concatenate([np.arange(free.size), col[jj[jfree]]])
        m_vals = np.concatenate([deg, -(val * sgn)[jfree]])
        a = sp.coo_matrix((m_vals, (m_rows, m_cols)), shape=(free.size, free.size)).tocsc()
        b = np.bincount(i, weights=val * const, minlength=free.size)
        pj = ~jfree
        b += np.bincount(
            i[pj], weights=val[pj] * (const[pj] + sgn[pj] * uv[jj[pj], comp]), minlength=free.size
        )
        rhs[:, comp] = b
        mats.append(a)
    if free.size:
        if not hi.any():
            sol = spla.splu(mats[0]).solve(rhs)
        else:
            sol = np.column_stack([spla.splu(mats[c]).solve(rhs[:, c]) for c in (0, 1)])
        uv[free] = sol
    high = np.flatnonzero(side == 1)
    uv[high, 0] = 1.0 - uv[phi[high], 0]
    uv[high, 1] = uv[phi[high], 1]
    if not np.all(np.isfinite(uv)):
        raise PrepError(
            "the embedding solve failed (singular system); check that the mesh is connected."
        )
    return uv, n_clamped, time.perf_counter() - t0


def _flipped(uv: np.ndarray, faces: np.ndarray) -> tuple[int, int]:
    """(number of flipped or degenerate triangles, overall orientation +1 CCW / -1 CW)."""
    a, b, c = uv[faces[:, 0]], uv[faces[:, 1]], uv[faces[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    orient = 1 if area.sum() >= 0 else -1
    return int((area * orient <= 0).sum()), orient
