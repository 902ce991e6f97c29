"""The midline of a face mesh whose triangulation is not mirrored: a path of mesh edges through
the vertices on or nearest the mirror plane, from the chin to the forehead, and the two
halves it separates.

Where the triangulation is mirrored, the midline is the set of vertices that the mirror maps
onto themselves (:func:`bfm_prep.symmetry.midline`). Here no such set exists, so the line is
drawn:

- its ends are the outer-boundary vertices nearest the plane where the boundary crosses it,
  the lowest crossing (chin) and the highest (forehead), heights measured along the model's y
  axis projected into the plane (where a partner list names outer-boundary vertices as
  self-pairs, the lowest and highest of those);
- between them, the shortest path over the mesh's edges (Dijkstra,
  :func:`scipy.sparse.csgraph.dijkstra`) where an edge ``a - b`` costs
  ``|x_a - x_b| (eps + delta_a + delta_b)``: its length times how far its ends are from the
  plane (``delta`` = distance to the plane, 0 for a vertex that is its own nearest mirror
  image or listed as a self-pair; ``eps`` = a tenth of the mean edge, so that among vertices
  on the plane the shorter way wins). Other outer-boundary vertices are left out, so the line
  runs inside the face. A hole (a mouth opening) is closed for the search by a virtual vertex
  at its centroid, joined to its rim: the line may cross it there, as it crosses the Surrey
  Face Model's mouth;
- shortcuts: where two vertices of the path are joined by an edge but not consecutive, the
  path takes the edge (a triangle with three vertices on the line would have no area in UV).

The halves are the two pieces of the mesh left when the line's vertices are taken out; the
one on the plane's negative side gets ``u < 0.5``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra

from bfm_prep.errors import PrepError
from bfm_prep.mesh_checks import MeshTopology
from bfm_prep.mirror_plane import NO_SYMMETRY_HINT, signed_distance

#: ``eps`` of the path's edge cost, in mean edge lengths.
PATH_EPS_EDGES = 0.1


def filled_graph(vertices: np.ndarray, topo: MeshTopology) -> tuple[np.ndarray, np.ndarray]:
    """The mesh's edges plus, per hole t, edges from its rim to a virtual vertex ``N + t`` at
    its centroid. Returns (positions (N + H, 3), edges (E, 2) with ``a < b``)."""
    v = np.asarray(vertices, dtype=np.float64)
    n = topo.n_vertices
    he = topo.halfedges
    once = (he.src < he.dst) | (he.twin < 0)  # each edge once: interior ones have two halves
    e = [np.sort(np.column_stack([he.src[once], he.dst[once]]), axis=1)]
    pts = [v]
    for t, lp in enumerate(topo.holes):
        pts.append(v[lp].mean(axis=0, keepdims=True))
        e.append(np.column_stack([lp, np.full(len(lp), n + t)]))
    return np.vstack(pts), np.vstack(e)


def _ends(
    v: np.ndarray, topo: MeshTopology, plane: np.ndarray, on_plane: np.ndarray, name: str
) -> tuple[int, int]:
    """The outer-boundary vertices where the line starts (chin) and ends (forehead): the
    lowest and highest boundary vertices on the plane (self-pairs), else of the places where
    the boundary crosses the plane, the vertex nearer to it."""
    b = topo.outer
    n = plane[:3]
    up = np.array([0.0, 1.0, 0.0]) - n[1] * n
    if np.linalg.norm(up) < 1e-6:  # a plane across y: use a direction in it
        up = np.cross(n, [0.0, 0.0, 1.0])
    listed = b[on_plane[b]]
    if len(listed) >= 2:
        h = v[listed] @ up
        return int(listed[np.argmin(h)]), int(listed[np.argmax(h)])
    sd = signed_distance(v[b], plane)
    pos = sd >= 0
    k = np.flatnonzero(pos != np.roll(pos, -1))
    if len(k) < 2:
        raise PrepError.naming(
            "{name}: the mirror plane does not cross the mesh's outer boundary, so the mesh "
            "has no midline from chin to forehead: it does not look like a face; "
            + NO_SYMMETRY_HINT
            + ".",
            name=name,
        )
    nxt = (k + 1) % len(b)
    cross = np.where(np.abs(sd[k]) <= np.abs(sd[nxt]), b[k], b[nxt])
    h = v[cross] @ up
    return int(cross[np.argmin(h)]), int(cross[np.argmax(h)])


def _shortcut(path: list[int], adj: sp.csr_matrix, n: int) -> list[int]:
    """Take every edge between two non-consecutive vertices of the path (never skipping a
    hole's virtual vertex)."""
    where = {x: i for i, x in enumerate(path)}
    out = [path[0]]
    i = 0
    last = len(path) - 1
    while i < last:
        limit = next((j for j in range(i + 1, last + 1) if path[j] >= n), last)
        if path[i] >= n:
            limit = i + 1
        nbrs = adj.indices[adj.indptr[path[i]] : adj.indptr[path[i] + 1]]
        j = max(
            (where[x] for x in nbrs.tolist() if x in where and i < where[x] <= limit),
            default=i + 1,
        )
        out.append(path[j])
        i = j
    return out


def midline_path(
    vertices: np.ndarray,
    topo: MeshTopology,
    plane: np.ndarray,
    on_plane: np.ndarray,
    *,
    graph: tuple[np.ndarray, np.ndarray] | None = None,
    name: str = "mesh",
) -> np.ndarray:
    """The midline as a path of vertex indices, chin end first (see the module docstring).

    Args:
        vertices: (N, 3) float64.
        topo: the mesh's :func:`~bfm_prep.mesh_checks.check_mesh` result.
        plane: (4,) the mirror plane.
        on_plane: (N,) bool, vertices to treat as lying on the plane (self-pairs).
        graph: :func:`filled_graph` of the mesh, if already made.

    Returns:
        (P,) int64 indices into the vertices and the holes' virtual vertices ``N + t``
        (where the line crosses hole t); the first and last are outer-boundary vertices.

    Raises:
        PrepError: the plane does not cross the outer boundary twice, or no path joins the
            two crossings.
    """
    v = np.asarray(vertices, dtype=np.float64)
    n = topo.n_vertices
    pts, edges = graph if graph is not None else filled_graph(v, topo)
    m = len(pts)
    start, stop = _ends(v, topo, plane, on_plane, name)
    delta = np.abs(signed_distance(pts, plane))
    delta[:n][on_plane] = 0.0
    length = np.linalg.norm(pts[edges[:, 0]] - pts[edges[:, 1]], axis=1)
    eps = PATH_EPS_EDGES * float(np.mean(length[edges[:, 1] < n]))
    cost = length * (eps + delta[edges[:, 0]] + delta[edges[:, 1]]) + 1e-300
    banned = np.zeros(m, dtype=bool)
    banned[topo.outer] = True
    banned[[start, stop]] = False
    ok = ~banned[edges[:, 0]] & ~banned[edges[:, 1]]
    graph = sp.coo_matrix((cost[ok], (edges[ok, 0], edges[ok, 1])), shape=(m, m)).tocsr()
    dist, pred = dijkstra(graph, directed=False, indices=start, return_predecessors=True)
    if not np.isfinite(dist[stop]):
        raise PrepError.naming(
            "{name}: no path of edges joins the two places where the mirror plane crosses the "
            "outer boundary; " + NO_SYMMETRY_HINT + ".",
            name=name,
        )
    path = [stop]
    while path[-1] != start:  # a walk along the path (a few hundred vertices)
        path.append(int(pred[path[-1]]))
    path.reverse()
    adj = sp.coo_matrix(
        (np.ones(2 * len(edges)), (edges.ravel(), edges[:, ::-1].ravel())), shape=(m, m)
    ).tocsr()
    return np.asarray(_shortcut(path, adj, n), dtype=np.int64)


def halves(
    vertices: np.ndarray,
    topo: MeshTopology,
    path: np.ndarray,
    plane: np.ndarray,
    *,
    graph: tuple[np.ndarray, np.ndarray] | None = None,
    name: str = "mesh",
) -> np.ndarray:
    """(N,) int8: -1 for the half on the plane's negative side (``u < 0.5``), +1 for the
    other, 0 on the midline ``path`` (from :func:`midline_path`).

    The halves are the connected pieces of the mesh (holes closed by their virtual vertices)
    once the path's vertices are taken out, each given the side of the plane its vertices
    are on, on average.

    Raises:
        PrepError: the path does not leave vertices on both sides.
    """
    v = np.asarray(vertices, dtype=np.float64)
    n = topo.n_vertices
    pts, edges = graph if graph is not None else filled_graph(v, topo)
    m = len(pts)
    cut = np.zeros(m, dtype=bool)
    cut[path] = True
    ok = ~cut[edges[:, 0]] & ~cut[edges[:, 1]]
    g = sp.coo_matrix((np.ones(int(ok.sum())), (edges[ok, 0], edges[ok, 1])), shape=(m, m))
    n_comp, lab = connected_components(g, directed=False)
    sd = signed_distance(pts, plane)
    free = ~cut
    mean = np.bincount(lab[free], weights=sd[free], minlength=n_comp)
    out = np.zeros(m, dtype=np.int8)
    out[free] = np.where(mean[lab[free]] < 0, -1, 1)
    if not ((out[:n] == -1).any() and (out[:n] == 1).any()):
        raise PrepError.naming(
            "{name}: the midline does not split the mesh into two halves; "
            + NO_SYMMETRY_HINT
            + ".",
            name=name,
        )
    return out[:n]
