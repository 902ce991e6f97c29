"""An output never replaces an input, whatever path reaches it (the same name, another spelling,
a symbolic or a hard link); a folder given where a file is expected is called a folder. One
error line, exit status 2, every input unchanged and no output written."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from bfm_prep.artifact import UVEmbedding, write_grid, write_model, write_uv
from bfm_prep.resample import resample_to_grid

from tests.bfm_prep.test_build_cli import write_inputs
from tests.bfm_prep.test_matlab_import import write_original_format
from tests.bfm_prep.test_resample import make_model, square_mesh

WAYS = ["same-name", "other-spelling", "symlink", "hard-link"]


def assert_refused(res, *words):
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bfm-prep: error: "), res.stderr
    for w in words:
        assert str(w) in lines[0], (w, lines[0])


def another_path(target: Path, way: str) -> Path:
    """A path that reaches ``target``: itself, a ``sub/../`` spelling, a symlink, a hard link."""
    if way == "same-name":
        return target
    if way == "other-spelling":
        (target.parent / "sub").mkdir(exist_ok=True)
        return Path(f"{target.parent}/sub/../{target.name}")
    alias = target.parent / f"alias-{target.name}"
    if way == "symlink":
        alias.symlink_to(target)
    else:
        os.link(target, alias)
    return alias


@pytest.fixture
def art(tmp_path):
    """model.h5, uv.h5, grid.h5, a landmark list and a pairs file."""
    uv, faces = square_mesh(9, seed=3)
    m = make_model(uv, faces, landmarks={"own": [0, 5]})
    write_model(tmp_path / "model.h5", m)
    write_uv(
        tmp_path / "uv.h5",
        UVEmbedding(
            uv=uv,
            faces=faces,
            mirror=np.arange(len(uv)),
            symmetry_line=np.zeros(0, int),
            plane=np.array([1.0, 0, 0, 0]),
        ),
    )
    write_grid(tmp_path / "grid.h5", resample_to_grid(m, uv, 12))
    (tmp_path / "lm.txt").write_text("0\n4\n")
    (tmp_path / "pairs.txt").write_text("0 1\n")
    return tmp_path


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# 1. every command, every input


RESAMPLE = ["uv-resample", "--model", "{model}", "--uv", "{uv}", "--res", "8"]


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(
    "args, option, target",
    [
        (RESAMPLE + ["--out", "@"], "--model", "model.h5"),
        (RESAMPLE + ["--out", "@"], "--uv", "uv.h5"),
        (RESAMPLE + ["--landmarks", "lm={lm}", "--out", "@"], "--landmarks", "lm.txt"),
        (["uv-embed", "--model", "{model}", "--out", "@"], "--model", "model.h5"),
        (
            ["uv-embed", "--model", "{model}", "--out", "{d}/u.h5", "--plot", "@"],
            "--model",
            "model.h5",
        ),
        (
            ["uv-embed", "--model", "{model}", "--out", "{d}/u.h5", "--save-pairs", "@"],
            "--model",
            "model.h5",
        ),
        (
            [
                "uv-embed",
                "--model",
                "{model}",
                "--symmetry",
                "{pairs}",
                "--out",
                "{d}/u.h5",
                "--save-pairs",
                "@",
            ],
            "--symmetry",
            "pairs.txt",
        ),
    ],
)
def test_artifact_commands_refuse_to_write_over_an_input(art, run_cli, args, option, target, way):
    out = another_path(art / target, way)
    before = snapshot(art)
    names = {
        "model": art / "model.h5",
        "uv": art / "uv.h5",
        "lm": art / "lm.txt",
        "pairs": art / "pairs.txt",
        "d": art,
    }
    argv = [str(out) if a == "@" else a.format(**names) for a in args]
    res = run_cli(*argv)
    out_option = argv[argv.index(str(out)) - 1]
    assert_refused(res, f"{out_option} {out}", f"same file as the input {option}")
    assert snapshot(art) == before  # every input unchanged, nothing written
    assert not (art / "u.h5").exists()


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("which", ["--bfm", "--expression", "--mapping", "--landmarks"])
def test_build_expression_refuses_to_write_over_an_input(tmp_path, run_cli, which, way):
    inp = write_inputs(tmp_path)
    key = {"--bfm": "bfm", "--expression": "expression", "--mapping": "mapping"}.get(which, "lm5")
    out = another_path(Path(inp[key]), way)
    before = snapshot(tmp_path)
    res = run_cli(
        "build-expression",
        "--bfm",
        inp["bfm"],
        "--expression",
        inp["expression"],
        "--mapping",
        inp["mapping"],
        "--landmarks",
        f"five={inp['lm5']}",
        "--out",
        out,
    )
    assert_refused(res, f"--out {out}", f"same file as the input {which}")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("which", ["MODEL_MAT", "--landmarks", "--inside"])
def test_import_matlab_refuses_to_write_over_an_input(tmp_path, run_cli, which, way):
    write_original_format(tmp_path / "model.mat")
    (tmp_path / "lm.anl").write_text("1\n100\n")
    np.save(tmp_path / "inside.npy", np.ones(100, bool))
    target = {"MODEL_MAT": "model.mat", "--landmarks": "lm.anl", "--inside": "inside.npy"}[which]
    out = another_path(tmp_path / target, way)
    before = snapshot(tmp_path)
    res = run_cli(
        "import-matlab",
        tmp_path / "model.mat",
        "--landmarks",
        f"pts={tmp_path / 'lm.anl'}",
        "--inside",
        tmp_path / "inside.npy",
        "--out",
        out,
    )
    assert_refused(res, f"--out {out}", f"same file as the input {which}")
    assert snapshot(tmp_path) == before


def test_the_reported_case_leaves_the_input_unchanged(art, run_cli):
    """``uv-resample --model x.h5 ... --out x.h5`` used to replace the model with the grid."""
    shutil.copy(art / "model.h5", art / "x.h5")
    before = (art / "x.h5").read_bytes()
    res = run_cli(
        *[a.format(model=art / "x.h5", uv=art / "uv.h5") for a in RESAMPLE], "--out", art / "x.h5"
    )
    assert_refused(res, "--out", "x.h5", "--model")
    assert (art / "x.h5").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# 2. plot: its folder must not hold an input under one of the names it writes


@pytest.mark.parametrize(
    "artifact, name, extra",
    [
        ("grid.h5", "grid_mask.png", []),
        ("grid.h5", "geometry_image.png", []),
        ("model.h5", "render_mean.png", []),
        ("model.h5", "renders.png", []),
        ("model.h5", "render_sample_02.png", ["--samples", "2"]),
        ("model.h5", "mean.ply", ["--export-mesh"]),
        ("uv.h5", "uv_layout.png", []),
    ],
)
def test_plot_refuses_a_folder_where_it_would_replace_its_input(
    art, run_cli, artifact, name, extra
):
    pics = art / "pics"
    pics.mkdir()
    shutil.copy(art / artifact, pics / name)  # an artifact named like a picture
    before = (pics / name).read_bytes()
    res = run_cli("plot", pics / name, "--out", pics, "--samples", "0", *extra)
    assert_refused(res, f"--out {pics}", name, "FILE")
    assert (pics / name).read_bytes() == before
    assert sorted(os.listdir(pics)) == [name]
    # beside its input under another name, plot writes as before
    shutil.copy(art / artifact, pics / "input.h5")
    res = run_cli("plot", pics / "input.h5", "--out", pics, "--samples", "0", *extra)
    assert res.returncode == 0, res.stderr


def test_plot_through_another_spelling_of_the_folder(art, run_cli, monkeypatch):
    """The reported case: ``plot grid_mask.png --out .`` from inside the folder."""
    shutil.copy(art / "grid.h5", art / "grid_mask.png")
    before = (art / "grid_mask.png").read_bytes()
    monkeypatch.chdir(art)
    res = run_cli("plot", "grid_mask.png", "--out", ".", "--samples", "0")
    assert_refused(res, "--out .", "grid_mask.png")
    assert (art / "grid_mask.png").read_bytes() == before


# ---------------------------------------------------------------------------------------------
# 3. a folder where a file is expected is called a folder, not "no such file"


@pytest.mark.parametrize(
    "args, option",
    [
        (
            ["uv-resample", "--model", "@", "--uv", "{uv}", "--res", "8", "--out", "{d}/g.h5"],
            None,  # the readers name the file, as for a missing one
        ),
        (
            ["uv-resample", "--model", "{model}", "--uv", "@", "--res", "8", "--out", "{d}/g.h5"],
            "--uv",
        ),
        (["uv-embed", "--model", "@", "--out", "{d}/u.h5"], None),
        (["uv-embed", "--model", "{model}", "--symmetry", "@", "--out", "{d}/u.h5"], "--symmetry"),
        (["plot", "@", "--out", "{d}/pics"], None),
        (["import-matlab", "{mat}", "--inside", "@", "--out", "{d}/g.h5"], "--inside"),
    ],
)
def test_a_folder_for_a_file_is_called_a_folder(art, run_cli, args, option):
    folder = art / "a-folder.h5"
    folder.mkdir()
    write_original_format(art / "model.mat")
    names = dict(model=art / "model.h5", uv=art / "uv.h5", mat=art / "model.mat", d=art)
    argv = [str(folder) if a == "@" else a.format(**names) for a in args]
    res = run_cli(*argv)
    assert_refused(res, folder, "folder")
    assert "no such" not in res.stderr
    if option:
        assert option in res.stderr
    assert not any((art / n).exists() for n in ("g.h5", "u.h5", "m.h5", "pics"))
