"""Mirror symmetry of a face mesh: plane, one-to-one vertex pairing and symmetry line.

A mirror symmetry of a triangle mesh is an orientation-reversing involution of its vertex
graph that maps faces to faces (docs/uv-embedding.md). :func:`find_symmetry` finds it from
the geometry only approximately and from the connectivity exactly:

1. seed correspondences, each a face and its mirrored face: first from the outer boundary,
   which the mirror maps onto itself reversed (``b[k] -> b[(c - k) % B]``; the shifts c are
   ranked by how well their pairs fit a least-squares reflection, which needs no plane
   estimate and is not fooled by a millimetre of asymmetry); then, if none of those works,
   from candidate planes (the model's x axis and the principal axes through the centroid,
   refined by reflection ICP): faces whose reflected vertices land near a face of reversed
   orientation, edges lying in the plane and faces straddling it;
2. each seed is grown over the whole mesh: knowing the images of two vertices of a face
   fixes the image of the third (the face on the other side of the mirrored half-edge), so
   the map is propagated face by face, vectorised over a front of newly mapped vertices;
3. a map is kept only if it is a bijection, an involution, and sends every face to a face
   of reversed orientation; among those, the one whose paired vertices best fit a
   reflection.

The pairing is therefore exactly one-to-one even where the mean shape is off by a millimetre
or so, where nearest-neighbour mirroring is not. The plane is then the least-squares
reflection plane of the pairs, oriented so that its normal points along +x (so that u grows
with the model's x).

When the triangulation is not mirrored (the Basel mesh, scans: no such map exists), or a
partner list is not one, the symmetry comes from the shape instead (:func:`geometric_symmetry`):
pairs from :mod:`bfm_prep.mirror_pairing`, a midline drawn through the vertices nearest the
plane and the halves it separates from :mod:`bfm_prep.midline_path`; pairs that the midline
contradicts are dropped. Some vertices then have no partner: they are their own ``mirror``
without being on the ``line`` (:attr:`Symmetry.unpaired`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from bfm_prep.atomic import atomic_write_bytes
from bfm_prep.errors import PrepError
from bfm_prep.mesh_checks import MeshTopology, check_mesh
from bfm_prep.midline_path import filled_graph, halves, midline_path
from bfm_prep.mirror_pairing import (
    pair_by_geometry,
    residuals,
    resolve_partner_list,
)
from bfm_prep.mirror_plane import (
    NO_SYMMETRY_HINT,
    candidate_planes,
    fit_plane,
    mirror_residual,
    refine_plane,
    reflect_points,
)

_HINT = NO_SYMMETRY_HINT
#: Seeds from a plane: vertices whose reflection lands within this many mean edge lengths of
#: a vertex.
SEED_REACH_EDGES = 5.0
#: Aligning the two halves of a boundary: a vertex left without a partner costs the pairing
#: tolerance, or this many mean edge lengths if more.
GAP_EDGES = 0.25


#: How :func:`find_symmetry` looks for the symmetry: the exact search, then (if it finds none)
#: the shape; the exact search only; the shape only.
METHODS = ("auto", "exact", "geometry")


@dataclass
class Symmetry:
    """A mirror symmetry of a mesh.

    Attributes:
        plane: (4,) float64 ``(n_x, n_y, n_z, d)`` with ``|n| = 1``: the plane ``n . x = d``;
            ``n`` points to the side that gets ``u > 0.5``.
        mirror: (N,) int64, the mirror partner of each vertex; itself on the symmetry line,
            and (from the shape, :func:`geometric_symmetry`) for a vertex with no partner.
            Found exactly, it is an involution mapping every face to a face of reversed
            orientation.
        line: (P,) int64, the vertices on the symmetry line, in order from the chin boundary
            to the forehead boundary. Consecutive entries are joined by a mesh edge, except
            where the line crosses a hole (a mouth opening) or runs through the middle of
            an edge whose two ends are mirror partners.
        stats: the report: ``method`` (``"auto"``, ``"pairs"``: exact; ``"geometry"``,
            ``"pairs+geometry"``: from the shape), ``exact``, ``n_pairs``, ``n_unpaired``,
            ``n_fixed`` (on the line), ``residual_rms_mm``, ``residual_max_mm`` (how far the
            reflected vertices are from their partners), ``n_swapped_edges``, and from the
            shape the pairing's counts and tolerance (docs/uv-embedding.md).
        midline: the line as :class:`Midline` nodes (with the holes it crosses); set by
            :func:`geometric_symmetry`, computed from ``mirror`` otherwise.
        sides: (N,) int8, -1 / +1 for the halves, 0 on the line; set by
            :func:`geometric_symmetry`, computed from ``mirror`` otherwise.
    """

    plane: np.ndarray
    mirror: np.ndarray
    line: np.ndarray
    stats: dict = field(default_factory=dict)
    midline: Midline | None = None
    sides: np.ndarray | None = None

    @property
    def unpaired(self) -> np.ndarray:
        """(N,) bool: vertices with no mirror partner (their own mirror, not on the line)."""
        n = len(self.mirror)
        out = self.mirror == np.arange(n)
        out[np.asarray(self.line, dtype=np.int64)] = False
        return out


# ---------------------------------------------------------------------------------------------
# combinatorial propagation


class _Propagator:
    def __init__(self, topo: MeshTopology):
        self.topo = topo
        self.he = topo.halfedges
        f = topo.faces
        self.m = f.shape[0]
        n = topo.n_vertices
        flat = f.ravel()
        order = np.argsort(flat, kind="stable")
        self.vf_idx = order // 3
        self.vf_ptr = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=n))])

    def faces_of(self, verts: np.ndarray) -> np.ndarray:
        starts = self.vf_ptr[verts]
        counts = self.vf_ptr[verts + 1] - starts
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64)
        offs = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return np.unique(self.vf_idx[np.arange(total) + offs])

    def grow(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
        """Extend the seed map ``src[k] -> dst[k]``; None if it is no mirror automorphism."""
        he = self.he
        n = self.topo.n_vertices
        phi = np.full(n, -1, dtype=np.int64)
        phi[src] = dst
        if (phi[src] != dst).any():
            return None
        front = np.unique(src)
        while front.size:
            faces = self.faces_of(front)
            h = np.concatenate([faces, faces + self.m, faces + 2 * self.m])
            s, d, o = he.src[h], he.dst[h], he.opp[h]
            sel = (phi[s] >= 0) & (phi[d] >= 0) & (phi[o] < 0)
            if not sel.any():
                break
            k = o[sel]
            val = he.third(phi[d[sel]], phi[s[sel]])
            if (val < 0).any():
                return None
            order = np.argsort(k, kind="stable")
            k, val = k[order], val[order]
            same = k[1:] == k[:-1]
            if (val[1:][same] != val[:-1][same]).any():
                return None
            first = np.concatenate([[True], ~same])
            phi[k[first]] = val[first]
            front = k[first]
        if not self.is_automorphism(phi):
            return None
        return phi

    def is_automorphism(self, phi: np.ndarray) -> bool:
        n = self.topo.n_vertices
        if phi.shape != (n,) or (phi < 0).any() or (phi >= n).any():
            return False
        if (phi[phi] != np.arange(n)).any():
            return False
        he = self.he
        return bool((he.third(phi[he.dst], phi[he.src]) == phi[he.opp]).all())

    def first_bad_face(self, phi: np.ndarray) -> int | None:
        he = self.he
        bad = he.third(phi[he.dst], phi[he.src]) != phi[he.opp]
        return None if not bad.any() else int(np.flatnonzero(bad)[0] % self.m)


def _boundary_seeds(
    v: np.ndarray, topo: MeshTopology, top: int = 6, sample: int = 400
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeds from the outer boundary, which a mirror maps onto itself reversed.

    Along the loop ``b``, the mirror is ``b[k] -> b[(c - k) % B]`` for one shift c. Each c is
    scored by how well its pairs fit *some* reflection (the least-squares plane of the pairs,
    so no plane estimate is needed and a millimetre of asymmetry does not matter: a wrong c
    shifts every pair along the boundary). The best shifts give seed faces at the boundary.
    """
    b = topo.outer
    nb = len(b)
    if nb < 4:
        return []
    he = topo.halfedges
    k = np.unique(np.linspace(0, nb - 1, min(nb, sample)).round().astype(np.int64))
    c = np.arange(nb)
    j = (c[:, None] - k[None, :]) % nb  # (B, K) partner positions for each shift
    xi = v[b[k]][None, :, :]
    xj = v[b[j]]
    m = 0.5 * (xi + xj)
    e = xi - xj
    mc = m - m.mean(axis=1, keepdims=True)
    mat = 4.0 * np.einsum("cki,ckj->cij", mc, mc) - np.einsum("cki,ckj->cij", e, e)
    # the least-squares residual is sum |e|^2 + the smallest eigenvalue
    # (see mirror_plane.reflection_plane)
    score = (e**2).sum(axis=(1, 2)) + np.linalg.eigvalsh(mat)[:, 0]
    seeds = []
    for cc in np.argsort(score, kind="stable")[:top]:
        b0, b1 = b[0], b[1]
        p0, p1 = b[cc % nb], b[(cc - 1) % nb]  # images of b0 and b1
        x = he.third(np.array([b0]), np.array([b1]))[0]
        y = he.third(np.array([p1]), np.array([p0]))[0]
        if x >= 0 and y >= 0:
            seeds.append((np.array([b0, b1, x]), np.array([p0, p1, y])))
    return seeds


def _seeds(
    v: np.ndarray, topo: MeshTopology, tree: cKDTree, plane: np.ndarray, edge: float, budget: int
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """Seed correspondences (face -> mirrored face) for one plane, most plausible first, and
    the median distance of a reflected vertex to its nearest vertex (the asymmetry's scale)."""
    he = topo.halfedges
    f = topo.faces
    rng = np.random.default_rng(0)
    seeds: list[tuple[np.ndarray, np.ndarray]] = []

    # (a) faces whose reflected vertices' nearest neighbours form a reversed face (a vertex
    # reflected farther than a few edges from the mesh gives none: the bound keeps the
    # queries fast for a wrong plane, whose reflection lands far from the surface)
    reach = SEED_REACH_EDGES * edge
    dist, nn = tree.query(reflect_points(v, plane), k=2, distance_upper_bound=reach)
    g = nn[:, 0][f]
    ok = he.third(g[:, 1], g[:, 0]) == g[:, 2]
    ok &= (g[:, 0] != g[:, 1]) & (g[:, 1] != g[:, 2]) & (g[:, 0] != g[:, 2])
    with np.errstate(invalid="ignore"):  # inf / inf where the reflection lands far away
        conf = np.nan_to_num(dist[:, 0] / np.maximum(dist[:, 1], 1e-12), nan=1.0)  # small: sure
    score = (dist[:, 0][f].max(axis=1) / edge) + conf[f].max(axis=1)
    cand = np.flatnonzero(ok)
    if cand.size:
        best = cand[np.argsort(score[cand], kind="stable")[: max(1, budget // 2)]]
        extra = rng.choice(cand, size=min(cand.size, max(1, budget // 4)), replace=False)
        for fi in np.concatenate([best, extra]):
            seeds.append((f[fi], g[fi]))

    # (b) edges lying in the plane: face (a, b, x) -> face (b, a, y)
    sd = np.abs(v @ plane[:3] - plane[3]) / edge
    e_score = sd[he.src] + sd[he.dst]
    near = np.flatnonzero(e_score < 0.5)
    near = near[np.argsort(e_score[near], kind="stable")[: max(1, budget // 4)]]
    for h in near:
        a, b, x = he.src[h], he.dst[h], he.opp[h]
        y = he.third(np.array([b]), np.array([a]))[0]
        if y >= 0:
            seeds.append((np.array([a, b, x]), np.array([b, a, y])))

    # (c) faces straddling the plane: (i, j, k) -> (j, i, k), k on the plane
    sgn = v @ plane[:3] - plane[3]
    for c in range(3):
        i, j, k = f[:, c], f[:, (c + 1) % 3], f[:, (c + 2) % 3]
        s_score = (np.abs(sgn[i] + sgn[j]) + np.abs(sgn[k])) / edge
        s_score[np.sign(sgn[i]) == np.sign(sgn[j])] = np.inf
        top = np.argsort(s_score, kind="stable")[: max(1, budget // 12)]
        for fi in top[np.isfinite(s_score[top])]:
            seeds.append((np.array([i[fi], j[fi], k[fi]]), np.array([j[fi], i[fi], k[fi]])))
    return seeds, float(np.median(np.where(np.isfinite(dist[:, 0]), dist[:, 0], reach)))


# ---------------------------------------------------------------------------------------------
# public API


def find_symmetry(
    vertices: np.ndarray,
    faces: np.ndarray,
    pairs: np.ndarray | None = None,
    *,
    method: str = "auto",
    topology: MeshTopology | None = None,
    name: str = "mesh",
    max_seeds: int = 48,
) -> Symmetry:
    """Find the mirror symmetry of a face mesh (or read the one a partner list gives).

    Args:
        vertices: (N, 3) the (mean) shape; only nearly symmetric is fine.
        faces: (M, 3) int, 0-based, consistently oriented.
        pairs: optional (P, 2) int array of 0-based mirror pairs ``(i, j)``. If they map the
            mesh onto itself (every vertex in one pair at most; a vertex in no pair, or
            paired with itself, is its own mirror) they are the exact symmetry; otherwise
            (the triangulation is not mirrored, a vertex is in several pairs) they are read
            as a partner list by :func:`geometric_symmetry`. See :func:`read_pairs`.
        method: ``"auto"``: the exact search (or check of ``pairs``), then, if it finds no
            mirror automorphism, the symmetry from the shape; ``"exact"``: the exact one or
            an error; ``"geometry"``: from the shape only.
        topology: the result of :func:`~bfm_prep.mesh_checks.check_mesh` if already known.
        name: how the mesh is called in error messages.
        max_seeds: how many seed correspondences the exact search tries at most.

    Raises:
        PrepError: the mesh is not a manifold disk with holes, no symmetry is found (the
            shape is not nearly mirror-symmetric either), the pairs index vertices out of
            range or are no mirror pairs of this shape, or the symmetry line is no single
            path.
    """
    if method not in METHODS:
        raise PrepError(f"unknown symmetry method {method!r}; use one of {METHODS}.")
    v = np.asarray(vertices, dtype=np.float64)
    topo = topology if topology is not None else check_mesh(v, faces, name)
    n = topo.n_vertices
    prop = _Propagator(topo)
    el = np.linalg.norm(v[topo.halfedges.src] - v[topo.halfedges.dst], axis=1)
    edge = float(np.mean(el))

    if pairs is not None:
        p = check_pairs(pairs, n)
        phi = None if _repeated(p).size else mirror_from_pairs(p, n)
        if method != "geometry" and phi is not None and prop.is_automorphism(phi):
            return _exact_symmetry(v, topo, phi, "pairs", 0, edge, name)
        if method == "exact":
            phi = mirror_from_pairs(p, n)  # the error for a vertex in more than one pair
            bad = prop.first_bad_face(phi)
            fb = topo.faces[bad].tolist() if bad is not None else None
            raise PrepError(
                f"{name}: the symmetry pairs do not map the mesh onto itself (face {bad} = {fb} "
                "has no mirrored face); check the pairs file (0-based 'i j' per line)."
            )
        return geometric_symmetry(v, topo, p, name=name)

    tried, planes = 0, None
    if method != "geometry":
        phi, tried, planes = _auto_mirror(v, topo, prop, edge, max_seeds)
        if phi is not None:
            return _exact_symmetry(v, topo, phi, "auto", tried, edge, name)
        if method == "exact":
            raise PrepError.naming(
                "{name}: no mirror symmetry found (tried {tried} seed correspondences: the "
                "mesh's connectivity is not mirror-symmetric); " + _HINT + ".",
                name=name,
                tried=tried,
            )
    return geometric_symmetry(v, topo, name=name, tried=tried, planes=planes or None)


def _exact_symmetry(
    v: np.ndarray, topo: MeshTopology, phi: np.ndarray, method: str, tried: int, edge, name
) -> Symmetry:
    n = topo.n_vertices
    plane = fit_plane(v, phi)
    rms, mx = mirror_residual(v, phi, plane)
    line_nodes = midline(v, topo, phi, plane, name=name)
    line = np.array([x for kind, x in line_nodes.nodes if kind == "vertex"], dtype=np.int64)
    stats = {
        "method": method,
        "exact": True,
        "seeds_tried": tried,
        "residual_rms_mm": rms,
        "residual_max_mm": mx,
        "mean_edge_mm": edge,
        "n_fixed": int((phi == np.arange(n)).sum()),
        "n_pairs": int((phi > np.arange(n)).sum()),
        "n_unpaired": 0,
        "n_swapped_edges": int(sum(k == "edge" for k, _ in line_nodes.nodes)),
    }
    return Symmetry(plane=plane, mirror=phi, line=line, stats=stats)


def geometric_symmetry(
    vertices: np.ndarray,
    topo: MeshTopology,
    pairs: np.ndarray | None = None,
    *,
    name: str = "mesh",
    tried: int = 0,
    planes: list[np.ndarray] | None = None,
) -> Symmetry:
    """The mirror symmetry of a nearly symmetric shape whose triangulation is not mirrored.

    1. pairs: from the shape (:func:`~bfm_prep.mirror_pairing.pair_by_geometry`: mutual
       nearest partners, then the rest within a tolerance) or from a partner list
       (:func:`~bfm_prep.mirror_pairing.resolve_partner_list`: self-pairs, repeats);
    2. the midline, a path of edges through the vertices on or nearest the plane, and the
       halves it separates (:mod:`bfm_prep.midline_path`);
    3. pairs that the midline contradicts are dropped (counted in ``stats``): a pair with a
       vertex on the line and a pair with both vertices on one half; on the outer boundary
       and on each hole the line crosses, the pairs are the ordered alignment of the two
       halves' arcs instead (:func:`align_arcs`);
    4. the plane is refitted to the pairs kept. Pairs that map the mesh onto itself (a
       mirrored triangulation) are marked exact (``stats["exact"]``).

    Args:
        vertices: (N, 3) float64.
        topo: the mesh's :func:`~bfm_prep.mesh_checks.check_mesh` result.
        pairs: optional (K, 2) int64 partner list (in range).
        name: how the mesh is called in errors.
        tried: seed correspondences the exact search tried (for the report and errors).
        planes: candidate planes already refined (by the exact search), to start from.

    Returns:
        A :class:`Symmetry` with ``midline`` and ``sides`` set; vertices with no partner are
        their own ``mirror`` (:attr:`Symmetry.unpaired`).
    """
    v = np.asarray(vertices, dtype=np.float64)
    n = topo.n_vertices
    if pairs is None:
        pairing = pair_by_geometry(v, topo, name=name, tried=tried, planes=planes)
        method = "geometry"
    else:
        pairing = resolve_partner_list(v, topo, pairs, name=name)
        method = "pairs+geometry"
    graph = filled_graph(v, topo)
    path = midline_path(v, topo, pairing.plane, pairing.on_plane, graph=graph, name=name)
    side = halves(v, topo, path, pairing.plane, graph=graph, name=name)
    p = pairing.pairs
    on_line = p[(side[p] == 0).any(axis=1)]
    p = p[(side[p] != 0).all(axis=1)]
    same = side[p[:, 0]] == side[p[:, 1]]
    p = p[~same]
    gap = max(pairing.stats["tolerance_mm"], GAP_EDGES * pairing.stats["mean_edge_mm"])
    p, n_order = _boundary_in_order(v, topo, path, side, p, pairing.plane, gap)
    phi = np.arange(n, dtype=np.int64)
    phi[p[:, 0]] = p[:, 1]
    phi[p[:, 1]] = p[:, 0]
    plane = fit_plane(v, phi) if len(p) else pairing.plane
    # pairs that map the mesh onto itself, with the line its fixed vertices, are the exact
    # symmetry, however they were found (a mirrored triangulation, --symmetry geometry)
    fixed = phi == np.arange(n)
    exact = bool(
        np.array_equal(np.flatnonzero(fixed), np.sort(path[path < n]))
        and _Propagator(topo).is_automorphism(phi)
    )
    r = residuals(v, p, plane)
    pts = graph[0]
    nodes = [("vertex", int(k)) if k < n else ("hole", int(k - n)) for k in path.tolist()]
    line = path[path < n]
    d_line = np.abs(v[line] @ plane[:3] - plane[3])
    n_unpaired = int(n - 2 * len(p) - len(line))
    stats = dict(pairing.stats)
    stats.update(
        {
            "method": method,
            "exact": exact,
            "seeds_tried": tried,
            "n_pairs": int(len(p)),
            "n_unpaired": n_unpaired,
            "n_fixed": int(len(line)),
            "paired_fraction": float(2 * len(p) / n),
            "residual_rms_mm": float(np.sqrt(np.mean(r**2))) if len(r) else 0.0,
            "residual_median_mm": float(np.median(r)) if len(r) else 0.0,
            "residual_p99_mm": float(np.percentile(r, 99)) if len(r) else 0.0,
            "residual_max_mm": float(r.max()) if len(r) else 0.0,
            "line_plane_distance_max_mm": float(d_line.max()) if len(line) else 0.0,
            "n_dropped_on_line": int(len(on_line)),
            "n_dropped_same_side": int(same.sum()),
            "n_dropped_boundary_order": int(n_order),
            "n_on_plane_off_line": int((pairing.on_plane & (side != 0)).sum()),
            "n_swapped_edges": 0,
        }
    )
    return Symmetry(
        plane=plane,
        mirror=phi,
        line=line,
        stats=stats,
        midline=Midline(nodes=nodes, points=pts[path]),
        sides=side,
    )


def _boundary_in_order(
    v: np.ndarray,
    topo: MeshTopology,
    path: np.ndarray,
    side: np.ndarray,
    pairs: np.ndarray,
    plane: np.ndarray,
    gap: float,
) -> tuple[np.ndarray, int]:
    """Pair the boundary vertices in order. The line cuts the outer boundary, and each hole it
    crosses, into two arcs, one per half, mirror images of each other walked from the line's
    vertex at one end: their pairs are the monotone alignment of the two arcs
    (:func:`align_arcs`). Nearest partners are not enough there: on the outer boundary,
    partners are pinned to the square's edge at a shared position and must not cross; across
    a mouth whose lips nearly touch (the Surrey Face Model's rim vertices are 0.07 mm apart),
    position cannot tell the upper lip from the lower. Returns (pairs, how many of the
    nearest-partner pairs on those arcs the alignment changed or dropped)."""
    n = topo.n_vertices
    cuts = [(topo.outer, int(path[0]), int(path[-1]))]
    for k in np.flatnonzero(path >= n).tolist():  # a hole the line crosses, by its rim
        if 0 < k < len(path) - 1 and path[k - 1] < n and path[k + 1] < n:
            cuts.append((topo.holes[int(path[k]) - n], int(path[k - 1]), int(path[k + 1])))
    changed = 0
    for loop, start, stop in cuts:
        size = len(loop)
        where = np.full(n, -1, dtype=np.int64)
        where[loop] = np.arange(size)
        if where[start] < 0 or where[stop] < 0:
            continue
        i0, i1 = where[start], where[stop]
        arc_a = loop[(i0 + 1 + np.arange((i1 - i0 - 1) % size)) % size]  # start -> stop
        arc_b = loop[(i0 - 1 - np.arange((i0 - i1 - 1) % size)) % size]  # the other way
        on = np.isin(pairs, np.concatenate([arc_a, arc_b])).any(axis=1)
        old = {tuple(x) for x in np.sort(pairs[on], axis=1).tolist()}
        new = align_arcs(v, plane, arc_a[side[arc_a] != 0], arc_b[side[arc_b] != 0], gap)
        new = new[side[new[:, 0]] * side[new[:, 1]] < 0]  # one vertex on each half
        changed += len(old - {tuple(x) for x in np.sort(new, axis=1).tolist()})
        pairs = np.vstack([pairs[~on], new])
    return pairs, changed


def align_arcs(
    v: np.ndarray, plane: np.ndarray, arc_a: np.ndarray, arc_b: np.ndarray, gap: float
) -> np.ndarray:
    """The monotone one-to-one pairing of two arcs of vertices, mirror images of each other
    walked from the same end, that minimises the sum of the pairs' residuals
    ``|reflect(x_b) - x_a|`` plus ``gap`` for each vertex left without a partner (a sequence
    alignment: dynamic programming over the two arcs, each row's running minimum vectorised).

    Returns (P, 2) int64 pairs ``(a, b)``, in order along both arcs.
    """
    la, lb = len(arc_a), len(arc_b)
    if not la or not lb:
        return np.zeros((0, 2), dtype=np.int64)
    cost = np.linalg.norm(
        v[arc_a][:, None, :] - reflect_points(v[arc_b], plane)[None, :, :], axis=2
    )
    d = np.empty((la + 1, lb + 1))
    d[0] = gap * np.arange(lb + 1)
    j = np.arange(lb + 1)
    for i in range(1, la + 1):  # a loop over one arc's vertices
        x = np.empty(lb + 1)
        x[0] = d[i - 1, 0] + gap
        x[1:] = np.minimum(d[i - 1, :-1] + cost[i - 1], d[i - 1, 1:] + gap)
        d[i] = np.minimum.accumulate(x - gap * j) + gap * j  # or skip b's vertices in turn
    out = []
    i, k = la, lb
    while i > 0 and k > 0:  # back along the cheapest alignment
        if np.isclose(d[i, k], d[i - 1, k - 1] + cost[i - 1, k - 1], rtol=0, atol=1e-12):
            out.append((arc_a[i - 1], arc_b[k - 1]))
            i, k = i - 1, k - 1
        elif np.isclose(d[i, k], d[i - 1, k] + gap, rtol=0, atol=1e-12):
            i -= 1
        else:
            k -= 1
    return np.asarray(out[::-1], dtype=np.int64).reshape(-1, 2)


def _auto_mirror(
    v: np.ndarray, topo: MeshTopology, prop: _Propagator, edge: float, max_seeds: int
) -> tuple[np.ndarray | None, int, list[np.ndarray]]:
    """(the mirror map or None, seeds tried, the candidate planes refined on the way)."""
    tree = cKDTree(v)
    diag = float(np.linalg.norm(v.max(axis=0) - v.min(axis=0)))
    candidates = candidate_planes(v)
    per_plane = max(8, max_seeds // len(candidates))
    best, best_rms, tried = None, np.inf, 0
    seen: set[bytes] = set()
    # 1. the outer boundary's own mirror (robust to asymmetry and to any pose)
    for src, dst in _boundary_seeds(v, topo):
        tried += 1
        phi = prop.grow(src, dst)
        if phi is None:
            continue
        seen.add(phi.tobytes())
        rms, _ = mirror_residual(v, phi, fit_plane(v, phi))
        if rms < best_rms:
            best, best_rms = phi, rms
        if rms < 0.05 * diag:
            break  # the best-scoring shift that grows into a mirror symmetry
    if best is not None and best_rms < 0.05 * diag:
        return best, tried, []
    # 2. seeds from candidate planes (nearest neighbours of the reflection, the plane itself)
    refined = []
    for plane in candidates:
        plane = refine_plane(v, tree, plane)
        refined.append(plane)
        seeds, scale = _seeds(v, topo, tree, plane, edge, per_plane)
        # A map that fits a reflection about as well as nearest neighbours do is the one:
        # a wrong automorphism (if the graph has one) would be off by the face's size.
        good = max(0.5 * edge, 3.0 * scale)
        for src, dst in seeds:
            if tried >= max_seeds:
                break
            tried += 1
            phi = prop.grow(src, dst)
            if phi is None:
                continue
            key = phi.tobytes()
            if key in seen:
                continue
            seen.add(key)
            rms, _ = mirror_residual(v, phi, fit_plane(v, phi))
            if rms < best_rms:
                best, best_rms = phi, rms
            if rms < good:
                return best, tried, refined
    if best is not None and best_rms < 0.05 * diag:
        return best, tried, refined
    return None, tried, refined


def check_pairs(pairs: np.ndarray, n_vertices: int) -> np.ndarray:
    """(P, 2) 0-based integer pairs, every index in ``0..n_vertices - 1``, as int64; a
    one-line PrepError otherwise."""
    p = np.asarray(pairs)
    if p.size == 0:
        p = p.reshape(0, 2)
    if p.ndim != 2 or p.shape[1] != 2 or not np.issubdtype(p.dtype, np.integer):
        raise PrepError(f"symmetry pairs must be (P, 2) integers, got {p.shape} {p.dtype}.")
    p = p.astype(np.int64)
    if p.size and (p.min() < 0 or p.max() >= n_vertices):
        raise PrepError(
            f"symmetry pairs index vertices {p.min()}..{p.max()}, outside 0..{n_vertices - 1}; "
            "the pairs file must be 0-based."
        )
    return p


def _repeated(p: np.ndarray) -> np.ndarray:
    """The vertices in more than one pair (a self-pair ``i i`` included; a pair listed twice,
    either way round, counts once)."""
    q = np.unique(np.sort(p, axis=1), axis=0)
    selfp = q[:, 0] == q[:, 1]
    uniq, counts = np.unique(np.concatenate([q[~selfp].ravel(), q[selfp, 0]]), return_counts=True)
    return uniq[counts > 1]


def mirror_from_pairs(pairs: np.ndarray, n_vertices: int) -> np.ndarray:
    """The (N,) mirror map from (P, 2) 0-based pairs; unlisted vertices map to themselves.

    Raises:
        PrepError: an index out of range, or a vertex in more than one pair (a partner list
            like that is read by :func:`geometric_symmetry` instead).
    """
    p = check_pairs(pairs, n_vertices)
    phi = np.arange(n_vertices, dtype=np.int64)
    dup = _repeated(p)
    if dup.size:
        raise PrepError(
            f"symmetry pairs list vertex {int(dup[0])} in more than one pair; each vertex may "
            "have one partner."
        )
    phi[p[:, 0]] = p[:, 1]
    phi[p[:, 1]] = p[:, 0]
    return phi


def read_pairs(path: str | os.PathLike, n_vertices: int | None = None) -> np.ndarray:
    """Read a pairs file: one ``i j`` per line (0-based vertex indices, whitespace or comma
    separated); ``#`` starts a comment. Returns (P, 2) int64."""
    path = Path(path)
    if path.is_dir():
        raise PrepError(
            f"{path}: is a folder, not a symmetry pairs file; pass 'auto' or a file of 0-based "
            "'i j' lines."
        )
    if not path.is_file():
        raise PrepError(
            f"{path}: no such symmetry pairs file; pass 'auto' or a file of 0-based 'i j' lines."
        )
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, 1):
            text = raw.split("#", 1)[0].replace(",", " ").strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) != 2:
                raise PrepError(
                    f"{path}:{lineno}: expected two vertex indices 'i j', got {raw.strip()!r}."
                )
            try:
                rows.append((int(parts[0]), int(parts[1])))
            except ValueError:
                raise PrepError(
                    f"{path}:{lineno}: vertex indices must be integers, got {raw.strip()!r}."
                ) from None
    if not rows:
        raise PrepError(f"{path}: the symmetry pairs file lists no pairs.")
    p = np.asarray(rows, dtype=np.int64)
    if n_vertices is not None and (p.min() < 0 or p.max() >= n_vertices):
        raise PrepError(
            f"{path}: pairs index vertices {p.min()}..{p.max()}, outside 0..{n_vertices - 1}; "
            "indices are 0-based."
        )
    return p


def write_pairs(
    path: str | os.PathLike, mirror: np.ndarray, line: np.ndarray | None = None
) -> Path:
    """Write the pairs ``i < mirror[i]`` of a mirror map as a pairs file (0-based).

    Args:
        path: the file to write (atomically).
        mirror: (N,) int, each vertex's partner (itself on the line or without a partner).
        line: for a symmetry from the shape (some vertices without a partner): the midline's
            vertices, written as self-pairs ``i i``; unlisted vertices then have no partner.
            Without it, unlisted vertices lie on the symmetry plane.
    """
    mirror = np.asarray(mirror, dtype=np.int64)
    i = np.flatnonzero(mirror > np.arange(len(mirror)))
    body = "".join(f"{a} {b}\n" for a, b in zip(i.tolist(), mirror[i].tolist(), strict=True))
    if line is None:
        head = (
            "# mirror pairs, 0-based vertex indices; unlisted vertices lie on the symmetry plane\n"
        )
    else:
        head = (
            "# mirror pairs, 0-based vertex indices; 'i i': on the midline (chin to forehead); "
            "unlisted vertices have no partner\n"
        )
        body += "".join(f"{k} {k}\n" for k in np.asarray(line, dtype=np.int64).tolist())
    atomic_write_bytes(path, (head + body).encode())
    return Path(path)


# ---------------------------------------------------------------------------------------------
# the symmetry line and the two halves


@dataclass
class Midline:
    """The fixed set of the mirror map as an ordered path, chin end first.

    ``nodes`` are ``("vertex", k)`` (a vertex that is its own mirror), ``("edge", (i, j))``
    (an edge whose ends are swapped; the line passes through its midpoint; ``i`` on the
    low side) or ``("hole", t)`` (hole ``t`` of ``topology.holes`` is mapped onto itself and
    the line crosses it). ``points`` (P, 3) are their 3D positions (vertex, edge midpoint,
    hole centroid).
    """

    nodes: list
    points: np.ndarray


def midline(
    vertices: np.ndarray,
    topo: MeshTopology,
    mirror: np.ndarray,
    plane: np.ndarray,
    name: str = "mesh",
) -> Midline:
    """Order the symmetry line from the chin boundary to the forehead boundary."""
    v = np.asarray(vertices, dtype=np.float64)
    he = topo.halfedges
    n = topo.n_vertices
    phi = mirror
    fixed = phi == np.arange(n)
    sgn = v @ plane[:3] - plane[3]

    nodes: list[tuple] = []
    index: dict[tuple, int] = {}

    def node(key: tuple) -> int:
        if key not in index:
            index[key] = len(nodes)
            nodes.append(key)
        return index[key]

    links: list[tuple[int, int]] = []
    # fixed edges (both ends fixed): part of the line
    fe = fixed[he.src] & fixed[he.dst] & (he.src < he.dst)
    for a, b in zip(he.src[fe].tolist(), he.dst[fe].tolist(), strict=True):
        links.append((node(("vertex", a)), node(("vertex", b))))
    for k in np.flatnonzero(fixed).tolist():
        node(("vertex", k))
    # swapped edges: the line passes through their midpoint, between the opposite vertices
    sw = np.flatnonzero(phi[he.src] == he.dst)
    for h in sw.tolist():
        i, j = int(he.src[h]), int(he.dst[h])
        key = ("edge", (i, j) if sgn[i] <= sgn[j] else (j, i))
        links.append((node(key), node(("vertex", int(he.opp[h])))))
    # holes mapped onto themselves
    loop_id = np.full(n, -1, dtype=np.int64)
    for t, lp in enumerate(topo.loops):
        loop_id[lp] = t
    outer_points: set[int] = set()
    for t, lp in enumerate(topo.loops):
        if not np.all(loop_id[phi[lp]] == t):
            continue
        on = [("vertex", int(k)) for k in lp[fixed[lp]]]
        nxt = np.roll(lp, -1)
        swl = phi[lp] == nxt
        on += [
            ("edge", (int(a), int(b)) if sgn[a] <= sgn[b] else (int(b), int(a)))
            for a, b in zip(lp[swl], nxt[swl], strict=True)
        ]
        if t == 0:
            outer_points = {node(k) for k in on}
        else:
            hnode = node(("hole", t - 1))
            for k in on:
                links.append((hnode, node(k)))

    if not nodes:
        raise PrepError.naming(
            "{name}: the mirror map has no symmetry line (no vertex or edge on the plane); "
            + _HINT
            + ".",
            name=name,
        )
    m = len(nodes)
    links_arr = np.unique(np.sort(np.asarray(links, dtype=np.int64).reshape(-1, 2), axis=1), axis=0)
    deg = np.bincount(links_arr.ravel(), minlength=m)
    adj = sp.coo_matrix((np.ones(len(links_arr)), (links_arr[:, 0], links_arr[:, 1])), shape=(m, m))
    n_comp, _ = connected_components(adj, directed=False)
    ends = np.flatnonzero(deg == 1)
    if (
        n_comp != 1
        or (deg > 2).any()
        or len(ends) != 2
        or not set(ends.tolist()) <= outer_points
        or len(outer_points) != 2
    ):
        raise PrepError.naming(
            "{name}: the symmetry line is not a single path from the outer boundary to the outer "
            "boundary ({n_comp} pieces, {n_crossings} crossings of the outer boundary); "
            + _HINT
            + ".",
            name=name,
            n_comp=n_comp,
            n_crossings=len(outer_points),
        )
    nbrs: list[list[int]] = [[] for _ in range(m)]
    for a, b in links_arr.tolist():
        nbrs[a].append(b)
        nbrs[b].append(a)
    order = [int(ends[0])]
    prev = -1
    while len(order) < m:
        cur = order[-1]
        nxt_nodes = [x for x in nbrs[cur] if x != prev]
        prev = cur
        order.append(nxt_nodes[0])

    def position(key: tuple) -> np.ndarray:
        kind, x = key
        if kind == "vertex":
            return v[x]
        if kind == "edge":
            return 0.5 * (v[x[0]] + v[x[1]])
        return v[topo.holes[x]].mean(axis=0)

    ordered = [nodes[i] for i in order]
    pts = np.array([position(k) for k in ordered])
    if pts[0, 1] > pts[-1, 1]:  # chin (low y) first
        ordered, pts = ordered[::-1], pts[::-1]
    return Midline(nodes=ordered, points=pts)


def sides(
    topo: MeshTopology,
    mirror: np.ndarray,
    vertices: np.ndarray,
    plane: np.ndarray,
    name: str = "mesh",
) -> np.ndarray:
    """(N,) int8: -1 on the low side of the plane (u < 0.5), +1 on the high side, 0 on the line.

    The halves are the pieces left when the symmetry line (fixed vertices and swapped edges)
    is cut out of the mesh graph; each piece and its mirror image go to opposite sides.
    """
    he = topo.halfedges
    n = topo.n_vertices
    phi = mirror
    fixed = phi == np.arange(n)
    keep = ~fixed[he.src] & ~fixed[he.dst] & (phi[he.src] != he.dst)
    adj = sp.coo_matrix((np.ones(int(keep.sum())), (he.src[keep], he.dst[keep])), shape=(n, n))
    n_comp, lab = connected_components(adj, directed=False)
    lab = np.where(fixed, -1, lab)
    sgn = np.asarray(vertices, dtype=np.float64) @ plane[:3] - plane[3]
    free = ~fixed
    comp_mean = np.bincount(lab[free], weights=sgn[free], minlength=n_comp)
    partner = np.full(n_comp, -1, dtype=np.int64)
    partner[lab[free]] = lab[phi[free]]
    if (partner[lab[free]] == lab[free]).any():
        raise PrepError.naming(
            "{name}: the symmetry line does not split the mesh into two halves; " + _HINT + ".",
            name=name,
        )
    side_of = np.where(comp_mean < comp_mean[np.maximum(partner, 0)], -1, 1).astype(np.int8)
    out = np.zeros(n, dtype=np.int8)
    out[free] = side_of[lab[free]]
    if (out[free] == out[phi[free]]).any():
        raise PrepError.naming(
            "{name}: the symmetry line does not split the mesh into two halves; " + _HINT + ".",
            name=name,
        )
    return out
