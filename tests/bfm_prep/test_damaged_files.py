"""Damaged artifacts and inputs: numbers stored as text, NaN or infinity, float indices, a
negative standard deviation, attributes of the wrong type. Every reader refuses them with one
sentence naming the file and the dataset; ``inspect`` calls them damaged instead of summarising
them; ``uv-resample`` and ``plot`` write nothing (exit status 2, one line, no traceback)."""

from __future__ import annotations

import os
import re
import shutil
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
from bfm_prep.io import load_bfm2009, load_bfm2017, load_tddfa_expression
from bfm_prep.io.bfm_uv import load_bfm_uv
from bfm_prep.model import MorphableModel
from bfm_prep.resample import resample_to_grid

from tests.bfm_prep.test_io_bfm2009 import small_bfm
from tests.bfm_prep.test_io_bfm2017 import small_2017
from tests.bfm_prep.test_io_expression import tddfa_vars
from tests.bfm_prep.test_io_formats import write_bfm2017, write_mat5
from tests.bfm_prep.test_matlab_import import write_original_format
from tests.bfm_prep.test_resample import make_model, square_mesh

READERS = {"model.h5": read_model, "uv.h5": read_uv, "grid.h5": read_grid}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """model.h5 (with colour and a landmark set), uv.h5 and grid.h5, written by bfm-prep."""
    d = tmp_path_factory.mktemp("good")
    uv, faces = square_mesh(9, seed=3)
    m = make_model(uv, faces, landmarks={"own": [0, 5]})
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
    write_grid(d / "grid.h5", resample_to_grid(m, uv, 12))
    return d


def replace_dataset(path: Path, name: str, how: str) -> None:
    """Rewrite dataset ``name`` of ``path``: as byte strings, with one NaN / infinity, as floats
    (with a fraction for ``"fraction"``), with one negative or zero entry."""
    with h5py.File(path, "r+") as f:
        a = f[name][()]
        del f[name]
        if how == "bytes":
            a = np.char.mod(b"%r", a.astype(np.float64)) if a.dtype.kind != "S" else a
        elif how in ("nan", "inf"):
            a = a.astype(np.float64)
            a.flat[a.size // 2] = np.nan if how == "nan" else -np.inf
        elif how == "float":
            a = a.astype(np.float64)
        elif how == "fraction":
            a = a.astype(np.float64) + 0.5
        elif how in ("negative", "zero"):
            a = a.copy()
            a.flat[0] = -abs(a.flat[0]) if how == "negative" else 0
        else:
            raise AssertionError(how)
        f[name] = a


def damaged_copy(good: Path, tmp_path: Path, artifact: str, name: str, how: str) -> Path:
    p = tmp_path / f"damaged-{artifact}"
    shutil.copy(good / artifact, p)
    replace_dataset(p, name, how)
    return p


# The damage the readers let through: (artifact, dataset, how, words the sentence must hold).
DAMAGE = [
    ("model.h5", "shape/mean", "bytes", "data type"),
    ("model.h5", "shape/basis", "nan", "NaN or infinite"),
    ("model.h5", "shape/basis", "inf", "NaN or infinite"),
    ("model.h5", "shape/std", "negative", "not positive"),
    ("model.h5", "shape/std", "zero", "not positive"),
    ("model.h5", "faces", "float", "data type"),
    ("model.h5", "landmarks/own", "float", "data type"),
    ("model.h5", "color/mean", "nan", "NaN or infinite"),
    ("model.h5", "color/basis", "bytes", "data type"),
    ("model.h5", "color/std", "negative", "not positive"),
    ("grid.h5", "shape/mean", "nan", "NaN or infinite"),
    ("grid.h5", "shape/mean", "bytes", "data type"),
    ("grid.h5", "uv", "inf", "NaN or infinite"),
    ("grid.h5", "inside", "fraction", "data type"),
    ("grid.h5", "faces", "fraction", "data type"),
    ("uv.h5", "uv", "nan", "NaN or infinite"),
    ("uv.h5", "faces", "float", "data type"),
    ("uv.h5", "symmetry/mirror", "float", "data type"),
    ("uv.h5", "symmetry/line", "float", "data type"),
    ("uv.h5", "symmetry/plane", "nan", "NaN or infinite"),
]
IDS = [f"{a}:{n}:{h}" for a, n, h, _ in DAMAGE]


def assert_damaged(message: str, path: Path, name: str, words: str) -> None:
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message and message.endswith("."), message
    assert "damaged" in message and name in message and words in message, message


@pytest.mark.parametrize("artifact, name, how, words", DAMAGE, ids=IDS)
def test_readers_refuse_damaged_datasets(good, tmp_path, artifact, name, how, words):
    p = damaged_copy(good, tmp_path, artifact, name, how)
    with pytest.raises(PrepError) as e:
        READERS[artifact](p)
    assert_damaged(str(e.value), p, name, words)


@pytest.mark.parametrize("artifact, name, how, words", DAMAGE, ids=IDS)
def test_inspect_calls_a_damaged_artifact_damaged(
    good, tmp_path, run_cli, artifact, name, how, words
):
    p = damaged_copy(good, tmp_path, artifact, name, how)
    res = run_cli("inspect", p, "--plain")
    assert res.returncode == 2 and res.stdout == "", res.stdout
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert_damaged(res.stderr.strip().removeprefix("bfm-prep: error: "), p, name, words)


@pytest.mark.parametrize("artifact, name, how, words", DAMAGE, ids=IDS)
def test_plot_of_a_damaged_artifact_writes_nothing(
    good, tmp_path, run_cli, artifact, name, how, words
):
    p = damaged_copy(good, tmp_path, artifact, name, how)
    res = run_cli("plot", p, "--out", tmp_path / "pics", "--samples", "1")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert_damaged(res.stderr.strip().removeprefix("bfm-prep: error: "), p, name, words)
    assert not (tmp_path / "pics").exists() or os.listdir(tmp_path / "pics") == []


@pytest.mark.parametrize(
    "artifact, name, how, words", [c for c in DAMAGE if c[0] in ("model.h5", "uv.h5")]
)
def test_uv_resample_refuses_a_damaged_model_or_uv(
    good, tmp_path, run_cli, artifact, name, how, words
):
    p = damaged_copy(good, tmp_path, artifact, name, how)
    model = p if artifact == "model.h5" else good / "model.h5"
    uv = p if artifact == "uv.h5" else good / "uv.h5"
    out = tmp_path / "g.h5"
    res = run_cli("uv-resample", "--model", model, "--uv", uv, "--res", "8", "--out", out)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert_damaged(res.stderr.strip().removeprefix("bfm-prep: error: "), p, name, words)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# attributes of the wrong type


@pytest.mark.parametrize(
    "artifact, attribute, value, words",
    [
        ("model.h5", "format_version", "one", "format version 'one' is not supported"),
        ("model.h5", "format_version", 1.5, "format version 1.5 is not supported"),
        ("grid.h5", "res", "twelve", "res"),
        ("grid.h5", "res", 12.5, "res"),
        ("model.h5", "inputs", "{not json", "inputs"),
        ("model.h5", "parameters", "[1, 2]", "parameters"),
        ("uv.h5", "checks", "nan nan", "checks"),
    ],
)
def test_readers_refuse_attributes_of_the_wrong_type(
    good, tmp_path, run_cli, artifact, attribute, value, words
):
    p = tmp_path / artifact
    shutil.copy(good / artifact, p)
    with h5py.File(p, "r+") as f:
        f.attrs[attribute] = value
    with pytest.raises(PrepError) as e:
        READERS[artifact](p)
    message = str(e.value)
    assert message.startswith(f"{p}: ") and words in message and "\n" not in message, message
    res = run_cli("inspect", p)
    assert res.returncode == 2 and res.stderr.strip() == f"bfm-prep: error: {message}"


def test_kind_stored_as_one_string(good, tmp_path):
    p = tmp_path / "model.h5"
    shutil.copy(good / "model.h5", p)
    with h5py.File(p, "r+") as f:
        del f["shape/kind"]
        f["shape/kind"] = np.bytes_(b"identity")
    with pytest.raises(PrepError) as e:
        read_model(p)
    assert_damaged(str(e.value), p, "shape/kind", "shape")


def test_a_group_where_a_dataset_belongs(good, tmp_path, run_cli):
    p = tmp_path / "model.h5"
    shutil.copy(good / "model.h5", p)
    with h5py.File(p, "r+") as f:
        del f["faces"]
        f.create_group("faces")
    with pytest.raises(PrepError) as e:
        read_model(p)
    assert_damaged(str(e.value), p, "faces", "group")


# ---------------------------------------------------------------------------------------------
# plot: a failure part of the way leaves none of this run's files


def test_plot_failing_part_of_the_way_leaves_no_file_and_keeps_the_old_ones(
    good, tmp_path, run_cli
):
    """A grid with no inside point fails after its first pictures are drawn (nothing to
    render): none of them is left, and the pictures of an earlier run are kept as they were."""
    p = tmp_path / "grid.h5"
    shutil.copy(good / "grid.h5", p)
    with h5py.File(p, "r+") as f:
        f["inside"][...] = False
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "grid_mask.png").write_bytes(b"an earlier run")
    res = run_cli("plot", p, "--out", pics, "--samples", "0")
    assert res.returncode == 2 and "nothing to render" in res.stderr, res.stderr
    assert os.listdir(pics) == ["grid_mask.png"]
    assert (pics / "grid_mask.png").read_bytes() == b"an earlier run"


def test_plot_library_failure_leaves_no_file(good, tmp_path, monkeypatch):
    import bfm_prep.pictures.model_views as views

    calls = []
    real = views.render_image

    def fails_second_time(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the renderer broke")
        return real(*a, **k)

    monkeypatch.setattr(views, "render_image", fails_second_time)
    with pytest.raises(RuntimeError, match="the renderer broke"):
        views.plot_artifact(good / "model.h5", tmp_path / "pics", n_samples=2, export_mesh=True)
    assert not (tmp_path / "pics").exists() or os.listdir(tmp_path / "pics") == []


# ---------------------------------------------------------------------------------------------
# inputs of external formats, in inspect and in their readers


def _bfm2009(tmp_path, **change):
    d = small_bfm()
    d.update(change)
    return write_mat5(tmp_path / "01_MorphableModel.mat", d)


def _bfm2017_without_mean(tmp_path, group: bool):
    p = write_bfm2017(tmp_path / "b.h5", **small_2017())
    with h5py.File(p, "r+") as f:
        del f["shape/model/mean"]
        if group:
            f.create_group("shape/model/mean")
    return p


def _one_bad(a, value):
    a = np.array(a, dtype=np.float64)
    a.flat[1] = value
    return a


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda t: _bfm2009(t, shapeMU=_one_bad(small_bfm()["shapeMU"], np.nan)), "shapeMU"),
        (lambda t: _bfm2009(t, shapeMU="twelve"), "shapeMU"),
        (lambda t: _bfm2009(t, shapeEV=_one_bad(small_bfm()["shapeEV"], np.inf)), "shapeEV"),
        (lambda t: _bfm2009(t, texMU=_one_bad(small_bfm()["texMU"], np.nan)), "texMU"),
        (
            lambda t: write_bfm2017(
                t / "b.h5",
                **small_2017(variance=np.array([400.0, np.nan, 16.0])),
            ),
            "shape/model/pcaVariance",
        ),
        (lambda t: _bfm2017_without_mean(t, group=False), "no shape/model/mean"),
        (lambda t: _bfm2017_without_mean(t, group=True), "no shape/model/mean"),
        (
            lambda t: write_mat5(
                t / "map.mat", {"map_tddfa_to_basel": np.array([[0.0, np.nan, 2.0]])}
            ),
            "map_tddfa_to_basel",
        ),
        (lambda t: write_mat5(t / "uv.mat", {"UV": np.array([[0.1, 0.2], [np.inf, 0.5]])}), "UV"),
        (
            lambda t: (
                np.savez(
                    t / "sfm.npz",
                    mean=np.zeros(9),
                    basis=np.zeros((9, 2)),
                    eigenvalues=np.array(["1", "x"]),
                    triangles=np.array([[0, 1, 2]]),
                )
                or t / "sfm.npz"
            ),
            "eigenvalues",
        ),
        (
            lambda t: (
                np.savez(
                    t / "sfm.npz",
                    mean=np.zeros(9),
                    basis=np.zeros((9, 2)),
                    eigenvalues=np.ones(2),
                    triangles=np.array(7),
                )
                or t / "sfm.npz"
            ),
            "triangles has the wrong shape ()",
        ),
        (
            lambda t: np.savez(t / "bs.npz", deformations=np.array("x")) or t / "bs.npz",
            "deformations has the wrong shape ()",
        ),
        (lambda t: (t / "lm.txt").write_text("1\nnan\n3\n") and t / "lm.txt", "NaN or infinite"),
        (
            lambda t: (t / "std.txt").write_text("1.0 inf 2.0\n") and t / "std.txt",
            "NaN or infinite",
        ),
    ],
    ids=[
        "bfm2009-nan",
        "bfm2009-text",
        "bfm2009-ev-inf",
        "bfm2009-tex-nan",
        "bfm2017-nan",
        "bfm2017-no-mean",
        "bfm2017-mean-a-group",
        "mapping-nan",
        "bfm-uv-inf",
        "sfm-text",
        "sfm-scalar-triangles",
        "sfm-blendshapes-scalar",
        "landmark-list-nan",
        "number-list-inf",
    ],
)
def test_inspect_refuses_damaged_inputs(tmp_path, run_cli, make, words):
    p = Path(make(tmp_path))
    res = run_cli("inspect", p, "--plain")
    assert res.returncode == 2, res.stdout
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    line = res.stderr.strip()
    assert line.startswith(f"bfm-prep: error: {p}: ") and words in line, line
    with pytest.raises(PrepError):
        inspect_file(p)


def test_bfm_uv_refuses_complex_numbers(tmp_path):
    p = write_mat5(tmp_path / "BFM_UV.mat", {"UV": np.array([[0.1 + 1j, 0.2], [0.3, 0.5]])})
    with pytest.raises(PrepError, match=r"BFM_UV\.mat: .*UV.* data type"):
        load_bfm_uv(p)


def test_bfm2009_component_without_variance_asks_to_keep_fewer(tmp_path, run_cli):
    ev = small_bfm()["shapeEV"].copy()
    ev[1] = 0.0
    p = _bfm2009(tmp_path, shapeEV=ev)
    with pytest.raises(
        PrepError, match=r"shapeEV is 0 for component 2, .* keep at most 1 with n_shape"
    ):
        load_bfm2009(p, n_shape=3)
    assert load_bfm2009(p, n_shape=1).n_components == 1
    res = run_cli("build-expression", "--bfm", p, "--n-shape", "3", "--out", tmp_path / "m.h5")
    assert res.returncode == 2 and "keep at most 1 with --n-shape." in res.stderr, res.stderr
    assert not (tmp_path / "m.h5").exists()


def test_bfm2017_component_without_variance_asks_to_keep_fewer(tmp_path):
    p = write_bfm2017(tmp_path / "b.h5", **small_2017(variance=np.array([400.0, 100.0, 0.0])))
    with pytest.raises(PrepError, match=r"pcaVariance is 0 for component 3, .* with n_shape"):
        load_bfm2017(p)
    assert load_bfm2017(p, n_shape=2).n_identity == 2


def test_tddfa_sigma_with_nan_is_ignored_with_a_warning(tmp_path):
    v = tddfa_vars()
    v["sigma_exp"] = np.full((v["w_exp"].shape[1], 1), np.nan)
    p = write_mat5(tmp_path / "e.mat", v)
    with pytest.warns(UserWarning, match="one finite number per column"):
        basis = load_tddfa_expression(p)
    assert basis.file_std is None


@pytest.mark.parametrize(
    "change, words",
    [
        (dict(faces=np.array([[0.0, 1.0, 2.5]])), "faces has the data type float64"),
        (dict(shape_mean=np.full((3, 3), np.nan)), "shape_mean holds 9 NaN or infinite values"),
        (dict(shape_std=np.array([1.0, -1.0])), "shape_std holds 1 value that is not positive"),
        (dict(shape_basis=np.full((3, 3, 2), "1.5")), "shape_basis has the data type text"),
        (dict(landmarks={"a": np.array([0.5])}), "landmark set 'a' has the data type float64"),
    ],
)
def test_the_in_memory_model_checks_the_same(change, words):
    kw = dict(
        shape_mean=np.eye(3),
        shape_basis=np.ones((3, 3, 2)),
        shape_std=np.ones(2),
        shape_kind=["identity", "expression"],
        faces=np.array([[0, 1, 2]]),
    )
    kw.update(change)
    with pytest.raises(PrepError, match=rf"^Invalid model: {re.escape(words)}"):
        MorphableModel(**kw)


@pytest.mark.parametrize(
    "mask, words",
    [
        (np.array([b"1", b"0"] * 50), "holds values other than 0 and 1"),
        (np.array([np.nan, 1.0] * 50), "holds values other than 0 and 1"),
        (np.array([1 + 0j, 0] * 50), "holds values other than 0 and 1"),
        (np.ones(99, bool), "holds 99 values, expected 100"),
    ],
)
def test_inside_mask_says_what_is_wrong(tmp_path, run_cli, mask, words):
    write_original_format(tmp_path / "model.mat")
    np.save(tmp_path / "inside.npy", mask)
    out = tmp_path / "g.h5"
    res = run_cli(
        "import-matlab", tmp_path / "model.mat", "--inside", tmp_path / "inside.npy", "--out", out
    )
    assert res.returncode == 2 and words in res.stderr, res.stderr
    assert not out.exists()


def test_writers_refuse_values_the_format_cannot_hold(tmp_path):
    """Nothing bfm-prep writes is a file its readers would call damaged: a value beyond
    float32's range (stored as infinity) or a NaN is refused, and no file is written."""
    uv, faces = square_mesh(5, seed=1)
    m = make_model(uv, faces)
    m.shape_basis[3, 1, 0] = 1e39
    with pytest.raises(
        PrepError,
        match=r"m\.h5: not written: shape/basis holds values beyond the float32 range",
    ):
        write_model(tmp_path / "m.h5", m)
    emb = UVEmbedding(
        uv=np.where(np.arange(uv.size).reshape(uv.shape) == 4, np.nan, uv),
        faces=faces,
        mirror=np.arange(len(uv)),
        symmetry_line=np.zeros(0, int),
        plane=np.array([1.0, 0, 0, 0]),
    )
    with pytest.raises(PrepError, match=r"uv\.h5: not written: uv holds 1 NaN or infinite value"):
        write_uv(tmp_path / "uv.h5", emb)
    assert os.listdir(tmp_path) == []
