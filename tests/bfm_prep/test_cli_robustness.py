"""Bad output paths, damaged inputs, upper bounds and wording of the ``bfm-prep`` commands:
one error line, exit status 2, no traceback and no output file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import typer
from bfm_prep.artifact import UVEmbedding, write_grid, write_model, write_uv
from bfm_prep.cli import app, main
from bfm_prep.errors import PrepError
from bfm_prep.resample import resample_to_grid

from tests.bfm_prep.cli_helpers import invoke
from tests.bfm_prep.test_resample import make_model, square_mesh
from tests.cli_help import assert_whole, help_names

MAX_RES = 4096  # the documented largest --res

BAD_PARENTS = ["under-a-file", "proc"]


def run(*args, capsys):
    """(exit status, stdout, stderr) of ``bfm-prep ARGS`` run in this process."""
    return invoke(args, capsys)


def assert_one_line_error(code, err, *words):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bfm-prep: error: "), err
    for w in words:
        assert str(w) in lines[0], (w, lines[0])


@pytest.fixture
def files(tmp_path):
    """A small model, its UV embedding, the grid, a truncated copy and a plain file."""
    uv, faces = square_mesh(9, seed=3)
    m = make_model(uv, faces, landmarks={"own": [0, 5]})
    write_model(tmp_path / "model.h5", m)
    emb = UVEmbedding(
        uv=uv,
        faces=faces,
        mirror=np.arange(len(uv)),
        symmetry_line=np.zeros(0, int),
        plane=np.array([1.0, 0, 0, 0]),
        checks={"flipped_triangles": 0},
    )
    write_uv(tmp_path / "uv.h5", emb)
    write_grid(tmp_path / "grid.h5", resample_to_grid(m, uv, 12))
    data = (tmp_path / "model.h5").read_bytes()
    (tmp_path / "trunc.h5").write_bytes(data[: len(data) // 2])
    (tmp_path / "blocker").write_text("a file, not a folder\n")
    return tmp_path


def bad_path(d: Path, kind: str, name: str) -> Path:
    if kind == "under-a-file":
        return d / "blocker" / name
    assert os.path.isdir("/proc")  # Linux: nothing can be created in /proc
    return Path("/proc") / name


# ---------------------------------------------------------------------------------------------
# 1. unwritable output paths: one line, exit 2


@pytest.mark.parametrize("kind", BAD_PARENTS)
@pytest.mark.parametrize(
    "command", ["build-expression", "uv-embed", "uv-resample", "import-matlab", "plot", "synth"]
)
def test_unwritable_output_path_one_line_exit_2(files, capsys, command, kind):
    d = files
    out = bad_path(d, kind, "x.h5")
    args = {
        "build-expression": ["build-expression", "--bfm", d / "missing.mat", "--out", out],
        "uv-embed": ["uv-embed", "--model", d / "model.h5", "--out", out],
        "uv-resample": [
            "uv-resample",
            "--model",
            d / "model.h5",
            "--uv",
            d / "uv.h5",
            "--res",
            "8",
            "--out",
            out,
        ],
        "import-matlab": ["import-matlab", d / "missing.mat", "--out", out],
        "plot": ["plot", d / "model.h5", "--out", out],
        "synth": ["synth", out],
    }[command]
    code, _, err = run(*args, capsys=capsys)
    opt = "OUTDIR" if command == "synth" else "--out"
    assert_one_line_error(code, err, f"{opt} {out}")
    assert not out.exists()


def test_output_folder_made_when_missing(files, capsys):
    out = files / "new" / "deeper" / "g.h5"
    code, _, err = run(
        "uv-resample",
        "--model",
        files / "model.h5",
        "--uv",
        files / "uv.h5",
        "--res",
        "8",
        "--out",
        out,
        capsys=capsys,
    )
    assert code == 0, err
    assert out.is_file()


def test_safety_net_turns_a_path_error_into_one_line(files, capsys, monkeypatch):
    import bfm_prep.artifact

    def denied(path, grid):
        raise PermissionError(13, "Permission denied", "/somewhere/grid.h5")

    monkeypatch.setattr(bfm_prep.artifact, "write_grid", denied)
    code, _, err = run(
        "uv-resample",
        "--model",
        files / "model.h5",
        "--uv",
        files / "uv.h5",
        "--res",
        "8",
        "--out",
        files / "g.h5",
        capsys=capsys,
    )
    assert_one_line_error(code, err, "/somewhere/grid.h5: permission denied")


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), OSError("not about a path")])
def test_safety_net_keeps_the_traceback_of_a_bug(files, monkeypatch, exc):
    import bfm_prep.artifact

    def broken(path, grid):
        raise exc

    monkeypatch.setattr(bfm_prep.artifact, "write_grid", broken)
    with pytest.raises(type(exc)):
        main(
            [
                "uv-resample",
                "--model",
                str(files / "model.h5"),
                "--uv",
                str(files / "uv.h5"),
                "--res",
                "8",
                "--out",
                str(files / "g.h5"),
            ]
        )


# ---------------------------------------------------------------------------------------------
# 2. every output checked before any is written


@pytest.mark.parametrize("kind", BAD_PARENTS)
@pytest.mark.parametrize("option", ["--plot", "--save-pairs"])
def test_uv_embed_bad_side_output_leaves_no_artifact(files, capsys, option, kind):
    out = files / "u1.h5"
    side = bad_path(files, kind, "side.png")
    code, _, err = run(
        "uv-embed", "--model", files / "model.h5", "--out", out, option, side, capsys=capsys
    )
    assert_one_line_error(code, err, f"{option} {side}")
    assert not out.exists()


def test_uv_embed_failing_picture_leaves_no_artifact(files, capsys, monkeypatch):
    import bfm_prep.pictures.uv_layout

    def fails(*a, **k):
        raise PrepError("the picture failed.")

    monkeypatch.setattr(bfm_prep.pictures.uv_layout, "plot_uv_layout", fails)
    from tests.bfm_prep.test_embed_cli import write_ply
    from tests.bfm_prep.test_symmetry import face_grid

    V, F, _ = face_grid(eyes=True)
    mesh = write_ply(files / "face.ply", V, F)
    out = files / "u1.h5"
    code, _, err = run(
        "uv-embed", "--mesh", mesh, "--out", out, "--plot", files / "u.png", capsys=capsys
    )
    assert_one_line_error(code, err, "the picture failed")
    assert not out.exists()


def test_two_outputs_on_one_path(files, capsys):
    out = files / "u1.h5"
    code, _, err = run(
        "uv-embed", "--model", files / "model.h5", "--out", out, "--save-pairs", out, capsys=capsys
    )
    assert_one_line_error(code, err, "--save-pairs", "--out")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# 3. truncated HDF5 in every reader


@pytest.mark.parametrize(
    "command", ["plot", "uv-resample --uv", "uv-resample --model", "uv-embed", "inspect"]
)
def test_truncated_h5_one_line(files, capsys, command):
    d, t = files, files / "trunc.h5"
    args = {
        "plot": ["plot", t, "--out", d / "pics"],
        "uv-resample --uv": [
            "uv-resample",
            "--model",
            d / "model.h5",
            "--uv",
            t,
            "--res",
            "8",
            "--out",
            d / "g.h5",
        ],
        "uv-resample --model": [
            "uv-resample",
            "--model",
            t,
            "--uv",
            d / "uv.h5",
            "--res",
            "8",
            "--out",
            d / "g.h5",
        ],
        "uv-embed": ["uv-embed", "--model", t, "--out", d / "g.h5"],
        "inspect": ["inspect", t],
    }[command]
    code, _, err = run(*args, capsys=capsys)
    assert_one_line_error(code, err, f"{t}: is truncated")
    assert "((" not in err and "))" not in err  # 6. no doubled brackets
    assert not (d / "g.h5").exists() and not (d / "pics").exists()


# ---------------------------------------------------------------------------------------------
# 4. inspect validates artifacts like the readers plot uses


def _damage(path: Path, how: str) -> str:
    with h5py.File(path, "r+") as f:
        if how == "no-basis":
            del f["shape/basis"]
            return "'basis' is missing"
        if how == "faces-out-of-range":
            faces = f["faces"][()] + 100000
            del f["faces"]
            f["faces"] = faces
            return "faces index vertices"
        if how == "version-2":
            f.attrs["format_version"] = 2
            return "format version 2 is not supported"
        if how == "uv-mirror":
            mirror = f["symmetry/mirror"][()] + 100000
            del f["symmetry/mirror"]
            f["symmetry/mirror"] = mirror
            return "symmetry/mirror"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "artifact, how",
    [
        ("model.h5", "no-basis"),
        ("model.h5", "faces-out-of-range"),
        ("model.h5", "version-2"),
        ("grid.h5", "no-basis"),
        ("grid.h5", "faces-out-of-range"),
        ("grid.h5", "version-2"),
        ("uv.h5", "faces-out-of-range"),
        ("uv.h5", "uv-mirror"),
        ("uv.h5", "version-2"),
    ],
)
@pytest.mark.parametrize("command", ["inspect", "plot"])
def test_damaged_artifact_exit_2_naming_the_file(files, capsys, artifact, how, command):
    p = files / f"damaged-{artifact}"
    shutil.copy(files / artifact, p)
    expected = _damage(p, how)
    args = ["inspect", p] if command == "inspect" else ["plot", p, "--out", files / "pics"]
    code, out, err = run(*args, capsys=capsys)
    assert_one_line_error(code, err, f"{p}: ", expected)
    assert "components" not in out
    assert not (files / "pics").exists()


@pytest.mark.parametrize("artifact", ["model.h5", "grid.h5", "uv.h5"])
def test_inspect_good_artifacts_still_pass(files, capsys, artifact):
    code, out, err = run("inspect", "--plain", files / artifact, capsys=capsys)
    assert code == 0, err


# ---------------------------------------------------------------------------------------------
# 5. upper bounds


def test_res_upper_bound_states_the_memory(files, capsys):
    out = files / "g.h5"
    code, _, err = run(
        "uv-resample",
        "--model",
        files / "model.h5",
        "--uv",
        files / "uv.h5",
        "--res",
        "100000",
        "--out",
        out,
        capsys=capsys,
    )
    assert_one_line_error(code, err, "--res 100000 is too large", "GiB", f"R <= {MAX_RES}")
    assert not out.exists()


def test_res_upper_bound_in_the_library(files):
    from bfm_prep.artifact import read_model, read_uv

    with pytest.raises(PrepError, match="too large"):
        resample_to_grid(read_model(files / "model.h5"), read_uv(files / "uv.h5").uv, MAX_RES + 1)


@pytest.mark.parametrize("samples", ["100000", "65", "-1"])
def test_samples_bounds(files, capsys, samples):
    code, _, err = run(
        "plot", files / "model.h5", "--samples", samples, "--out", files / "pics", capsys=capsys
    )
    assert_one_line_error(code, err, f"--samples {samples}", "0 to 64")
    assert not (files / "pics").exists()


# ---------------------------------------------------------------------------------------------
# 6. wording


def test_component_count_names_the_option(tmp_path, capsys):
    from tests.bfm_prep.test_io_bfm2009 import small_bfm
    from tests.bfm_prep.test_io_formats import write_mat5

    bfm = write_mat5(tmp_path / "01_MorphableModel.mat", small_bfm())
    code, _, err = run(
        "build-expression",
        "--bfm",
        bfm,
        "--n-shape",
        "500",
        "--out",
        tmp_path / "m.h5",
        capsys=capsys,
    )
    assert_one_line_error(code, err, "--n-shape 500 asks for more identity components")
    assert "n_shape" not in err


def test_help_paragraphs_have_no_hard_line_breaks():
    """typer rewraps each paragraph; a line break inside one cuts a sentence on narrow
    terminals, so every command's help has none."""
    for cmd in app.registered_commands:
        text = cmd.help or (cmd.callback.__doc__ or "")
        for para in text.split("\n\n"):
            assert "\n" not in para.strip(), (cmd.name, para)


def test_help_rendered_without_mid_sentence_breaks(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERMINAL_WIDTH", "80")
    for command in ["build-expression", "uv-resample"]:
        code, out, _ = run(command, "--help", capsys=capsys)
        assert code == 0
        head = out.split("╭")[0] if "╭" in out else out.split("Options")[0]
        lines = [ln.strip() for ln in head.splitlines()]
        desc = [ln for ln in lines if ln and not ln.startswith("Usage:")]
        # Inside a paragraph every line but the last is filled close to the width.
        for a, b in zip(lines, lines[1:], strict=False):
            if a and b and not a.startswith("Usage:"):
                assert len(a) > 50, (command, a)
        assert desc


@pytest.mark.parametrize("columns", ["60", "80"])
def test_help_shows_every_option_name_whole(capsys, monkeypatch, columns):
    """An 80-column terminal, a 60-column one and a pipe (80 columns) all get every option
    name whole and nothing cut with an ellipsis."""
    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    group = typer.main.get_command(app)
    code, out, _ = run("--help", capsys=capsys)
    assert code == 0 and "…" not in out
    for name, command in group.commands.items():
        assert_whole(out, name, "bfm-prep --help")
        assert command.short_help and " ".join(command.short_help.split()[:3]) in " ".join(
            out.split()
        ), (name, out)
    for name, command in group.commands.items():
        code, out, _ = run(name, "--help", capsys=capsys)
        assert code == 0 and "…" not in out, (name, out)
        assert max(len(line) for line in out.splitlines()) <= int(columns), (name, out)
        for option in help_names(command):
            assert_whole(out, option, f"bfm-prep {name} --help")


def test_help_piped_shows_every_option_name_whole(tmp_path):
    """Piped to another program (no terminal, no COLUMNS): the same, in a fresh process."""
    script = (
        "import sys\n"
        "from bfm_prep.cli import app, main\n"
        "import typer\n"
        "for name in typer.main.get_command(app).commands:\n"
        "    try:\n"
        "        main([name, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "    print('=== end of', name, flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    group = typer.main.get_command(app)
    texts = proc.stdout.split("=== end of ")
    for name, command in group.commands.items():
        text = next(t for t in texts if f"Usage: bfm-prep {name} " in t)
        assert "…" not in text, (name, text)
        for option in help_names(command):
            assert_whole(text, option, f"bfm-prep {name} --help | cat")


def test_plural_of_one_file(files, capsys):
    code, out, err = run("plot", files / "uv.h5", "--out", files / "pics", capsys=capsys)
    assert code == 0, err
    assert "Wrote 1 file to" in out
