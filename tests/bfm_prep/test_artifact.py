"""Round trips and refusals of the three artifact formats (bfm_prep.artifact)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from bfm_prep.artifact import (
    FORMAT_GRID,
    UVEmbedding,
    UVGridModel,
    read_grid,
    read_model,
    read_uv,
    write_grid,
    write_model,
    write_uv,
)
from bfm_prep.errors import PrepError
from bfm_prep.model import MorphableModel
from bfm_prep.provenance import input_record
from bfm_prep.resample import grid_faces, grid_uv

from tests.tolerances import ARTIFACT_RTOL


def random_model(rng, n=17, k_id=3, k_exp=2, kc=4, color=True):
    k = k_id + k_exp
    faces = np.stack([np.arange(n - 2), np.arange(1, n - 1), np.arange(2, n)], axis=1)
    kw = {}
    if color:
        kw = dict(
            color_mean=rng.uniform(0, 1, (n, 3)),
            color_basis=rng.normal(0, 0.05, (n, 3, kc)),
            color_std=rng.uniform(1, 2, kc),
        )
    return MorphableModel(
        shape_mean=rng.normal(0, 50, (n, 3)),
        shape_basis=rng.normal(0, 2, (n, 3, k)),
        shape_std=rng.uniform(0.5, 3, k),
        shape_kind=["identity"] * k_id + ["expression"] * k_exp,
        faces=faces,
        landmarks={"aflw21": rng.integers(0, n, 5), "ibug68": rng.integers(0, n, 7)},
        provenance={"inputs": {}, "parameters": {"n_shape": k_id, "note": "test"}},
        **kw,
    )


def _assert_models_equal(a: MorphableModel, b: MorphableModel):
    for name in (
        "shape_mean",
        "shape_basis",
        "shape_std",
        "color_mean",
        "color_basis",
        "color_std",
    ):
        x, y = getattr(a, name), getattr(b, name)
        if x is None:
            assert y is None, name
            continue
        np.testing.assert_allclose(
            y, x, rtol=ARTIFACT_RTOL, atol=ARTIFACT_RTOL * np.abs(x).max(), err_msg=name
        )
    assert a.shape_kind == b.shape_kind
    np.testing.assert_array_equal(a.faces, b.faces)
    assert b.faces.dtype == np.int64
    assert sorted(a.landmarks) == sorted(b.landmarks)
    for k in a.landmarks:
        np.testing.assert_array_equal(a.landmarks[k], b.landmarks[k])


class TestModelArtifact:
    @pytest.mark.parametrize("color", [True, False])
    def test_round_trip(self, tmp_path, color):
        rng = np.random.default_rng()
        m = random_model(rng, color=color)
        src = tmp_path / "input.bin"
        src.write_bytes(b"abc")
        m.provenance["inputs"] = {"bfm": input_record(src)}
        path = write_model(tmp_path / "m.h5", m)
        back = read_model(path)
        _assert_models_equal(m, back)
        assert back.provenance["parameters"] == {"n_shape": 3, "note": "test"}
        # sha256 of b"abc", computed independently of the code under test
        assert back.provenance["inputs"]["bfm"]["sha256"] == (
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        )
        with h5py.File(path, "r") as f:
            assert f.attrs["units"] == "mm"
            assert f["shape"].attrs["n_identity"] == 3
            assert f["shape"].attrs["n_expression"] == 2
            assert f["shape/basis"].dtype == np.float32

    def test_refuses_other_format(self, tmp_path):
        rng = np.random.default_rng()
        m = random_model(rng, n=16)
        grid = UVGridModel(model=m, res=4, uv=rng.uniform(0, 1, (16, 2)), inside=np.ones(16, bool))
        path = write_grid(tmp_path / "g.h5", grid)
        with pytest.raises(PrepError, match="format is 'stn-uv-grid-model'"):
            read_model(path)

    def test_refuses_unknown_version(self, tmp_path):
        m = random_model(np.random.default_rng())
        path = write_model(tmp_path / "m.h5", m)
        with h5py.File(path, "r+") as f:
            f.attrs["format_version"] = 99
        with pytest.raises(PrepError, match="version 99 is not supported"):
            read_model(path)

    def test_refuses_non_hdf5_and_missing(self, tmp_path):
        p = tmp_path / "x.h5"
        p.write_bytes(b"not hdf5 at all")
        with pytest.raises(PrepError, match="not an HDF5 file"):
            read_model(p)
        with pytest.raises(PrepError, match="no such file"):
            read_model(tmp_path / "absent.h5")

    def test_truncated_file_is_refused(self, tmp_path):
        m = random_model(np.random.default_rng(), n=200)
        path = write_model(tmp_path / "m.h5", m)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(PrepError):
            read_model(path)


class TestUVAndGrid:
    def test_uv_round_trip(self, tmp_path):
        rng = np.random.default_rng()
        emb = UVEmbedding(
            uv=rng.uniform(0, 1, (9, 2)),
            faces=np.array([[0, 1, 2], [2, 3, 4]]),
            mirror=rng.permutation(9),
            symmetry_line=np.array([0, 4, 8]),
            plane=np.array([1.0, 0, 0, 0.25]),
            checks={"flipped_triangles": 0, "symmetry_error": 1e-13},
            provenance={"inputs": {}, "parameters": {"symmetry": "auto"}},
        )
        back = read_uv(write_uv(tmp_path / "uv.h5", emb))
        np.testing.assert_array_equal(back.uv, emb.uv)  # float64 on disk: exact
        np.testing.assert_array_equal(back.mirror, emb.mirror)
        np.testing.assert_array_equal(back.symmetry_line, emb.symmetry_line)
        np.testing.assert_array_equal(back.plane, emb.plane)
        assert back.checks == {"flipped_triangles": 0, "symmetry_error": 1e-13}
        assert back.provenance["parameters"] == {"symmetry": "auto"}

    def test_grid_round_trip(self, tmp_path):
        rng = np.random.default_rng()
        res = 5
        m = random_model(rng, n=res * res)
        inside = rng.uniform(size=res * res) > 0.3
        uv = rng.uniform(0, 1, (res * res, 2))
        path = write_grid(tmp_path / "g.h5", UVGridModel(model=m, res=res, uv=uv, inside=inside))
        back = read_grid(path)
        assert back.res == res
        np.testing.assert_array_equal(back.inside, inside)
        np.testing.assert_array_equal(back.uv, uv)
        _assert_models_equal(m, back.model)
        with h5py.File(path, "r") as f:
            assert f.attrs["format"] == FORMAT_GRID
            assert json.loads(f.attrs["parameters"]) == {"n_shape": 3, "note": "test"}

    def test_drawn_faces_have_all_three_vertices_inside(self):
        res = 4
        m = random_model(np.random.default_rng(), n=res * res)
        m.faces = grid_faces(res)
        inside = np.ones(res * res, bool)
        grid = UVGridModel(model=m, res=res, uv=grid_uv(res), inside=inside)
        np.testing.assert_array_equal(grid.drawn_faces, m.faces)
        grid.inside = np.arange(res * res) != 5  # an imported mask replaces the old one
        expected = [f for f in m.faces.tolist() if 5 not in f]
        assert grid.drawn_faces.tolist() == expected
        assert len(expected) == len(m.faces) - 6  # an interior vertex is in six triangles


class TestModelValidation:
    def test_grid_needs_one_vertex_per_point(self):
        m = random_model(np.random.default_rng(), n=17)
        with pytest.raises(PrepError, match="17 vertices for res 4"):
            UVGridModel(model=m, res=4, uv=np.zeros((16, 2)), inside=np.ones(16, bool))

    def test_face_index_out_of_range(self):
        rng = np.random.default_rng()
        m = random_model(rng)
        with pytest.raises(PrepError, match="faces index vertices"):
            MorphableModel(
                m.shape_mean,
                m.shape_basis,
                m.shape_std,
                m.shape_kind,
                faces=np.array([[0, 1, m.n_vertices]]),
            )

    def test_unknown_kind(self):
        m = random_model(np.random.default_rng())
        with pytest.raises(PrepError, match="unknown kinds"):
            MorphableModel(
                m.shape_mean, m.shape_basis, m.shape_std, ["identity"] * 4 + ["pose"], m.faces
            )

    def test_shape_evaluation(self):
        rng = np.random.default_rng()
        m = random_model(rng)
        alpha = rng.normal(size=m.n_components)
        expected = m.shape_mean + np.einsum("nck,k->nc", m.shape_basis, alpha)
        np.testing.assert_allclose(m.shape(alpha), expected)
