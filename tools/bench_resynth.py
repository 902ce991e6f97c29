"""Benchmark: a localiser trained on faces re-rendered from real photographs
(``stn-train synthesize``) against one trained on rendered synthetic faces alone, tested on
real photographs it has not seen.

Data: the original 3DMM-STN's six demo photographs (224 x 224 face crops, 21 AFLW labels)
and its ``model_112.mat`` (5 identity + 5 expression components, no colour model), read from
the reference folder (``--reference``, default ``$STN_REFERENCE`` or ``../shared/reference``)
by ``tools/demo_landmark_fit.load_demo``; the model is written as a grid artifact by
``tools/bench_real.write_grid_artifact`` and the photos with their labels as PNGs and a
manifest by ``stn_train.data.import_demodata``.

1. ``--test`` photos (default 5 and 6, 1-based) are held out. The others are the sources of
   ``stn_train.synthesize.synthesize_faces`` (a landmark fit, since the model has no colour;
   ``--per-face`` views each, yaw up to 75 degrees), written to ``OUT/synth``.
2. Localisers are trained with the same settings (the demo's: small CNN at 112 x 112, batch
   32, lr 1e-3, 60 warm-up steps, gradient norm clipped at 100; ``--steps``) on:
   ``synthetic``: ``--synthetic`` rendered faces (``SyntheticFaces``, framed like the
   manifest crops: ``synthetic_margin`` 0.25 around the landmark box, centred);
   ``resynth``: the re-rendered photographs' manifest; ``mixed`` (with ``--mix N``): the
   re-rendered photographs plus N rendered faces written as PNGs into one manifest.
3. Every localiser sees the held-out photos as a manifest's evaluation samples
   (``ManifestDataset(train=False)``: the square window around the 21 labels with a quarter
   margin each side, resized to the network's input: the crop rule training used); the error
   is the mean distance of the 21 projected model landmarks to the labels, converted to the
   224-pixel photographs' pixels. ``fit_landmarks`` on each photo's own labels is the floor
   the model can reach.

Six photos are few: the figure says whether the re-rendered faces carry something the
rendered faces lack for these two photos, with the variance of two test images and one
training run per setting; it does not estimate an error on a population of faces.

Usage (from the repository root)::

    .venv/bin/python tools/bench_resynth.py --out out/resynth               # 300 steps each
    .venv/bin/python tools/bench_resynth.py --out out/resynth --mix 2000 --steps 150
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for pkg in ("stn-core", "stn-train", "bfm-prep"):
    sys.path.insert(0, str(REPO / "packages" / pkg / "src"))
sys.path.insert(0, str(REPO / "tools"))

from bench_real import SETTINGS, write_grid_artifact  # noqa: E402
from demo_landmark_fit import FILES, default_reference, load_demo  # noqa: E402
from stn_core import fit_landmarks, project_theta  # noqa: E402
from stn_train.checkpoint import restore_localiser  # noqa: E402
from stn_train.config import RunConfig  # noqa: E402
from stn_train.data import ManifestDataset, import_demodata  # noqa: E402
from stn_train.data.manifest import ManifestEntry, read_manifest, write_manifest  # noqa: E402
from stn_train.data.synthetic import SyntheticFaces  # noqa: E402
from stn_train.outputs import write_png  # noqa: E402
from stn_train.runtime import load_grid_model  # noqa: E402
from stn_train.synthesize import synthesize_faces  # noqa: E402
from stn_train.train import train  # noqa: E402

CROP_MARGIN = 0.25  # ManifestDataset's default window margin


def held_out_errors(checkpoint: Path, model, manifest: Path) -> np.ndarray:
    """(B,) mean landmark error per held-out photo, in the photo's pixels."""
    net, ckpt = restore_localiser(checkpoint, model)
    size = int(ckpt["image_size"])
    data = ManifestDataset(manifest, size, "aflw21", train=False, strict=True)
    photos = read_manifest(manifest)
    idx = model.landmark_indices("aflw21")
    out = []
    for i, entry in enumerate(photos):
        sample = data[i]
        with torch.no_grad():
            theta = net(sample["image"][None]).double()
        pts = project_theta(theta, model.mean.double(), model.basis.double())[0][0, idx]
        target = sample["landmarks"].double()
        err = (pts - target).norm(dim=-1).mean()
        # The window maps photo pixels to network pixels by one scale: spreads give it.
        ratio = np.ptp(entry.landmarks, 0).max() / float(np.ptp(target.numpy(), 0).max())
        out.append(float(err) * ratio)
    return np.asarray(out)


def write_rendered(model, n: int, size: int, seed: int, folder: Path) -> list[ManifestEntry]:
    """``n`` rendered synthetic faces as PNG files, with their manifest entries."""
    faces = SyntheticFaces(model, n, size, seed=seed, margin=CROP_MARGIN, anchor="centre")
    entries = []
    for start in range(0, n, 64):
        batch = faces.render_batch(range(start, min(n, start + 64)))
        for k in range(batch["image"].shape[0]):
            path = write_png(
                folder / f"rendered_{start + k:05d}.png", batch["image"][k].permute(1, 2, 0)
            )
            entries.append(
                ManifestEntry(
                    image=path,
                    landmarks=batch["landmarks"][k].double().numpy(),
                    visible=batch["visible"][k].double().numpy(),
                )
            )
    return entries


def run(
    name: str, out: Path, grid: Path, steps: int, seed: int, batch_size: int, **data
) -> tuple[Path, float]:
    run_dir = out / f"run_{name}"
    if run_dir.exists():
        sys.exit(f"bench_resynth: {run_dir} exists; remove it or pick another --out.")
    cfg = RunConfig(
        model=str(grid), out=str(run_dir), steps=steps, val_every=steps, checkpoint_every=0,
        pictures=4, seed=seed, **{**SETTINGS, "batch_size": batch_size}, **data,
    )  # fmt: skip
    t0 = time.perf_counter()
    train(cfg)
    return run_dir / "checkpoints" / "last.pt", time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "out" / "resynth")
    ap.add_argument("--reference", type=Path, default=None)
    ap.add_argument("--test", default="5,6", help="held-out photos, 1-based, comma-separated")
    ap.add_argument("--per-face", type=int, default=100, help="views per training photo")
    ap.add_argument("--steps", type=int, default=300, help="training steps per localiser")
    ap.add_argument("--synthetic", type=int, default=20000, help="rendered faces (baseline)")
    ap.add_argument("--mix", type=int, default=0, help="rendered faces added to 'mixed' (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--background", choices=("photo", "synthetic"), default="photo",
        help="the re-rendered views' backgrounds (synthesize_faces' backgrounds)",
    )  # fmt: skip
    ap.add_argument(
        "--skip-synthetic", action="store_true",
        help="do not train the synthetic-only localiser (its figures do not depend on the "
        "re-rendered views; a run with the same seed and steps gives them)",
    )  # fmt: skip
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument(
        "--batch-size", type=int, default=SETTINGS["batch_size"],
        help=f"training batch (default {SETTINGS['batch_size']}, the demo's)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    load_start = os.getloadavg()[0]  # the machine's other work, said with the figures
    torch.set_num_threads(args.threads)
    reference = args.reference or default_reference()
    try:
        model, photos, target = load_demo(reference)
    except FileNotFoundError as e:
        print(f"bench_resynth: the original's demo data is absent, skipped ({e}).", file=sys.stderr)
        return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    grid = out / "grid112.h5"
    if not grid.is_file():
        write_grid_artifact(reference, grid)
    grid_model = load_grid_model(grid)
    entries = read_manifest(import_demodata(reference / FILES["data"], out / "photos"))
    test = sorted({int(k) - 1 for k in args.test.split(",")})
    train_idx = [i for i in range(len(entries)) if i not in test]
    write_manifest([entries[i] for i in train_idx], out / "photos" / "train.jsonl")
    test_manifest = write_manifest([entries[i] for i in test], out / "photos" / "test.jsonl")

    t0 = time.perf_counter()
    synth = synthesize_faces(
        [out / "photos" / "train.jsonl"], grid, out / "synth", args.per_face, seed=args.seed,
        device="cpu", cpu_threads=args.threads, backgrounds=args.background,
    )  # fmt: skip
    synth_seconds = time.perf_counter() - t0
    print(f"synthesized {synth.n_views} views of {len(train_idx)} photos in {synth_seconds:.0f} s")

    results, seconds = {}, {}
    if not args.skip_synthetic:
        ckpt, seconds["synthetic"] = run(
            "synthetic", out, grid, args.steps, args.seed, args.batch_size,
            synthetic=args.synthetic,
            synthetic_margin=CROP_MARGIN, synthetic_anchor="centre",
        )  # fmt: skip
        results["synthetic"] = held_out_errors(ckpt, grid_model, test_manifest)
    ckpt, seconds["resynth"] = run(
        "resynth", out, grid, args.steps, args.seed, args.batch_size, data=str(synth.manifest)
    )
    results["resynth"] = held_out_errors(ckpt, grid_model, test_manifest)
    if args.mix > 0:
        mixed = read_manifest(synth.manifest)
        mixed += write_rendered(grid_model, args.mix, 224, args.seed, out / "rendered")
        manifest = write_manifest(mixed, out / "mixed.jsonl")
        ckpt, seconds["mixed"] = run(
            "mixed", out, grid, args.steps, args.seed, args.batch_size, data=str(manifest)
        )
        results["mixed"] = held_out_errors(ckpt, grid_model, test_manifest)

    fit = fit_landmarks(model.double(), target[test], image_size=tuple(photos.shape[-2:]))
    floor = (fit.points.double() - target[test]).norm(dim=-1).mean(1).numpy()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
    machine += f"load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    record = {
        "machine": machine,
        "held_out": [i + 1 for i in test],
        "sources": [i + 1 for i in train_idx],
        "per_face": args.per_face,
        "views": synth.n_views,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "synthetic": args.synthetic,
        "mix": args.mix,
        "background": args.background,
        "synthesis_seconds": synth_seconds,
        "train_seconds": seconds,
        "errors_px": {k: v.tolist() for k, v in results.items()},
        "mean_error_px": {k: float(v.mean()) for k, v in results.items()},
        "fit_landmarks_px": floor.tolist(),
    }
    (out / "resynth.json").write_text(json.dumps(record, indent=1))
    print(f"machine: {machine}")
    print(f"held-out photos {record['held_out']}, landmark error (px at 224, mean of 21)")
    for name, v in results.items():
        print(f"  {name:<10}" + "".join(f"{e:8.2f}" for e in v) + f"   mean {v.mean():.2f}")
    print(f"  {'fit':<10}" + "".join(f"{e:8.2f}" for e in floor) + f"   mean {floor.mean():.2f}")
    print("training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
