"""Checkpoints: atomic writes, RNG round trips, the model fingerprint and clear refusals."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch
from stn_core import UVGridModel
from stn_train import checkpoint as ck
from stn_train.errors import TrainError


def tiny_model(res: int = 6, k: int = 3, seed: int = 0, landmarks=None) -> UVGridModel:
    g = np.random.default_rng(seed)
    rows, cols = np.divmod(np.arange(res * res), res)
    mean = np.stack([cols - res / 2, res / 2 - rows, np.zeros(res * res)], 1) * 10.0
    r, c = np.meshgrid(np.arange(res - 1), np.arange(res - 1), indexing="ij")
    v = (r * res + c).ravel()
    faces = np.concatenate(
        [np.stack([v, v + res, v + 1], 1), np.stack([v + 1, v + res, v + res + 1], 1)]
    )
    basis = g.normal(size=(res * res, 3, k))
    return UVGridModel.from_arrays(
        mean, basis, faces, res, landmarks=landmarks or {"aflw21": np.arange(21) % (res * res)}
    )


class TestFingerprint:
    def test_same_arrays_same_hash(self):
        a, b = ck.grid_model_fingerprint(tiny_model()), ck.grid_model_fingerprint(tiny_model())
        assert a["hash"] == b["hash"] and a["n_params"] == 9 and a["res"] == 6

    @pytest.mark.parametrize("change", ["basis", "landmarks", "components"])
    def test_any_change_changes_it(self, change):
        base = ck.grid_model_fingerprint(tiny_model())
        other = {
            "basis": lambda: tiny_model(seed=1),
            "landmarks": lambda: tiny_model(landmarks={"aflw21": np.arange(21)[::-1] % 36}),
            "components": lambda: tiny_model(k=4),
        }[change]()
        fp = ck.grid_model_fingerprint(other)
        assert fp["hash"] != base["hash"]
        with pytest.raises(TrainError) as e:
            ck.check_same_model(base, fp, "run/last.pt")
        msg = str(e.value)
        assert "run/last.pt" in msg and "grid model" in msg and "\n" not in msg
        if change == "components":
            assert "9 parameters" in msg and "--model has 10" in e.value.for_cli()


class TestAtomicSave:
    def test_round_trip_weights_only(self, tmp_path):
        state = {"step": 3, "x": torch.arange(4), "rng": [ck.rng_state()], "config": {"a": None}}
        ck.save_checkpoint(tmp_path / "c.pt", state)
        back = ck.load_checkpoint(tmp_path / "c.pt")
        assert back["step"] == 3 and torch.equal(back["x"], torch.arange(4))
        assert back["format"] == ck.FORMAT
        assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]

    def test_failed_write_keeps_the_old_file(self, tmp_path, monkeypatch):
        path = tmp_path / "last.pt"
        ck.save_checkpoint(path, {"step": 1})

        def broken(obj, f, *a, **k):
            f.write(b"partial")
            raise OSError("disk full")

        monkeypatch.setattr(torch, "save", broken)
        with pytest.raises(OSError):
            ck.save_checkpoint(path, {"step": 2})
        monkeypatch.undo()
        assert ck.load_checkpoint(path)["step"] == 1
        assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class TestRefusals:
    def test_missing(self, tmp_path):
        with pytest.raises(TrainError, match="does not exist; pass a file written by stn-train"):
            ck.load_checkpoint(tmp_path / "none.pt")

    def test_garbage(self, tmp_path):
        (tmp_path / "g.pt").write_bytes(b"not a checkpoint at all")
        with pytest.raises(TrainError, match="cannot be read"):
            ck.load_checkpoint(tmp_path / "g.pt")

    def test_other_torch_file(self, tmp_path):
        torch.save({"state_dict": {}}, tmp_path / "w.pt")
        with pytest.raises(TrainError, match="not a stn-train checkpoint"):
            ck.load_checkpoint(tmp_path / "w.pt")

    def test_newer_version(self, tmp_path):
        torch.save({"format": ck.FORMAT, "version": ck.VERSION + 1}, tmp_path / "n.pt")
        with pytest.raises(TrainError, match="upgrade stn-train"):
            ck.load_checkpoint(tmp_path / "n.pt")

    def test_other_model(self, tmp_path):
        ck.save_checkpoint(
            tmp_path / "c.pt", {"grid_model": ck.grid_model_fingerprint(tiny_model())}
        )
        with pytest.raises(TrainError, match="another grid model"):
            ck.load_checkpoint(tmp_path / "c.pt", ck.grid_model_fingerprint(tiny_model(seed=2)))
        ck.load_checkpoint(tmp_path / "c.pt", ck.grid_model_fingerprint(tiny_model()))

    def test_restore_localiser_refuses_other_model(self, tmp_path):
        from stn_train.localiser import build_localiser

        model = tiny_model()
        net = build_localiser("small", model.n_params, (64, 64))
        ck.save_checkpoint(
            tmp_path / "c.pt",
            {
                "grid_model": ck.grid_model_fingerprint(model),
                "localiser": net.state_dict(),
                "backbone": "small",
                "image_size": 64,
            },
        )
        restored, _ = ck.restore_localiser(tmp_path / "c.pt", model)
        x = torch.rand(2, 3, 64, 64)
        torch.testing.assert_close(restored(x), net.eval()(x))
        with pytest.raises(TrainError, match="9 parameters .* model has 10") as e:
            ck.restore_localiser(tmp_path / "c.pt", tiny_model(k=4))
        assert re.search("9 parameters .* --model has 10", e.value.for_cli())


def test_rng_round_trip():
    state = ck.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    ck.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random(), np.random.randn())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2:] == b[2:]
