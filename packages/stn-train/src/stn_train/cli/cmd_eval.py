"""``stn-train eval``: the errors of a trained localiser on a manifest or rendered faces."""

from __future__ import annotations

from pathlib import Path

import typer

from stn_train.cli.app import app
from stn_train.evaluate import evaluate
from stn_train.runtime import resolve_device

_O = typer.Option


@app.command("eval", short_help="Landmark, pose and shape errors of a trained localiser.")
def eval_(
    checkpoint: Path = _O(..., help="checkpoints/best.pt or last.pt of a run."),
    model: Path = _O(..., help="The grid model it was trained with."),
    out: Path = _O(..., help="Folder for eval.json, per_image.csv, per_landmark.csv, ced.png."),
    data: Path | None = _O(None, help="Manifest (.jsonl) to evaluate on."),
    synthetic: int | None = _O(None, help="Evaluate on N rendered faces instead."),
    seed: int | None = _O(
        None, help="Seed of the rendered faces (default: the run's validation faces)."
    ),
    landmarks: str | None = _O(None, help="Landmark set (default: the checkpoint's)."),
    batch_size: int = _O(32, help="Images per batch."),
    device: str | None = _O(None, help="auto | cpu | cuda (default: cuda when available)."),
    workers: int = _O(0, help="DataLoader worker processes."),
    flip_test: bool = _O(
        False,
        "--flip-test",
        help="Also predict each image flipped left-right and average the two estimates "
        "(twice the cost; docs/training.md).",
    ),
) -> None:
    """Landmark NME, per-landmark errors, CED; pose and shape errors on rendered faces."""
    result = evaluate(
        checkpoint,
        model,
        out,
        data=data,
        synthetic=synthetic,
        batch_size=batch_size,
        seed=seed,
        landmarks=landmarks,
        device=resolve_device(device),
        workers=workers,
        flip_test=flip_test,
    )
    s = result.summary
    what = " (flip test)" if flip_test else ""
    line = (
        f"{s['images']} images{what}: NME box {s['nme_box']:.4f}, inter-ocular "
        f"{s['nme_interocular']:.4f}, mean error {s['mean_error_px']:.2f} px"
    )
    if "pose_error_deg" in s:
        line += f", pose {s['pose_error_deg']:.2f} deg, shape {s['shape_error_mm']:.2f} mm"
    typer.echo(line)
    typer.echo(f"wrote {result.out_dir}/eval.json, per_image.csv, per_landmark.csv, ced.png")
