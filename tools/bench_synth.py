"""Benchmark: synthetic faces per second (stn_train.data.synthetic.SyntheticFaces).

Not a test. Renders 224 x 224 faces from a 112 x 112 grid model and prints images per second
for the ways a training run can use two CPU cores:

- ``threads``: one process, ``torch.set_num_threads(2)``, ``render_batch`` of a batch;
- ``workers``: two processes with one thread each (a DataLoader with ``num_workers=2``), each
  rendering its own batches; the figure is their sum;
- ``cpu``: images per CPU-second of one single-threaded process times the number of cores,
  the ceiling of the two above and the figure least disturbed by other programs sharing the
  machine (wall-clock figures are the best of several repeats).

The model: ``--model grid.h5`` if given; otherwise a 112 grid is built in a temporary folder
with ``bfm-prep synth``, ``build-expression``, ``uv-embed`` and ``uv-resample`` (the embedded
synthetic Basel-like model, with a colour model); if that fails, the original 3DMM-STN's
``model_112.mat`` from the reference data is converted with ``bfm-prep import-matlab`` (no
colour model: painted albedo).

Usage: python tools/bench_synth.py [--model grid.h5] [--batch 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def build_model(folder: Path) -> Path:
    """A 112 x 112 grid model: the synthetic Basel-like pipeline, else model_112.mat."""
    prep = str(BIN / "bfm-prep")
    grid = folder / "grid112.h5"
    syn = folder / "synth"
    steps = [
        [prep, "synth", str(syn)],
        [
            prep,
            "build-expression",
            "--bfm",
            str(syn / "01_MorphableModel.mat"),
            "--expression",
            str(syn / "Model_Expression.mat"),
            "--mapping",
            str(syn / "map_tddfa_to_basel.mat"),
            "--landmarks",
            f"aflw21={syn / 'Landmarks21_BFM.anl'}",
            "--out",
            str(folder / "model.h5"),
        ],
        [
            prep,
            "uv-embed",
            "--model",
            str(folder / "model.h5"),
            "--out",
            str(folder / "embedding.h5"),
        ],
        [
            prep,
            "uv-resample",
            "--model",
            str(folder / "model.h5"),
            "--uv",
            str(folder / "embedding.h5"),
            "--res",
            "112",
            "--out",
            str(grid),
        ],
    ]
    try:
        for cmd in steps:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        return grid
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        print(
            f"bfm-prep pipeline unavailable ({detail.strip().splitlines()[-1:]}); "
            "using model_112.mat",
            file=sys.stderr,
        )
    ref = Path(os.environ.get("STN_REFERENCE", REPO.parent / "shared" / "reference"))
    mat = ref / "3dmmasstn" / "model_112.mat"
    anl = ref / "3dmmasstn" / "landmarks" / "Landmarks21_112.anl"
    subprocess.run(
        [prep, "import-matlab", str(mat), "--out", str(grid), "--landmarks", f"aflw21={anl}"],
        check=True,
        capture_output=True,
    )
    return grid


def _dataset(model_path: str, threads: int):
    import torch
    from stn_core import UVGridModel
    from stn_train.data.synthetic import SyntheticFaces

    torch.set_num_threads(threads)
    model = UVGridModel.load(model_path)
    return SyntheticFaces(model, 1_000_000, 224, seed=0), model


def _time_batches(ds, batch: int, repeats: int, offset: int, clock) -> float:
    """Best time of ``repeats`` batches (after one warm-up), seconds."""
    ds.render_batch(range(offset, offset + batch))
    best = float("inf")
    for k in range(1, repeats + 1):
        start = offset + k * batch
        t = clock()
        ds.render_batch(range(start, start + batch))
        best = min(best, clock() - t)
    return best


def _worker(model_path, batch, repeats, offset, barrier, queue):
    ds, _ = _dataset(model_path, 1)
    ds.render_batch(range(offset, offset + batch))  # warm-up
    times = []
    for k in range(1, repeats + 1):
        barrier.wait()
        t = time.perf_counter()
        ds.render_batch(range(offset + k * batch, offset + (k + 1) * batch))
        times.append(time.perf_counter() - t)
    queue.put(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a stn-uv-grid-model file (default: build a 112 grid)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()

    tmp = None
    model_path = args.model
    if model_path is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
        t = time.perf_counter()
        model_path = str(build_model(tmp))
        print(f"built {model_path} in {time.perf_counter() - t:.0f} s")
    try:
        ds, model = _dataset(model_path, args.cores)
        print(f"model: {model}")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()}")
        b = args.batch

        best = _time_batches(ds, b, args.repeats, 0, time.perf_counter)
        print(f"threads: 1 process x {args.cores} threads, batch {b}: {b / best:7.1f} images/s")

        ctx = mp.get_context("spawn")
        barrier = ctx.Barrier(args.cores)
        queue = ctx.Queue()
        procs = [
            ctx.Process(
                target=_worker, args=(model_path, b, args.repeats, (1 + i) * 10_000, barrier, queue)
            )
            for i in range(args.cores)
        ]
        for p in procs:
            p.start()
        results = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        rate = sum(b / min(times) for times in results)
        print(f"workers: {args.cores} processes x 1 thread, batch {b}: {rate:7.1f} images/s")

        import torch

        torch.set_num_threads(1)
        cpu = _time_batches(ds, b, args.repeats, 500_000, time.thread_time)
        print(
            f"cpu: {b / cpu:7.1f} images per CPU-second x {args.cores} cores = "
            f"{args.cores * b / cpu:7.1f} images/s"
        )
        print(f"load average after: {os.getloadavg()}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
