#!/usr/bin/env python
"""The original 3DMM-STN demo on its own data: fit the model to each image's landmarks, flatten.

Reads ``3dmmasstn/demodata.mat`` (six 224 x 224 face photographs with 21 AFLW landmarks in
the original's convention: (x, y), y up, 1-based), ``3dmmasstn/model_112.mat`` (the
original's 112 x 112 grid model) and ``3dmmasstn/landmarks/Landmarks21_112.anl`` from the
reference folder (``--reference``, default ``$STN_REFERENCE`` or ``../shared/reference``
beside the repository). Fits theta with :func:`stn_core.fitting.fit_landmarks` (batched
Levenberg-Marquardt, replacing demo.m's fixed-step gradient descent), runs
:class:`stn_core.STN` at the fitted theta and writes, for each image, one PNG with four
panels: the input with the observed and fitted landmarks, the flattened 112 x 112 output,
the visibility mask and the masked output.

    python tools/demo_landmark_fit.py [--out out/demo_landmark_fit] [--reference DIR]
    python tools/demo_landmark_fit.py --bench 50 --threads 2     # timing only

:func:`time_fit_landmarks` is also the fit_landmarks part of ``tools/bench_stn.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FILES = {
    "data": "3dmmasstn/demodata.mat",
    "model": "3dmmasstn/model_112.mat",
    "landmarks": "3dmmasstn/landmarks/Landmarks21_112.anl",
}


def default_reference() -> Path:
    env = os.environ.get("STN_REFERENCE")
    return Path(env) if env else REPO.parent / "shared" / "reference"


def read_anl(path: Path) -> np.ndarray:
    """1-based indices, one a line, ``%`` comments -> 0-based int64."""
    vals = []
    for line in path.read_text().splitlines():
        line = line.split("%", 1)[0].strip()
        if line:
            vals.append(int(float(line)))
    return np.asarray(vals, dtype=np.int64) - 1


def load_demo(reference: Path):
    """(model, images (6, 3, 224, 224) float32 0..1, points (6, 21, 2) ours) from the
    reference folder. Raises FileNotFoundError naming the missing files."""
    import scipy.io as sio
    import torch
    from stn_core import UVGridModel
    from stn_core.conventions import labels_from_original

    missing = [str(reference / rel) for rel in FILES.values() if not (reference / rel).is_file()]
    if missing:
        raise FileNotFoundError("missing: " + ", ".join(missing))
    m = sio.loadmat(reference / FILES["model"])
    model = UVGridModel.from_arrays(
        m["shapeMU"],
        m["shapePC"],
        m["faces"].astype(np.int64) - 1,
        res=112,
        landmarks={"aflw21": read_anl(reference / FILES["landmarks"])},
        n_identity=5,
        source=str(reference / FILES["model"]),
    )
    d = sio.loadmat(reference / FILES["data"])
    images = np.ascontiguousarray(d["Images"].transpose(3, 2, 0, 1)) / 255.0  # N C H W
    labels = d["Labels"][0].transpose(2, 1, 0)  # (N, 21, 2): (x, y) y up, 1-based
    h = images.shape[2]
    points = labels_from_original(torch.as_tensor(labels, dtype=torch.float64), h)
    return model, torch.as_tensor(images, dtype=torch.float32), points


def time_fit_landmarks(
    reference: Path | None = None, repeats: int = 50, threads: int = 2, **fit_kwargs
) -> dict:
    """Time fit_landmarks on the six demo images (CPU, torch set to ``threads`` threads;
    fit_landmarks' own ``cpu_threads`` default, 1, applies unless given in ``fit_kwargs``).

    Returns {"median_s", "min_s", "repeats", "threads", "n_images", "errors_px" (list),
    "mean_error_px"}; the first (warm-up) call is not counted. Raises FileNotFoundError when
    the reference data is absent.
    """
    import torch
    from stn_core.fitting import fit_landmarks

    model, _, points = load_demo(reference or default_reference())
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fit = fit_landmarks(model, points, **fit_kwargs)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fit_landmarks(model, points, **fit_kwargs)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    times.sort()
    return {
        "median_s": times[len(times) // 2],
        "min_s": times[0],
        "repeats": repeats,
        "threads": threads,
        "n_images": len(points),
        "errors_px": [float(e) for e in fit.error_px],
        "mean_error_px": float(fit.error_px.mean()),
    }


def draw(path: Path, image, observed, fitted, flattened, vis, masked, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    ax = axes[0]
    ax.imshow(np.clip(image.transpose(1, 2, 0), 0, 1))
    ax.plot(
        observed[:, 0], observed[:, 1], "o", ms=6, mfc="none", mec="lime", mew=1.5, label="observed"
    )
    ax.plot(fitted[:, 0], fitted[:, 1], "x", ms=6, color="red", mew=1.5, label="fitted")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    axes[1].imshow(np.clip(flattened.transpose(1, 2, 0), 0, 1))
    axes[1].set_title("flattened (112 x 112 UV grid)", fontsize=10)
    axes[2].imshow(vis, cmap="gray", vmin=0, vmax=1)
    axes[2].set_title(f"visibility mask ({100 * vis.mean():.0f}% visible)", fontsize=10)
    axes[3].imshow(np.clip(masked.transpose(1, 2, 0), 0, 1))
    axes[3].set_title("masked output", fontsize=10)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/demo_landmark_fit"))
    ap.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="folder holding 3dmmasstn/ (default: $STN_REFERENCE or "
        "../shared/reference beside the repository)",
    )
    ap.add_argument(
        "--prior-weight",
        type=float,
        default=None,
        help="fit_landmarks prior weight (default: the library's)",
    )
    ap.add_argument(
        "--bench",
        type=int,
        default=0,
        metavar="N",
        help="only time fit_landmarks over N repeats (no pictures)",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's; --bench: 2)"
    )
    args = ap.parse_args(argv)

    import torch
    from stn_core import STN
    from stn_core.fitting import fit_landmarks

    reference = args.reference or default_reference()
    if args.bench:
        try:
            r = time_fit_landmarks(
                reference,
                args.bench,
                args.threads or 2,
                **({} if args.prior_weight is None else {"prior_weight": args.prior_weight}),
            )
        except FileNotFoundError as e:
            print(f"The original's demo data is absent ({e}).", file=sys.stderr)
            return 2
        print(
            f"fit_landmarks, {r['n_images']} demo images, torch threads {r['threads']}: median "
            f"{r['median_s'] * 1000:.1f} ms, min {r['min_s'] * 1000:.1f} ms over "
            f"{r['repeats']} runs; mean error {r['mean_error_px']:.3f} px"
        )
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, images, points = load_demo(reference)
    except FileNotFoundError as e:
        print(
            f"The original's demo data is absent, nothing to do ({e}).\n"
            f"Pass --reference DIR (the folder holding 3dmmasstn/) or set STN_REFERENCE.",
            file=sys.stderr,
        )
        return 2

    kw = {} if args.prior_weight is None else {"prior_weight": args.prior_weight}
    fit_landmarks(model, points, **kw)  # warm-up: the timing below is the steady state
    t0 = time.perf_counter()
    fit = fit_landmarks(model, points, **kw)
    elapsed = time.perf_counter() - t0

    with torch.no_grad():
        out = STN(model)(images, fit.theta.float())
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"fit_landmarks: {len(points)} images in {elapsed * 1000:.1f} ms "
        f"(torch set to {torch.get_num_threads()} CPU threads; fit_landmarks' default "
        "cpu_threads=1 runs the fit itself on one)"
    )
    paths = []
    for i in range(len(points)):
        err = float(fit.error_px[i])
        path = args.out / f"demo_{i + 1}.png"
        draw(
            path,
            images[i].numpy(),
            points[i].numpy(),
            fit.points[i].double().numpy(),
            out.flattened[i].numpy(),
            out.visibility[i, 0].numpy(),
            out.masked[i].numpy(),
            f"image {i + 1}: landmark error {err:.2f} px",
        )
        paths.append(path)
        print(
            f"  image {i + 1}: error {err:.3f} px, {int(fit.n_iter[i])} iterations "
            f"({fit.status[i]}), |alpha| = {float(fit.theta[i, 6:].norm()):.2f} -> {path}"
        )
    print(f"mean landmark error {float(fit.error_px.mean()):.3f} px; pictures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
