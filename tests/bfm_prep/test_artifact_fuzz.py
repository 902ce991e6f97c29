"""Whatever a bfm-prep artifact's datasets and attributes hold (any data type, shape, NaN or
infinity, a group or nothing where a dataset belongs), every reader either loads it, and then
only finite numbers of the right kinds, or raises PrepError; ``inspect``, ``uv-resample`` and
``plot`` exit with status 0 or 2, and with 2 say one line, no traceback, and write nothing."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from bfm_prep.artifact import (
    UVEmbedding,
    read_grid,
    read_model,
    read_uv,
    write_grid,
    write_model,
    write_uv,
)
from bfm_prep.errors import PrepError
from bfm_prep.inspect import inspect_file
from bfm_prep.resample import resample_to_grid
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.bfm_prep.test_resample import make_model, square_mesh

MODEL_DATASETS = [
    "shape/mean",
    "shape/basis",
    "shape/std",
    "shape/kind",
    "faces",
    "color/mean",
    "color/basis",
    "color/std",
    "landmarks/own",
]
DATASETS = {
    "model.h5": MODEL_DATASETS,
    "grid.h5": [*MODEL_DATASETS, "uv", "inside"],
    "uv.h5": ["uv", "faces", "symmetry/mirror", "symmetry/line", "symmetry/plane"],
}
ATTRIBUTES = {
    "model.h5": ["format_version", "inputs", "parameters"],
    "grid.h5": ["format_version", "res", "inputs"],
    "uv.h5": ["format_version", "checks", "parameters"],
}
READERS = {"model.h5": read_model, "uv.h5": read_uv, "grid.h5": read_grid}
DTYPES = [
    "keep",
    "float32",
    "float64",
    "int32",
    "int64",
    "uint8",
    "bool",
    "bytes",
    "str",
    "complex",
]
SHAPES = ["keep", "scalar", "flat", "extra-axis", "one-more", "one-less", "empty", "transposed"]
VALUES = [None, np.nan, np.inf, -np.inf, -1.0, 0.0, 0.5, 1e30]
ATTRIBUTE_VALUES = st.one_of(
    st.integers(-3, 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12).filter(lambda t: "\x00" not in t),  # HDF5 strings end at NUL
    st.sampled_from(["{}", "[]", "{not json", '{"a": 1}', "1", "null"]),
    st.just(np.arange(3)),
)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    uv, faces = square_mesh(6, seed=3)
    m = make_model(uv, faces, landmarks={"own": [0, 5, 7]})
    write_model(d / "model.h5", m)
    write_uv(
        d / "uv.h5",
        UVEmbedding(
            uv=uv,
            faces=faces,
            mirror=np.arange(len(uv)),
            symmetry_line=np.array([0, 1]),
            plane=np.array([1.0, 0, 0, 0]),
            checks={"flipped_triangles": 0},
        ),
    )
    write_grid(d / "grid.h5", resample_to_grid(m, uv, 8))
    return d


def _reshape(a: np.ndarray, how: str) -> np.ndarray:
    if how == "scalar":
        return a.reshape(-1)[:1].reshape(()) if a.size else np.zeros((), a.dtype)
    if how == "flat":
        return a.reshape(-1)
    if how == "extra-axis":
        return a[..., None]
    if how == "one-more" and a.ndim:
        return np.concatenate([a, a[:1]]) if len(a) else a
    if how == "one-less" and a.ndim:
        return a[:-1]
    if how == "empty" and a.ndim:
        return a[:0]
    if how == "transposed":
        return a.T
    return a


def _cast(a: np.ndarray, how: str):
    if how == "keep":
        return a
    if how == "bytes":
        return a.astype("S") if a.dtype.kind in "SU" else a.astype(np.float64).astype("S")
    if how == "str":
        flat = [x.decode() if isinstance(x, bytes) else str(x) for x in a.reshape(-1).tolist()]
        return np.array(flat, dtype=h5py.string_dtype()).reshape(a.shape)
    if a.dtype.kind in "SUO":
        return np.zeros(a.shape, dtype=how)
    return a.astype(how)


def damage(path: Path, name: str, dtype: str, shape: str, value, where: float) -> None:
    with h5py.File(path, "r+") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # casts of NaN to integers
        if shape == "missing":
            del f[name]
            return
        if shape == "group":
            del f[name]
            f.create_group(name)
            return
        a = _reshape(np.asarray(f[name][()]), shape)
        if value is not None and a.size and a.dtype.kind not in "SUO":
            a = a.astype(np.float64)
            a.flat[min(int(where * a.size), a.size - 1)] = value
        a = _cast(a, dtype)
        del f[name]
        f[name] = a


def assert_loaded_clean(obj) -> None:
    """What a reader returns holds finite float64 numbers and int64 indices only."""
    model = getattr(obj, "model", obj)
    for key in ("shape_mean", "shape_basis", "shape_std", "color_mean", "color_basis", "color_std"):
        a = getattr(model, key, None)
        if a is not None:
            assert a.dtype == np.float64 and np.isfinite(a).all(), key
    for key in ("uv", "plane"):
        a = getattr(obj, key, None)
        if a is not None:
            assert a.dtype == np.float64 and np.isfinite(a).all(), key
    if hasattr(model, "shape_std"):
        assert (model.shape_std > 0).all()
    assert np.asarray(model.faces).dtype == np.int64


def assert_exit_0_or_one_line(res, out: Path | None = None) -> None:
    assert res.returncode in (0, 2), res.stderr
    assert "Traceback" not in res.stderr
    if res.returncode == 2:
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bfm-prep: error: "), res.stderr
        if out is not None:
            assert not out.exists() or (out.is_dir() and not any(out.iterdir())), out


@st.composite
def damages(draw):
    artifact = draw(st.sampled_from(sorted(DATASETS)))
    if draw(st.integers(0, 5)) == 0:
        return artifact, ("attribute", draw(st.sampled_from(ATTRIBUTES[artifact])))
    name = draw(st.sampled_from(DATASETS[artifact]))
    shape = draw(st.sampled_from([*SHAPES, "missing", "group"]))
    dtype = draw(st.sampled_from(DTYPES))
    value = draw(st.sampled_from(VALUES))
    where = draw(st.floats(0, 1))
    return artifact, (name, dtype, shape, value, where)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=damages(), attribute_value=ATTRIBUTE_VALUES)
def test_every_reader_loads_or_refuses(good, run_cli, case, attribute_value):
    artifact, how = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        p = tmp / artifact
        shutil.copy(good / artifact, p)
        if how[0] == "attribute":
            with h5py.File(p, "r+") as f:
                f.attrs[how[1]] = attribute_value
        else:
            damage(p, *how)

        try:
            assert_loaded_clean(READERS[artifact](p))
        except PrepError as e:
            assert str(e).startswith(f"{p}: ") and "\n" not in str(e), str(e)
        try:
            inspect_file(p)
        except PrepError as e:
            assert "\n" not in str(e)
        assert_exit_0_or_one_line(run_cli("inspect", p, "--plain"))

        pics = tmp / "pics"
        assert_exit_0_or_one_line(run_cli("plot", p, "--out", pics, "--samples", "1"), pics)
        if artifact != "grid.h5":
            out = tmp / "g.h5"
            model = p if artifact == "model.h5" else good / "model.h5"
            uv = p if artifact == "uv.h5" else good / "uv.h5"
            res = run_cli("uv-resample", "--model", model, "--uv", uv, "--res", "8", "--out", out)
            assert_exit_0_or_one_line(res, out)
            if res.returncode == 0:
                assert_loaded_clean(read_grid(out))
