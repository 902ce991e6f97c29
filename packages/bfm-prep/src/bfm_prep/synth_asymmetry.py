"""Imperfectly symmetric face meshes made from a mirrored one, for tests and benchmarks.

Real face meshes (the Basel Face Model 2009 and 2017, FLAME, scans) are mirror-symmetric in
shape only approximately, and their triangulations are not mirror images of each other. This
module starts from a mesh whose triangulation *is* mirrored (the synthetic model, the Surrey
Face Model) and gives it those properties, one at a time or together:

- :func:`flip_diagonals`: one half's edges flipped (as many as can flip independently: on a
  grid whose diagonals run the same way on both sides, every quad of one half differs from
  its mirror image);
- :func:`split_triangles`: a few triangles of one half split at their centroid (vertices with
  no partner on the other half);
- :func:`remove_vertices`: a few vertices of one half removed, each collapsed into a neighbour
  (their partners are left without one);
- :func:`jitter`: every vertex moved by up to a radius (mm) in a random direction;
- :func:`partner_list`: a partner list like a published one: the pairs, the vertices on the
  plane as self-pairs, some vertices in a second pair with a neighbour's partner, some pairs
  listed twice.

Every step keeps the true partner of each surviving vertex (:attr:`ImperfectMesh.partner`), so
a test can measure the pairing and the embedding against it. All are deterministic for a
given ``numpy.random.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from bfm_prep.mesh_checks import HalfEdges, check_mesh
from bfm_prep.symmetry import find_symmetry, sides


@dataclass
class ImperfectMesh:
    """A face mesh and what is known of its mirror symmetry.

    Attributes:
        vertices: (N, 3) float64, mm.
        faces: (M, 3) int64, 0-based, consistently oriented.
        partner: (N,) int64, the true mirror partner of each vertex: itself on the symmetry
            plane, -1 for a vertex whose partner was removed or that was added on one side.
        side: (N,) int8, -1 / +1 for the two halves (+1 towards +x), 0 on the plane.
        edits: what was done, in order (``{"flipped_edges": 812, ...}``).
    """

    vertices: np.ndarray
    faces: np.ndarray
    partner: np.ndarray
    side: np.ndarray
    edits: dict = field(default_factory=dict)

    @classmethod
    def from_mirrored(cls, vertices: np.ndarray, faces: np.ndarray) -> ImperfectMesh:
        """Start from a mesh whose triangulation is mirrored (its exact symmetry is found by
        :func:`~bfm_prep.symmetry.find_symmetry`; the halves by the symmetry line)."""
        v = np.asarray(vertices, dtype=np.float64)
        topo = check_mesh(v, faces)
        sym = find_symmetry(v, topo.faces, topology=topo)
        side = sides(topo, sym.mirror, v, sym.plane)
        return cls(v.copy(), topo.faces.copy(), sym.mirror.copy(), side, {})

    @property
    def true_pairs(self) -> np.ndarray:
        """(P, 2) int64, the pairs ``i < partner[i]`` that survive."""
        i = np.flatnonzero(self.partner > np.arange(len(self.partner)))
        return np.column_stack([i, self.partner[i]])


def _normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)


def _min_angle(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """(M,) the smallest angle of each triangle, radians."""
    out = np.full(len(f), np.pi)
    for k in range(3):
        a, b, c = v[f[:, k]], v[f[:, (k + 1) % 3]], v[f[:, (k + 2) % 3]]
        e1, e2 = b - a, c - a
        cos = (e1 * e2).sum(1) / np.maximum(
            np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1), 1e-300
        )
        out = np.minimum(out, np.arccos(np.clip(cos, -1.0, 1.0)))
    return out


def _boundary_vertices(faces: np.ndarray, n: int) -> np.ndarray:
    he = HalfEdges.from_faces(faces, n)
    out = np.zeros(n, dtype=bool)
    b = he.boundary_mask()
    out[he.src[b]] = True
    return out


def flip_diagonals(
    mesh: ImperfectMesh, side: int = 1, *, rng: np.random.Generator, fraction: float = 1.0
) -> ImperfectMesh:
    """Flip edges of one half: the two triangles ``(a, b, c)``, ``(b, a, d)`` become
    ``(a, d, c)``, ``(d, b, c)``.

    Only edges whose four vertices lie on that half are flipped, no two sharing a triangle,
    and only where the new triangles face the same way as the old ones and are not much
    thinner (smallest angle at least 10 degrees or the old one's); in random order, up to
    ``fraction`` of those that can.
    """
    v, f = mesh.vertices, mesh.faces.copy()
    n, m = len(v), len(f)
    he = HalfEdges.from_faces(f, n)
    twin = he.twin
    h = np.flatnonzero((twin >= 0) & (np.arange(3 * m) < twin))
    a, b, c, d = he.src[h], he.dst[h], he.opp[h], he.opp[twin[h]]
    s = mesh.side
    ok = (s[a] == side) & (s[b] == side) & (s[c] == side) & (s[d] == side)
    ok &= (he.find(c, d) < 0) & (he.find(d, c) < 0)
    new1, new2 = np.column_stack([a, d, c]), np.column_stack([d, b, c])
    old = _normals(v, np.column_stack([a, b, c])) + _normals(v, np.column_stack([b, a, d]))
    old /= np.maximum(np.linalg.norm(old, axis=1, keepdims=True), 1e-300)
    ok &= ((_normals(v, new1) * old).sum(1) > 0.5) & ((_normals(v, new2) * old).sum(1) > 0.5)
    old_angle = np.minimum(
        _min_angle(v, np.column_stack([a, b, c])), _min_angle(v, np.column_stack([b, a, d]))
    )
    new_angle = np.minimum(_min_angle(v, new1), _min_angle(v, new2))
    ok &= new_angle >= np.minimum(np.radians(10.0), old_angle)
    cand = np.flatnonzero(ok)
    cand = cand[rng.permutation(len(cand))]
    used = np.zeros(m, dtype=bool)
    f1, f2 = h % m, twin[h] % m
    chosen = []
    for k in cand.tolist():  # greedy: each triangle takes part in one flip at most
        if used[f1[k]] or used[f2[k]]:
            continue
        used[f1[k]] = used[f2[k]] = True
        chosen.append(k)
    chosen = np.asarray(chosen[: int(round(fraction * len(chosen)))], dtype=np.int64)
    f[f1[chosen]] = new1[chosen]
    f[f2[chosen]] = new2[chosen]
    edits = dict(mesh.edits, flipped_edges=len(chosen))
    return replace(mesh, faces=f, edits=edits)


def split_triangles(
    mesh: ImperfectMesh, count: int, side: int = 1, *, rng: np.random.Generator
) -> ImperfectMesh:
    """Split ``count`` triangles of one half (no boundary vertex, no two sharing a vertex) at
    their centroid: the new vertices have no partner."""
    v, f = mesh.vertices, mesh.faces
    n = len(v)
    on_b = _boundary_vertices(f, n)
    s = mesh.side
    ok = (s[f] == side).all(axis=1) & ~on_b[f].any(axis=1)
    taken = np.zeros(n, dtype=bool)
    chosen = []
    for k in rng.permutation(np.flatnonzero(ok)).tolist():
        if len(chosen) == count:
            break
        if taken[f[k]].any():
            continue
        taken[f[k]] = True
        chosen.append(k)
    chosen = np.asarray(chosen, dtype=np.int64)
    new = n + np.arange(len(chosen))
    tri = f[chosen]
    keep = np.ones(len(f), dtype=bool)
    keep[chosen] = False
    added = np.concatenate(
        [
            np.column_stack([tri[:, 0], tri[:, 1], new]),
            np.column_stack([tri[:, 1], tri[:, 2], new]),
            np.column_stack([tri[:, 2], tri[:, 0], new]),
        ]
    )
    return replace(
        mesh,
        vertices=np.vstack([v, v[tri].mean(axis=1)]),
        faces=np.vstack([f[keep], added]),
        partner=np.concatenate([mesh.partner, np.full(len(chosen), -1, dtype=np.int64)]),
        side=np.concatenate([s, np.full(len(chosen), side, dtype=np.int8)]),
        edits=dict(mesh.edits, split_triangles=len(chosen)),
    )


def remove_vertices(
    mesh: ImperfectMesh, count: int, side: int = -1, *, rng: np.random.Generator
) -> ImperfectMesh:
    """Remove ``count`` interior vertices of one half, each collapsed into the neighbour that
    keeps the surrounding triangles best shaped (none turned over); the removed vertices'
    partners are left without one. Removed vertices are not neighbours of each other, of the
    plane or of a boundary."""
    v, f = mesh.vertices, mesh.faces.copy()
    n = len(v)
    on_b = _boundary_vertices(f, n)
    s = mesh.side
    flat = f.ravel()
    order = np.argsort(flat, kind="stable")
    ptr = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=n))])
    blocked = np.zeros(n, dtype=bool)
    alive = np.ones(len(f), dtype=bool)
    removed = []
    cand = np.flatnonzero((s == side) & ~on_b)
    for x in rng.permutation(cand).tolist():
        if len(removed) == count:
            break
        if blocked[x]:
            continue
        around = order[ptr[x] : ptr[x + 1]] // 3
        around = around[alive[around]]
        ring = np.unique(f[around])
        ring = ring[ring != x]
        if (s[ring] != side).any() or on_b[ring].any() or blocked[ring].any():
            continue
        best, best_score = None, 0.2
        for w in ring.tolist():
            # the link condition: x and w share exactly the two neighbours of their edge
            around_w = order[ptr[w] : ptr[w + 1]] // 3
            nb_w = np.unique(f[around_w[alive[around_w]]])
            if len(np.intersect1d(ring, nb_w)) != 3:  # w itself and the two opposite ones
                continue
            moved = around[~(f[around] == w).any(axis=1)]
            g = f[moved].copy()
            g[g == x] = w
            dots = (_normals(v, g) * _normals(v, f[moved])).sum(1)
            score = float(dots.min()) if len(dots) else -1.0
            if score > best_score and _min_angle(v, g).min() > np.radians(5.0):
                best, best_score = w, score
        if best is None:
            continue
        both = around[(f[around] == best).any(axis=1)]
        alive[both] = False
        rest = around[alive[around]]
        g = f[rest]
        g[g == x] = best
        f[rest] = g
        blocked[ring] = True
        blocked[x] = True
        removed.append(x)
    keep_v = np.ones(n, dtype=bool)
    keep_v[removed] = False
    remap = np.full(n, -1, dtype=np.int64)
    remap[keep_v] = np.arange(int(keep_v.sum()))
    partner = mesh.partner.copy()
    lost = partner[removed]
    partner[lost[lost >= 0]] = -1
    partner = np.where(partner >= 0, remap[np.maximum(partner, 0)], -1)[keep_v]
    return replace(
        mesh,
        vertices=v[keep_v],
        faces=remap[f[alive]],
        partner=partner,
        side=s[keep_v],
        edits=dict(mesh.edits, removed_vertices=len(removed)),
    )


def jitter(mesh: ImperfectMesh, radius: float, *, rng: np.random.Generator) -> ImperfectMesh:
    """Move every vertex by a random vector, uniformly distributed in the ball of ``radius``
    (mm): a median length of 0.79 ``radius``, so the pairs' mirror residuals (two such moves)
    have a median of about ``radius``."""
    n = len(mesh.vertices)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d *= radius * rng.uniform(size=(n, 1)) ** (1.0 / 3.0)
    return replace(
        mesh, vertices=mesh.vertices + d, edits=dict(mesh.edits, jitter_mm=float(radius))
    )


def partner_list(
    mesh: ImperfectMesh, *, rng: np.random.Generator, repeats: int = 20, duplicates: int = 10
) -> np.ndarray:
    """(K, 2) int64 0-based pairs like a published partner list, in random order.

    The true pairs (each once), every vertex on the plane as a self-pair ``i i``, ``repeats``
    vertices of the low half listed a second time with the partner of one of their
    neighbours (so that vertex and that partner are each in two pairs), and ``duplicates``
    pairs listed again the other way round (``j i``).
    """
    p = mesh.true_pairs
    on_plane = np.flatnonzero(mesh.partner == np.arange(len(mesh.partner)))
    rows = [p, np.column_stack([on_plane, on_plane])]
    f = mesh.faces
    nb_of = {}
    for a, b in np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).tolist():
        nb_of.setdefault(a, []).append(b)
    low = np.flatnonzero((mesh.side == -1) & (mesh.partner >= 0))
    extra = []
    for k in rng.permutation(low).tolist():
        if len(extra) == repeats:
            break
        nbs = [x for x in nb_of.get(k, []) if mesh.partner[x] >= 0 and mesh.side[x] == -1]
        if nbs:
            extra.append((k, int(mesh.partner[nbs[int(rng.integers(len(nbs)))]])))
    if extra:
        rows.append(np.asarray(extra, dtype=np.int64))
    if duplicates and len(p):
        rows.append(p[rng.choice(len(p), size=min(duplicates, len(p)), replace=False)][:, ::-1])
    out = np.vstack(rows).astype(np.int64)
    return out[rng.permutation(len(out))]
