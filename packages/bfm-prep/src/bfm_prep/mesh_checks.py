"""Topology checks for a triangle mesh that is to be flattened (docs/uv-embedding.md).

:func:`check_mesh` validates what the UV embedding needs: a single connected, manifold,
consistently oriented surface with the topology of a disk with holes (genus 0, at least one
boundary loop), every vertex used by a face. It returns the half-edge table and the boundary
loops (the outer loop first) so that later steps need not recompute them. Every failure is a
one-line :class:`~bfm_prep.errors.PrepError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from bfm_prep.errors import PrepError


@dataclass
class HalfEdges:
    """The directed edges of a consistently oriented triangle mesh.

    Half-edge ``h`` runs ``src[h] -> dst[h]`` inside face ``h % M`` whose third vertex is
    ``opp[h]`` (faces ``(a, b, c)`` give ``a->b``, ``b->c``, ``c->a`` in that order).
    """

    n_vertices: int
    src: np.ndarray
    dst: np.ndarray
    opp: np.ndarray
    _keys: np.ndarray
    _order: np.ndarray

    @classmethod
    def from_faces(cls, faces: np.ndarray, n_vertices: int) -> HalfEdges:
        f = np.asarray(faces, dtype=np.int64)
        src = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
        dst = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
        opp = np.concatenate([f[:, 2], f[:, 0], f[:, 1]])
        keys = src * n_vertices + dst
        order = np.argsort(keys, kind="stable")
        return cls(n_vertices, src, dst, opp, keys[order], order)

    def find(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Index of the half-edge ``a -> b`` for each pair, -1 where there is none."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        q = a * self.n_vertices + b
        pos = np.searchsorted(self._keys, q)
        pos_c = np.minimum(pos, len(self._keys) - 1)
        hit = (pos < len(self._keys)) & (self._keys[pos_c] == q) & (a >= 0) & (b >= 0)
        return np.where(hit, self._order[pos_c], -1)

    def third(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Third vertex of the face containing half-edge ``a -> b``, -1 where there is none."""
        h = self.find(a, b)
        return np.where(h >= 0, self.opp[np.maximum(h, 0)], -1)

    @property
    def twin(self) -> np.ndarray:
        """The opposite half-edge of each half-edge, -1 on the boundary (computed once)."""
        t = self.__dict__.get("_twin")
        if t is None:
            t = self.find(self.dst, self.src)
            self.__dict__["_twin"] = t
        return t

    def boundary_mask(self) -> np.ndarray:
        """True for half-edges whose opposite half-edge does not exist (the mesh boundary)."""
        return self.twin < 0


@dataclass
class MeshTopology:
    """What :func:`check_mesh` found: half-edges and boundary loops (outer loop first).

    ``loops[0]`` is the outer boundary (the loop of greatest 3D length); each loop is ordered
    along the boundary half-edges, i.e. with the surface on its left.
    """

    n_vertices: int
    faces: np.ndarray
    halfedges: HalfEdges
    loops: list[np.ndarray]
    n_edges: int

    @property
    def outer(self) -> np.ndarray:
        return self.loops[0]

    @property
    def holes(self) -> list[np.ndarray]:
        return self.loops[1:]


def check_mesh(vertices: np.ndarray, faces: np.ndarray, name: str = "mesh") -> MeshTopology:
    """Check that a mesh can be flattened onto the unit square; raise PrepError otherwise.

    Args:
        vertices: (N, 3) float, finite.
        faces: (M, 3) int, 0-based.
        name: how the mesh is called in error messages (a file name, "the model's mean").
    """
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 4:
        raise PrepError(
            f"{name}: vertices must be (N, 3) with N >= 4, got {v.shape}; pass a triangle mesh."
        )
    if not np.all(np.isfinite(v)):
        raise PrepError(f"{name}: vertices contain NaN or infinite values; fix the mesh.")
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] < 2:
        raise PrepError(
            f"{name}: faces must be (M, 3) triangles with M >= 2, got {f.shape}; pass a triangle "
            "mesh."
        )
    if not np.issubdtype(f.dtype, np.integer):
        raise PrepError(f"{name}: faces must be integer vertex indices, got {f.dtype}.")
    f = np.ascontiguousarray(f, dtype=np.int64)
    n = v.shape[0]
    if f.min() < 0 or f.max() >= n:
        raise PrepError(
            f"{name}: faces index vertices {f.min()}..{f.max()}, outside 0..{n - 1}; faces must "
            "be 0-based."
        )
    degenerate = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 2] == f[:, 0])
    if degenerate.any():
        i = int(np.flatnonzero(degenerate)[0])
        raise PrepError(
            f"{name}: {int(degenerate.sum())} faces repeat a vertex (first: face {i} = "
            f"{f[i].tolist()}); remove degenerate faces."
        )
    used = np.zeros(n, dtype=bool)
    used[f.ravel()] = True
    if not used.all():
        raise PrepError(
            f"{name}: {int((~used).sum())} vertices are used by no face (first: "
            f"{int(np.flatnonzero(~used)[0])}); remove unreferenced vertices."
        )

    he = HalfEdges.from_faces(f, n)
    # Edge-manifold and consistently oriented: each undirected edge in at most two faces,
    # each directed edge in at most one.
    lo = np.minimum(he.src, he.dst)
    hi = np.maximum(he.src, he.dst)
    _, ecount = np.unique(lo * n + hi, return_counts=True)
    if (ecount > 2).any():
        raise PrepError(
            f"{name}: non-manifold mesh: {int((ecount > 2).sum())} edges are shared by more than "
            "two faces; repair the mesh."
        )
    if (np.diff(he._keys) == 0).any():
        raise PrepError(
            f"{name}: faces are not consistently oriented (an edge is traversed twice in the same "
            "direction); reorient the faces."
        )
    vm = _vertex_manifold(he, f)
    if not vm.all():
        raise PrepError(
            f"{name}: non-manifold mesh: {int((~vm).sum())} vertices join separate fans of faces "
            f"(first: {int(np.flatnonzero(~vm)[0])}); repair the mesh."
        )
    n_edges = int(len(ecount))

    adj = sp.coo_matrix((np.ones(len(he.src)), (he.src, he.dst)), shape=(n, n)).tocsr()
    n_comp, _ = connected_components(adj, directed=False)
    if n_comp != 1:
        raise PrepError(
            f"{name}: the mesh is not connected ({n_comp} separate pieces); keep only the face "
            "surface."
        )

    loops = _boundary_loops(he, n)
    if not loops:
        raise PrepError(
            f"{name}: the mesh is closed (no boundary); a face mesh with an outer boundary is "
            "needed."
        )
    euler = n - n_edges + f.shape[0]
    if euler != 2 - len(loops):
        genus = (2 - len(loops) - euler) // 2
        raise PrepError(
            f"{name}: the mesh is not a disk with holes (Euler characteristic {euler} with "
            f"{len(loops)} boundary loops: {genus} handles); cut the handles first."
        )
    lengths = [float(np.linalg.norm(v[lp] - v[np.roll(lp, -1)], axis=1).sum()) for lp in loops]
    order = np.argsort(lengths)[::-1]
    loops = [loops[i] for i in order]
    return MeshTopology(n_vertices=n, faces=f, halfedges=he, loops=loops, n_edges=n_edges)


def _vertex_manifold(he: HalfEdges, f: np.ndarray) -> np.ndarray:
    """(N,) True where the faces around a vertex form a single fan (edge-connected)."""
    m = f.shape[0]
    n = he.n_vertices
    h = np.arange(3 * m)
    twin = he.twin
    has = twin >= 0
    k, face = h // m, h % m
    k2, face2 = twin // m, twin % m
    # corner ids (face * 3 + position); a half-edge's src is corner k, its dst corner k + 1
    c_src = face * 3 + k
    c_dst = face * 3 + (k + 1) % 3
    t_src = face2 * 3 + k2
    t_dst = face2 * 3 + (k2 + 1) % 3
    rows = np.concatenate([c_src[has], c_dst[has]])
    cols = np.concatenate([t_dst[has], t_src[has]])
    g = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(3 * m, 3 * m))
    _, lab = connected_components(g, directed=False)
    corner_vertex = f.ravel()
    pairs = np.unique(corner_vertex * (3 * m) + lab)
    fans = np.bincount(pairs // (3 * m), minlength=n)
    return fans == 1


def _boundary_loops(he: HalfEdges, n: int) -> list[np.ndarray]:
    """Boundary loops, each ordered along its half-edges (the surface on the left)."""
    b = he.boundary_mask()
    src = he.src[b]
    dst = he.dst[b]
    nxt = np.full(n, -1, dtype=np.int64)
    nxt[src] = dst  # manifold: one outgoing boundary half-edge per boundary vertex
    todo = np.zeros(n, dtype=bool)
    todo[src] = True
    loops = []
    # A walk over boundary vertices only (a few hundred on a face mesh).
    for start in src:
        if not todo[start]:
            continue
        loop = [int(start)]
        todo[start] = False
        cur = nxt[start]
        while cur != start:
            if cur < 0 or not todo[cur]:
                raise PrepError(
                    "non-manifold boundary: a boundary loop does not close; repair the mesh."
                )
            loop.append(int(cur))
            todo[cur] = False
            cur = nxt[cur]
        loops.append(np.asarray(loop, dtype=np.int64))
    return loops
