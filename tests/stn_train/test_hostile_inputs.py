"""What a hostile (or unlucky) user meets: damaged grid models, folders given for files,
moved run folders, runs refused at their start, killed writes, file modes, tiny images."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from PIL import Image
from stn_train.checkpoint import load_checkpoint, save_checkpoint
from stn_train.config import RunConfig
from stn_train.errors import TrainError
from stn_train.outputs import atomic_write, write_text
from stn_train.train import train
from stn_train.train.run_log import read_run_log

from tests.stn_train.test_cli import assert_user_error, run_cli
from tests.stn_train.train_helpers import (
    grid_model_file,
    render_manifest,
    small_run_config,
    tiny_checkpoint,
)


def _damaged_grid(tmp_path, dataset: str, data) -> str:
    path = tmp_path / "damaged.h5"
    shutil.copy(grid_model_file(), path)
    with h5py.File(path, "r+") as f:
        del f[dataset]
        f.create_dataset(dataset, data=data)
    return str(path)


class TestDamagedGridModel:
    """A grid whose numbers are strings or not finite is refused before any work, in one line
    naming the dataset (it used to train with every step skipped, or crash)."""

    @pytest.mark.parametrize("how", ["strings", "nan", "inf"])
    def test_run(self, tmp_path, capsys, how):
        with h5py.File(grid_model_file(), "r") as f:
            shape = f["shape/basis"].shape
        data = {
            "strings": np.full(shape, b"0.5"),
            "nan": np.full(shape, np.nan),
            "inf": np.full(shape, np.inf),
        }[how]
        model = _damaged_grid(tmp_path, "shape/basis", data)
        args = ["run", "--model", model, "--synthetic", "8", "--out", str(tmp_path / "r")]
        args += ["--backbone", "small", "--image-size", "64", "--steps", "1", "--device", "cpu"]
        assert_user_error(args, capsys, "damaged.h5", "basis")
        assert not (tmp_path / "r").exists()

    def test_eval_and_predict(self, tmp_path, capsys):
        with h5py.File(grid_model_file(), "r") as f:
            shape = f["shape/mean"].shape
        model = _damaged_grid(tmp_path, "shape/mean", np.full(shape, np.nan))
        ckpt = str(tiny_checkpoint())
        assert_user_error(
            ["eval", "--checkpoint", ckpt, "--model", model, "--synthetic", "2", "--out",
             str(tmp_path / "e")],
            capsys, "mean holds",
        )  # fmt: skip
        image = tmp_path / "face.png"
        Image.new("RGB", (64, 64)).save(image)
        assert_user_error(
            ["predict", str(image), "--checkpoint", ckpt, "--model", model, "--out",
             str(tmp_path / "p")],
            capsys, "mean holds",
        )  # fmt: skip
        assert not (tmp_path / "e").exists() and not (tmp_path / "p").exists()


class TestFolderGivenForAFile:
    def test_model(self, tmp_path, capsys):
        args = ["run", "--model", str(tmp_path), "--synthetic", "8", "--out", str(tmp_path / "r")]
        assert_user_error(args, capsys, "is a folder, not a file")

    def test_checkpoint(self, tmp_path, capsys):
        args = ["eval", "--checkpoint", str(tmp_path), "--model", str(grid_model_file())]
        args += ["--synthetic", "2", "--out", str(tmp_path / "e")]
        assert_user_error(args, capsys, "checkpoint", "is a folder, not a file")

    def test_weights_and_config(self, tmp_path, capsys):
        base = ["run", "--model", str(grid_model_file()), "--synthetic", "8"]
        base += ["--out", str(tmp_path / "r")]
        assert_user_error(base + ["--weights", str(tmp_path)], capsys, "is a folder")
        assert_user_error(base + ["--config", str(tmp_path)], capsys, "config file", "folder")
        assert not (tmp_path / "r").exists()


class TestRunFolder:
    def _run(self, out, **kw):
        cfg = small_run_config(
            data=str(render_manifest()),
            out=str(out),
            batch_size=4,
            checkpoint_every=2,
            val_every=10_000,
            **kw,
        )
        return train(cfg, explicit=set(kw) | {"out"})

    def test_a_moved_run_folder_resumes(self, tmp_path):
        self._run(tmp_path / "a", steps=2)
        shutil.move(tmp_path / "a", tmp_path / "moved")
        result = self._run(tmp_path / "moved", steps=4, resume=True)
        assert result.steps == 4 and result.run_dir == tmp_path / "moved"
        assert load_checkpoint(tmp_path / "moved" / "checkpoints" / "last.pt")["step"] == 4
        assert [r["step"] for r in read_run_log(tmp_path / "moved" / "metrics.jsonl")][-1] == 4
        assert str(tmp_path / "moved") in (tmp_path / "moved" / "config.toml").read_text()

    def test_a_copied_run_resumes_from_its_own_config_without_out(self, tmp_path, capsys):
        self._run(tmp_path / "a", steps=2)
        shutil.copytree(tmp_path / "a", tmp_path / "copy")
        cfg = tmp_path / "copy" / "config.toml"
        code, out, err = run_cli(["run", "--config", str(cfg), "--resume", "--steps", "3"], capsys)
        assert code == 0, err
        assert load_checkpoint(tmp_path / "copy" / "checkpoints" / "last.pt")["step"] == 3
        assert load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["step"] == 2

    def test_resume_may_name_the_grid_model_at_its_new_path(self, tmp_path):
        self._run(tmp_path / "a", steps=2)
        moved_model = tmp_path / "grid_moved.h5"
        shutil.copy(grid_model_file(), moved_model)
        result = self._run(tmp_path / "a", steps=3, resume=True, model=str(moved_model))
        assert result.steps == 3

    def test_a_run_refused_at_its_start_leaves_no_folder(self, tmp_path, capsys):
        weights = tmp_path / "garbage.pt"
        weights.write_bytes(b"not a state dict")
        args = ["run", "--model", str(grid_model_file()), "--synthetic", "8", "--backbone"]
        args += ["small", "--weights", str(weights), "--out", str(tmp_path / "r")]
        assert_user_error(args, capsys, "garbage.pt")
        assert not (tmp_path / "r").exists()


class TestWrites:
    def test_a_killed_writes_temporary_is_removed_by_the_next_write(self, tmp_path):
        target = tmp_path / "last.pt"
        script = (
            "import sys, time\n"
            "from stn_train.outputs import atomic_write\n"
            "with atomic_write(sys.argv[1], 'wb') as f:\n"
            "    f.write(b'x' * 1000)\n"
            "    print('writing', flush=True)\n"
            "    time.sleep(60)\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "writing"
        temporaries = list(tmp_path.glob(".last.pt.*.tmp"))
        assert len(temporaries) == 1
        save_checkpoint(target, {"step": 1})  # the writer is alive: its file stays
        assert temporaries[0].exists()
        proc.kill()  # kill -9: no clean-up of its own
        proc.wait()
        assert temporaries[0].exists()
        old = time.time() - 60
        os.utime(temporaries[0], (old, old))
        save_checkpoint(target, {"step": 2})
        assert not list(tmp_path.glob(".*.tmp"))
        assert load_checkpoint(target)["step"] == 2

    def test_sigterm_removes_the_temporary_and_exits_143(self, tmp_path):
        target = tmp_path / "x.txt"
        script = (
            "import signal, sys, time\n"
            "import stn_train.cli as cli\n"
            "from stn_train.outputs import atomic_write\n"
            "signal.signal(signal.SIGTERM, cli._terminated)\n"
            "with atomic_write(sys.argv[1]) as f:\n"
            "    f.write('partial')\n"
            "    print('writing', flush=True)\n"
            "    time.sleep(60)\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        assert not list(tmp_path.iterdir())

    def test_files_get_the_umask_mode_not_mkstemps(self, tmp_path):
        umask = os.umask(0o022)
        os.umask(umask)
        save_checkpoint(tmp_path / "c.pt", {"step": 0})
        write_text(tmp_path / "t.txt", "x")
        for name in ("c.pt", "t.txt"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name

    def test_a_failed_write_leaves_the_old_file_and_no_temporary(self, tmp_path):
        write_text(tmp_path / "a.txt", "old")
        with pytest.raises(RuntimeError), atomic_write(tmp_path / "a.txt") as f:
            f.write("new")
            raise RuntimeError("disk full")
        assert (tmp_path / "a.txt").read_text() == "old"
        assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


class TestSmaller:
    @pytest.mark.parametrize("size", [0, 1, 31])
    def test_image_size_minimum_is_said_once(self, size):
        with pytest.raises(TrainError) as e:
            RunConfig(model="m", out="o", synthetic=3, image_size=size).validate()
        assert e.value.for_cli() == f"--image-size must be at least 32 pixels, got {size}."

    def test_a_tiny_image_is_predicted_with_a_warning(self, tmp_path, capsys):
        tiny = tmp_path / "dot.png"
        Image.new("RGB", (1, 1), (200, 150, 120)).save(tiny)
        args = ["predict", str(tiny), "--checkpoint", str(tiny_checkpoint()), "--model"]
        args += [str(grid_model_file()), "--out", str(tmp_path / "p"), "--device", "cpu"]
        code, out, err = run_cli(args, capsys)
        assert code == 0, err
        assert "1 image" in out
        warning = [ln for ln in err.splitlines() if ln.startswith("stn-train: warning: ")]
        assert len(warning) == 1 and "dot.png" in warning[0] and "1 x 1 pixels" in warning[0]


def test_damaged_grid_through_the_library_is_a_train_error(tmp_path):
    with h5py.File(grid_model_file(), "r") as f:
        shape = f["shape/std"].shape
    model = _damaged_grid(tmp_path, "shape/std", -np.ones(shape))
    with pytest.raises(TrainError, match="std must be positive"):
        train(small_run_config(synthetic=8, model=model, out=str(tmp_path / "r"), steps=1))
    assert not (tmp_path / "r").exists()
