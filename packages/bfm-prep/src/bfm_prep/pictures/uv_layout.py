"""The UV layout picture: the flattened mesh, the symmetry line, the outer boundary and any
flipped triangles (docs/uv-embedding.md)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from scipy.sparse.csgraph import connected_components

from bfm_prep.artifact import UVEmbedding
from bfm_prep.atomic import atomic_write_bytes
from bfm_prep.mesh_checks import HalfEdges


def plot_uv_layout(
    emb: UVEmbedding,
    path,
    vertices: np.ndarray | None = None,
    *,
    title: str | None = None,
    size_px: int = 1400,
) -> Path:
    """Draw the UV layout of an embedding to a PNG file, atomically; returns the path.

    Thin grey lines are the triangle edges; the symmetry line is red, the outer boundary blue,
    inner boundaries (holes) green, vertices without a mirror partner (a symmetry from the
    shape) dark orange dots, flipped or degenerate triangles filled orange. With the
    3D ``vertices`` the triangles are shaded by area distortion (log of UV area over 3D area,
    relative to the median), which shows where the flattening stretches or squeezes.
    Drawn on matplotlib's Agg canvas without pyplot (no global state, no display).
    """
    uv = np.asarray(emb.uv, dtype=np.float64)
    f = np.asarray(emb.faces, dtype=np.int64)
    tri = uv[f]
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    orient = 1.0 if area.sum() >= 0 else -1.0
    flipped = area * orient <= 0

    dpi = 100
    fig = Figure(figsize=(size_px / dpi, size_px / dpi * 1.06), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.05, 0.05, 0.9, 0.87))
    ax.set_aspect("equal")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("u (model x)")
    ax.set_ylabel("v (model y, up)")

    if vertices is not None:
        v = np.asarray(vertices, dtype=np.float64)
        a3 = 0.5 * np.linalg.norm(
            np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1
        )
        ratio = np.abs(area) * 0.5 / np.maximum(a3, 1e-300)
        good = (ratio > 0) & (a3 > 0)
        logr = np.zeros(len(f))
        logr[good] = np.log2(ratio[good] / np.median(ratio[good]))
        pc = PolyCollection(
            tri,
            array=np.clip(logr, -2, 2),
            cmap="coolwarm",
            edgecolors="none",
            antialiaseds=len(f) <= 20000,
        )
        pc.set_clim(-2, 2)
        ax.add_collection(pc)
        cb = fig.colorbar(pc, ax=ax, fraction=0.03, pad=0.01)
        cb.set_label("log2 area distortion (UV / 3D, relative to median)")

    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    lw = max(0.1, min(0.5, 60.0 / np.sqrt(len(f))))
    big = len(f) > 20000  # aliased drawing keeps a Basel-size mesh to a few seconds
    ax.add_collection(
        LineCollection(
            uv[edges],
            colors=[(0.3, 0.3, 0.3, 0.18 if big else 1.0)],
            linewidths=lw,
            antialiaseds=not big,
        )
    )

    # boundary loops: half-edges without a twin
    he = HalfEdges.from_faces(f, len(uv))
    bmask = he.boundary_mask()
    bs, bd = he.src[bmask], he.dst[bmask]
    outer = _outer_component(bs, bd, uv)
    segs = np.stack([uv[bs], uv[bd]], axis=1)
    ax.add_collection(
        LineCollection(segs[outer], colors="tab:blue", linewidths=2.0, label="outer boundary")
    )
    if (~outer).any():
        ax.add_collection(
            LineCollection(
                segs[~outer],
                colors="tab:green",
                linewidths=1.5,
                label="holes (closed for the solve)",
            )
        )

    line = np.asarray(emb.symmetry_line, dtype=np.int64)
    if line.size:
        # draw only the steps that follow a mesh edge (the line may cross a hole)
        a_, b_ = line[:-1], line[1:]
        joined = (he.find(a_, b_) >= 0) | (he.find(b_, a_) >= 0)
        lsegs = np.stack([uv[a_], uv[b_]], axis=1)
        ax.add_collection(
            LineCollection(lsegs[joined], colors="tab:red", linewidths=1.8, label="symmetry line")
        )
        if (~joined).any():
            ax.add_collection(
                LineCollection(
                    lsegs[~joined], colors="tab:red", linewidths=0.8, linestyles="dashed"
                )
            )
        ax.plot(uv[line, 0], uv[line, 1], "o", color="tab:red", ms=2.0)
    own = np.asarray(emb.mirror, dtype=np.int64) == np.arange(len(uv))
    own[line] = False
    if own.any():  # a symmetry from the shape: vertices without a mirror partner
        ax.plot(
            uv[own, 0],
            uv[own, 1],
            "o",
            color="darkorange",
            ms=2.5,
            label=f"no mirror partner ({int(own.sum())})",
        )
    if flipped.any():
        ax.add_collection(
            PolyCollection(
                tri[flipped],
                facecolors="orange",
                edgecolors="red",
                linewidths=1.0,
                label=f"flipped ({int(flipped.sum())})",
            )
        )
    ax.plot([0, 1, 1, 0, 0], [0, 0, 1, 1, 0], ":", color="k", lw=0.8)
    ax.legend(loc="upper right", fontsize=9, framealpha=0.85)

    ck = emb.checks or {}
    head = title or "UV layout (symmetric Tutte embedding)"
    sub = (
        f"{len(uv)} vertices, {len(f)} triangles; flipped {int(flipped.sum())}; "
        f"symmetry error {ck.get('symmetry_error', float('nan')):.2g}; "
        f"boundary error {ck.get('boundary_error', float('nan')):.2g}"
    )
    fig.suptitle(head + "\n" + sub, fontsize=11)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write_bytes(path, buf.getvalue())


def _outer_component(bs: np.ndarray, bd: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Mask of boundary segments on the loop that reaches farthest from the UV centre."""
    if bs.size == 0:
        return np.zeros(0, dtype=bool)
    n = len(uv)
    g = sp.coo_matrix((np.ones(len(bs)), (bs, bd)), shape=(n, n))
    _, lab = connected_components(g, directed=False)
    far = np.linalg.norm(uv[bs] - 0.5, axis=1)
    return lab[bs] == lab[bs[np.argmax(far)]]
