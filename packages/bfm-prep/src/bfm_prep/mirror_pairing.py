"""Mirror pairs of a face mesh from its shape, for meshes whose triangulation is not mirrored.

Used by :func:`bfm_prep.symmetry.find_symmetry` when the exact (combinatorial) search finds no
mirror automorphism, or when a partner list is not one. Two sources of pairs:

:func:`pair_by_geometry` (no list):

1. the plane: each candidate plane (across the model's x axis and across each principal axis)
   is refined by reflection ICP, and the one whose reflected vertices land nearest to
   vertices wins; it is refitted to the pairs at the end;
2. **mutual nearest partners**: vertex i and j pair when j is the vertex nearest to i's
   reflection and i the vertex nearest to j's, and the two are less than
   ``MUTUAL_CAP`` mean edge lengths from being mirror images;
3. **the rest, with a tolerance**: among the vertices still unpaired, mutual nearest partners
   again, now only closer than ``tol = min(mean edge length, 3 x the median residual of the
   mutual pairs)``, repeated until no pair is added. A vertex whose own reflection is nearest
   to itself lies on the plane: it pairs with nothing and is a candidate for the midline.

Outer-boundary vertices pair only with outer-boundary vertices, hole rims only with hole
rims, interior vertices only with interior vertices (a boundary vertex is pinned to the
square's edge; its partner must be too).

:func:`resolve_partner_list` (a partner list, e.g. a published ``symlist``):

- a pair listed twice (either way round) counts once;
- a self-pair ``i i`` says that i lies on the midline;
- a vertex listed in more than one pair (a self-pair included) keeps the pair whose vertices
  are the best mirror images (the smallest ``|reflect(x_j) - x_i|``; for a self-pair, the
  distance to its own reflection, twice the distance to the plane); the plane is the robust
  least-squares reflection plane of all listed pairs;
- pairs that join an outer-boundary vertex to an inner one are dropped (counted);
- the list is refused (one sentence) when it pairs fewer than ``MIN_LISTED_FRACTION`` of the
  vertices, or when any kept pair joins vertices that are no mirror images: farther apart
  after reflection than ``OUTLIER_MEDIANS x`` the list's median residual, clipped to
  ``OUTLIER_EDGES`` .. ``OUTLIER_CAP`` mean edge lengths.

Both return a :class:`Pairing`: the plane, the pairs, the vertices on the plane, and a report.
The midline and the halves come next (:mod:`bfm_prep.midline_path`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from bfm_prep.errors import PrepError
from bfm_prep.mesh_checks import MeshTopology
from bfm_prep.mirror_plane import (
    NO_SYMMETRY_HINT,
    candidate_planes,
    oriented_plane,
    refine_plane,
    reflect_points,
    reflection_plane,
    signed_distance,
)

#: Mutual nearest partners farther than this many mean edge lengths from mirror images are
#: no pair (a sanity bound; on the Basel mesh the farthest are about one edge apart).
MUTUAL_CAP = 2.0
#: The tolerance of the second step: ``min(TOL_EDGES x mean edge, TOL_MEDIANS x median)``.
TOL_EDGES = 1.0
TOL_MEDIANS = 3.0
#: A mesh where fewer vertices than this have a partner (or lie on the plane) that at least
#: half their neighbours agree with (:func:`support`) is no mirror-symmetric face: 99 % on
#: the Basel-size synthetic face with one half's diagonals flipped and 0.3 mm of noise, 67 %
#: with 0.5 mm (noise of 60 % of the vertex spacing), about 35 % on a random triangulation
#: of a sphere cap.
MIN_SUPPORTED_FRACTION = 0.5
#: A partner list must pair at least this fraction of the vertices.
MIN_LISTED_FRACTION = 0.5
#: A listed pair is no mirror pair when its residual exceeds OUTLIER_MEDIANS x the median
#: residual of the list, but at least OUTLIER_EDGES and at most OUTLIER_CAP mean edges.
OUTLIER_EDGES = 0.5
OUTLIER_MEDIANS = 5.0
OUTLIER_CAP = 3.0

_CHECK_LIST = "check the pairs file (0-based 'i j' per line)"


@dataclass
class Pairing:
    """Mirror pairs from the shape or from a list, before the midline is drawn.

    Attributes:
        plane: (4,) float64 ``(n, d)``, the mirror plane, ``n`` towards +x.
        pairs: (P, 2) int64, disjoint pairs of distinct vertices.
        on_plane: (N,) bool, vertices that are their own nearest mirror image (or listed as
            self-pairs): candidates for the midline.
        stats: the report (counts, tolerance, residuals), JSON-friendly.
    """

    plane: np.ndarray
    pairs: np.ndarray
    on_plane: np.ndarray
    stats: dict = field(default_factory=dict)


def mean_edge(vertices: np.ndarray, topo: MeshTopology) -> float:
    """The mean 3D length of the mesh's edges (each half-edge counted)."""
    he = topo.halfedges
    return float(np.mean(np.linalg.norm(vertices[he.src] - vertices[he.dst], axis=1)))


def vertex_classes(topo: MeshTopology) -> np.ndarray:
    """(N,) int8: 2 on the outer boundary, 1 on a hole's rim, 0 inside."""
    out = np.zeros(topo.n_vertices, dtype=np.int8)
    for lp in topo.holes:
        out[lp] = 1
    out[topo.outer] = 2
    return out


def residuals(vertices: np.ndarray, pairs: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """(P,) ``|reflect(x_j) - x_i|`` for each pair ``(i, j)``, in the mesh's units."""
    v = np.asarray(vertices, dtype=np.float64)
    if len(pairs) == 0:
        return np.zeros(0)
    return np.linalg.norm(reflect_points(v[pairs[:, 1]], plane) - v[pairs[:, 0]], axis=1)


def robust_plane(vertices: np.ndarray, pairs: np.ndarray, rounds: int = 3) -> np.ndarray:
    """The least-squares reflection plane of the pairs, refitted ``rounds`` times to the pairs
    within 3 x the median residual (so that a few wrong pairs do not tilt it); normal
    towards +x."""
    v = np.asarray(vertices, dtype=np.float64)
    keep = np.ones(len(pairs), dtype=bool)
    plane = None
    for _ in range(rounds):
        n, d = reflection_plane(v[pairs[keep, 0]], v[pairs[keep, 1]])
        plane = oriented_plane(n, d)
        r = residuals(v, pairs, plane)
        new = r <= 3.0 * float(np.median(r)) + 1e-12
        if new.sum() < 3 or np.array_equal(new, keep):
            break
        keep = new
    return plane


# ---------------------------------------------------------------------------------------------
# pairs from the shape


def estimate_plane(vertices: np.ndarray, planes: list[np.ndarray] | None = None) -> np.ndarray:
    """The mirror plane of a nearly symmetric shape: the candidate plane (refined by
    reflection ICP) whose reflected vertices land nearest to vertices.

    Args:
        vertices: (N, 3) float64.
        planes: the candidates already refined (the exact search refines the same ones);
            default: :func:`~bfm_prep.mirror_plane.candidate_planes`, refined here.
    """
    v = np.asarray(vertices, dtype=np.float64)
    tree = cKDTree(v)
    n = len(v)
    sub = np.arange(n) if n <= 4000 else np.random.default_rng(1).choice(n, 4000, replace=False)
    reach = 0.1 * float(np.linalg.norm(v.max(axis=0) - v.min(axis=0)))
    if planes is None:
        planes = [refine_plane(v, tree, p) for p in candidate_planes(v)]
    spread = float(np.median(np.linalg.norm(v[sub] - v[sub].mean(axis=0), axis=1)))
    best, best_score = None, np.inf
    for plane in planes:
        # a plane that most of the mesh lies in (a flat mesh's own) mirrors nothing
        off = np.abs(signed_distance(v[sub], plane)) > 0.05 * spread
        if off.mean() < 0.5:
            continue
        dist, _ = tree.query(reflect_points(v[sub[off]], plane), distance_upper_bound=reach)
        score = float(np.median(dist))
        if score < best_score:
            best, best_score = plane, score
    if best is None:
        best = planes[0]
    return oriented_plane(best[:3], float(best[3]))


def _mutual(
    v: np.ndarray, idx: np.ndarray, plane: np.ndarray, cap: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mutual nearest mirror partners among the vertices ``idx``.

    Returns (pairs (P, 2) with ``i < j``, their residuals, the vertices of ``idx`` nearest to
    their own reflection)."""
    if len(idx) < 2:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0), idx[:0]
    pts = v[idx]
    dist, nn = cKDTree(pts).query(reflect_points(pts, plane))
    k = np.arange(len(idx))
    selfm = nn == k
    mutual = (nn[nn] == k) & ~selfm & (k < nn) & (dist <= cap)
    pairs = np.column_stack([idx[k[mutual]], idx[nn[mutual]]])
    return pairs, dist[mutual], idx[selfm]


def adjacency(topo: MeshTopology) -> sp.csr_matrix:
    """(N, N) CSR, 1 where two vertices share an edge."""
    he = topo.halfedges
    n = topo.n_vertices
    a = sp.coo_matrix((np.ones(len(he.src)), (he.src, he.dst)), shape=(n, n)).tocsr()
    a = ((a + a.T) > 0).astype(np.float64)
    return a.tocsr()


def support(adj: sp.csr_matrix, partner: np.ndarray, rows: np.ndarray, cols: np.ndarray):
    """For each (i, c): how many neighbours of i have a partner that is a neighbour of c, i.e.
    how well pairing i with c agrees with the pairs around it (``partner`` -1 for none)."""
    n = adj.shape[0]
    if not len(rows):
        return np.zeros(0)
    has = np.flatnonzero(partner >= 0)
    p = sp.coo_matrix((np.ones(len(has)), (has, partner[has])), shape=(n, n)).tocsr()
    urows, local = np.unique(rows, return_inverse=True)
    s = (adj[urows] @ p @ adj).tocoo()
    keys = s.row.astype(np.int64) * n + s.col
    order = np.argsort(keys)
    keys, vals = keys[order], s.data[order]
    q = local.astype(np.int64) * n + cols
    if not len(keys):
        return np.zeros(len(q))
    pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    return np.where(keys[pos] == q, vals[pos], 0.0)


def _pair_once(v: np.ndarray, cls: np.ndarray, plane: np.ndarray, edge: float) -> tuple:
    n = len(v)
    partner = np.full(n, -1, dtype=np.int64)
    res = []
    for c in np.unique(cls).tolist():
        p, r, s = _mutual(v, np.flatnonzero(cls == c), plane, MUTUAL_CAP * edge)
        partner[p[:, 0]], partner[p[:, 1]] = p[:, 1], p[:, 0]
        partner[s] = s
        res.append(r)
    r1 = np.concatenate(res)
    n_mutual = int((partner > np.arange(n)).sum())
    # the rest: mutual nearest among the unpaired, within the tolerance, until none is added
    tol = min(TOL_EDGES * edge, TOL_MEDIANS * float(np.median(r1))) if len(r1) else 0.0
    rounds = 0
    while tol > 0 and rounds < 10:
        rounds += 1
        added = 0
        for c in np.unique(cls).tolist():
            p, _, _ = _mutual(v, np.flatnonzero((cls == c) & (partner < 0)), plane, tol)
            partner[p[:, 0]], partner[p[:, 1]] = p[:, 1], p[:, 0]
            added += len(p)
        if not added:
            break
    i = np.flatnonzero(partner > np.arange(n))
    pairs = np.column_stack([i, partner[i]])
    on_plane = partner == np.arange(n)
    counts = {
        "n_mutual": n_mutual,
        "n_by_tolerance": int(len(pairs) - n_mutual),
        "tolerance_rounds": rounds,
    }
    return pairs, on_plane, tol, counts


def pair_by_geometry(
    vertices: np.ndarray,
    topo: MeshTopology,
    *,
    name: str = "mesh",
    tried: int = 0,
    planes: list[np.ndarray] | None = None,
) -> Pairing:
    """Pair the vertices of a nearly symmetric shape (see the module docstring).

    Args:
        vertices: (N, 3) float64, the shape.
        topo: its :func:`~bfm_prep.mesh_checks.check_mesh` result.
        name: how the mesh is called in errors.
        tried: how many seed correspondences the exact search tried (for the error).
        planes: candidate planes already refined (see :func:`estimate_plane`).

    Raises:
        PrepError: fewer than ``MIN_SUPPORTED_FRACTION`` of the vertices have a partner that
            their neighbours agree with (no mirror-symmetric face: a random triangulation, a
            cube, ...).
    """
    v = np.asarray(vertices, dtype=np.float64)
    n = len(v)
    edge = mean_edge(v, topo)
    cls = vertex_classes(topo)
    adj = adjacency(topo)
    plane = estimate_plane(v, planes)
    pairs, on_plane, tol, counts = _pair_once(v, cls, plane, edge)
    if len(pairs) >= 3:  # once more with the plane of the pairs
        plane = robust_plane(v, pairs)
        pairs, on_plane, tol, counts = _pair_once(v, cls, plane, edge)
    partner = np.full(n, -1, dtype=np.int64)
    partner[pairs[:, 0]], partner[pairs[:, 1]] = pairs[:, 1], pairs[:, 0]
    partner[on_plane] = np.flatnonzero(on_plane)
    has = np.flatnonzero(partner >= 0)
    deg = np.diff(adj.indptr)
    agree = support(adj, partner, has, partner[has]) >= 0.5 * deg[has]
    supported = float(agree.sum()) / n
    if supported < MIN_SUPPORTED_FRACTION:
        raise PrepError.naming(
            "{name}: no mirror symmetry found (tried {tried} seed correspondences: the mesh's "
            "connectivity is not mirror-symmetric; and its shape gives only {pct:.0f}% of the "
            "vertices a mirror partner that their neighbours agree with, a face mesh over "
            "{need:.0f}%); " + NO_SYMMETRY_HINT + ".",
            name=name,
            tried=tried,
            pct=100.0 * supported,
            need=100.0 * MIN_SUPPORTED_FRACTION,
        )
    stats = {
        "pairing": "mutual nearest partners, then the rest within the tolerance",
        "mean_edge_mm": edge,
        "tolerance_mm": tol,
        **counts,
        "supported_fraction": supported,
        "n_on_plane": int(on_plane.sum()),
    }
    return Pairing(plane=plane, pairs=pairs, on_plane=on_plane, stats=stats)


# ---------------------------------------------------------------------------------------------
# pairs from a list


def best_disjoint(cand: np.ndarray, cost: np.ndarray, n: int) -> np.ndarray:
    """Mask of the candidate pairs kept when each vertex keeps its cheapest one: the pairs
    taken in order of ``cost`` (ties: list order), each unless a vertex of it is already
    taken. Computed in rounds (a pair that is the cheapest left for both its vertices is
    taken first; each round takes at least the cheapest pair left), so there is no loop over
    the pairs; a self-pair ``(i, i)`` takes one vertex."""
    order = np.argsort(cost, kind="stable")
    rank = np.empty(len(cand), dtype=np.int64)
    rank[order] = np.arange(len(cand))
    alive = np.ones(len(cand), dtype=bool)
    keep = np.zeros(len(cand), dtype=bool)
    while alive.any():
        best = np.full(n, len(cand), dtype=np.int64)  # the best rank left at each vertex
        k = np.flatnonzero(alive)
        np.minimum.at(best, cand[k, 0], rank[k])
        np.minimum.at(best, cand[k, 1], rank[k])
        take = k[(best[cand[k, 0]] == rank[k]) & (best[cand[k, 1]] == rank[k])]
        keep[take] = True
        taken = np.zeros(n, dtype=bool)
        taken[cand[take].ravel()] = True
        alive &= ~(taken[cand[:, 0]] | taken[cand[:, 1]])
    return keep


def resolve_partner_list(
    vertices: np.ndarray, topo: MeshTopology, pairs: np.ndarray, *, name: str = "mesh"
) -> Pairing:
    """Read a partner list as mirror pairs (see the module docstring for the rules).

    Args:
        vertices: (N, 3) float64, the shape.
        topo: its :func:`~bfm_prep.mesh_checks.check_mesh` result.
        pairs: (K, 2) int, 0-based, in range (checked by the caller).

    Raises:
        PrepError: the list pairs too few vertices, or pairs vertices that are no mirror
            images of each other.
    """
    v = np.asarray(vertices, dtype=np.float64)
    n = len(v)
    edge = mean_edge(v, topo)
    p = np.sort(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    n_listed = len(p)
    uniq = np.unique(p, axis=0)
    selfp = uniq[:, 0] == uniq[:, 1]
    two = uniq[~selfp]
    n_self = int(selfp.sum())
    if len(np.unique(two)) < MIN_LISTED_FRACTION * n or len(two) < 3:
        raise PrepError(
            f"{name}: the symmetry pairs do not map the mesh onto itself (its triangulation is "
            f"not mirrored), and they pair only {len(np.unique(two))} of its {n} vertices, too "
            f"few to follow its shape; {_CHECK_LIST}."
        )
    plane = robust_plane(v, two)
    # each vertex keeps its best pair: candidates in order of residual, first come first kept
    r_two = residuals(v, two, plane)
    r_self = 2.0 * np.abs(signed_distance(v[uniq[selfp, 0]], plane))
    cand = np.vstack([two, uniq[selfp]])
    r = np.concatenate([r_two, r_self])
    listed_count = np.bincount(
        np.concatenate([two.ravel(), uniq[selfp, 0]]), minlength=n
    )  # a self-pair names its vertex once
    keep = best_disjoint(cand, r, n)
    kept_two = keep[: len(two)]
    kept_self = keep[len(two) :]
    good = two[kept_two]
    r_good = r_two[kept_two]
    cap = float(
        np.clip(OUTLIER_MEDIANS * np.median(r_good), OUTLIER_EDGES * edge, OUTLIER_CAP * edge)
    )
    bad = r_good > cap
    if bad.any():
        w = int(np.argmax(r_good))
        raise PrepError(
            f"{name}: the symmetry pairs do not map the mesh onto itself: {int(bad.sum())} of "
            f"{len(good)} pairs join vertices that are no mirror images (farther apart after "
            f"reflection than {cap:.3g} mm; the worst, {good[w, 0]} {good[w, 1]}, by "
            f"{r_good[w]:.3g} mm); {_CHECK_LIST}."
        )
    outer = vertex_classes(topo) == 2
    mixed = outer[good[:, 0]] != outer[good[:, 1]]
    good = good[~mixed]
    on_plane = np.zeros(n, dtype=bool)
    on_plane[uniq[selfp][kept_self, 0]] = True
    stats = {
        "pairing": "partner list",
        "mean_edge_mm": edge,
        "tolerance_mm": cap,
        "n_listed": int(n_listed),
        "n_duplicate_pairs": int(n_listed - len(uniq)),
        "n_self_pairs": n_self,
        "n_repeated_vertices": int((listed_count > 1).sum()),
        "n_dropped_repeats": int(len(cand) - keep.sum()),
        "n_dropped_boundary_mismatch": int(mixed.sum()),
        "n_unlisted": int((listed_count == 0).sum()),
        "n_on_plane": int(on_plane.sum()),
    }
    return Pairing(plane=plane, pairs=good, on_plane=on_plane, stats=stats)
