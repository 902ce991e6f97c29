"""Write a model shape as a PLY or OBJ mesh (trimesh), with UV coordinates where known.

Vertices are written in the model's order and never merged or reordered (``process=False``),
so vertex k of the file is vertex k of the model (for a grid model: grid vertex k).

- OBJ: ``v`` and, with UV, ``vt`` lines; with a texture image, a ``.mtl`` file and the image
  (PNG) beside the OBJ, named after it.
- PLY (binary): positions, and with UV the per-vertex properties ``s``, ``t`` (as MeshLab and
  Blender read them); without UV, per-vertex RGB colours when given.

stn-train has cousins of this OBJ writer (for its fitted faces), but they cannot be shared:
bfm-prep never imports stn-train (nothing does), so each package keeps its own small writer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from bfm_prep.atomic import atomic_write_bytes
from bfm_prep.errors import PrepError

MESH_FORMATS = ("ply", "obj")


def export_mesh(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    uv: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    texture: np.ndarray | None = None,
) -> list[Path]:
    """Write one mesh; returns the files written.

    Args:
        path: ``.ply`` or ``.obj``.
        vertices: (N, 3) float64, mm.
        faces: (M, 3) int64, 0-based.
        uv: optional (N, 2) texture coordinates in [0, 1] (v up, as OBJ and PLY expect).
        colors: optional (N, 3) RGB in [0, 1], written as vertex colours when there is no UV.
        texture: optional (H, W, 3) RGB in [0, 1] image, row 0 at v = 1; OBJ only, needs uv.
    """
    # lazy: trimesh takes about 0.8 s to import and only writing a mesh needs it; at the top it
    # would slow down every plot, also those that write no mesh
    import trimesh
    from trimesh.visual import ColorVisuals, TextureVisuals

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in MESH_FORMATS:
        raise PrepError(f"{path}: unknown mesh format {path.suffix!r}; use .ply or .obj.")
    visual = None
    if uv is not None:
        image = None
        if texture is not None and fmt == "obj":
            image = Image.fromarray(_to_uint8(texture))
        visual = TextureVisuals(uv=np.asarray(uv, dtype=np.float64), image=image)
    elif colors is not None:
        rgba = np.concatenate([_to_uint8(colors), np.full((len(colors), 1), 255, np.uint8)], 1)
        visual = ColorVisuals(vertex_colors=rgba)
    mesh = trimesh.Trimesh(
        vertices=np.asarray(vertices, dtype=np.float64),
        faces=np.asarray(faces, dtype=np.int64),
        visual=visual,
        process=False,
        validate=False,
    )
    written = []
    if fmt == "ply":
        atomic_write_bytes(path, trimesh.exchange.ply.export_ply(mesh, encoding="binary"))
        return [path]
    mtl_name = f"{path.stem}.mtl"
    text, files = trimesh.exchange.obj.export_obj(
        mesh,
        include_texture=visual is not None and uv is not None,
        return_texture=True,
        mtl_name=mtl_name,
    )
    if texture is None or uv is None:
        # Without an image the material is trimesh's blank default: write no .mtl/.png and
        # drop the references to them (the vt lines stay).
        files = {}
        text = (
            "\n".join(
                line for line in text.splitlines() if not line.startswith(("mtllib", "usemtl"))
            )
            + "\n"
        )
    for name, data in files.items():
        if name != mtl_name and name.lower().endswith(".png"):
            # Name the texture after the mesh so several meshes can share a folder, and use a
            # white diffuse colour so that viewers show the texture unmodulated.
            tex = f"{path.stem}_texture.png"
            atomic_write_bytes(path.parent / tex, data)
            material = next(
                (
                    line.split(None, 1)[1]
                    for line in text.splitlines()
                    if line.startswith("usemtl ")
                ),
                "material_0",
            )
            mtl = (
                f"# material of {path.name}\nnewmtl {material}\nKa 1.0 1.0 1.0\n"
                f"Kd 1.0 1.0 1.0\nKs 0.0 0.0 0.0\nillum 1\nmap_Kd {tex}\n"
            )
            atomic_write_bytes(path.parent / mtl_name, mtl.encode())
            written += [path.parent / mtl_name, path.parent / tex]
    atomic_write_bytes(path, text.encode())
    return [path, *written]


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.round(np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0) * 255).astype(np.uint8)
