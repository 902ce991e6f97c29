"""Benchmark of stn_core.fitting.fit_image, the full photometric fit (not a timed test).

Seconds per image with 80 identity, 29 expression and 80 albedo components on an R = 112 grid
(12,544 vertices, P = 6 + 109 + 80 + 27 = 222 parameters), 224 x 224 images:

- CPU: one image at a time on ``--cpu-threads`` threads (default 2), median over
  ``--cpu-images`` different faces after one warm-up fit. Target: under 3 s per image.
- GPU (when CUDA is present): one batch of ``--gpu-batch`` faces (default 256), after a
  warm-up batch; seconds for the batch divided by its size. Target: under 20 ms per image.

The model: bfm-prep's pipeline on its synthetic Basel-format model (``write_synthetic`` with
80 identity, 80 colour and 29 expression components on a 20,000-vertex mesh ->
``build_model`` -> ``embed_model`` -> ``resample_to_grid`` at R = 112), i.e. a face-shaped grid
model of exactly the Basel sizes; built once into ``--model`` (default: a cache file in the
system temporary folder) or read from there. The faces: rendered by stn_core.renderer with
random pose (yaw up to 30 degrees), shape, albedo (0.7 standard deviations) and SH lighting,
1% Gaussian noise, and the true landmarks plus 1 px noise.

    python tools/bench_fit.py                    # CPU part (and GPU part if CUDA is present)
    python tools/bench_fit.py --no-gpu --cpu-images 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from stn_core import UVGridModel, axis_angle_to_matrix, project_theta
from stn_core.fitting import fit_image
from stn_core.renderer import render
from stn_core.shading import sh_ambient, sh_directional

N_SHAPE, N_EXP, N_COLOR, RES = 80, 29, 80, 112
SIZE = (224, 224)


def build_model(path: Path) -> Path:
    """The Basel-size synthetic grid model, through bfm-prep's pipeline (cached at path)."""
    if path.is_file():
        return path
    from bfm_prep.artifact import write_grid
    from bfm_prep.build import build_model as build
    from bfm_prep.embedding import embed_model
    from bfm_prep.resample import resample_to_grid
    from bfm_prep.synth import write_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        files = write_synthetic(
            tmp, seed=0, n_vertices=20000, n_shape=N_SHAPE, n_color=N_COLOR, n_exp=N_EXP
        )
        mm = build(
            files["bfm"],
            files["expression"],
            files["mapping"],
            n_shape=N_SHAPE,
            n_exp=N_EXP,
            landmarks={"aflw21": files["aflw21"]},
            n_color=N_COLOR,
        )
        write_grid(path, resample_to_grid(mm, embed_model(mm).uv, RES))
    return path


def faces(model: UVGridModel, b: int, seed: int, device):
    """b rendered faces (B, 3, H, W), their noisy landmarks (B, 21, 2) and true theta."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.float32

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dt)

    k, kc = model.n_components, model.color_basis.shape[2]
    theta = torch.zeros(b, 6 + k, dtype=dt)
    theta[:, 0] = 0.1 * randn(b)
    theta[:, 1] = math.radians(30) * (2 * torch.rand(b, generator=g) - 1)
    theta[:, 2] = 0.1 * randn(b)
    theta[:, 3] = (SIZE[1] - 1) / 2 + 4 * randn(b)
    theta[:, 4] = (SIZE[0] - 1) / 2 + 4 * randn(b)
    theta[:, 5] = math.log(0.9) + 0.05 * randn(b)
    theta[:, 6:] = 0.7 * randn(b, k)
    beta = 0.7 * randn(b, kc)
    light = randn(b, 3)
    light[:, 2] = light[:, 2].abs() + 1.5
    sh = sh_ambient(torch.full((3,), 0.55), batch=b) + sh_directional(
        light, torch.tensor([0.7, 0.65, 0.6])
    )
    m = model
    theta, beta, sh = theta.to(device), beta.to(device), sh.to(device)
    albedo = m.color_mean + (beta @ m.color_basis.reshape(-1, kc).T).reshape(b, -1, 3)
    background = torch.full((b, 3, *SIZE), 0.3, device=device)
    images = render(m, theta, albedo, SIZE, sh=sh, background=background).image
    images = (images + 0.01 * randn(*images.shape).to(device)).clamp(0, 1)
    points = project_theta(theta, m.mean, m.basis)[0][:, m.landmarks["aflw21"]]
    points = points + randn(*points.shape).to(device)
    return images, points, theta


def rotation_error_deg(r1, r2):
    rel = axis_angle_to_matrix(r1.double()).transpose(1, 2) @ axis_angle_to_matrix(r2.double())
    cos = (rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return torch.rad2deg(torch.acos(cos.clamp(-1, 1)))


def bench_cpu(model: UVGridModel, n_images: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    images, points, theta = faces(model, n_images + 1, seed=1, device="cpu")
    fit_image(model, images[:1], points[:1])  # warm-up (one-time library initialisation)
    times, iters, lm, rms, rot = [], [], [], [], []
    for i in range(1, n_images + 1):
        t0 = time.perf_counter()
        fit = fit_image(model, images[i : i + 1], points[i : i + 1])
        times.append(time.perf_counter() - t0)
        iters.append(int(fit.n_iter[0]))
        lm.append(float(fit.landmark_error_px[0]))
        rms.append(float(fit.photometric_rms[0]))
        rot.append(float(rotation_error_deg(fit.theta[:, :3], theta[i : i + 1, :3])[0]))
        print(
            f"  image {i}: {times[-1]:.2f} s, {iters[-1]} iterations, landmarks "
            f"{lm[-1]:.2f} px, photometric RMS {rms[-1]:.4f}, rotation error {rot[-1]:.2f} deg, "
            f"{fit.status[0]}"
        )
    return dict(
        median_s=statistics.median(times),
        min_s=min(times),
        max_s=max(times),
        iterations=statistics.median(iters),
    )


def bench_gpu(model: UVGridModel, batch: int) -> dict:
    dev = torch.device("cuda")
    m = model.to(dev)
    images, points, theta = faces(m, batch, seed=2, device=dev)
    warm_images, warm_points, _ = faces(m, batch, seed=3, device=dev)
    fit_image(m, warm_images, warm_points)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fit = fit_image(m, images, points)
    torch.cuda.synchronize()
    total = time.perf_counter() - t0
    rot = rotation_error_deg(fit.theta[:, :3], theta[:, :3])
    return dict(
        total_s=total,
        per_image_ms=1000 * total / batch,
        iterations=float(fit.n_iter.float().median()),
        converged=float(fit.converged.float().mean()),
        landmarks_px=float(fit.landmark_error_px.median()),
        rotation_deg=float(rot.median()),
        photometric_rms=float(fit.photometric_rms.median()),
        device=torch.cuda.get_device_name(dev),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model",
        type=Path,
        default=Path(tempfile.gettempdir()) / "stn_bench_fit_grid112_80_29_80.h5",
    )
    ap.add_argument("--cpu-images", type=int, default=3)
    ap.add_argument("--cpu-threads", type=int, default=2)
    ap.add_argument("--gpu-batch", type=int, default=256)
    ap.add_argument("--no-cpu", action="store_true")
    ap.add_argument("--no-gpu", action="store_true")
    args = ap.parse_args()
    model = UVGridModel.load(build_model(args.model))
    print(f"model: {model} (P = {6 + model.n_components + model.color_basis.shape[2] + 27})")
    if not args.no_cpu:
        print(f"CPU, {args.cpu_threads} threads, one image at a time:")
        r = bench_cpu(model, args.cpu_images, args.cpu_threads)
        print(
            f"CPU: median {r['median_s']:.2f} s per image (min {r['min_s']:.2f}, max "
            f"{r['max_s']:.2f}), median {r['iterations']} LM iterations; target < 3 s"
        )
    if not args.no_gpu:
        if torch.cuda.is_available():
            r = bench_gpu(model, args.gpu_batch)
            print(
                f"GPU ({r['device']}), batch {args.gpu_batch}: {r['per_image_ms']:.1f} ms per "
                f"image ({r['total_s']:.2f} s for the batch), median {r['iterations']} "
                f"iterations, {100 * r['converged']:.0f}% converged, median landmarks "
                f"{r['landmarks_px']:.2f} px, rotation {r['rotation_deg']:.2f} deg, "
                f"photometric RMS {r['photometric_rms']:.4f}; target < 20 ms"
            )
        else:
            print("GPU: CUDA is not available here; skipped.")


if __name__ == "__main__":
    main()
