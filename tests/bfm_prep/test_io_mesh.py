"""load_mesh: PLY through trimesh, OBJ parsed in file order; bad meshes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import trimesh
from bfm_prep.errors import PrepError
from bfm_prep.io.mesh import load_mesh

from tests.bfm_prep.test_io_formats import truncated_copy

V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [5, 5, 5]], dtype=np.float64)
F = np.array([[3, 1, 0], [0, 2, 3]])


@pytest.mark.parametrize("encoding", ["ascii", "binary"])
def test_ply_keeps_order_and_unused_vertices(tmp_path, encoding):
    p = tmp_path / f"m-{encoding}.ply"
    p.write_bytes(
        trimesh.exchange.ply.export_ply(trimesh.Trimesh(V, F, process=False), encoding=encoding)
    )
    with pytest.warns(
        UserWarning, match=r"1 of the 5 vertices of the mesh are used by no triangle"
    ):
        v, f = load_mesh(p)
    assert v.dtype == np.float64 and f.dtype == np.int64
    np.testing.assert_allclose(v, V)
    np.testing.assert_array_equal(f, F)


def test_obj_in_file_order(tmp_path):
    p = tmp_path / "m.obj"
    p.write_text(
        "# a quad and a triangle\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nv 5 5 5\nv 2 0 0\n"
        "vt 0 0\nvt 1 0\nvt 0 1\nvn 0 0 1\n"
        "f 1/1/1 2/2/1 4/3/1 3/1/1\nf -5//1 -1//1 -3//1\n"
    )
    with pytest.warns(UserWarning, match=r"1 of the 6 vertices"):
        v, f = load_mesh(p)
    assert v.shape == (6, 3) and v[4].tolist() == [5, 5, 5]  # the unused vertex stays in place
    np.testing.assert_array_equal(f, [[0, 1, 3], [0, 3, 2], [1, 5, 3]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", r"the faces has an index out of range"),
        (
            "v 0 0 0\nv 1 0 0\nv 0 1 0\n",
            r"has no triangles; pass a triangle mesh, not a point cloud",
        ),
        (
            "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n",
            r"line 4: vertex index 0 \(OBJ indices are 1-based\)",
        ),
        ("v 0 0 zero\nf 1 1 1\n", r"line 1: a vertex with non-numeric coordinates"),
        ("v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", r"has NaN or infinite vertex coordinates"),
        ("v 0 0 0\nv 1 0 0\nf 1 2\n", r"line 3: a face needs at least three vertices"),
    ],
)
def test_bad_obj(tmp_path, text, message):
    p = tmp_path / "bad.obj"
    p.write_text(text)
    with pytest.raises(PrepError, match=r"bad\.obj: " + message):
        load_mesh(p)


def test_not_a_mesh_and_truncated_ply(tmp_path):
    p = tmp_path / "notes.ply"
    p.write_text("hello\nworld\n")
    with pytest.raises(PrepError, match=r"notes\.ply: is not a PLY or OBJ mesh"):
        load_mesh(p)
    rng = np.random.default_rng(0)
    big = trimesh.Trimesh(rng.normal(size=(200, 3)), rng.integers(0, 200, (300, 3)), process=False)
    full = tmp_path / "full.ply"
    full.write_bytes(trimesh.exchange.ply.export_ply(big))
    cut = truncated_copy(full, tmp_path / "cut.ply", os.path.getsize(full) // 2)
    with pytest.raises(
        PrepError,
        match=r"cut\.ply: cannot be read as a PLY mesh .*; the file is "
        r"truncated or damaged\.",
    ):
        load_mesh(cut)
