"""Pictures of models, UV embeddings and UV-grid models (``bfm-prep plot``).

Renders are orthographic front views (model x to the right, y up, the viewer on +z) of the
shaded surface: per-triangle Lambertian shading under one light from the upper left of the
viewer, painter's order (far triangles first), triangles facing away from the viewer culled.
They are drawn with matplotlib as one polygon collection, so they need no OpenGL.

Grid pictures are R x R images in grid order: image row 0 is grid row 0 (v = 1, the top of the
face), image column 0 is u = 0 (the viewer's left in a frontal view, the subject's right).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from PIL import Image

from bfm_prep.artifact import (
    FORMAT_GRID,
    FORMAT_MODEL,
    FORMAT_UV,
    UVGridModel,
    read_format,
    read_grid,
    read_model,
    read_uv,
)
from bfm_prep.atomic import all_or_nothing, atomic_write_bytes
from bfm_prep.errors import PrepError
from bfm_prep.io._checks import require_file
from bfm_prep.mesh_export import export_mesh as write_mesh
from bfm_prep.model import MorphableModel
from bfm_prep.pictures.uv_layout import plot_uv_layout

# Light direction (towards the light), from the upper left in front of the face.
LIGHT = np.array([-0.35, 0.45, 1.0]) / np.linalg.norm([-0.35, 0.45, 1.0])
AMBIENT = 0.18
SKIN = np.array([0.80, 0.72, 0.66])  # albedo when the model has no colour
OUTSIDE_GREY = np.array([0.55, 0.55, 0.55])
RENDER_PX = 560
# The most random samples ``plot`` renders: each is a picture (and with export_mesh two
# meshes) taking about a second; more than a few dozen is a typo, not a wish.
MAX_SAMPLES = 64


def _figure(width_in: float, height_in: float, dpi: int = 100):
    """A matplotlib Figure on the Agg canvas (no pyplot: no global state, no display)."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


# ---------------------------------------------------------------------------------------------
# shaded renders


def shade_faces(
    vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Front-view polygons of the visible triangles, far to near, with Lambertian colours.

    Args:
        vertices: (N, 3) float64 mm; faces: (M, 3) int64; colors: optional (N, 3) RGB in [0, 1].

    Returns:
        polygons: (M', 3, 2) x, y of the visible triangles in drawing order;
        face_rgb: (M', 3) shaded RGB in [0, 1]; order: (M',) their indices into ``faces``.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    n = np.cross(b - a, c - a)
    # Models are meant to be counter-clockwise seen from the front; if this one is not, its
    # normals point into the head, and flipping them all keeps the render right.
    if n[:, 2].sum() < 0:
        n = -n
    length = np.linalg.norm(n, axis=1)
    visible = (n[:, 2] > 0) & (length > 0)
    idx = np.flatnonzero(visible)
    n = n[idx] / length[idx, None]
    depth = (a[idx, 2] + b[idx, 2] + c[idx, 2]) / 3.0
    far_to_near = np.argsort(depth, kind="stable")
    order, n = idx[far_to_near], n[far_to_near]
    lambert = np.clip(n @ LIGHT, 0.0, 1.0)
    shade = AMBIENT + (1.0 - AMBIENT) * lambert
    if colors is None:
        albedo = np.broadcast_to(SKIN, (order.size, 3))
    else:
        albedo = np.clip(np.asarray(colors, dtype=np.float64)[f[order]].mean(axis=1), 0.0, 1.0)
    face_rgb = np.clip(albedo * shade[:, None], 0.0, 1.0)
    polygons = v[f[order]][:, :, :2]
    return polygons, face_rgb, order


def draw_render(
    ax,
    vertices,
    faces,
    colors=None,
    title: str | None = None,
    limits: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Draw a shaded front view into a matplotlib axes (no ticks, equal aspect)."""
    polygons, rgb, _ = shade_faces(vertices, faces, colors)
    # Edges in the face colour close the hairline gaps antialiasing leaves between triangles.
    ax.add_collection(
        PolyCollection(polygons, facecolors=rgb, edgecolors=rgb, linewidths=0.3, antialiased=True)
    )
    if limits is None:
        used = np.asarray(vertices)[np.unique(np.asarray(faces))]
        limits = used[:, :2].min(axis=0), used[:, :2].max(axis=0)
    lo, hi = limits
    centre, half = (lo + hi) / 2, 0.53 * (hi - lo).max()
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)


def render_image(
    vertices, faces, colors=None, title=None, limits=None, size_px: int = RENDER_PX
) -> np.ndarray:
    """One shaded front view as an (H, W, 3) uint8 image (``size_px`` square)."""
    fig = _figure(size_px / 100, size_px / 100)
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.92])
    draw_render(ax, vertices, faces, colors, title, limits)
    fig.set_facecolor("white")
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 image as a PNG atomically."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _save_figure(fig, path) -> Path:
    """Write a figure to a PNG atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# ---------------------------------------------------------------------------------------------
# grid images


def geometry_image(grid: UVGridModel, alpha: np.ndarray | None = None) -> np.ndarray:
    """(R, R, 3) RGB in [0, 1]: the shape's x, y, z as red, green, blue, each normalised to
    [0, 1] over the inside grid points; outside points grey. Row 0 is the top (v = 1)."""
    xyz = grid.model.shape(alpha)
    inside = grid.inside if grid.inside.any() else np.ones_like(grid.inside)
    lo, hi = xyz[inside].min(axis=0), xyz[inside].max(axis=0)
    rgb = np.clip((xyz - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
    rgb[~grid.inside] = OUTSIDE_GREY
    return rgb.reshape(grid.res, grid.res, 3)


def color_image(grid: UVGridModel) -> np.ndarray | None:
    """(R, R, 3) mean colour in UV (row 0 at v = 1), outside points grey; None without colour."""
    if not grid.model.has_color:
        return None
    rgb = np.clip(grid.model.color_mean.copy(), 0.0, 1.0)
    rgb[~grid.inside] = OUTSIDE_GREY
    return rgb.reshape(grid.res, grid.res, 3)


def _image_figure(
    image: np.ndarray, title: str, grid: UVGridModel | None = None, landmarks: bool = False
):
    fig = _figure(6.0, 6.4)
    ax = fig.add_axes([0.09, 0.08, 0.86, 0.82])
    r = image.shape[0]
    # Pixel centres at the grid's UV: u = col / (R - 1), v = 1 - row / (R - 1).
    half = 0.5 / (r - 1)
    ax.imshow(
        image, interpolation="nearest", extent=(-half, 1 + half, -half, 1 + half), origin="upper"
    )
    ax.set_xlabel("u = col / (R-1)   (model x: towards the viewer's right)")
    ax.set_ylabel("v = 1 - row / (R-1)   (model y: up)")
    ax.set_title(title, fontsize=10)
    if landmarks and grid is not None:
        _draw_landmarks(ax, grid)
    return fig


_LANDMARK_STYLE = {"aflw21": ("o", "#ff2d55"), "ibug68": ("+", "#00c0ff")}


def _draw_landmarks(ax, grid: UVGridModel) -> None:
    for i, (name, idx) in enumerate(sorted(grid.model.landmarks.items())):
        marker, colour = _LANDMARK_STYLE.get(name, ("x", f"C{i % 10}"))
        uv = grid.uv[idx]
        ax.scatter(
            uv[:, 0],
            uv[:, 1],
            s=14,
            marker=marker,
            c=colour,
            linewidths=1.0,
            label=f"{name} ({idx.size})",
            zorder=3,
        )
        if idx.size <= 30:
            for j, (u, v) in enumerate(uv, start=1):
                ax.annotate(
                    str(j),
                    (u, v),
                    xytext=(3, 2),
                    textcoords="offset points",
                    fontsize=6,
                    color=colour,
                )
    if grid.model.landmarks:
        ax.legend(loc="lower right", fontsize=7, framealpha=0.8)


def plot_grid_mask(grid: UVGridModel, path) -> Path:
    """The grid's inside mask with its landmarks."""
    img = np.where(grid.inside[:, None], np.array([0.93, 0.93, 0.88]), np.array([0.35, 0.35, 0.4]))
    n_in = int(grid.inside.sum())
    title = (
        f"UV grid {grid.res} x {grid.res}: {n_in} inside (light), "
        f"{grid.inside.size - n_in} outside (dark)"
    )
    fig = _image_figure(img.reshape(grid.res, grid.res, 3), title, grid, landmarks=True)
    return _save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# the plot command


def _samples(model: MorphableModel, n: int, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        alpha = rng.standard_normal(model.n_components)
        beta = rng.standard_normal(model.color_basis.shape[2]) if model.has_color else None
        out.append((alpha, beta))
    return out


def _render_set(
    model: MorphableModel,
    faces: np.ndarray,
    outdir: Path,
    n_samples: int,
    seed: int,
    export_mesh: bool,
    uv=None,
    texture=None,
) -> list[Path]:
    """Mean and sample renders (and meshes), all at one scale so they compare."""
    written = []
    shapes = [("mean", model.shape(), model.color() if model.has_color else None)]
    for i, (alpha, beta) in enumerate(_samples(model, n_samples, seed), start=1):
        shapes.append(
            (f"sample_{i:02d}", model.shape(alpha), model.color(beta) if model.has_color else None)
        )
    used = np.unique(faces)
    mean_xy = shapes[0][1][used, :2]
    limits = (mean_xy.min(axis=0), mean_xy.max(axis=0))
    span = limits[1] - limits[0]
    limits = (limits[0] - 0.08 * span, limits[1] + 0.08 * span)
    images = []
    for name, xyz, rgb in shapes:
        title = "mean shape" if name == "mean" else f"random sample {name[-2:]} (seed {seed})"
        images.append(render_image(xyz, faces, rgb, title, limits))
        written.append(save_image(outdir / f"render_{name}.png", images[-1]))
        if export_mesh:
            for ext in ("ply", "obj"):
                written += write_mesh(
                    outdir / f"{name}.{ext}",
                    xyz,
                    faces,
                    uv=uv,
                    colors=rgb,
                    texture=texture if name == "mean" else None,
                )
    # One overview: the mean and the samples side by side.
    strip = np.concatenate(images, axis=1)
    written.append(save_image(outdir / "renders.png", strip))
    return written


def plot_artifact(
    path: str | os.PathLike,
    outdir: str | os.PathLike,
    n_samples: int = 4,
    seed: int = 0,
    export_mesh: bool = False,
) -> list[Path]:
    """Write the pictures of a model, UV-embedding or grid artifact into ``outdir``.

    - model: ``render_mean.png``, ``render_sample_XX.png``, ``renders.png``;
    - UV embedding: ``uv_layout.png``;
    - grid: ``grid_mask.png`` (inside mask and landmarks), ``geometry_image.png``,
      ``color_uv.png`` (with colour), the renders (triangles whose three vertices are inside);
    - ``export_mesh``: ``mean.ply/.obj`` and ``sample_XX.ply/.obj`` (grid: with UV, and for the
      OBJ of the mean the mean colour as a texture image).

    Every file is written atomically and all of them together (:func:`all_or_nothing`): a
    failure part of the way leaves none of this run's files, and the files of an earlier run
    as they were.

    Returns the files written.
    """
    path, outdir = Path(path), Path(outdir)
    made_outdir = not outdir.exists()
    try:
        with all_or_nothing():
            return _plot(path, outdir, n_samples, seed, export_mesh)
    except BaseException:
        if made_outdir:
            with contextlib.suppress(OSError):
                outdir.rmdir()  # only when empty: nothing of anyone else's is removed
        raise


def plot_file_names(n_samples: int, export_mesh: bool) -> list[str]:
    """Every file name :func:`plot_artifact` may write into its folder, for any artifact
    (a superset: a model has no grid pictures, a grid without colour no ``color_uv.png``).
    ``n_samples`` is clipped to 0..MAX_SAMPLES (plot_artifact refuses the others)."""
    n = min(max(int(n_samples), 0), MAX_SAMPLES)
    names = ["uv_layout.png", "grid_mask.png", "geometry_image.png", "color_uv.png"]
    names += ["render_mean.png", "renders.png"]
    names += [f"render_sample_{i:02d}.png" for i in range(1, n + 1)]
    if export_mesh:
        for stem in ["mean"] + [f"sample_{i:02d}" for i in range(1, n + 1)]:
            names += [f"{stem}.ply", f"{stem}.obj", f"{stem}.mtl", f"{stem}_texture.png"]
    return names


def _plot(path: Path, outdir: Path, n_samples: int, seed: int, export_mesh: bool) -> list[Path]:
    """:func:`plot_artifact` inside its all-or-nothing block."""
    if n_samples < 0 or n_samples > MAX_SAMPLES:
        raise PrepError.naming(
            "{n_samples} {value}: expected 0 to {max_samples} random samples "
            "(each one is rendered to its own picture).",
            value=n_samples,
            max_samples=MAX_SAMPLES,
        )
    require_file(path)
    fmt = read_format(path)
    if fmt not in (FORMAT_MODEL, FORMAT_UV, FORMAT_GRID):
        what = "an HDF5 file of format " + repr(fmt) if fmt else "not a bfm-prep HDF5 artifact"
        raise PrepError(
            f"{path}: {what}; pass a model, UV embedding or UV-grid .h5 written by bfm-prep."
        )
    if outdir.exists() and not outdir.is_dir():
        raise PrepError.naming("{outdir} {path}: exists and is not a folder.", path=outdir)
    written: list[Path] = []
    if fmt == FORMAT_UV:
        emb = read_uv(path)
        written.append(plot_uv_layout(emb, outdir / "uv_layout.png"))
        return written
    if fmt == FORMAT_MODEL:
        model = read_model(path)
        return _render_set(model, model.faces, outdir, n_samples, seed, export_mesh)

    grid = read_grid(path)
    m = grid.model
    written.append(plot_grid_mask(grid, outdir / "grid_mask.png"))
    n_out = int((~grid.inside).sum())
    fig = _image_figure(
        geometry_image(grid),
        f"Geometry image of the mean ({grid.res} x {grid.res}): R, G, B = x, y, z"
        + (f"\n{n_out} outside grid points grey" if n_out else ""),
    )
    written.append(_save_figure(fig, outdir / "geometry_image.png"))
    col = color_image(grid)
    if col is not None:
        fig = _image_figure(
            col,
            f"Mean colour in UV ({grid.res} x {grid.res})"
            + (f"\n{n_out} outside grid points grey" if n_out else ""),
        )
        written.append(_save_figure(fig, outdir / "color_uv.png"))
    faces = grid.drawn_faces
    if faces.size == 0:
        raise PrepError(
            f"{path}: no grid triangle has all three vertices inside; nothing to render."
        )
    written += _render_set(m, faces, outdir, n_samples, seed, export_mesh, uv=grid.uv, texture=col)
    return written
