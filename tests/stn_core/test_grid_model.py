"""UVGridModel: reading the stn-uv-grid-model artifact, building from arrays, device/dtype."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from stn_core import ArtifactError, StnError, UVGridModel
from stn_core.grid_model import orient_faces_towards_camera

from tests.tolerances import ARTIFACT_RTOL, TOL

RES = 7


def grid_faces(res: int) -> np.ndarray:
    """Two triangles per cell, counter-clockwise seen from +z (row 0 at the top, y up)."""
    k = np.arange(res * res).reshape(res, res)[:-1, :-1].reshape(-1)
    return np.concatenate(
        [np.stack([k, k + res, k + 1], 1), np.stack([k + 1, k + res, k + res + 1], 1)]
    )


def arrays(res=RES, k_id=3, k_exp=2, color=True, seed=0):
    rng = np.random.default_rng(seed)
    n = res * res
    rows, cols = np.divmod(np.arange(n), res)
    mean = np.stack(
        [cols * 10.0 - 30, 30 - rows * 10.0, -((cols - 3) ** 2 + (rows - 3) ** 2) * 1.0], 1
    )
    k = k_id + k_exp
    d = dict(
        mean=mean,
        basis=rng.normal(size=(n, 3, k)),
        std=rng.uniform(1, 2, size=k),
        kind=[b"identity"] * k_id + [b"expression"] * k_exp,
        faces=grid_faces(res),
        uv=np.stack([cols / (res - 1), 1 - rows / (res - 1)], 1),
        inside=rng.uniform(size=n) > 0.2,
        landmarks={"aflw21": np.array([3, 10, 48]), "nose": np.array([24])},
    )
    if color:
        d.update(
            color_mean=rng.uniform(size=(n, 3)),
            color_basis=rng.normal(size=(n, 3, 2)),
            color_std=np.array([0.1, 0.2]),
        )
    return d


def write_artifact(path, d, res=RES, fmt="stn-uv-grid-model", version=1, drop=()):
    """The artifact layout of docs/artifact-format.md, written with h5py alone."""
    with h5py.File(path, "w") as f:
        f.attrs["format"] = fmt
        f.attrs["format_version"] = version
        f.attrs["units"] = "mm"
        f.attrs["res"] = res
        g = f.create_group("shape")
        for name in ("mean", "basis", "std"):
            if f"shape/{name}" not in drop:
                g.create_dataset(name, data=d[name].astype(np.float32))
        g.create_dataset("kind", data=np.array(d["kind"], dtype="S"))
        g.attrs["n_identity"] = sum(x == b"identity" for x in d["kind"])
        f.create_dataset("faces", data=d["faces"].astype(np.int64))
        f.create_dataset("uv", data=d["uv"])
        f.create_dataset("inside", data=d["inside"])
        if "color_mean" in d:
            c = f.create_group("color")
            c.create_dataset("mean", data=d["color_mean"].astype(np.float32))
            c.create_dataset("basis", data=d["color_basis"].astype(np.float32))
            c.create_dataset("std", data=d["color_std"].astype(np.float32))
        lm = f.create_group("landmarks")
        for k, v in d["landmarks"].items():
            lm.create_dataset(k, data=v.astype(np.int64))
    return path


class TestLoad:
    def test_smoke(self, tmp_path):
        d = arrays()
        m = UVGridModel.load(write_artifact(tmp_path / "g.h5", d))
        assert m.res == RES and m.n_vertices == RES * RES
        assert (
            m.n_identity == 3 and m.n_expression == 2 and m.n_components == 5 and m.n_params == 11
        )
        assert (
            m.mean.dtype == torch.float32
            and m.faces.dtype == torch.long
            and m.inside.dtype == torch.bool
        )
        assert m.kind == ["identity"] * 3 + ["expression"] * 2
        assert not m.faces_flipped
        np.testing.assert_allclose(m.mean.numpy(), d["mean"], rtol=ARTIFACT_RTOL)
        np.testing.assert_allclose(m.basis.numpy(), d["basis"], rtol=ARTIFACT_RTOL)
        np.testing.assert_array_equal(m.faces.numpy(), d["faces"])
        np.testing.assert_array_equal(m.inside.numpy(), d["inside"])
        assert set(m.landmarks) == {"aflw21", "nose"}
        np.testing.assert_array_equal(m.landmarks["aflw21"].numpy(), [3, 10, 48])
        assert m.has_color and m.color_basis.shape == (RES * RES, 3, 2)

    def test_dtype_and_no_color(self, tmp_path):
        d = arrays(color=False)
        m = UVGridModel.load(write_artifact(tmp_path / "g.h5", d), dtype=torch.float64)
        assert m.mean.dtype == torch.float64 and m.uv.dtype == torch.float64
        assert m.color_mean is None and not m.has_color

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            (dict(fmt="stn-morphable-model"), "format is 'stn-morphable-model'"),
            (dict(version=2), "version 2 is not supported"),
            (dict(drop=("shape/basis",)), "missing dataset"),
        ],
    )
    def test_refuses(self, tmp_path, kwargs, match):
        path = write_artifact(tmp_path / "g.h5", arrays(), **kwargs)
        with pytest.raises(ArtifactError, match=match) as e:
            UVGridModel.load(path)
        assert isinstance(e.value, ValueError)
        assert str(path) in str(e.value) and "\n" not in str(e.value)

    def test_refuses_missing_and_non_hdf5(self, tmp_path):
        with pytest.raises(ArtifactError, match="no such file"):
            UVGridModel.load(tmp_path / "absent.h5")
        bad = tmp_path / "bad.h5"
        bad.write_bytes(b"not hdf5 at all")
        with pytest.raises(ArtifactError, match="not an HDF5 file"):
            UVGridModel.load(bad)

    def test_refuses_inconsistent_res(self, tmp_path):
        path = write_artifact(tmp_path / "g.h5", arrays(), res=RES + 1)
        with pytest.raises(ArtifactError, match="grid"):
            UVGridModel.load(path)

    def test_written_by_bfm_prep(self, tmp_path):
        """The artifact exactly as bfm-prep writes it (the contract between the packages)."""
        art = pytest.importorskip("bfm_prep.artifact")
        from bfm_prep.model import MorphableModel

        d = arrays()
        mm = MorphableModel(
            shape_mean=d["mean"],
            shape_basis=d["basis"],
            shape_std=d["std"],
            shape_kind=[k.decode() for k in d["kind"]],
            faces=d["faces"],
            landmarks=d["landmarks"],
            color_mean=d["color_mean"],
            color_basis=d["color_basis"],
            color_std=d["color_std"],
        )
        path = art.write_grid(tmp_path / "g.h5", art.UVGridModel(mm, RES, d["uv"], d["inside"]))
        m = UVGridModel.load(path)
        np.testing.assert_allclose(m.mean.numpy(), d["mean"], rtol=ARTIFACT_RTOL)
        assert m.n_identity == 3 and m.n_expression == 2 and not m.faces_flipped
        np.testing.assert_array_equal(m.landmarks["nose"].numpy(), [24])


class TestFromArrays:
    def test_matlab_interleaved_layout(self):
        """shapeMU (3N, 1) and shapePC (3N, K), xyz interleaved per vertex."""
        d = arrays(color=False)
        n = RES * RES
        m = UVGridModel.from_arrays(
            d["mean"].reshape(-1, 1),
            d["basis"].reshape(3 * n, -1),
            d["faces"],
            n_identity=3,
            dtype=torch.float64,
        )
        np.testing.assert_allclose(m.mean.numpy(), d["mean"], rtol=TOL[np.float64][0])
        np.testing.assert_allclose(m.basis.numpy(), d["basis"], rtol=TOL[np.float64][0])
        assert m.res == RES and m.n_identity == 3 and m.n_expression == 2
        assert m.inside.all()
        # default uv: the grid's own, u along columns, v up
        np.testing.assert_allclose(
            m.uv.numpy(), d["uv"], rtol=TOL[np.float64][0], atol=TOL[np.float64][1]
        )

    def test_orients_faces_towards_camera(self):
        d = arrays(color=False)
        m = UVGridModel.from_arrays(d["mean"], d["basis"], d["faces"][:, [0, 2, 1]])
        assert m.faces_flipped
        np.testing.assert_array_equal(m.faces.numpy(), d["faces"])
        kept = UVGridModel.from_arrays(
            d["mean"], d["basis"], d["faces"][:, [0, 2, 1]], orient_faces=False
        )
        assert not kept.faces_flipped
        np.testing.assert_array_equal(kept.faces.numpy(), d["faces"][:, [0, 2, 1]])

    def test_orient_helper(self):
        d = arrays()
        f, flipped = orient_faces_towards_camera(d["mean"], d["faces"])
        assert not flipped and f is not None

    @pytest.mark.parametrize(
        "change, match",
        [
            (dict(faces=grid_faces(RES) + 1), "0-based"),
            (dict(basis=np.zeros((RES * RES, 2, 3))), "basis"),
            (dict(std=np.ones(2)), "std"),
            (dict(kind=["identity"] * 4 + ["pose"]), "unknown"),
            (dict(landmarks={"x": np.array([RES * RES])}), "landmark set 'x'"),
            (dict(mean=np.zeros((50, 3)), basis=np.zeros((50, 3, 5))), "grid"),
        ],
    )
    def test_awkward_rejects(self, change, match):
        d = arrays(color=False)
        d.update(change)
        with pytest.raises(ArtifactError, match=match):
            UVGridModel.from_arrays(**d)


class TestTo:
    def test_dtype(self):
        d = arrays()
        m = UVGridModel.from_arrays(**d)
        m64 = m.to(dtype=torch.float64)
        assert m64.mean.dtype == torch.float64 and m64.color_std.dtype == torch.float64
        assert m64.faces.dtype == torch.long and m64.inside.dtype == torch.bool
        assert m.mean.dtype == torch.float32  # a copy
        assert m.to(torch.float64).dtype == torch.float64

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this environment")
    def test_device(self):
        m = UVGridModel.from_arrays(**arrays()).to("cuda")
        assert m.mean.is_cuda and m.faces.is_cuda and m.landmarks["aflw21"].is_cuda

    def test_module_style_moves(self):
        m = UVGridModel.from_arrays(**arrays())
        assert m.double().mean.dtype == torch.float64 and m.double().float().mean.dtype == (
            torch.float32
        )
        assert m.cpu().mean.device.type == "cpu" and m.double().faces.dtype == torch.long
        with pytest.raises(StnError, match="floating-point dtype"):
            m.to(torch.long)

    def test_landmark_indices(self):
        m = UVGridModel.from_arrays(**arrays())
        assert m.landmark_indices("nose").tolist() == [24]
        assert m.landmark_indices([1, 2]).tolist() == [1, 2]
        with pytest.raises(ArtifactError, match="not in this model"):
            m.landmark_indices("ibug68")

    def test_shape(self):
        m = UVGridModel.from_arrays(**arrays(), dtype=torch.float64)
        a = torch.randn(5, dtype=torch.float64)
        torch.testing.assert_close(m.shape(a), m.mean + m.basis @ a)
        assert m.shape(a[None].expand(2, 5)).shape == (2, RES * RES, 3)


def _corrupt(path, dataset: str, data) -> None:
    """Replace ``dataset`` of an artifact with ``data`` (any dtype, any shape)."""
    with h5py.File(path, "r+") as f:
        del f[dataset]
        f.create_dataset(dataset, data=data)


class TestDamagedArtifacts:
    """A damaged grid model is refused on read with one sentence naming what is wrong,
    never loaded with non-numeric or non-finite values, never a traceback of another kind."""

    @pytest.mark.parametrize(
        "dataset, data, match",
        [
            ("shape/mean", np.full((RES * RES, 3), b"x"), "mean must hold numbers"),
            ("shape/basis", np.full((RES * RES, 3, 5), b"1.0"), "basis must hold numbers"),
            ("shape/basis", np.full((RES * RES, 3, 5), np.nan), "basis holds 735 NaN"),
            ("shape/mean", np.full((RES * RES, 3), np.inf), "mean holds 147 NaN or infinite"),
            ("shape/std", -np.ones(5), "std must be positive"),
            ("uv", np.full((RES * RES, 2), np.nan), "uv holds"),
            ("color/std", np.array([0.1, -0.2]), "color_std must be positive"),
            ("color/mean", np.full((RES * RES, 3), np.nan), "color_mean holds"),
            ("faces", grid_faces(RES).astype(np.float64), "faces must hold integer indices"),
            ("landmarks/nose", np.array([24.0]), "landmark set 'nose' must hold integer"),
        ],
    )
    def test_refused_with_the_dataset_named(self, tmp_path, dataset, data, match):
        path = write_artifact(tmp_path / "g.h5", arrays())
        _corrupt(path, dataset, data)
        with pytest.raises(ArtifactError, match=match) as e:
            UVGridModel.load(path)
        assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)

    def test_res_that_is_not_an_integer(self, tmp_path):
        path = write_artifact(tmp_path / "g.h5", arrays())
        with h5py.File(path, "r+") as f:
            f.attrs["res"] = "seven"
        with pytest.raises(ArtifactError, match="res is 'seven', not an integer"):
            UVGridModel.load(path)

    def test_from_arrays_refuses_fractional_landmarks(self):
        d = arrays(color=False)
        d["landmarks"] = {"x": np.array([3.5])}
        with pytest.raises(ArtifactError, match="landmark set 'x' must hold integer indices"):
            UVGridModel.from_arrays(**d)

    @settings(max_examples=100, deadline=None)
    @given(
        dataset=st.sampled_from(
            [
                "shape/mean",
                "shape/basis",
                "shape/std",
                "shape/kind",
                "faces",
                "uv",
                "inside",
                "color/mean",
                "color/basis",
                "color/std",
                "landmarks/aflw21",
            ]
        ),
        kind=st.sampled_from(["float", "int", "bytes", "bool", "nonfinite"]),
        shape=st.sampled_from(["same", "scalar", "flat", "extra"]),
        seed=st.integers(0, 2**16),
    )
    def test_any_damage_loads_or_is_one_artifact_error(self, dataset, kind, shape, seed):
        """Random dtypes, shapes and non-finite values in any dataset: the reader loads the
        file or raises ArtifactError with one line, never another exception."""
        rng = np.random.default_rng(seed)
        with tempfile.TemporaryDirectory() as tmp:
            path = write_artifact(Path(tmp) / "g.h5", arrays())
            with h5py.File(path, "r") as f:
                old = f[dataset][()]
            dims = {
                "same": np.shape(old),
                "scalar": (),
                "flat": (int(np.size(old)),),
                "extra": (*np.shape(old), 2),
            }[shape]
            values = rng.normal(size=dims) * 40
            data = {
                "float": values,
                "int": np.rint(values).astype(np.int64),
                "bytes": np.asarray(values.astype(str), dtype="S"),
                "bool": values > 0,
                "nonfinite": np.where(rng.uniform(size=dims) < 0.5, np.nan, values),
            }[kind]
            _corrupt(path, dataset, data)
            try:
                model = UVGridModel.load(path)
            except ArtifactError as e:
                assert "\n" not in str(e) and str(e).startswith(str(path))
            else:
                for t in (model.mean, model.basis, model.std, model.uv):
                    assert torch.isfinite(t).all()
                assert (model.std > 0).all()
