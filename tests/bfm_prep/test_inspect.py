"""``bfm-prep inspect``: every artifact format and supported input, unknown and damaged files
(exit status 2, one line, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from bfm_prep.artifact import (
    UVEmbedding,
    UVGridModel,
    write_grid,
    write_model,
    write_uv,
)
from bfm_prep.errors import PrepError
from bfm_prep.inspect import format_plain, inspect_file
from bfm_prep.model import MorphableModel
from bfm_prep.provenance import input_record, sha256_file

from tests.bfm_prep.cli_helpers import invoke as run_cli
from tests.bfm_prep.test_io_bfm2009 import small_bfm
from tests.bfm_prep.test_io_bfm2017 import small_2017
from tests.bfm_prep.test_io_expression import coarse_arrays, tddfa_vars
from tests.bfm_prep.test_io_formats import (
    truncated_copy,
    write_bfm2017,
    write_coarsedata,
    write_mat5,
    write_mat73,
)


def grid_model(res=3, provenance=None):
    n = res * res
    rng = np.random.default_rng(0)
    faces = []
    for r in range(res - 1):
        for c in range(res - 1):
            k = r * res + c
            faces += [[k, k + res, k + 1], [k + 1, k + res, k + res + 1]]
    return MorphableModel(
        shape_mean=rng.normal(size=(n, 3)) * 10,
        shape_basis=rng.normal(size=(n, 3, 3)),
        shape_std=[3.0, 2.0, 1.0],
        shape_kind=["identity", "identity", "expression"],
        faces=np.array(faces),
        color_mean=np.full((n, 3), 0.5),
        color_basis=np.zeros((n, 3, 2)),
        color_std=[0.1, 0.05],
        landmarks={"aflw21": np.array([0, 4]), "ibug68": np.array([1, 2, 3])},
        provenance=provenance or {},
    )


@pytest.fixture
def model_artifact(tmp_path):
    src = write_mat5(tmp_path / "01_MorphableModel.mat", small_bfm())
    prov = {"inputs": {"bfm": input_record(src)}, "parameters": {"n_shape": 2, "n_exp": 1}}
    return write_model(tmp_path / "model.h5", grid_model(provenance=prov)), src


def test_model_artifact(model_artifact, capsys):
    path, src = model_artifact
    code, out, err = run_cli(["inspect", "--plain", path], capsys)
    assert code == 0 and err == ""
    s = inspect_file(path).as_dict()
    assert inspect_file(path).kind == "bfm-prep artifact (stn-morphable-model)"
    assert s["format version"] == "1" and s["units"] == "mm"
    assert s["vertices"] == "9" and s["faces"] == "8"
    assert s["shape components"] == "3 (2 identity, 1 expression)"
    assert s["std (identity)"] == "2 .. 3" and s["std (expression)"] == "1 .. 1"
    assert s["colour"].startswith("2 components, mean in 0.5 .. 0.5")
    assert s["landmarks"] == "aflw21 (2), ibug68 (3)"
    assert s["input bfm"] == f"{src.resolve()} (sha256 {sha256_file(src)})"
    assert s["parameter n_shape"] == "2"
    assert "sha256" not in s  # an artifact names its inputs' hashes instead
    for line in format_plain(inspect_file(path)).splitlines()[1:]:
        assert line.startswith("  ")
    assert "shape components" in out and sha256_file(src) in out


def test_rich_table_output(model_artifact, capsys):
    code, out, _ = run_cli(["inspect", model_artifact[0]], capsys)
    assert code == 0
    assert "stn-morphable-model" in out and "aflw21 (2)" in out


def test_grid_and_uv_artifacts(tmp_path):
    res = 3
    u, v = np.meshgrid(np.linspace(0, 1, res), np.linspace(1, 0, res))
    uv = np.column_stack([u.ravel(), v.ravel()])
    inside = np.ones(res * res, bool)
    inside[0] = False
    g = write_grid(tmp_path / "grid.h5", UVGridModel(grid_model(res), res, uv, inside))
    s = inspect_file(g).as_dict()
    assert inspect_file(g).kind == "bfm-prep artifact (stn-uv-grid-model)"
    assert s["grid"] == "3 x 3" and s["inside points"] == "8 of 9" and s["uv range"] == "0 .. 1"
    m = grid_model(res)
    emb = UVEmbedding(
        uv=uv,
        faces=m.faces,
        mirror=np.array([2, 1, 0, 5, 4, 3, 8, 7, 6]),
        symmetry_line=np.array([7, 4, 1]),
        plane=np.array([1.0, 0, 0, 0]),
        checks={"flipped_triangles": 0, "symmetry_error": 1e-9},
    )
    p = write_uv(tmp_path / "uv.h5", emb)
    s = inspect_file(p).as_dict()
    assert s["vertices"] == "9" and s["on the symmetry plane"] == "3"
    assert s["symmetry line"] == "3 vertices" and s["check flipped_triangles"] == "0"
    assert "without a mirror partner" not in s
    # a symmetry from the shape: vertices 0 and 2 have no partner (their own mirror, off the line)
    emb.mirror = np.array([0, 1, 2, 5, 4, 3, 8, 7, 6])
    s = inspect_file(write_uv(tmp_path / "uv2.h5", emb)).as_dict()
    assert s["on the symmetry plane"] == "3" and s["without a mirror partner"] == "2"


def test_unsupported_version_is_an_error(model_artifact):
    """An artifact of an unsupported version is refused like by every reader (exit 2 from the
    CLI), not summarised as if it could be used."""
    path = model_artifact[0]
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 7
    with pytest.raises(PrepError, match="format version 7 is not supported"):
        inspect_file(path)


@pytest.mark.parametrize("writer, version", [(write_mat5, "v5"), (write_mat73, "v7.3")])
def test_bfm2009(tmp_path, writer, version):
    p = writer(tmp_path / "01_MorphableModel.mat", small_bfm())
    s = inspect_file(p)
    d = s.as_dict()
    assert s.kind == f"Basel Face Model 2009 (MATLAB {version})"
    assert d["vertices"] == "12" and d["faces"] == "12" and d["identity components"] == "3"
    assert d["colour components"] == "2" and d["sha256"] == sha256_file(p)
    assert d["colour mean range"].startswith("127.5 .. 255")


def test_other_inputs(tmp_path):
    b17 = write_bfm2017(tmp_path / "bfm17.h5", **small_2017())
    d = inspect_file(b17).as_dict()
    assert d["identity components"] == "3" and d["expression components"] == "2"
    assert d["colour components"] == "1" and d["identity std (mm)"] == "4 .. 20"

    e = inspect_file(write_mat5(tmp_path / "Model_Expression.mat", tddfa_vars()))
    assert e.kind == "3DDFA expression model (MATLAB v5)"
    assert e.as_dict()["vertices"] == "6" and e.as_dict()["expression components"] == "3"

    mean, comps = coarse_arrays(v=5, d=3)
    c = inspect_file(write_coarsedata(tmp_path / "Exp_Pca.bin", mean, comps))
    assert c.kind.startswith("CoarseData") and c.as_dict()["vertices"] == "5"

    anl = tmp_path / "l.anl"
    anl.write_text("%x\n3\n9\n")
    a = inspect_file(anl).as_dict()
    assert a["landmarks"] == "2" and a["index base in the file"] == "1"
    assert a["vertex index range"] == "2 .. 8 (0-based)"

    obj = tmp_path / "m.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 3 3 3\nf 1 2 3\n")
    m = inspect_file(obj).as_dict()
    assert m["vertices"] == "4" and m["unused vertices"] == "1" and m["boundary edges"] == "3"


@pytest.mark.reference
@pytest.mark.parametrize(
    "rel, kind, key, value",
    [
        (
            "3dmmasstn/map_tddfa_to_basel.mat",
            "3DDFA-to-Basel vertex mapping (MATLAB v5)",
            "entries (3DDFA vertices)",
            "53215",
        ),
        ("3dmmasstn/BFM_UV.mat", "UV embedding (MATLAB v5, e.g. BFM_UV.mat)", "vertices", "53490"),
        (
            "3dmmasstn/model_112.mat",
            "resampled MATLAB model (MATLAB v5, e.g. model_112.mat)",
            "grid",
            "112 x 112",
        ),
        ("3dmmasstn/landmarks/Landmarks68_BFM.anl", "landmark list (.anl)", "landmarks", "68"),
        ("sfm/sfm_shape_3448.npz", "Surrey Face Model shape (.npz)", "identity components", "63"),
        (
            "sfm/expression_blendshapes_3448.npz",
            "Surrey Face Model expression blendshapes (.npz)",
            "blendshapes",
            "6",
        ),
        (
            "sfm/ibug_to_bfm2009.txt",
            "landmark mapping (eos style, e.g. ibug_to_sfm.txt)",
            "mapped landmarks",
            "18",
        ),
        ("coarsedata/std_exp.txt", "list of numbers (e.g. CoarseData std_exp.txt)", "count", "79"),
    ],
)
def test_real_reference_files(ref, rel, kind, key, value):
    s = inspect_file(ref(rel), hash_inputs=False)
    assert s.kind == kind and s.as_dict()[key] == value


def _assert_one_line_error(code, out, err, name):
    assert code == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bfm-prep: error: ") and name in lines[0]


def test_unknown_file_exit_2(tmp_path, capsys):
    p = tmp_path / "README"
    p.write_text("This is prose, not a model.\n")
    code, out, err = run_cli(["inspect", p], capsys)
    _assert_one_line_error(code, out, err, "README")
    assert "is not a file bfm-prep recognises" in err
    assert err.strip().endswith("; see bfm-prep inspect --help for the supported kinds.")


@pytest.mark.parametrize(
    "make",
    [
        "plain-hdf5",
        "other-format",
        "truncated-mat",
        "truncated-bin",
        "missing",
        "truncated-artifact",
    ],
)
def test_damaged_or_foreign_files_exit_2(tmp_path, capsys, make, model_artifact):
    p = tmp_path / f"{make}.dat"
    if make == "plain-hdf5":
        with h5py.File(p, "w") as f:
            f["x"] = np.ones(3)
        expected = "neither a bfm-prep artifact nor a Basel Face Model"
    elif make == "other-format":
        with h5py.File(p, "w") as f:
            f.attrs["format"] = "something-else"
        expected = "unknown format 'something-else'"
    elif make == "truncated-mat":
        src = write_mat5(tmp_path / "b.mat", small_bfm(), compress=False)
        truncated_copy(src, p, os.path.getsize(src) - 50)
        expected = "is truncated"
    elif make == "truncated-bin":
        mean, comps = coarse_arrays()
        src = write_coarsedata(tmp_path / "e.bin", mean, comps)
        truncated_copy(src, p, os.path.getsize(src) - 7)
        expected = "is truncated"
    elif make == "truncated-artifact":
        truncated_copy(model_artifact[0], p, os.path.getsize(model_artifact[0]) // 2)
        expected = "truncated"
    else:
        expected = "no such file"
    code, out, err = run_cli(["inspect", p], capsys)
    _assert_one_line_error(code, out, err, p.name)
    assert expected in err


def test_subprocess_exit_status_and_no_traceback(tmp_path):
    p = tmp_path / "junk.bin"
    p.write_bytes(b"\xffjunk" * 40)
    r = subprocess.run(
        [sys.executable, "-m", "bfm_prep", "inspect", str(p)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith(f"bfm-prep: error: {p}: ")


def test_help_explains_the_option(capsys):
    code, out, _ = run_cli(["inspect", "--help"], capsys)
    assert code == 0 and "--plain" in out and "--no-hash" in out
