"""``bfm-prep plot`` (bfm_prep.pictures.model_views) and mesh export (bfm_prep.mesh_export)."""

from __future__ import annotations

import numpy as np
import pytest
from bfm_prep.artifact import UVEmbedding, write_grid, write_model, write_uv
from bfm_prep.errors import PrepError
from bfm_prep.mesh_export import export_mesh
from bfm_prep.pictures.model_views import color_image, geometry_image, shade_faces
from bfm_prep.resample import resample_to_grid

from tests.bfm_prep.test_resample import make_model, square_mesh
from tests.tolerances import TOL

RTOL, ATOL = TOL[np.float64]
RES = 32


def _png(path):
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) >= 200, (path, img.shape)
    return img[..., :3]


def _not_blank(path):
    img = _png(path)
    assert img.std() > 0.02 and (img < 0.9).mean() > 0.02, f"{path} looks blank"


def _read_obj(path):
    """(v, vt, f 0-based) of an OBJ whose faces reference vertex/uv pairs of equal index."""
    v, vt, f = [], [], []
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            v.append([float(x) for x in parts[1:4]])
        elif parts[0] == "vt":
            vt.append([float(x) for x in parts[1:3]])
        elif parts[0] == "f":
            ids = [p.split("/") for p in parts[1:]]
            assert all(i[0] == i[1] for i in ids)
            f.append([int(i[0]) - 1 for i in ids])
    return np.array(v), np.array(vt), np.array(f)


_PLY_TYPES = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4", "uint": "<u4"}


def _read_ply(path):
    """(vertex record array, faces) of a binary little-endian triangle PLY (a reader
    independent of trimesh, whose loader drops vertices no face uses)."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode().splitlines()
    assert "format binary_little_endian 1.0" in header
    n_v = n_f = 0
    props = []
    for line in header:
        p = line.split()
        if p[:2] == ["element", "vertex"]:
            n_v, current = int(p[2]), "vertex"
        elif p[:2] == ["element", "face"]:
            n_f, current = int(p[2]), "face"
        elif p[0] == "property" and current == "vertex":
            props.append((p[2], _PLY_TYPES[p[1]]))
    vert = np.frombuffer(data, dtype=np.dtype(props), count=n_v, offset=end)
    face_dt = np.dtype([("n", "u1"), ("idx", "<i4", 3)])
    faces = np.frombuffer(data, dtype=face_dt, count=n_f, offset=end + vert.nbytes)
    assert (faces["n"] == 3).all()
    return vert, faces["idx"].astype(np.int64)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("plot")
    uv, faces = square_mesh(21, seed=3, hole=((0.5, 0.3), 0.1))
    m = make_model(uv, faces, landmarks={"aflw21": np.arange(0, 210, 10)})
    write_model(d / "model.h5", m)
    g = resample_to_grid(m, uv, RES)
    write_grid(d / "grid.h5", g)
    emb = UVEmbedding(
        uv=uv,
        faces=faces,
        mirror=np.arange(len(uv)),
        symmetry_line=np.zeros(0, np.int64),
        plane=np.array([1.0, 0, 0, 0]),
    )
    write_uv(d / "uv.h5", emb)
    return d, m, g


class TestShading:
    def test_cull_and_depth_order(self):
        v = np.array(
            [
                [0, 0, 0],
                [1, 0, 0],
                [0, 1, 0],  # facing +z, far
                [0, 0, 5],
                [1, 0, 5],
                [0, 1, 5],  # facing +z, near
                [0, 0, 2],
                [0, 1, 2],
                [1, 0, 2.0],
            ]
        )  # facing -z: culled
        f = np.array([[3, 4, 5], [0, 1, 2], [6, 7, 8]])
        polys, rgb, order = shade_faces(v, f)
        np.testing.assert_array_equal(order, [1, 0])  # far first
        assert polys.shape == (2, 3, 2) and rgb.shape == (2, 3)
        assert np.all((rgb >= 0) & (rgb <= 1))

    def test_lambert_brighter_towards_the_light(self):
        # two triangles tilted towards the upper left and the lower right
        v = np.array(
            [[0, 0, 0], [1, 0, 0.5], [0, 1, -0.5], [0, 0, 0], [1, 0, -0.5], [0, 1, 0.5]],
            dtype=float,
        )
        f = np.array([[0, 1, 2], [3, 4, 5]])
        _, rgb, order = shade_faces(v, f)
        up_left = rgb[list(order).index(0)].sum()
        down_right = rgb[list(order).index(1)].sum()
        assert down_right < up_left


class TestGridImages:
    def test_geometry_and_colour_images(self, artifacts):
        _, m, g = artifacts
        img = geometry_image(g)
        assert img.shape == (RES, RES, 3) and img.min() >= 0 and img.max() <= 1
        # row 0 is the top (v = 1): green (y) is high there; column 0 is u = 0: red (x) low
        assert img[0, RES // 2, 1] > 0.9 and img[-1, RES // 2, 1] < 0.1
        assert img[RES // 4, 0, 0] < 0.1 and img[RES // 4, -1, 0] > 0.9
        col = color_image(g)
        assert col.shape == (RES, RES, 3)
        np.testing.assert_allclose(col[0, 0], np.clip(g.model.color_mean[0], 0, 1), rtol=RTOL)


class TestCommand:
    def test_grid(self, artifacts, run_cli, tmp_path):
        d, m, g = artifacts
        out = tmp_path / "pics"
        res = run_cli(
            "plot", d / "grid.h5", "--out", out, "--export-mesh", "--samples", "2", "--seed", "3"
        )
        assert res.returncode == 0, res.stderr
        for name in (
            "grid_mask",
            "geometry_image",
            "color_uv",
            "render_mean",
            "render_sample_01",
            "render_sample_02",
            "renders",
        ):
            _not_blank(out / f"{name}.png")
        assert not (out / "render_sample_03.png").exists()
        keep = g.inside[g.model.faces].all(axis=1)
        for name in ("mean", "sample_01"):
            v, vt, f = _read_obj(out / f"{name}.obj")
            assert len(v) == RES * RES
            np.testing.assert_allclose(vt, g.uv, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(f, g.model.faces[keep])
            ply_v, ply_f = _read_ply(out / f"{name}.ply")
            np.testing.assert_allclose(np.stack([ply_v["s"], ply_v["t"]], 1), g.uv, atol=1e-12)
            np.testing.assert_array_equal(ply_f, g.model.faces[keep])
        ply_v, _ = _read_ply(out / "mean.ply")
        xyz = np.stack([ply_v["x"], ply_v["y"], ply_v["z"]], 1)
        np.testing.assert_allclose(xyz, g.model.shape_mean, rtol=1e-6, atol=1e-4)
        assert (out / "mean_texture.png").is_file()
        assert "map_Kd mean_texture.png" in (out / "mean.mtl").read_text()
        assert "mtllib mean.mtl" in (out / "mean.obj").read_text()
        assert not (out / "sample_01.mtl").exists()

    def test_model(self, artifacts, run_cli, tmp_path):
        d, m, _ = artifacts
        out = tmp_path / "pics"
        res = run_cli("plot", d / "model.h5", "--out", out, "--samples", "1", "--export-mesh")
        assert res.returncode == 0, res.stderr
        _not_blank(out / "render_mean.png")
        _not_blank(out / "renders.png")
        import trimesh

        ply = trimesh.load(out / "mean.ply", process=False)
        assert len(ply.vertices) == m.n_vertices and len(ply.faces) == len(m.faces)
        np.testing.assert_allclose(ply.vertices, m.shape_mean, rtol=1e-6, atol=1e-4)
        colors = ply.visual.vertex_colors[:, :3] / 255.0
        np.testing.assert_allclose(colors, np.clip(m.color_mean, 0, 1), atol=1 / 255)

    def test_uv(self, artifacts, run_cli, tmp_path):
        d, _, _ = artifacts
        res = run_cli("plot", d / "uv.h5", "--out", tmp_path / "pics")
        assert res.returncode == 0, res.stderr
        _not_blank(tmp_path / "pics" / "uv_layout.png")

    def test_samples_are_reproducible(self, artifacts, run_cli, tmp_path):
        d, _, _ = artifacts
        for s in ("a", "b"):
            assert (
                run_cli(
                    "plot",
                    d / "model.h5",
                    "--out",
                    tmp_path / s,
                    "--samples",
                    "1",
                    "--seed",
                    "5",
                    "--export-mesh",
                ).returncode
                == 0
            )
        assert (tmp_path / "a" / "sample_01.obj").read_bytes() == (
            tmp_path / "b" / "sample_01.obj"
        ).read_bytes()

    @pytest.mark.parametrize("case", ["missing", "not_artifact", "negative_samples"])
    def test_bad_inputs(self, artifacts, run_cli, tmp_path, case):
        d, _, _ = artifacts
        src, extra = d / "grid.h5", []
        if case == "missing":
            src = tmp_path / "nope.h5"
        elif case == "not_artifact":
            src = tmp_path / "x.txt"
            src.write_text("hello")
        else:
            extra = ["--samples", "-1"]
        res = run_cli("plot", src, "--out", tmp_path / "pics", *extra)
        assert res.returncode == 2
        assert len(res.stderr.strip().splitlines()) == 1 and "bfm-prep: error:" in res.stderr
        assert not (tmp_path / "pics").exists()


class TestExport:
    def test_unknown_format(self, tmp_path):
        with pytest.raises(PrepError, match="unknown mesh format"):
            export_mesh(tmp_path / "m.stl", np.zeros((3, 3)), np.array([[0, 1, 2]]))
