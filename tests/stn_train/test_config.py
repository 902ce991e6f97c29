"""Run settings: the TOML file's keys are the `run` options, precedence, refusals."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import typer
from stn_train.cli import app
from stn_train.config import (
    RESUME_OVERRIDABLE,
    RunConfig,
    config_to_toml,
    merge_for_resume,
    read_config_file,
    resolve_run_config,
    toml_key,
    write_config,
)
from stn_train.errors import TrainError


def run_option_names() -> set[str]:
    command = typer.main.get_command(app).commands["run"]
    return {p.name for p in command.params}


class TestKeys:
    def test_config_keys_are_the_run_options(self):
        keys = {f.name for f in fields(RunConfig)}
        assert run_option_names() - {"config"} == keys

    def test_every_option_is_accepted_in_a_file(self, tmp_path):
        cfg = RunConfig(model="m.h5", out="o", synthetic=10, steps=3, weights="w.pt")
        path = tmp_path / "c.toml"
        write_config(cfg, path)
        text = path.read_text()
        for f in fields(RunConfig):
            if getattr(cfg, f.name) is not None and f.name != "resume":
                assert f"\n{toml_key(f.name)} = " in text, f.name
        back = read_config_file(path)
        for key, value in back.items():
            if key in ("model", "out", "weights"):
                # Written absolute (relative to the folder the run was started in).
                assert Path(value) == Path(getattr(cfg, key)).absolute()
            else:
                assert value == getattr(cfg, key), key

    def test_resume_overridable_names_exist(self):
        assert RESUME_OVERRIDABLE <= {f.name for f in fields(RunConfig)}


class TestPrecedence:
    def test_defaults_file_command_line(self, tmp_path):
        path = tmp_path / "c.toml"
        path.write_text('batch-size = 16\nlr = 0.01\nbackbone = "small"\nimage_size = 96\n')
        cfg = resolve_run_config({"lr": 0.5}, path)
        assert cfg.batch_size == 16  # file
        assert cfg.image_size == 96  # file, underscore spelling
        assert cfg.lr == 0.5  # command line wins
        assert cfg.epochs == RunConfig().epochs  # default

    def test_relative_paths_are_relative_to_the_file(self, tmp_path):
        (tmp_path / "sub").mkdir()
        path = tmp_path / "sub" / "c.toml"
        path.write_text('model = "grid.h5"\nout = "/abs/run"\n')
        cfg = resolve_run_config({}, path)
        assert Path(cfg.model) == tmp_path / "sub" / "grid.h5"
        assert cfg.out == "/abs/run"

    def test_int_accepted_for_float(self, tmp_path):
        path = tmp_path / "c.toml"
        path.write_text("lr = 1\n")
        assert resolve_run_config({}, path).lr == 1.0


class TestRefusals:
    @pytest.mark.parametrize(
        "text, words",
        [
            ("bach-size = 3\n", ["unknown key 'bach-size'", "batch-size"]),
            ('batch-size = "big"\n', ["batch-size", "not an int"]),
            ("bf16 = 1\n", ["bf16", "bool"]),
            ("[train]\nlr = 1\n", ["train", "table"]),
            ("lr = = 1\n", ["not valid TOML"]),
            ("resume = true\n", ["unknown key 'resume'"]),
        ],
    )
    def test_bad_file(self, tmp_path, text, words):
        path = tmp_path / "c.toml"
        path.write_text(text)
        with pytest.raises(TrainError) as e:
            read_config_file(path)
        for w in words:
            assert w in str(e.value)
        assert "\n" not in str(e.value)

    def test_missing_file(self, tmp_path):
        with pytest.raises(TrainError, match="does not exist"):
            read_config_file(tmp_path / "none.toml")

    @pytest.mark.parametrize(
        "kw, words",
        [
            (dict(out="o"), ["--model"]),
            (dict(model="m"), ["--out"]),
            (dict(model="m", out="o"), ["exactly one of --data", "--synthetic"]),
            (dict(model="m", out="o", data="d", synthetic=3), ["exactly one"]),
            (dict(model="m", out="o", synthetic=3, batch_size=7), ["odd", "--no-pairs"]),
            (dict(model="m", out="o", synthetic=3, backbone="vgg19"), ["--backbone", "vgg16"]),
            (dict(model="m", out="o", synthetic=3, lr=float("nan")), ["--lr"]),
            (dict(model="m", out="o", synthetic=3, image_size=16), ["--image-size"]),
            (dict(model="m", out="o", synthetic=0), ["--synthetic"]),
            (dict(model="m", out="o", synthetic=3, synthetic_margin=-0.1), ["--synthetic-margin"]),
            (dict(model="m", out="o", synthetic=3, synthetic_anchor="mid"), ["--synthetic-anchor"]),
            (dict(model="m", out="o", synthetic=3, teacher_shape=-1.0), ["--teacher-shape"]),
        ],
    )
    def test_validate(self, kw, words):
        """The command line reads the options' names; a library caller, the settings'."""
        with pytest.raises(TrainError) as e:
            RunConfig(**kw).validate()
        for w in words:
            assert w in e.value.for_cli()
        assert "--" not in str(e.value)

    def test_odd_batch_without_pairs_is_fine(self):
        RunConfig(model="m", out="o", synthetic=3, batch_size=7, pairs=False).validate()


class TestResumeMerge:
    saved = RunConfig(model="/m.h5", out="/run", synthetic=10, lr=1e-3, steps=10).to_dict()

    def test_saved_settings_win_and_overridable_apply(self):
        given = RunConfig(model="/m.h5", out="/run", steps=20, workers=0)
        merged = merge_for_resume(self.saved, given, {"model", "out", "steps", "workers"})
        assert merged.steps == 20 and merged.workers == 0
        assert merged.lr == 1e-3 and merged.synthetic == 10 and merged.resume

    def test_conflicting_setting_refused(self):
        given = RunConfig(model="/m.h5", out="/run", lr=0.5)
        with pytest.raises(TrainError, match="lr 0.5 differs from the resumed run's 0.001") as e:
            merge_for_resume(self.saved, given, {"lr"})
        assert "--lr 0.5 differs from the resumed run's 0.001" in e.value.for_cli()

    def test_other_data_path_refused(self):
        """Another data file would change the batches: refused, naming the option. (The grid
        model may come from another path: the checkpoint checks its arrays, see
        test_train_loop.test_resume_with_other_model_content.)"""
        saved = dict(self.saved, synthetic=None, data="/d.jsonl")
        given = RunConfig(model="/m.h5", out="/run", data="/other.jsonl")
        with pytest.raises(TrainError, match="data") as e:
            merge_for_resume(saved, given, {"data"})
        assert "--data /other.jsonl differs" in e.value.for_cli()

    def test_moved_folder_and_model_path_are_taken(self):
        given = RunConfig(model="/new/m.h5", out="/moved/run")
        merged = merge_for_resume(self.saved, given, {"model", "out"})
        assert merged.out == "/moved/run" and merged.model == "/new/m.h5"
        merged = merge_for_resume(self.saved, RunConfig(out="/elsewhere"), set())
        assert merged.out == "/elsewhere" and merged.model == "/m.h5"


def test_toml_text_is_readable_back(tmp_path):
    cfg = RunConfig(model='/a "b"/m.h5', out="/o", data="/d.jsonl", bf16=False, clip_grad=2.5)
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(cfg))
    back = read_config_file(path)
    assert back["model"] == '/a "b"/m.h5' and back["bf16"] is False and back["clip_grad"] == 2.5
