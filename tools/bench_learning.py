"""Benchmark of learning: how well a localiser trained on rendered faces fits held-out ones.

For each variant, a localiser is trained (``stn-train run`` on ``--synthetic`` faces,
validated every ``--every`` steps on ``--val`` held-out rendered faces) and its learning curve
is read from the run's metrics: pose error (degrees), shape error (mm), landmark NME (box)
against the images seen and the seconds spent; the last localiser is also scored with the
flip test (``stn-train eval --flip-test``: each face and its mirror image, the two estimates
averaged), printed as its variant's last row. Two reference lines are measured in the same
run, on the same held-out faces:

- ``fit_landmarks``: theta fitted per image by Levenberg-Marquardt to the face's own exact
  landmarks (the visible ones) with the statistical prior: what the landmarks allow;
- ``mean guess``: the start pose (no rotation) and the mean shape (alpha = 0): what a network
  that learned nothing would score.

Writes ``OUT/learning.png`` (the curves and the references), ``OUT/learning.json`` (every
figure) and prints a table. Variants are settings of ``stn-train run`` (``--set key=value``,
repeatable per variant) or the named ones below.

Usage (from the repository root, after ``make demo`` made the grid model)::

    .venv/bin/python tools/bench_learning.py --out out/learning                  # the demo's
    .venv/bin/python tools/bench_learning.py --variants tuned,demo --out out/l
    .venv/bin/python tools/bench_learning.py --variants "" --try "fast lr=1e-3 steps=800"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for pkg in ("stn-core", "stn-train"):
    sys.path.insert(0, str(REPO / "packages" / pkg / "src"))

from stn_core import fit_landmarks, initial_log_scale, initial_theta, project_theta  # noqa: E402
from stn_train.config import RunConfig  # noqa: E402
from stn_train.data.synthetic import VAL_SEED_OFFSET, synthetic_faces  # noqa: E402
from stn_train.evaluate import evaluate  # noqa: E402
from stn_train.metrics import (  # noqa: E402
    landmark_errors,
    normalisers,
    rotation_error_deg,
    shape_error_mm,
)
from stn_train.runtime import load_grid_model  # noqa: E402
from stn_train.train import train  # noqa: E402
from stn_train.train.run_log import read_run_log  # noqa: E402

# The settings every variant starts from (the demo's run before December 2026, tools/demo.sh).
DEMO = dict(
    synthetic=20000,
    backbone="small",
    image_size=112,
    batch_size=32,
    steps=400,
    lr=3e-4,
    workers=1,
    seed=0,
    device="cpu",
)
VARIANTS: dict[str, dict] = {
    "demo-before": {},  # the demo until December 2026
    # A higher learning rate made stable by a warm-up and gradient clipping.
    "tuned": {"lr": 1e-3, "warmup_steps": 60, "clip_grad": 100.0},
    # The same with the landmark teacher (--teacher lm), each image's own fit_landmarks theta,
    # compared by the placed vertices only (the demo of 2026-12-02; docs/training.md).
    "teacher-vertices": {
        "lr": 1e-3, "warmup_steps": 60, "clip_grad": 100.0, "teacher": "lm", "teacher_shape": 0.0,
    },
    # The demo now: the teacher with its shape term at the default factor 3.
    "demo": {"lr": 1e-3, "warmup_steps": 60, "clip_grad": 100.0, "teacher": "lm"},
    # The demo's settings for the whole training budget of issue 11 (3 minutes on 2 idle cores).
    "budget": {"lr": 1e-3, "warmup_steps": 60, "clip_grad": 100.0, "teacher": "lm", "steps": 700},
}  # fmt: skip


def references(model, faces, landmarks: str) -> dict[str, dict[str, float]]:
    """The two reference lines on the held-out faces (module docstring)."""
    batch = [faces[i] for i in range(len(faces))]
    q = torch.stack([b["landmarks"] for b in batch]).double()
    vis = torch.stack([b["visible"] for b in batch]).double()
    truth = torch.stack([b["theta"] for b in batch]).double()
    size = tuple(batch[0]["image"].shape[-2:])
    m64 = model.to(torch.float64)
    idx = m64.landmark_indices(landmarks)
    out = {}
    t0 = time.perf_counter()
    fit = fit_landmarks(m64, q, vis, landmarks, image_size=size, cpu_threads=None)
    seconds = time.perf_counter() - t0
    start = initial_theta(
        len(batch),
        model.n_components,
        *size,
        initial_log_scale(model.mean, size, inside=model.inside),
    ).double()
    for name, theta in (("fit_landmarks", fit.theta.double()), ("mean guess", start)):
        pts, _ = project_theta(theta, m64.mean, m64.basis)
        err = landmark_errors(pts[:, idx], q, vis)
        box, _ = normalisers(q, vis, landmarks)
        out[name] = {
            "pose_error_deg": float(rotation_error_deg(theta[:, :3], truth[:, :3]).mean()),
            "shape_error_mm": float(shape_error_mm(theta[:, 6:], truth[:, 6:], m64).mean()),
            "nme_box": float(torch.nanmean(torch.nanmean(err, 1) / box)),
        }
    out["fit_landmarks"]["seconds"] = seconds
    return out


def run_variant(name: str, settings: dict, grid: Path, out: Path, every: int, val: int) -> dict:
    cfg = RunConfig(
        model=str(grid), out=str(out / name), val_synthetic=val, val_every=every,
        checkpoint_every=0, log_every=max(1, every // 4), **{**DEMO, **settings},
    )  # fmt: skip
    t0 = time.perf_counter()
    result = train(cfg)
    seconds = time.perf_counter() - t0
    records = read_run_log(out / name / "metrics.jsonl")
    trains = [r for r in records if r["kind"] == "train"]
    time_at = {r["step"]: r["time"] for r in trains}
    curve = []
    for r in records:
        if r["kind"] == "val":
            curve.append(
                {
                    "step": r["step"],
                    "images": r["step"] * cfg.batch_size,
                    "seconds": time_at.get(r["step"], 0.0),
                    "pose_error_deg": r.get("pose_error_deg"),
                    "shape_error_mm": r.get("shape_error_mm"),
                    "nme_box": r.get("nme_box"),
                }
            )
    # The last localiser once more on the same faces with the flip test (stn_train.flip_test).
    flip = evaluate(
        out / name / "checkpoints" / "last.pt", grid, out / name / "eval_flip_test",
        synthetic=val, device=cfg.device, flip_test=True,
    ).summary  # fmt: skip
    keys = ("pose_error_deg", "shape_error_mm", "nme_box")
    return {"settings": {**DEMO, **settings}, "curve": curve, "seconds": seconds,
            "steps": result.steps, "flip_test": {k: flip[k] for k in keys}}  # fmt: skip


def plot(results: dict, refs: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("pose_error_deg", "pose error (deg)"), ("shape_error_mm", "shape error (mm)"),
            ("nme_box", "NME (box)"))  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for ax, (key, label) in zip(axes, keys, strict=True):
        for i, (name, res) in enumerate(results.items()):
            xs = [c["images"] / 1000 for c in res["curve"]]
            ys = [c[key] for c in res["curve"]]
            ax.plot(xs, ys, "o-", ms=3, color=f"C{i}", label=name)
        for style, ref in (("--", "fit_landmarks"), (":", "mean guess")):
            ax.axhline(refs[ref][key], ls=style, color="0.3", lw=1.2, label=ref)
        ax.set(xlabel="training images seen (thousands)", title=label, ylim=(0, None))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", type=Path, default=REPO / "out" / "demo" / "grid112.h5")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "learning")
    ap.add_argument(
        "--variants", default="demo-before,tuned,demo", help="comma-separated named variants"
    )
    ap.add_argument(
        "--try",
        dest="tries",
        action="append",
        default=[],
        metavar="'NAME key=value ...'",
        help="a variant of the demo's settings (repeatable), e.g. 'fast lr=1e-3 steps=800'",
    )
    ap.add_argument("--every", type=int, default=100, help="validate every N steps")
    ap.add_argument("--val", type=int, default=128, help="held-out rendered faces")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.grid.is_file():
        sys.exit(f"bench_learning: {args.grid} does not exist; run make demo first or pass --grid.")
    variants = {n: VARIANTS[n] for n in args.variants.split(",") if n}
    for spec in args.tries:
        name, *items = spec.split()
        settings = {}
        for item in items:
            key, _, value = item.partition("=")
            settings[key] = json.loads(value) if value[:1] in "-.0123456789[{tf" else value
        variants[name] = settings
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_grid_model(args.grid)
    results = {}
    for name, settings in variants.items():
        if (args.out / name).exists():
            sys.exit(f"bench_learning: {args.out / name} exists; remove it or pick another --out.")
        results[name] = run_variant(name, settings, args.grid, args.out, args.every, args.val)
    first = next(iter(results.values()))["settings"]
    faces = synthetic_faces(
        model, args.val, first["image_size"], first["seed"] + VAL_SEED_OFFSET, "aflw21"
    )
    refs = references(model, faces, "aflw21")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    plot(
        results, refs, args.out / "learning.png", f"held-out rendered faces ({args.val}); {machine}"
    )
    (args.out / "learning.json").write_text(
        json.dumps({"machine": machine, "references": refs, "variants": results}, indent=1)
    )
    print(f"machine: {machine}; {args.val} held-out rendered faces")
    print(
        f"{'variant':<14}{'step':>6}{'images':>8}{'s':>7}{'pose deg':>10}{'shape mm':>10}{'NME':>8}"
    )
    for name, res in results.items():
        for c in res["curve"]:
            print(
                f"{name:<14}{c['step']:>6}{c['images']:>8}{c['seconds']:>7.0f}"
                f"{c['pose_error_deg']:>10.2f}{c['shape_error_mm']:>10.2f}{c['nme_box']:>8.4f}"
            )
        f = res["flip_test"]
        print(
            f"{name:<14}{'flip test, last step':>21}"
            f"{f['pose_error_deg']:>10.2f}{f['shape_error_mm']:>10.2f}{f['nme_box']:>8.4f}"
        )
    for name, ref in refs.items():
        print(
            f"{name:<14}{'':>21}{ref['pose_error_deg']:>10.2f}{ref['shape_error_mm']:>10.2f}"
            f"{ref['nme_box']:>8.4f}"
        )
    print(f"wrote {args.out / 'learning.png'} and learning.json")


if __name__ == "__main__":
    main()
