"""The command line: user errors are one line on stderr and exit status 2; commands work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import h5py
import pytest
import typer
from stn_train.cli import app, main

from tests.cli_help import assert_whole, help_names
from tests.stn_train.train_helpers import grid_model_file, render_manifest, tiny_checkpoint


def run_cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def assert_user_error(args, capsys, *words):
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stn-train: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("other") / "other.h5"
    shutil.copy(grid_model_file(), path)
    with h5py.File(path, "r+") as f:
        f["shape/basis"][...] = f["shape/basis"][()] * 1.01
    return path


class TestUserErrors:
    def test_run_missing_model(self, tmp_path, capsys):
        assert_user_error(
            [
                "run",
                "--model",
                str(tmp_path / "none.h5"),
                "--synthetic",
                "4",
                "--out",
                str(tmp_path / "r"),
            ],
            capsys,
            "none.h5",
            "no such file",
        )

    def test_run_needs_data(self, tmp_path, capsys):
        assert_user_error(
            ["run", "--model", str(grid_model_file()), "--out", str(tmp_path)],
            capsys,
            "--data",
            "--synthetic",
        )

    def test_run_bad_config_key(self, tmp_path, capsys):
        cfg = tmp_path / "c.toml"
        cfg.write_text("learning-rate = 1\n")
        assert_user_error(["run", "--config", str(cfg)], capsys, "unknown key 'learning-rate'")

    def test_run_bad_choice(self, tmp_path, capsys):
        assert_user_error(
            [
                "run",
                "--model",
                str(grid_model_file()),
                "--synthetic",
                "4",
                "--out",
                str(tmp_path),
                "--optimizer",
                "lbfgs",
            ],
            capsys,
            "--optimizer 'lbfgs'",
        )

    def test_run_bad_manifest_line(self, tmp_path, capsys):
        bad = tmp_path / "m.jsonl"
        bad.write_text('{"image": "a.png", "landmarks": [[1, 2, 7]]}\n')
        assert_user_error(
            [
                "run",
                "--model",
                str(grid_model_file()),
                "--data",
                str(bad),
                "--out",
                str(tmp_path / "r"),
                "--backbone",
                "small",
            ],
            capsys,
            "line 1",
            "visibility 7",
        )

    @pytest.mark.parametrize("command", ["run", "eval"])
    def test_binary_file_as_manifest(self, command, tmp_path, capsys):
        image = tmp_path / "face.png"
        shutil.copy(render_manifest().parent / "face_0000.png", image)
        out = tmp_path / "out"
        args = (
            ["run", "--backbone", "small"]
            if command == "run"
            else ["eval", "--checkpoint", str(tiny_checkpoint())]
        )
        assert_user_error(
            [*args, "--model", str(grid_model_file()), "--data", str(image), "--out", str(out)],
            capsys,
            "face.png",
            "not a text manifest",
        )
        assert not out.exists()

    def test_run_missing_weights(self, tmp_path, capsys):
        assert_user_error(
            [
                "run",
                "--model",
                str(grid_model_file()),
                "--synthetic",
                "8",
                "--out",
                str(tmp_path / "r"),
                "--backbone",
                "small",
                "--image-size",
                "64",
                "--batch-size",
                "4",
                "--weights",
                str(tmp_path / "w.pt"),
            ],
            capsys,
            "w.pt",
        )

    def test_eval_checkpoint_of_another_model(self, tmp_path, capsys, other_model):
        assert_user_error(
            [
                "eval",
                "--checkpoint",
                str(tiny_checkpoint()),
                "--model",
                str(other_model),
                "--synthetic",
                "4",
                "--out",
                str(tmp_path),
            ],
            capsys,
            "another grid model",
        )

    def test_eval_missing_checkpoint(self, tmp_path, capsys):
        assert_user_error(
            [
                "eval",
                "--checkpoint",
                str(tmp_path / "c.pt"),
                "--model",
                str(grid_model_file()),
                "--synthetic",
                "4",
                "--out",
                str(tmp_path),
            ],
            capsys,
            "c.pt",
            "does not exist",
        )

    def test_predict_missing_image(self, tmp_path, capsys):
        assert_user_error(
            [
                "predict",
                str(tmp_path / "x.jpg"),
                "--checkpoint",
                str(tiny_checkpoint()),
                "--model",
                str(grid_model_file()),
                "--out",
                str(tmp_path),
            ],
            capsys,
            "x.jpg",
        )

    def test_usage_error_is_exit_2(self, capsys):
        code, _, err = run_cli(["run", "--bogus"], capsys)
        assert code == 2 and "--bogus" in err


class TestCommands:
    def test_run_eval_predict(self, tmp_path, capsys):
        run_dir = tmp_path / "run"
        code, out, err = run_cli(
            [
                "run",
                "--model",
                str(grid_model_file()),
                "--synthetic",
                "16",
                "--val-synthetic",
                "4",
                "--out",
                str(run_dir),
                "--backbone",
                "small",
                "--image-size",
                "64",
                "--batch-size",
                "8",
                "--steps",
                "2",
                "--workers",
                "0",
                "--lr",
                "3e-4",
            ],
            capsys,
        )
        assert code == 0, err
        assert "2 steps" in out and str(run_dir / "checkpoints") in out
        ckpt = run_dir / "checkpoints" / "best.pt"
        code, out, err = run_cli(
            [
                "eval",
                "--checkpoint",
                str(ckpt),
                "--model",
                str(grid_model_file()),
                "--synthetic",
                "4",
                "--out",
                str(tmp_path / "ev"),
            ],
            capsys,
        )
        assert code == 0, err
        assert "NME box" in out and "pose" in out
        image = render_manifest().parent / "face_0000.png"
        code, out, err = run_cli(
            [
                "predict",
                str(image),
                "--checkpoint",
                str(ckpt),
                "--model",
                str(grid_model_file()),
                "--out",
                str(tmp_path / "pr"),
            ],
            capsys,
        )
        assert code == 0, err
        assert (tmp_path / "pr" / "face_0000.obj").is_file()

    def test_config_file_and_resume(self, tmp_path, capsys):
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'model = "{grid_model_file()}"\nsynthetic = 16\nval-synthetic = 4\n'
            'backbone = "small"\nimage-size = 64\nbatch-size = 8\nsteps = 2\nworkers = 0\n'
            "lr = 3e-4\n"
        )
        run_dir = tmp_path / "run"
        code, _, err = run_cli(["run", "--config", str(cfg), "--out", str(run_dir)], capsys)
        assert code == 0, err
        assert "image-size = 64" in (run_dir / "config.toml").read_text()
        code, out, err = run_cli(["run", "--out", str(run_dir), "--resume", "--steps", "3"], capsys)
        assert code == 0, err
        assert "3 steps" in out
        assert_user_error(
            ["run", "--out", str(run_dir), "--resume", "--lr", "0.1"], capsys, "--lr 0.1 differs"
        )

    def test_a_runs_own_config_is_reusable_with_relative_paths(self, tmp_path, capsys, monkeypatch):
        """run --model grid.h5 --out run1 (relative, from the run's working folder), then
        run --config run1/config.toml --out x (the README's torchrun line)."""
        monkeypatch.chdir(tmp_path)
        shutil.copy(grid_model_file(), tmp_path / "grid.h5")
        common = [
            "--synthetic",
            "8",
            "--val-synthetic",
            "2",
            "--backbone",
            "small",
            "--image-size",
            "64",
            "--batch-size",
            "4",
            "--steps",
            "1",
            "--workers",
            "0",
        ]
        code, out, err = run_cli(["run", "--model", "grid.h5", "--out", "run1", *common], capsys)
        assert code == 0, err
        assert "1 step in " in out and "1 steps" not in out, out
        text = (tmp_path / "run1" / "config.toml").read_text()
        assert f'model = "{tmp_path / "grid.h5"}"' in text, text
        code, out, err = run_cli(["run", "--config", "run1/config.toml", "--out", "x"], capsys)
        assert code == 0, err
        assert (tmp_path / "x" / "checkpoints" / "last.pt").is_file()

    def test_module_entry_point(self):
        done = subprocess.run(
            [sys.executable, "-m", "stn_train", "version"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0 and done.stdout.startswith("stn-train ")


class TestOutputFolders:
    """An --out that cannot be a folder is one line and exit 2, and nothing is written."""

    def _commands(self, out):
        ckpt, model = str(tiny_checkpoint()), str(grid_model_file())
        image = str(render_manifest().parent / "face_0000.png")
        return {
            "run": [
                "run",
                "--model",
                model,
                "--synthetic",
                "4",
                "--backbone",
                "small",
                "--image-size",
                "64",
                "--batch-size",
                "4",
                "--steps",
                "1",
                "--workers",
                "0",
                "--out",
                str(out),
            ],
            "eval": [
                "eval",
                "--checkpoint",
                ckpt,
                "--model",
                model,
                "--synthetic",
                "2",
                "--out",
                str(out),
            ],
            "predict": [
                "predict",
                image,
                "--checkpoint",
                ckpt,
                "--model",
                model,
                "--out",
                str(out),
            ],
        }

    @pytest.mark.parametrize("command", ["run", "eval", "predict"])
    def test_out_is_an_existing_file(self, command, tmp_path, capsys):
        out = tmp_path / "face.png"
        out.write_bytes(b"x")
        assert_user_error(
            self._commands(out)[command], capsys, "--out", "face.png", "existing file"
        )
        assert out.read_bytes() == b"x"

    @pytest.mark.parametrize("command", ["run", "eval", "predict"])
    def test_out_below_a_file(self, command, tmp_path, capsys):
        (tmp_path / "f").write_bytes(b"x")
        assert_user_error(
            self._commands(tmp_path / "f" / "sub")[command], capsys, "--out", "not a folder"
        )

    @pytest.mark.parametrize("command", ["run", "eval", "predict"])
    def test_out_that_cannot_be_created(self, command, capsys):
        assert_user_error(
            self._commands("/proc/stn-train-test/x")[command],
            capsys,
            "--out",
            "/proc/stn-train-test/x",
        )


class TestSafetyNet:
    """main() turns file-system and decoding errors into one line and exit 2; a genuine bug
    keeps its traceback."""

    def _raise(self, monkeypatch, exc):
        import stn_train.cli.cmd_eval

        def boom(*args, **kwargs):
            raise exc

        monkeypatch.setattr(stn_train.cli.cmd_eval, "evaluate", boom)
        return ["eval", "--checkpoint", "c.pt", "--model", "m.h5", "--synthetic", "2", "--out", "o"]

    @pytest.mark.parametrize(
        "exc",
        [
            PermissionError(13, "Permission denied", "/data/x.h5"),
            FileNotFoundError(2, "No such file or directory", "/data/x.h5"),
            FileExistsError(17, "File exists", "/data/x.h5"),
            NotADirectoryError(20, "Not a directory", "/data/x.h5"),
            IsADirectoryError(21, "Is a directory", "/data/x.h5"),
        ],
    )
    def test_os_errors(self, exc, monkeypatch, capsys):
        assert_user_error(self._raise(monkeypatch, exc), capsys, "/data/x.h5", exc.strerror)

    def test_unicode_decode_error(self, monkeypatch, capsys):
        exc = UnicodeDecodeError("utf-8", b"\x89PNG", 0, 1, "invalid start byte")
        assert_user_error(self._raise(monkeypatch, exc), capsys, "not UTF-8 text")

    def test_a_bug_keeps_its_traceback(self, monkeypatch):
        args = self._raise(monkeypatch, ZeroDivisionError("bug"))
        with pytest.raises(ZeroDivisionError):
            main(args)


class TestWording:
    def test_checkpoint_of_another_grid_size_says_the_sizes(self, tmp_path):
        from stn_train.checkpoint import check_same_model
        from stn_train.errors import TrainError

        saved = {"n_params": 40, "res": 48, "hash": "a", "source": "grid48.h5"}
        current = {"n_params": 40, "res": 32, "hash": "b"}
        with pytest.raises(TrainError) as e:
            check_same_model(saved, current, tmp_path / "best.pt")
        message = str(e.value)
        assert "48 x 48" in message and "32 x 32" in message and "same size" not in message
        assert "grid48.h5" in message

    def test_eval_synthetic_0_names_the_option(self, tmp_path, capsys):
        assert_user_error(
            [
                "eval",
                "--checkpoint",
                str(tiny_checkpoint()),
                "--model",
                str(grid_model_file()),
                "--synthetic",
                "0",
                "--out",
                str(tmp_path / "e"),
            ],
            capsys,
            "--synthetic must be at least 1",
        )
        assert not (tmp_path / "e").exists()

    def test_help_texts(self, capsys, monkeypatch):
        monkeypatch.setenv("COLUMNS", "200")
        code, out, _ = run_cli(["run", "--help"], capsys)
        assert code == 0
        text = " ".join(out.replace("│", " ").split())
        assert " ." not in text, text
        assert "small [vgg16]." in text and "annotations [aflw21]." in text
        code, out, _ = run_cli(["fit", "--help"], capsys)
        assert code == 0
        assert "--pictures" in out and "--no-pictures" in out and "--no-no-pictures" not in out


@pytest.mark.parametrize("columns", ["60", "80"])
def test_help_shows_every_option_name_whole(capsys, monkeypatch, columns):
    """A 60- or 80-column terminal gets every command and option name whole, nothing cut
    with an ellipsis, and no line wider than the terminal."""
    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    group = typer.main.get_command(app)
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "…" not in out and "..." not in out.split("Commands:")[1], out
    for name in group.commands:
        assert_whole(out, name, "stn-train --help")
    for name, command in group.commands.items():
        code, out, _ = run_cli([name, "--help"], capsys)
        assert code == 0 and "…" not in out, (name, out)
        assert max(len(line) for line in out.splitlines()) <= int(columns), (name, out)
        for option in help_names(command):
            assert_whole(out, option, f"stn-train {name} --help")


def test_help_piped_shows_every_option_name_whole():
    """Piped to another program (no terminal, no COLUMNS), in a fresh process: the same."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        proc = subprocess.run(
            [sys.executable, "-m", "stn_train", name, "--help"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert "…" not in proc.stdout, (name, proc.stdout)
        for option in help_names(command):
            assert_whole(proc.stdout, option, f"stn-train {name} --help | cat")
