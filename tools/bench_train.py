"""Benchmark of a training step: images per second and the share of the step spent in the
STN part (grid generator, visibility, sampler and the four losses, forward and backward).

Rows (default):

- ``vgg16`` at 224 x 224, batch 64 (32 mirror pairs), bf16 autocast and channels_last, on
  CUDA when present (the original's setting; target on an H100: STN part <= 3 % of the step);
- ``small`` (the CPU CNN) at 224 x 224, batch 64, float32, on the CPU (``--cpu-size``,
  ``--cpu-batch`` change it).

Method: a fixed batch of rendered faces (``SyntheticFaces``) already on the device, Adam.
``full``: localiser -> STN -> training objective -> backward -> optimiser step, exactly the
step of ``stn-train run``. ``no STN``: the same step with the objective replaced by a squared
error on theta (the localiser's own cost). STN share = (full - no STN) / full. Forward
breakdown: the STN's stages timed alone (no gradient). CUDA events / host clock after
warm-up, medians of ``--steps`` repetitions.

Usage (from the repository root, after ``make demo`` made the grid model)::

    .venv/bin/python tools/bench_train.py                       # both rows
    .venv/bin/python tools/bench_train.py --rows cpu --steps 5   # CPU row only
    .venv/bin/python tools/bench_train.py --model out/demo/grid112.h5 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for pkg in ("stn-core", "stn-train"):
    sys.path.insert(0, str(REPO / "packages" / pkg / "src"))

from stn_core import STN, UVGridModel  # noqa: E402
from stn_core.geometry import initial_log_scale, project_theta  # noqa: E402
from stn_core.losses import landmark_loss, prior_loss, siamese_loss, symmetry_loss  # noqa: E402
from stn_core.sampler import select_backend, stn_flatten  # noqa: E402
from stn_core.visibility import visibility  # noqa: E402
from stn_train.data.synthetic import SyntheticFaces  # noqa: E402
from stn_train.data.transforms import hflip  # noqa: E402
from stn_train.localiser import build_localiser  # noqa: E402
from stn_train.train.losses import LossWeights, training_objective  # noqa: E402


def timer(device: torch.device):
    """A function timing ``fn()`` in seconds (CUDA events on CUDA, host clock otherwise)."""
    if device.type == "cuda":

        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
    else:

        def run(fn):
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

    return run


def faces(model: UVGridModel, batch: int, size: int, device) -> dict:
    """``batch`` images: batch / 2 rendered faces and their mirrors, on ``device``."""
    half = batch // 2
    data = SyntheticFaces(model.to("cpu"), half, size, seed=0)
    a = data.render_batch(range(half))
    b = hflip({k: a[k] for k in ("image", "landmarks", "visible")}, "aflw21")
    out = {k: torch.cat([a[k], b[k]]).to(device) for k in ("image", "landmarks", "visible")}
    out["theta"] = torch.cat([a["theta"], a["theta"]]).to(device)
    return out


def bench_row(
    name: str,
    backbone: str,
    size: int,
    batch: int,
    device: torch.device,
    bf16: bool,
    steps: int,
    warmup: int,
    model_path: Path,
) -> dict:
    model = UVGridModel.load(model_path, device=device)
    torch.manual_seed(0)
    net = build_localiser(
        backbone,
        model.n_params,
        (size, size),
        init_log_s=initial_log_scale(model.mean, (size, size), inside=model.inside),
    )
    channels_last = device.type == "cuda"
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    stn = STN(model).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    data = faces(model, batch, size, device)
    images = (
        data["image"].contiguous(memory_format=torch.channels_last)
        if channels_last
        else data["image"]
    )
    idx = model.landmark_indices("aflw21")
    mult = LossWeights().multipliers(size)
    mirrored = torch.ones(batch // 2, dtype=torch.bool, device=device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if bf16 and device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def step_full():
        with autocast:
            theta = net(images)
        theta = theta.float()
        out = stn(images.float(), theta)
        terms = training_objective(
            out, theta, data["landmarks"], data["visible"], idx, mult, batch // 2, None, mirrored
        )
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        opt.step()

    def step_plain():
        with autocast:
            theta = net(images)
        loss = ((theta.float() - data["theta"]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t = timer(device)
    net.train()
    for _ in range(warmup):
        t(step_full)
        t(step_plain)
    full, plain = [], []
    for _ in range(steps):  # interleaved, so drifting machine load hits both alike
        full.append(t(step_full))
        plain.append(t(step_plain))
    full_s, plain_s = statistics.median(full), statistics.median(plain)

    # Forward breakdown of the STN part (no gradient).
    with torch.no_grad():
        theta = net(images).float()
        x = images.float()
        stages = {}
        points_rot = {}

        def geo():
            points_rot["v"] = project_theta(theta, stn.mean, stn.basis)

        def vis():
            visibility(points_rot["v"][1], stn.faces, "normals")

        def samp():
            stn_flatten(x, theta, stn.mean, stn.basis, None)

        out = stn(x, theta)

        def losses():
            landmark_loss(out.points, data["landmarks"], idx, data["visible"])
            prior_loss(theta[:, 6:])
            symmetry_loss(out.masked, out.visibility)
            h = batch // 2
            siamese_loss(
                out.masked[:h],
                out.masked[h:].flip(-1),
                out.visibility[:h],
                out.visibility[h:].flip(-1),
            )

        for key, fn in (
            ("geometry", geo),
            ("visibility", vis),
            ("sampler", samp),
            ("losses", losses),
        ):
            for _ in range(warmup):
                t(fn)
            stages[key] = statistics.median(t(fn) for _ in range(steps))
    backend = select_backend(x, theta, stn.mean, stn.basis)
    return {
        "row": name,
        "backbone": backbone,
        "image_size": size,
        "batch": batch,
        "device": str(device),
        "bf16": bool(bf16 and device.type == "cuda"),
        "sampler_backend": backend,
        "grid_res": model.res,
        "step_ms": 1000 * full_s,
        "no_stn_step_ms": 1000 * plain_s,
        "images_per_s": batch / full_s,
        "stn_share": max(0.0, (full_s - plain_s) / full_s),
        "forward_ms": {k: 1000 * v for k, v in stages.items()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        type=Path,
        default=REPO / "out" / "demo" / "grid112.h5",
        help="UV-grid model (.h5); default out/demo/grid112.h5 from make demo",
    )
    p.add_argument("--rows", nargs="+", choices=("gpu", "cpu"), default=["gpu", "cpu"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--gpu-batch", type=int, default=64)
    p.add_argument("--cpu-size", type=int, default=224)
    p.add_argument("--cpu-batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if not args.model.is_file():
        print(
            f"bench_train: {args.model} does not exist; run make demo or pass --model.",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    if "gpu" in args.rows:
        if torch.cuda.is_available():
            rows.append(
                bench_row(
                    "gpu",
                    "vgg16",
                    224,
                    args.gpu_batch,
                    torch.device("cuda"),
                    True,
                    args.steps,
                    args.warmup,
                    args.model,
                )
            )
        else:
            print("bench_train: no CUDA device; the VGG-16 row is skipped.")
    if "cpu" in args.rows:
        rows.append(
            bench_row(
                "cpu",
                "small",
                args.cpu_size,
                args.cpu_batch,
                torch.device("cpu"),
                False,
                args.steps,
                args.warmup,
                args.model,
            )
        )
    machine = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    grid = rows[0]["grid_res"] if rows else "?"
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"threads, {machine}, torch {torch.__version__}, grid {grid}"
    )
    head = (
        f"{'row':4} {'backbone':8} {'size':>4} {'batch':>5} {'dtype':6} {'sampler':9} "
        f"{'img/s':>8} {'step ms':>8} {'no-STN ms':>9} {'STN share':>9}  forward ms "
        "(geometry / visibility / sampler / losses)"
    )
    print(head)
    for r in rows:
        f = r["forward_ms"]
        print(
            f"{r['row']:4} {r['backbone']:8} {r['image_size']:>4} {r['batch']:>5} "
            f"{'bf16' if r['bf16'] else 'fp32':6} {r['sampler_backend']:9} "
            f"{r['images_per_s']:>8.1f} {r['step_ms']:>8.1f} {r['no_stn_step_ms']:>9.1f} "
            f"{100 * r['stn_share']:>8.1f}%  {f['geometry']:.2f} / {f['visibility']:.2f} / "
            f"{f['sampler']:.2f} / {f['losses']:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
