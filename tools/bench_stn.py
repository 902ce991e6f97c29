"""Benchmark of the fused STN sampler: theta -> masked flattened image, forward + backward.

Variants (all compute ``stn_flatten`` with the gradient to theta; the images need none):

- ``fused``: the Triton kernel (``stn_flatten(..., backend="triton")``), CUDA only;
- ``eager``: the PyTorch reference ``stn_flatten_reference``;
- ``compiled``: ``torch.compile`` of the reference (compile time reported apart).

Memory-traffic floor, per forward + backward (the bytes that must cross device memory, each
at most once per pass; the backward re-reads what it needs rather than storing per-vertex
state, as the fused kernel does):

- forward: the image pixels the bilinear taps touch, each read once (the distinct in-image
  (b, c, y, x) taps of this theta: at most min(4 N, H W) per image and channel), mean and
  basis once (N * 3 * (K + 1) * 4 bytes, not once per image), the mask, theta, and the output
  written (B * C * N * element size);
- backward: the upstream gradient read (B * C * N * element size), the touched pixels again,
  mean and basis again, the mask, and d theta written.

floor_ms = floor bytes / copy bandwidth, where the bandwidth is measured on the same device by
a large tensor copy (bytes read + bytes written over its median time). Each variant's ratio is
its median time over floor_ms (1.0 would be bandwidth-perfect).

Timing: CUDA events around each forward + backward (host clock on CPU), after warm-up,
median of ``--reps`` repetitions; inputs rotate among several sets so that small batches are
not timed out of the L2 cache. Images are random, never zeros.

Usage (from the repository root)::

    PYTHONPATH=packages/stn-core/src python tools/bench_stn.py            # full grid
    PYTHONPATH=packages/stn-core/src python tools/bench_stn.py --quick    # smoke run
    python tools/bench_stn.py --device cpu --batch 1 4 --res 112 --variants eager compiled

On a machine without CUDA the fused variant is skipped with a note and the others run on the
CPU (use small --batch there). ``--json PATH`` also writes every figure.

Last, ``fit_landmarks`` is timed on the original's six demo images (``3dmmasstn/`` in the
reference folder: ``--reference``, default ``$STN_REFERENCE`` or ``../shared/reference``) on
the CPU with ``--fit-threads`` torch threads (target: under 0.5 s on 2 cores), through
:func:`demo_landmark_fit.time_fit_landmarks`; ``--no-fit`` leaves it out, and it is skipped with
a note when the reference data is absent.

``--fit-batch N [N ...]`` (default 1024; 0 leaves it out) also times fit_landmarks on batches
of N synthetic faces: 21 landmarks projected from random plausible thetas (yaw +-80 degrees,
pitch +-25, roll +-15, the face filling about 0.8 of a 224 x 224 image, shape coefficients
N(0, 1) clipped to +-3) plus Gaussian noise of 1 px per axis, all visible; fit_landmarks'
defaults (three starts, prior weight 1) with ``cpu_threads`` 1 and 2. The model is
``--fit-model`` (a stn-uv-grid-model HDF5 file with an ``aflw21`` landmark set), else the
original's model_112.mat (K = 10) from the reference folder, else an in-process synthetic
surface with 21 landmark vertices. It reports faces per second (median of ``--fit-repeats``
runs, at least 5) and the mean landmark error against the noisy and the clean points.
``--fit-only`` leaves out the sampler table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "packages" / "stn-core" / "src"))

from stn_core.geometry import project_theta  # noqa: E402
from stn_core.sampler import stn_flatten, stn_flatten_reference, triton_available  # noqa: E402

VARIANTS = ("fused", "eager", "compiled")
CHANNELS = 3


# ---------------------------------------------------------------------------------------------
# Inputs


def synthetic_model(res: int, k: int, device, seed: int = 0):
    """A face-sized smooth surface on an R x R grid: mean (N, 3) mm, basis (N, 3, K) mm.

    The grid spans 150 x 150 mm (row 0 at the top, y up), bulging towards the camera like a
    face; the components are smooth random fields of a few mm, as a PCA basis would be.
    """
    g = torch.Generator().manual_seed(seed)
    u = torch.linspace(-1, 1, res)
    vv, uu = torch.meshgrid(-u, u, indexing="ij")  # row 0 at the top: y = +75 mm
    z = 60 * torch.clamp(1 - 0.6 * uu**2 - 0.4 * vv**2, min=0)
    mean = torch.stack([75 * uu, 75 * vv, z], -1).reshape(-1, 3)
    coarse = torch.randn(1, 3 * k, 6, 6, generator=g) if k else torch.zeros(1, 0, 6, 6)
    fields = torch.nn.functional.interpolate(
        coarse, size=(res, res), mode="bicubic", align_corners=True
    )
    basis = 3.0 * fields.reshape(3, k, res * res).permute(2, 0, 1).contiguous()
    return mean.to(device), basis.to(device)


def load_model(path: str, device):
    from stn_core.grid_model import UVGridModel

    model = UVGridModel.load(path, device=device)
    return model.mean.contiguous(), model.basis.contiguous(), int(model.res)


def make_inputs(b, c, size, mean, basis, dtype, device, seed):
    """Random images (b, c, size, size), a near-frontal theta framing the face, a mask and an
    upstream gradient, all on ``device``."""
    g = torch.Generator().manual_seed(seed)
    n, _, k = basis.shape
    images = torch.rand(b, c, size, size, generator=g).to(device=device, dtype=dtype)
    extent = float(mean[:, :2].abs().max())
    theta = torch.zeros(b, 6 + k)
    theta[:, 0:3] = 0.2 * torch.randn(b, 3, generator=g)
    theta[:, 3:5] = (size - 1) / 2 + 3 * torch.randn(b, 2, generator=g)
    theta[:, 5] = math.log(0.45 * size / extent) + 0.05 * torch.randn(b, generator=g)
    theta[:, 6:] = torch.randn(b, k, generator=g)
    mask = (torch.rand(b, n, generator=g) > 0.1).float()
    grad = torch.randn(b, c, n, generator=g).to(dtype)
    return dict(images=images, theta=theta.to(device), mask=mask.to(device), grad=grad.to(device))


# ---------------------------------------------------------------------------------------------
# Floor


def touched_pixels(theta, mean, basis, h, w) -> int:
    """Distinct in-image pixels the bilinear taps read, summed over the batch (per channel)."""
    total = 0
    for i in range(theta.shape[0]):  # one image at a time keeps the index tensors small
        pts, _ = project_theta(theta[i : i + 1].double(), mean.double(), basis.double())
        x0 = torch.floor(pts[0, :, 0]).long()
        y0 = torch.floor(pts[0, :, 1]).long()
        xs = torch.cat([x0, x0 + 1, x0, x0 + 1])
        ys = torch.cat([y0, y0, y0 + 1, y0 + 1])
        ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        total += int(torch.unique(ys[ok] * w + xs[ok]).numel())
    return total


def floor_bytes(b, c, n, k, h, w, img_bytes, touched) -> dict:
    """The bytes a forward + backward must move (see the module docstring)."""
    model = n * 3 * (k + 1) * 4
    mask = b * n * 4
    theta = b * (6 + k) * 4
    fwd = touched * c * img_bytes + model + mask + theta + b * c * n * img_bytes
    bwd = b * c * n * img_bytes + touched * c * img_bytes + model + mask + 2 * theta
    return dict(forward=fwd, backward=bwd, total=fwd + bwd)


def copy_bandwidth(device, reps: int) -> float:
    """Bytes per second of a large device copy (read + write), median of ``reps``."""
    nbytes = (1 << 30) if device.type == "cuda" else (1 << 28)
    src = torch.rand(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    times = time_fn(lambda: dst.copy_(src), device, warmup=3, reps=max(reps, 5))
    return 2 * nbytes / (statistics.median(times) / 1e3)


# ---------------------------------------------------------------------------------------------
# Timing


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device, warmup: int, reps: int) -> list[float]:
    """Milliseconds of each of ``reps`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def make_step(variant, sets, mean, basis, compiled_fn):
    """A closure running forward + backward of one variant, rotating over input sets."""
    state = {"i": 0}

    def step():
        inp = sets[state["i"] % len(sets)]
        state["i"] += 1
        theta = inp["theta"].detach().requires_grad_(True)
        if variant == "fused":
            out = stn_flatten(inp["images"], theta, mean, basis, inp["mask"], backend="triton")
        elif variant == "eager":
            out = stn_flatten_reference(inp["images"], theta, mean, basis, inp["mask"])
        else:
            out = compiled_fn(inp["images"], theta, mean, basis, inp["mask"])
        out.backward(inp["grad"])
        return out, theta.grad

    return step


def check_fused(inp, mean, basis):
    """Max |fused - reference| over the output and over d theta (relative to its max)."""
    res = {}
    for name in ("fused", "eager"):
        theta = inp["theta"].detach().requires_grad_(True)
        backend = "triton" if name == "fused" else "reference"
        out = stn_flatten(inp["images"], theta, mean, basis, inp["mask"], backend=backend)
        out.backward(inp["grad"])
        res[name] = (out.detach().float(), theta.grad.float())
    (o1, g1), (o2, g2) = res["fused"], res["eager"]
    return (
        float((o1 - o2).abs().max()),
        float((g1 - g2).abs().max() / g2.abs().max().clamp_min(1e-30)),
    )


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, nargs="+", default=None, help="default 1 32 256")
    p.add_argument("--res", type=int, nargs="+", default=None, help="grid R; default 112 224")
    p.add_argument("--size", type=int, default=224, help="input image side (default 224)")
    p.add_argument(
        "--k",
        type=int,
        default=10,
        help="shape components of the synthetic model (default 10, as model_112.mat)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="a stn-uv-grid-model HDF5 file instead of the synthetic model (its R replaces --res)",
    )
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="image dtype (theta is float32)",
    )
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 30)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--quick",
        action="store_true",
        help="a fast smoke run: B 1 and 8 (CPU: 1 and 2), R 112, 5 repetitions",
    )
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    p.add_argument(
        "--no-fit",
        action="store_true",
        help="leave out the fit_landmarks timings (demo images and synthetic batches)",
    )
    p.add_argument(
        "--fit-repeats",
        type=int,
        default=None,
        help="timed fit_landmarks runs (default 50; --quick: 5)",
    )
    p.add_argument(
        "--fit-threads",
        type=int,
        default=2,
        help="torch CPU threads for the fit_landmarks timing (default 2)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="folder holding 3dmmasstn/ (default: $STN_REFERENCE or "
        "../shared/reference beside the repository)",
    )
    p.add_argument(
        "--fit-batch",
        type=int,
        nargs="+",
        default=[1024],
        help="time fit_landmarks on batches of this many synthetic faces (default 1024; 0: not)",
    )
    p.add_argument(
        "--fit-model",
        default=None,
        help="a stn-uv-grid-model HDF5 file (with an aflw21 landmark set) for the synthetic "
        "faces (default: the original's model_112.mat from the reference folder)",
    )
    p.add_argument(
        "--fit-only",
        action="store_true",
        help="only the fit_landmarks timings (leave out the sampler table)",
    )
    return p.parse_args(argv)


def bench_fit_landmarks(args, notes: list) -> dict | None:
    """fit_landmarks on the six demo images (CPU), or None with a note when it cannot run."""
    sys.path.insert(0, str(REPO / "tools"))
    from demo_landmark_fit import time_fit_landmarks

    repeats = args.fit_repeats or (5 if args.quick else 50)
    try:
        r = time_fit_landmarks(args.reference, repeats=repeats, threads=args.fit_threads)
    except FileNotFoundError as exc:
        notes.append(f"fit_landmarks: skipped, the original's demo data is absent ({exc})")
        return None
    cpu = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(
        f"fit_landmarks on the {r['n_images']} demo images ({cpu}, torch threads "
        f"{r['threads']}): median {r['median_s'] * 1e3:.1f} ms, min {r['min_s'] * 1e3:.1f} ms "
        f"over {r['repeats']} runs (target < 500 ms); mean landmark error "
        f"{r['mean_error_px']:.2f} px",
        flush=True,
    )
    return dict(r, machine=cpu)


def fit_batch_model(args):
    """(model, description) for the synthetic landmark faces: ``--fit-model``, else the
    original's model_112.mat, else a synthetic surface (any object with mean, basis and
    landmarks will do for fit_landmarks)."""
    from types import SimpleNamespace

    if args.fit_model:
        from stn_core.grid_model import UVGridModel

        model = UVGridModel.load(args.fit_model)
        return model, f"{args.fit_model} (K = {model.basis.shape[2]})"
    sys.path.insert(0, str(REPO / "tools"))
    from demo_landmark_fit import default_reference, load_demo

    try:
        model, _, _ = load_demo(args.reference or default_reference())
        return model, "the original's model_112.mat (K = 10)"
    except FileNotFoundError:
        mean, basis = synthetic_model(112, args.k, "cpu")
        g = torch.Generator().manual_seed(1)
        # 21 vertices in the central part of the surface, where a face's landmarks are.
        rows = torch.randint(25, 87, (21,), generator=g)
        cols = torch.randint(25, 87, (21,), generator=g)
        model = SimpleNamespace(
            mean=mean, basis=basis, landmarks={"aflw21": (rows * 112 + cols).tolist()}
        )
        return model, f"a synthetic surface (R = 112, K = {args.k}; reference data absent)"


def synthetic_landmark_faces(model, n: int, seed: int, noise_px: float = 1.0, size: int = 224):
    """Landmarks of ``n`` random faces (see the module docstring): (points (n, 21, 2) float64
    with noise, clean points (n, 21, 2), theta (n, 6 + K)), pixels of a size x size image."""
    from stn_core.geometry import euler_to_matrix, initial_log_scale, matrix_to_axis_angle

    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    mean, basis = model.mean.to(dt), model.basis.to(dt)
    k = basis.shape[2]

    def uniform(*shape):
        return 2 * torch.rand(*shape, generator=g, dtype=dt) - 1

    deg = math.pi / 180
    angles = uniform(n, 3) * torch.tensor([80.0, 25.0, 15.0], dtype=dt) * deg
    theta = torch.zeros(n, 6 + k, dtype=dt)
    theta[:, :3] = matrix_to_axis_angle(euler_to_matrix(angles))
    theta[:, 3:5] = (size - 1) / 2 + 10 * uniform(n, 2)
    theta[:, 5] = initial_log_scale(mean, (size, size), fill=0.8) + 0.1 * uniform(n)
    theta[:, 6:] = torch.randn(n, k, generator=g, dtype=dt).clamp(-3, 3)
    idx = torch.as_tensor(model.landmarks["aflw21"]).long()
    clean, _ = project_theta(theta, mean[idx], basis[idx])
    noisy = clean + noise_px * torch.randn(clean.shape, generator=g, dtype=dt)
    return noisy, clean, theta


def bench_fit_batch(args) -> list:
    """fit_landmarks on batches of synthetic faces (``--fit-batch``), cpu_threads 1 and 2."""
    from stn_core.fitting import fit_landmarks

    model, source = fit_batch_model(args)
    repeats = max(5, args.fit_repeats or 5)
    cpu = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    rows = []
    for n in args.fit_batch:
        if n <= 0:
            continue
        points, clean, _ = synthetic_landmark_faces(model, n, seed=1000 + n)
        for threads in (1, 2):
            fit = fit_landmarks(model, points, cpu_threads=threads)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fit_landmarks(model, points, cpu_threads=threads)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            to_clean = (fit.points.double() - clean).norm(dim=-1).mean()
            row = dict(
                batch=n,
                cpu_threads=threads,
                median_s=med,
                min_s=min(times),
                max_s=max(times),
                repeats=repeats,
                faces_per_s=n / med,
                mean_error_px=float(fit.error_px.mean()),
                mean_error_to_clean_px=float(to_clean),
                converged=float(fit.converged.double().mean()),
                mean_iterations=float(fit.n_iter.double().mean()),
                model=source,
                machine=cpu,
            )
            rows.append(row)
            print(
                f"fit_landmarks, {n} synthetic faces ({source}; {cpu}; cpu_threads {threads}): "
                f"median {med:.3f} s (min {min(times):.3f}, max {max(times):.3f}, {repeats} "
                f"runs) = {n / med:.0f} faces/s; mean error {row['mean_error_px']:.3f} px "
                f"(to the clean points {row['mean_error_to_clean_px']:.3f} px); converged "
                f"{100 * row['converged']:.1f} %, mean {row['mean_iterations']:.1f} iterations",
                flush=True,
            )
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    notes = []
    dev_name, bandwidth, rows = None, None, []
    if not args.fit_only:
        dev_name, bandwidth, rows = bench_sampler(args, notes)
    fit = None if args.no_fit else bench_fit_landmarks(args, notes)
    fit_batch = [] if args.no_fit else bench_fit_batch(args)
    for note in notes:
        print("note:", note)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                dict(
                    device=dev_name,
                    torch=torch.__version__,
                    bandwidth=bandwidth,
                    rows=rows,
                    fit_landmarks=fit,
                    fit_landmarks_batch=fit_batch,
                    notes=notes,
                ),
                indent=1,
            )
        )
    return 0


def bench_sampler(args, notes: list) -> tuple[str, float, list]:
    """The sampler table: (device name, copy bandwidth in bytes/s, one row per variant)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cpu = device.type == "cpu"
    if args.quick:
        batches = args.batch or ([1, 2] if cpu else [1, 8])
        resolutions = args.res or [112]
        reps = args.reps or 5
    else:
        batches = args.batch or [1, 32, 256]
        resolutions = args.res or [112, 224]
        reps = args.reps or 30
    dtype = getattr(torch, args.dtype)
    variants = list(args.variants)
    if "fused" in variants and (device.type != "cuda" or not triton_available()):
        variants.remove("fused")
        notes.append(
            "fused: skipped (needs a CUDA device and triton; here "
            f"device={device.type}, triton importable={triton_available()})"
        )

    if device.type == "cuda":
        dev_name = torch.cuda.get_device_name(device)
        l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20)
    else:
        dev_name = (
            f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} threads"
        )
        l2 = 32 << 20
    bandwidth = copy_bandwidth(device, reps)
    print(
        f"device: {dev_name}; torch {torch.__version__}; images {args.dtype}, C = {CHANNELS}, "
        f"{args.size} x {args.size}; copy bandwidth {bandwidth / 1e9:.1f} GB/s "
        f"(read + write of a {'1 GiB' if not cpu else '256 MiB'} copy)",
        flush=True,
    )

    compiled = None
    if "compiled" in variants:
        # Static shapes: each (B, R) gets its own specialised graph, as a training run would.
        compiled = torch.compile(stn_flatten_reference, dynamic=False)

    rows = []
    img_bytes = torch.finfo(dtype).bits // 8
    for res in resolutions:
        if args.model:
            mean, basis, res = load_model(args.model, device)
        else:
            mean, basis = synthetic_model(res, args.k, device)
        n, _, k = basis.shape
        for b in batches:
            per_set = b * CHANNELS * args.size**2 * img_bytes + 2 * b * CHANNELS * n * img_bytes
            n_sets = max(1, min(8, math.ceil(2 * l2 / per_set)))
            sets = [
                make_inputs(b, CHANNELS, args.size, mean, basis, dtype, device, seed=100 + i)
                for i in range(n_sets)
            ]
            touched = sum(
                touched_pixels(s["theta"].cpu(), mean.cpu(), basis.cpu(), args.size, args.size)
                for s in sets[:1]
            )
            fb = floor_bytes(b, CHANNELS, n, k, args.size, args.size, img_bytes, touched)
            floor_ms = fb["total"] / bandwidth * 1e3
            times = {}
            for variant in variants:
                row = dict(
                    device=dev_name,
                    dtype=args.dtype,
                    B=b,
                    R=res,
                    N=n,
                    K=k,
                    variant=variant,
                    floor_ms=floor_ms,
                    floor_bytes=fb["total"],
                    touched_per_image=touched / b,
                    sets=n_sets,
                )
                try:
                    step = make_step(variant, sets, mean, basis, compiled)
                    if variant == "compiled":
                        t0 = time.perf_counter()
                        step()
                        sync(device)
                        row["compile_s"] = time.perf_counter() - t0
                    if variant == "fused":
                        row["max_abs_err_out"], row["rel_err_dtheta"] = check_fused(
                            sets[0], mean, basis
                        )
                    ts = time_fn(step, device, args.warmup, reps)
                    row["median_ms"] = statistics.median(ts)
                    row["spread_ms"] = (min(ts), max(ts))
                    row["ratio_to_floor"] = row["median_ms"] / floor_ms
                    times[variant] = row["median_ms"]
                except Exception as exc:  # keep going: one variant failing must not hide the rest
                    row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                    traceback.print_exc(limit=3)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                rows.append(row)
                print(_line(row, times), flush=True)
            del sets
            if device.type == "cuda":
                torch.cuda.empty_cache()

    print()
    print(
        f"forward + backward of theta -> masked flattened image ({dev_name}; images "
        f"{args.dtype}, {args.size} x {args.size}, C = {CHANNELS}; median of {reps}; floor = "
        f"bytes that must move / {bandwidth / 1e9:.0f} GB/s measured copy bandwidth)"
    )
    print(_header())
    for row in rows:
        eager = next(
            (
                r.get("median_ms")
                for r in rows
                if r["B"] == row["B"] and r["R"] == row["R"] and r["variant"] == "eager"
            ),
            None,
        )
        print(_line(row, {"eager": eager}))
    return dev_name, bandwidth, rows


def _header() -> str:
    return (
        f"| {'B':>4} | {'R':>4} | {'K':>3} | {'variant':<9} | {'median ms':>10} | "
        f"{'floor ms':>9} | {'x floor':>8} | {'vs eager':>8} | notes"
    )


def _line(row, times) -> str:
    eager = times.get("eager")
    med = row.get("median_ms")
    speed = f"{eager / med:.2f}x" if (eager and med) else "-"
    notes = []
    if "spread_ms" in row:
        notes.append(f"min-max {row['spread_ms'][0]:.3g}-{row['spread_ms'][1]:.3g} ms")
    if "compile_s" in row:
        notes.append(f"compile {row['compile_s']:.1f} s")
    if "max_abs_err_out" in row:
        notes.append(
            f"vs reference: out {row['max_abs_err_out']:.1e}, d theta {row['rel_err_dtheta']:.1e}"
        )
    if "error" in row:
        notes.append("FAILED " + row["error"])
    med_s = f"{med:10.3f}" if med is not None else f"{'-':>10}"
    ratio = f"{row['ratio_to_floor']:8.1f}" if "ratio_to_floor" in row else f"{'-':>8}"
    return (
        f"| {row['B']:>4} | {row['R']:>4} | {row['K']:>3} | {row['variant']:<9} | {med_s} | "
        f"{row['floor_ms']:9.3f} | {ratio} | {speed:>8} | {'; '.join(notes)}"
    )


if __name__ == "__main__":
    sys.exit(main())
