"""The command line: user errors are one line on stderr and exit status 2; commands work."""

from __future__ import annotations

import shutil
import subprocess
import sys

import h5py
import pytest

from stn_train.cli import main
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
        assert_user_error(["run", "--model", str(tmp_path / "none.h5"), "--synthetic", "4",
                           "--out", str(tmp_path / "r")], capsys, "none.h5", "no such file")

    def test_run_needs_data(self, tmp_path, capsys):
        assert_user_error(["run", "--model", str(grid_model_file()), "--out", str(tmp_path)],
                          capsys, "--data", "--synthetic")

    def test_run_bad_config_key(self, tmp_path, capsys):
        cfg = tmp_path / "c.toml"
        cfg.write_text("learning-rate = 1\n")
        assert_user_error(["run", "--config", str(cfg)], capsys, "unknown key 'learning-rate'")

    def test_run_bad_choice(self, tmp_path, capsys):
        assert_user_error(["run", "--model", str(grid_model_file()), "--synthetic", "4",
                           "--out", str(tmp_path), "--optimizer", "lbfgs"], capsys,
                          "--optimizer 'lbfgs'")

    def test_run_bad_manifest_line(self, tmp_path, capsys):
        bad = tmp_path / "m.jsonl"
        bad.write_text('{"image": "a.png", "landmarks": [[1, 2, 7]]}\n')
        assert_user_error(["run", "--model", str(grid_model_file()), "--data", str(bad),
                           "--out", str(tmp_path / "r"), "--backbone", "small"], capsys,
                          "line 1", "visibility 7")

    def test_run_missing_weights(self, tmp_path, capsys):
        assert_user_error(["run", "--model", str(grid_model_file()), "--synthetic", "8",
                           "--out", str(tmp_path / "r"), "--backbone", "small",
                           "--image-size", "64", "--batch-size", "4",
                           "--weights", str(tmp_path / "w.pt")], capsys, "w.pt")

    def test_eval_checkpoint_of_another_model(self, tmp_path, capsys, other_model):
        assert_user_error(["eval", "--checkpoint", str(tiny_checkpoint()), "--model",
                           str(other_model), "--synthetic", "4", "--out", str(tmp_path)],
                          capsys, "another grid model")

    def test_eval_missing_checkpoint(self, tmp_path, capsys):
        assert_user_error(["eval", "--checkpoint", str(tmp_path / "c.pt"), "--model",
                           str(grid_model_file()), "--synthetic", "4", "--out", str(tmp_path)],
                          capsys, "c.pt", "does not exist")

    def test_predict_missing_image(self, tmp_path, capsys):
        assert_user_error(["predict", str(tmp_path / "x.jpg"), "--checkpoint",
                           str(tiny_checkpoint()), "--model", str(grid_model_file()),
                           "--out", str(tmp_path)], capsys, "x.jpg")

    def test_usage_error_is_exit_2(self, capsys):
        code, _, err = run_cli(["run", "--bogus"], capsys)
        assert code == 2 and "--bogus" in err


class TestCommands:
    def test_run_eval_predict(self, tmp_path, capsys):
        run_dir = tmp_path / "run"
        code, out, err = run_cli(
            ["run", "--model", str(grid_model_file()), "--synthetic", "16", "--val-synthetic",
             "4", "--out", str(run_dir), "--backbone", "small", "--image-size", "64",
             "--batch-size", "8", "--steps", "2", "--workers", "0", "--lr", "3e-4"], capsys)
        assert code == 0, err
        assert "2 steps" in out and str(run_dir / "checkpoints") in out
        ckpt = run_dir / "checkpoints" / "best.pt"
        code, out, err = run_cli(["eval", "--checkpoint", str(ckpt), "--model",
                                  str(grid_model_file()), "--synthetic", "4", "--out",
                                  str(tmp_path / "ev")], capsys)
        assert code == 0, err
        assert "NME box" in out and "pose" in out
        image = render_manifest().parent / "face_0000.png"
        code, out, err = run_cli(["predict", str(image), "--checkpoint", str(ckpt), "--model",
                                  str(grid_model_file()), "--out", str(tmp_path / "pr")], capsys)
        assert code == 0, err
        assert (tmp_path / "pr" / "face_0000.obj").is_file()

    def test_config_file_and_resume(self, tmp_path, capsys):
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'model = "{grid_model_file()}"\nsynthetic = 16\nval-synthetic = 4\n'
            'backbone = "small"\nimage-size = 64\nbatch-size = 8\nsteps = 2\nworkers = 0\n'
            'lr = 3e-4\n'
        )
        run_dir = tmp_path / "run"
        code, _, err = run_cli(["run", "--config", str(cfg), "--out", str(run_dir)], capsys)
        assert code == 0, err
        assert "image-size = 64" in (run_dir / "config.toml").read_text()
        code, out, err = run_cli(["run", "--out", str(run_dir), "--resume", "--steps", "3"],
                                 capsys)
        assert code == 0, err
        assert "3 steps" in out
        assert_user_error(["run", "--out", str(run_dir), "--resume", "--lr", "0.1"], capsys,
                          "--lr 0.1 differs")

    def test_module_entry_point(self):
        done = subprocess.run([sys.executable, "-m", "stn_train", "version"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.startswith("stn-train ")
