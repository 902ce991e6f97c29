"""Triangle meshes from .ply and .obj files, vertices kept exactly in file order.

- PLY (ASCII or binary) is read by trimesh with ``process=False`` (no merging, no reordering,
  unreferenced vertices kept).
- OBJ is parsed here: trimesh's OBJ reader drops vertices no face uses and re-indexes the rest
  even with ``process=False``, which would break any per-vertex correspondence (landmark
  indices, model vertex order). ``v`` lines give the vertices in order; ``f`` lines may use
  ``v``, ``v/vt``, ``v//vn`` or ``v/vt/vn`` forms and negative (relative) indices; polygons are
  fan-triangulated.

The format is recognised by content (a PLY starts with ``ply``), not only the extension.
No reorientation happens here (this is a plain mesh reader); the model loaders orient faces.
"""

from __future__ import annotations

import os

import numpy as np

from bfm_prep.io._checks import check_indices, fail, require_file, warn_unused_vertices


def _read_obj(path) -> tuple[np.ndarray, np.ndarray]:
    verts: list[list[float]] = []
    faces: list[list[int]] = []
    try:
        f = open(path, encoding="utf-8", errors="strict")
        lines = f.read().splitlines()
        f.close()
    except UnicodeDecodeError:
        raise fail(
            path, "is neither a PLY file nor a text OBJ file", "pass a .ply or .obj mesh"
        ) from None
    for lineno, line in enumerate(lines, 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        tag = parts[0]
        if tag == "v":
            try:
                xyz = [float(x) for x in parts[1:4]]
            except ValueError:
                raise fail(path, f"line {lineno}: a vertex with non-numeric coordinates") from None
            if len(xyz) != 3:
                raise fail(path, f"line {lineno}: a vertex needs three coordinates")
            verts.append(xyz)
        elif tag == "f":
            idx = []
            for p in parts[1:]:
                try:
                    i = int(p.split("/")[0])
                except ValueError:
                    raise fail(
                        path, f"line {lineno}: face corner {p!r} is not a vertex index"
                    ) from None
                if i == 0:
                    raise fail(path, f"line {lineno}: vertex index 0 (OBJ indices are 1-based)")
                idx.append(i - 1 if i > 0 else len(verts) + i)
            if len(idx) < 3:
                raise fail(path, f"line {lineno}: a face needs at least three vertices")
            for j in range(1, len(idx) - 1):
                faces.append([idx[0], idx[j], idx[j + 1]])
    v = np.asarray(verts, dtype=np.float64).reshape(-1, 3)
    f_arr = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    return v, f_arr


def _read_ply(path) -> tuple[np.ndarray, np.ndarray]:
    # lazy: trimesh takes about 0.8 s to import and only PLY files need it; at the top it would
    # slow down every command that reads through bfm_prep.io (inspect of any file included)
    import trimesh

    try:
        m = trimesh.load(path, file_type="ply", process=False, force="mesh")
    except Exception as e:  # trimesh raises many types for damaged files
        raise fail(
            path,
            f"cannot be read as a PLY mesh ({type(e).__name__}: {e})",
            "the file is truncated or damaged",
        ) from None
    v = np.asarray(getattr(m, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    f = np.asarray(getattr(m, "faces", np.zeros((0, 3))), dtype=np.int64).reshape(-1, 3)
    return v, f


def mesh_format(path: str | os.PathLike) -> str | None:
    """``"ply"``, ``"obj"`` or None, by content (extension as a tie-breaker for OBJ)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"ply"):
        return "ply"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.split()[0] in ("v", "vt", "vn", "f", "o", "g", "mtllib", "usemtl", "s"):
            return "obj"
        return None
    return "obj" if str(path).lower().endswith(".obj") else None


def load_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a .ply or .obj triangle mesh.

    Returns:
        (V, F): V float64 (N, 3), F int64 (M, 3) 0-based, in file order.
    Raises:
        PrepError: not a PLY/OBJ file, damaged, no triangles, non-finite coordinates, an index
            out of range.
    Vertices no triangle uses are kept, with a warning.
    """
    require_file(path)
    fmt = mesh_format(path)
    if fmt is None:
        raise fail(path, "is not a PLY or OBJ mesh", "pass a .ply or .obj file")
    v, f = _read_ply(path) if fmt == "ply" else _read_obj(path)
    if v.shape[0] == 0:
        raise fail(path, "has no vertices")
    if f.shape[0] == 0:
        raise fail(path, "has no triangles", "pass a triangle mesh, not a point cloud")
    if not np.isfinite(v).all():
        raise fail(path, "has NaN or infinite vertex coordinates")
    f = check_indices(f, "the faces", path, v.shape[0], base=0)
    warn_unused_vertices(f, v.shape[0], path)
    return np.ascontiguousarray(v), np.ascontiguousarray(f)


__all__ = ["load_mesh", "mesh_format"]
