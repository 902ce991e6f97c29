"""Many processes: the global-batch sampler, and a two-process gloo run (torchrun) that
matches a one-process run of the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from stn_train.checkpoint import load_checkpoint
from stn_train.train.distributed import GlobalBatchSampler, epoch_seed
from stn_train.train.run_log import read_run_log

from tests.stn_train.train_helpers import grid_model_file, render_manifest


class TestGlobalBatchSampler:
    def batches(self, n, global_batch, world, epoch=0, start=0):
        out = []
        for rank in range(world):
            s = GlobalBatchSampler(range(n), global_batch, rank, world, seed=7)
            s.set_epoch(epoch)
            s.set_start(start)
            idx = list(s)
            assert len(idx) == len(s)
            per = global_batch // world
            out.append([idx[i : i + per] for i in range(0, len(idx), per)])
        # step k's global batch: the ranks' k-th batches together
        return [sorted(sum((r[k] for r in out), [])) for k in range(len(out[0]))]

    @pytest.mark.parametrize("world", [2, 4])
    def test_same_global_batches_for_any_world_size(self, world):
        one = self.batches(23, 8, 1, epoch=3)
        assert len(one) == 2  # 23 // 8 full batches, the rest left out
        assert self.batches(23, 8, world, epoch=3) == one

    def test_epochs_differ_and_start_skips(self):
        assert self.batches(40, 8, 1, epoch=0) != self.batches(40, 8, 1, epoch=1)
        assert self.batches(40, 8, 2, epoch=1, start=3) == self.batches(40, 8, 1, epoch=1)[3:]

    def test_refusals(self):
        from stn_train.errors import TrainError

        with pytest.raises(TrainError, match="8 is not divisible by the 3 processes"):
            GlobalBatchSampler(range(10), 8, 0, 3)
        with pytest.raises(TrainError, match="5 samples, fewer than one global batch"):
            GlobalBatchSampler(range(5), 8, 0, 1)

    def test_seeds_are_independent_streams(self):
        assert epoch_seed(0, 1) != epoch_seed(1, 0)
        assert 0 <= epoch_seed(123, 4) < 2**63


def _run(args: list[str], nproc: int, tmp_path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "stn_train",
            "run",
            *args,
        ]
    else:
        cmd = [sys.executable, "-m", "stn_train", "run", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_gloo_processes_match_one(tmp_path):
    common = [
        "--model",
        str(grid_model_file()),
        "--data",
        str(render_manifest()),
        "--backbone",
        "small",
        "--image-size",
        "64",
        "--batch-size",
        "8",
        "--steps",
        "4",
        "--lr",
        "1e-3",
        "--schedule",
        "none",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--val-every",
        "100000",
        "--checkpoint-every",
        "0",
        "--log-every",
        "1",
        "--seed",
        "11",
    ]
    _run(common + ["--out", str(tmp_path / "one")], 1, tmp_path)
    _run(common + ["--out", str(tmp_path / "two")], 2, tmp_path)

    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4 and len(b["rng"]) == 2
    for k, v in a["localiser"].items():
        torch.testing.assert_close(b["localiser"][k], v, rtol=1e-4, atol=2e-5, msg=k)
    la, lb = (
        [r["loss"] for r in read_run_log(tmp_path / d / "metrics.jsonl") if r["kind"] == "train"]
        for d in ("one", "two")
    )
    assert len(la) == len(lb) == 4
    torch.testing.assert_close(torch.tensor(lb), torch.tensor(la), rtol=1e-4, atol=0)
    assert la[-1] != la[0]  # it trained
    # only rank 0 wrote files
    assert not list((tmp_path / "two").glob("**/*rank*"))


def test_the_network_is_freed_before_the_group_closes(tmp_path, monkeypatch):
    """``train`` drops the network (DDP under torchrun, with its reducer's gloo work) before it
    destroys the process group: left to the garbage collector, it outlives ``train`` in the
    reference cycles of the drawing code and is freed at interpreter shutdown, after the group,
    where a torchrun process can abort after a run that succeeded."""
    import weakref

    import stn_train.train.loop as loop
    from stn_train.train import train

    from tests.stn_train.train_helpers import small_run_config

    nets, closed_with_net_alive = [], []
    real_setup, real_close = loop._Trainer.setup, loop.DistContext.close

    def setup(self):
        real_setup(self)
        nets.append(weakref.ref(self.net))

    def close(self):
        closed_with_net_alive.append(nets[0]() is not None)
        real_close(self)

    monkeypatch.setattr(loop._Trainer, "setup", setup)
    monkeypatch.setattr(loop.DistContext, "close", close)
    cfg = small_run_config(data=str(render_manifest()), out=str(tmp_path / "run"), steps=2)
    train(cfg)
    assert len(nets) == 1 and closed_with_net_alive == [False]
