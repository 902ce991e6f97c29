"""One process or many (torchrun): process group, device, sampler, collectives.

``torchrun --nproc-per-node N -m stn_train run ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous variables; :func:`init_distributed` reads them and joins
the process group (``nccl`` on CUDA, ``gloo`` on the CPU). Without them it is one process.
Multi-node runs use torchrun's usual rendezvous options (``--nnodes``, ``--rdzv-endpoint``).

Same result for any number of processes (up to floating-point order): the global batch is
fixed (``--batch-size`` is the global one, split evenly over the processes), the order of the
samples is one permutation per epoch drawn from ``(seed, epoch)`` and cut into consecutive
global batches (:class:`GlobalBatchSampler`), per-sample randomness comes from
``(seed, epoch, index)`` (:func:`stn_train.data.dataset.sample_seed`), and the losses divide
by the global batch's counts (:mod:`stn_train.train.losses`).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from stn_train.errors import TrainError
from stn_train.runtime import resolve_device

__all__ = [
    "DistContext",
    "init_distributed",
    "GlobalBatchSampler",
    "epoch_seed",
]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for the sample order of ``epoch`` (independent streams per (seed, epoch))."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, np.uint64)[0] >> 1)


@dataclass
class DistContext:
    """Where this process stands: rank, world size, device and backend (None: one process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, draws and writes checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over processes of ``tensor`` (a new tensor; no gradient)."""
        if not self.enabled:
            return tensor
        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any_true(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise TrainError(f"environment variable {name}={value!r} is not an integer.") from None


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Join torchrun's process group when its variables are set, else one process.

    Args:
        device: ``"cpu"``, ``"cuda"``, or None (CUDA when available). Under torchrun on CUDA
            each process takes ``cuda:LOCAL_RANK``.
        timeout_s: the collectives' timeout.

    Raises:
        TrainError: CUDA asked for but absent, or more local processes than GPUs.
    """
    dev = resolve_device(device)
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world <= 1:
        if dev.type == "cuda":
            dev = dev if dev.index is not None else torch.device("cuda", 0)
            torch.cuda.set_device(dev)
        return DistContext(device=dev)
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise TrainError(
                f"LOCAL_RANK {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                "start at most as many processes per node as there are GPUs."
            )
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": dev} if dev.type == "cuda" else {}),
        )
    return DistContext(rank, world, local_rank, dev, backend)


class GlobalBatchSampler(DistributedSampler):
    """A DistributedSampler that cuts one permutation per epoch into global batches.

    Epoch e's order is ``randperm(n)`` seeded by :func:`epoch_seed` ``(seed, e)``; step k of
    the epoch uses positions ``[k G, (k + 1) G)`` (G the global batch), of which process r
    takes the r-th consecutive slice of ``G / world`` samples. The last ``n mod G`` samples of
    each permutation are left out (every step has a full global batch). The union over
    processes of one step's samples is therefore the same for any world size.

    ``set_epoch(e)`` and ``set_start(k)`` (skip the first k batches: resuming mid-epoch).
    Yields indices for a DataLoader with ``batch_size = G / world`` and ``drop_last=True``.
    """

    def __init__(
        self, dataset, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0
    ):
        n = len(dataset)
        if global_batch % world_size:
            raise TrainError(
                f"a global batch of {global_batch} is not divisible by the {world_size} "
                "processes; pick a multiple of the process count."
            )
        if n < global_batch:
            raise TrainError(
                f"the training set has {n} samples, fewer than one global batch "
                f"({global_batch}); lower --batch-size or add data."
            )
        super().__init__(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.global_batch = int(global_batch)
        self.per_rank = self.global_batch // world_size
        self.steps_per_epoch = n // self.global_batch
        self.n = n
        self.start_batch = 0

    def set_start(self, batch: int) -> None:
        """Skip the first ``batch`` batches of the current epoch (once set, until set again)."""
        self.start_batch = int(batch)

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of epoch ``epoch`` (n,) long."""
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self):
        perm = self.order(self.epoch)
        lo = self.rank * self.per_rank
        for k in range(self.start_batch, self.steps_per_epoch):
            base = k * self.global_batch + lo
            yield from perm[base : base + self.per_rank].tolist()

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch - self.start_batch) * self.per_rank
