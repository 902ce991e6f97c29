"""Benchmark from synthetic to real: a localiser trained only on rendered faces, tested on the
original's six demo photographs.

The model is the original's ``model_112.mat`` (5 identity + 5 expression components, no colour
model) with its 21 AFLW landmarks ``Landmarks21_112.anl``, read from the reference folder
(``--reference``, default ``$STN_REFERENCE`` or ``../shared/reference`` beside the repository)
by ``tools/demo_landmark_fit.load_demo``, which also reads the six photographs of
``demodata.mat`` and their 21 labels (converted from the original's 1-based, y-up convention).
For training, the model is written as a grid artifact ``OUT/grid112.h5`` by bfm-prep's
``import-matlab`` code (checked equal to the model read by ``load_demo``).

1. A localiser is trained by ``stn_train.train.train`` on ``--synthetic`` faces rendered from
   that model (``SyntheticFaces``: without a colour model, a painted skin albedo and hair),
   framed as the photographs are (``--margin``, ``--anchor``: ``RunConfig.synthetic_margin``
   and ``synthetic_anchor``: the landmark box's larger side 1 / (1 + 2 margin) of the image,
   its square aligned with its top centred; ``--margin none``: the model's own framing),
   with the demo's optimiser settings (small CNN at 112 x 112, batch 32, lr 1e-3, 60 warm-up
   steps, gradient norm clipped at 100); ``--teacher lm`` adds the landmark-fit teacher.
   Its error on held-out rendered faces (the run's last validation) is reported beside the
   photographs', in the same 224-pixel units.
2. Each photograph (224 x 224, already a face crop) is resized to the network input as
   ``stn-train predict`` does (``stn_train.predict.square_input``), the localiser predicts
   theta, and the model's 21 landmarks projected by theta are mapped back to the photograph.
3. Landmark error: the mean Euclidean distance over the 21 labels (all visible), in pixels of
   the 224 x 224 photographs, per image and over the six. Two references in the same run:
   ``mean guess`` (the localiser's start pose: frontal, centred, mean shape) and
   ``fit_landmarks`` (theta fitted per image to its own labels: what the model can reach).

Writes ``OUT/real.png`` (each photograph with its labels in green and the prediction in red,
the flattened face, the visibility mask and the masked face, sampled from the 224 x 224
photograph at the predicted theta), ``OUT/synthetic.png`` (training faces beside the
photographs at the network size), ``OUT/real.json`` (every figure), the run in ``OUT/run``,
and prints a table. Face framing of both (the 21 landmarks' box) is printed too, since a
localiser can only be right about framings it has seen.

Usage (from the repository root)::

    .venv/bin/python tools/bench_real.py --out out/real        # 600 steps: 13-21 min, 2 busy cores
    .venv/bin/python tools/bench_real.py --out out/real_m --margin none --steps 300
    .venv/bin/python tools/bench_real.py --out out/real_t --teacher lm
    .venv/bin/python tools/bench_real.py --out out/r2 --checkpoint out/real/run/checkpoints/last.pt
    .venv/bin/python tools/bench_real.py --out out/r3 --checkpoint ... --flip-test

``--flip-test`` predicts each photograph and its mirror image and averages the two estimates
(``stn_train.flip_test``).
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
for pkg in ("stn-core", "stn-train", "bfm-prep"):
    sys.path.insert(0, str(REPO / "packages" / pkg / "src"))
sys.path.insert(0, str(REPO / "tools"))

from demo_landmark_fit import FILES, default_reference, load_demo  # noqa: E402
from stn_core import STN, fit_landmarks, initial_log_scale, initial_theta, project_theta  # noqa: E402
from stn_train.checkpoint import restore_localiser  # noqa: E402
from stn_train.config import RunConfig  # noqa: E402
from stn_train.data.synthetic import SyntheticFaces  # noqa: E402
from stn_train.data.transforms import points_to_source, theta_to_source  # noqa: E402
from stn_train.flip_test import FlipTest  # noqa: E402
from stn_train.metrics import landmark_errors, rotation_error_deg  # noqa: E402
from stn_train.pictures.training import write_flattening_grid  # noqa: E402
from stn_train.predict import square_input  # noqa: E402
from stn_train.runtime import load_grid_model  # noqa: E402
from stn_train.train import train  # noqa: E402

# The six photographs' framing (measured from their labels): each is a square whose side is
# 1.87 times the width of its 21 labels' box (59 to 60 px of 112; the box is wider than high
# in all six), i.e. a margin (1.87 - 1) / 2, and the box's left and top edges are both 25.5 to
# 26 px in: the square of the box's width aligned with its top (anchor "top"). A property of
# how the crops were cut, as a detector's crop rule is, not of the faces.
PHOTO_MARGIN = 0.43
# The demo's optimiser settings (tools/demo.sh); the others are stn-train run's defaults.
SETTINGS = dict(
    backbone="small",
    image_size=112,
    batch_size=32,
    lr=1e-3,
    warmup_steps=60,
    clip_grad=100.0,
    workers=1,
    device="cpu",
)


def write_grid_artifact(reference: Path, path: Path) -> Path:
    """The original's model_112.mat with its aflw21 landmarks as a grid artifact (what
    ``bfm-prep import-matlab ... --landmarks aflw21=Landmarks21_112.anl`` writes)."""
    from bfm_prep.artifact import write_grid
    from bfm_prep.io.landmarks import load_landmarks
    from bfm_prep.matlab_import import import_matlab_model

    grid = import_matlab_model(reference / FILES["model"])
    n = grid.res * grid.res
    grid.model.landmarks = {"aflw21": load_landmarks(reference / FILES["landmarks"], n_vertices=n)}
    return write_grid(path, grid)


def same_model(a, b) -> bool:
    return (
        torch.equal(a.mean, b.mean)
        and torch.equal(a.basis, b.basis)
        and torch.equal(a.faces, b.faces)
        and torch.equal(a.landmarks["aflw21"], b.landmarks["aflw21"])
    )


def landmark_box(points: torch.Tensor) -> torch.Tensor:
    """(B, L, 2) -> (B, 4): the landmarks' box width, height and centre x, y (pixels)."""
    lo, hi = points.amin(1), points.amax(1)
    return torch.cat([hi - lo, (hi + lo) / 2], 1)


def errors_224(model, theta: torch.Tensor, to_image: list[dict], target: torch.Tensor):
    """Landmarks of theta (network pixels) mapped to the photographs, and their errors.

    Returns (points (B, L, 2), errors (B, L)) in photograph pixels."""
    idx = model.landmark_indices("aflw21")
    pts, _ = project_theta(theta.double(), model.mean.double(), model.basis.double())
    pts = torch.stack([points_to_source(p[idx], t) for p, t in zip(pts, to_image, strict=True)])
    vis = torch.ones(target.shape[:2], dtype=torch.float64)
    return pts, landmark_errors(pts, target, vis)


def margin_arg(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "out" / "real")
    ap.add_argument("--reference", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=600, help="training steps (batch 32 each)")
    ap.add_argument("--synthetic", type=int, default=20000, help="rendered training faces")
    ap.add_argument("--batch-size", type=int, default=SETTINGS["batch_size"])
    ap.add_argument("--image-size", type=int, default=SETTINGS["image_size"])
    ap.add_argument("--backbone", default=SETTINGS["backbone"])
    ap.add_argument("--teacher", choices=("none", "lm"), default="none")
    ap.add_argument(
        "--margin",
        type=margin_arg,
        default=PHOTO_MARGIN,
        help="frame the rendered faces like crops around their landmarks with this margin "
        f"(RunConfig.synthetic_margin; default {PHOTO_MARGIN}, the photographs' framing), or "
        "'none': SyntheticFaces' default framing by the model's extent",
    )
    ap.add_argument(
        "--anchor",
        choices=("centre", "top"),
        default="top",
        help="with --margin: the landmark box centred, or its larger side's square aligned "
        "with its top (default: top, how the photographs were cut)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other RunConfig setting (repeatable), e.g. --set lr=3e-4",
    )
    ap.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="evaluate this checkpoint (trained on OUT/grid112.h5's model) instead of training",
    )
    ap.add_argument(
        "--flip-test",
        action="store_true",
        help="predict each photograph and its mirror image and average the two estimates "
        "(stn_train.flip_test)",
    )
    args = ap.parse_args()
    load_start = os.getloadavg()[0]  # the machine's other work, said with the figures
    if args.threads:
        torch.set_num_threads(args.threads)
    reference = args.reference or default_reference()
    try:
        model, photos, target = load_demo(reference)
    except FileNotFoundError as e:
        print(f"bench_real: the original's demo data is absent, skipped ({e}).", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    grid = args.out / "grid112.h5"
    if not grid.is_file():
        write_grid_artifact(reference, grid)
    train_model = load_grid_model(grid)
    if not same_model(train_model, model):
        sys.exit(f"bench_real: {grid} is not the model load_demo reads; remove it.")

    settings = {
        **SETTINGS,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "teacher": args.teacher,
        "seed": args.seed,
        "synthetic_margin": args.margin,
        "synthetic_anchor": args.anchor,
    }
    for item in args.sets:
        key, _, value = item.partition("=")
        settings[key] = json.loads(value) if value[:1] in "-.0123456789[{tf" else value
    seconds = None
    if args.checkpoint is None:
        run_dir = args.out / "run"
        if run_dir.exists():
            sys.exit(f"bench_real: {run_dir} exists; remove it or pick another --out.")
        cfg = RunConfig(
            model=str(grid), synthetic=args.synthetic, out=str(run_dir), steps=args.steps,
            val_synthetic=64, val_every=args.steps, checkpoint_every=0, pictures=4, **settings,
        )  # fmt: skip
        t0 = time.perf_counter()
        train(cfg)
        seconds = time.perf_counter() - t0
        checkpoint = run_dir / "checkpoints" / "last.pt"
    else:
        checkpoint = args.checkpoint

    # --- the photographs through the trained localiser
    net, ckpt = restore_localiser(checkpoint, train_model)
    if args.flip_test:
        net = FlipTest(net, train_model)
    size = int(ckpt["image_size"])
    inputs, to_image = zip(*(square_input(p, size) for p in photos), strict=True)
    x = torch.stack(inputs)
    with torch.no_grad():
        theta = net(x).double()
    pred, err = errors_224(model, theta, to_image, target)

    start = initial_theta(
        len(photos), model.n_components, size, size,
        initial_log_scale(model.mean, (size, size), inside=model.inside), dtype=torch.float64,
    )  # fmt: skip
    _, err_start = errors_224(model, start, to_image, target)
    fit = fit_landmarks(model.double(), target, image_size=tuple(photos.shape[-2:]))
    err_fit = landmark_errors(
        fit.points.double(), target, torch.ones(target.shape[:2], dtype=torch.float64)
    )
    theta_224 = torch.stack([theta_to_source(t, m) for t, m in zip(theta, to_image, strict=True)])
    pose_vs_fit = rotation_error_deg(theta[:, :3], fit.theta.double()[:, :3])
    synthetic_px = held_out_error(checkpoint) * photos.shape[-1] / size

    # --- pictures: the photographs at the predicted theta; training faces beside them
    with torch.no_grad():
        out = STN(model)(photos, theta_224.float())
    rows = {
        "trained": err.mean(1),
        "mean guess": err_start.mean(1),
        "fit_landmarks": err_fit.mean(1),
    }
    title = (
        f"six demo photographs, localiser trained on rendered faces ({ckpt.get('step')} steps): "
        f"mean error {float(rows['trained'].mean()):.2f} px at 224 x 224"
    )
    write_flattening_grid(
        photos, out.flattened, out.visibility, args.out / "real.png",
        target=target, predicted=pred, title=title,
    )  # fmt: skip
    run = ckpt.get("config", {})
    faces = SyntheticFaces(
        train_model, 64, size, seed=args.seed,
        margin=run.get("synthetic_margin"), anchor=run.get("synthetic_anchor", "centre"),
    )  # fmt: skip
    rendered = faces.render_batch(range(64))
    write_gallery(rendered["image"][:12], x, args.out / "synthetic.png")

    # --- framing: the 21 landmarks' box in network pixels, photographs vs rendered faces
    target_net = torch.stack(
        [(q + 0.5) / m["scale"] - 0.5 - q.new_tensor(m["offset"]) / m["scale"]
         for q, m in zip(target, to_image, strict=True)]
    )  # fmt: skip
    box_photo = landmark_box(target_net)
    box_synth = landmark_box(rendered["landmarks"].double())

    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, load average "
        f"{load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    record = {
        "machine": machine,
        "checkpoint": str(checkpoint),
        "steps": ckpt.get("step"),
        "train_seconds": seconds,
        "flip_test": args.flip_test,
        "settings": {**settings, "synthetic": args.synthetic, "steps": args.steps},
        "errors_px": {k: [float(e) for e in v] for k, v in rows.items()},
        "mean_error_px": {k: float(v.mean()) for k, v in rows.items()},
        "held_out_rendered_px_224": synthetic_px,
        "pose_vs_fit_deg": [float(v) for v in pose_vs_fit],
        "box_photos_px": box_photo.tolist(),
        "box_rendered_mean_px": box_synth.mean(0).tolist(),
        "box_rendered_std_px": box_synth.std(0).tolist(),
        "theta": theta.tolist(),
    }
    (args.out / "real.json").write_text(json.dumps(record, indent=1))

    print(f"machine: {machine}" + ("; flip test" if args.flip_test else ""))
    if seconds is not None:
        print(f"training: {ckpt.get('step')} steps of {args.batch_size} in {seconds:.0f} s")
    print("landmark error (px at 224 x 224, mean over the 21 labels)")
    heads = "".join(f"{'image ' + str(i + 1):>9}" for i in range(len(photos)))
    print(f"{'':<15}{heads}{'mean':>9}")
    for name, v in rows.items():
        print(f"{name:<15}" + "".join(f"{float(e):>9.2f}" for e in v) + f"{float(v.mean()):>9.2f}")
    print(f"{'pose vs fit deg':<15}" + "".join(f"{float(e):>9.1f}" for e in pose_vs_fit))
    print(f"held-out rendered faces (the run's last validation): {synthetic_px:.2f} px at 224")
    print(f"landmark box at {size} px (width, height, centre x, centre y):")
    for i, b in enumerate(box_photo):
        print(f"  photo {i + 1}: " + " ".join(f"{float(v):6.1f}" for v in b))
    print(
        "  rendered (64): mean "
        + " ".join(f"{float(v):6.1f}" for v in box_synth.mean(0))
        + ", std "
        + " ".join(f"{float(v):5.1f}" for v in box_synth.std(0))
    )
    print(f"wrote {args.out / 'real.png'}, synthetic.png and real.json")
    return 0


def held_out_error(checkpoint: Path) -> float:
    """The run's last validation mean landmark error (network pixels), NaN if not found."""
    from stn_train.train.run_log import read_run_log

    log = Path(checkpoint).parent.parent / "metrics.jsonl"
    vals = [r for r in read_run_log(log) if r["kind"] == "val"] if log.is_file() else []
    return float(vals[-1]["mean_error_px"]) if vals else float("nan")


def write_gallery(rendered: torch.Tensor, photos: torch.Tensor, path: Path) -> None:
    """Two rows of rendered training faces above the photographs at the network size."""
    from stn_train.outputs import write_png

    def row(images):
        return torch.cat(list(images), 2)

    n = photos.shape[0]
    grid = torch.cat([row(rendered[:n]), row(rendered[n : 2 * n]), row(photos)], 1)
    write_png(path, grid.permute(1, 2, 0).clamp(0, 1).numpy())


if __name__ == "__main__":
    sys.exit(main())
