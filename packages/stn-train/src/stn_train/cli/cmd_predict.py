"""``stn-train predict``: apply a trained localiser to face images."""

from __future__ import annotations

from pathlib import Path

import typer

from stn_train.cli.app import app, plural, progress_bar
from stn_train.detection import FaceDetector
from stn_train.predict import predict as predict_images
from stn_train.runtime import resolve_device

_O = typer.Option


@app.command(short_help="Apply a localiser: theta, flattened faces, meshes.")
def predict(
    images: list[Path] = typer.Argument(
        ..., help="Face images (cropped around the face; photos with --detect), or folders."
    ),
    checkpoint: Path = _O(..., help="checkpoints/best.pt or last.pt of a run."),
    model: Path = _O(..., help="The grid model it was trained with."),
    out: Path = _O(..., help="Output folder."),
    batch_size: int = _O(16, help="Images per batch."),
    average_by_subject: bool = _O(
        False, help="Also write each subject's (parent folder's) mean flattened face."
    ),
    device: str | None = _O(None, help="auto | cpu | cuda (default: cuda when available)."),
    detect: bool = _O(
        False,
        "--detect",
        help="The images are uncropped photos: find the faces (needs stn-train[detect]).",
    ),
    detector: str = _O("hog", help="With --detect: hog | cnn (turned faces, slower)."),
    flip_test: bool = _O(
        False,
        "--flip-test",
        help="Also predict each face flipped left-right and average the two estimates "
        "(twice the cost; docs/training.md).",
    ),
) -> None:
    """theta JSON, flattened face and mask PNGs, textured OBJ mesh, per image; with --detect,
    per face of each photo, and the faces drawn on the photo."""
    finder = FaceDetector(detector) if detect else None
    with progress_bar("predict") as progress:
        result = predict_images(
            images,
            checkpoint,
            model,
            out,
            batch_size=batch_size,
            average_by_subject=average_by_subject,
            device=resolve_device(device),
            progress=progress,
            detector=finder,
            flip_test=flip_test,
        )
    n = result.n_images
    skipped = f" ({len(result.skipped)} skipped)" if result.skipped else ""
    unit = "face" if detect else "image"
    typer.echo(f"{n} {plural(n, unit)}{skipped} -> {result.out_dir}")
    if result.subjects:
        k = len(result.subjects)
        typer.echo(f"{k} subject {plural(k, 'mean')} in {result.out_dir / 'subjects'}")
    for image, reason in result.skipped:
        typer.echo(f"stn-train: skipped {image}: {' '.join(reason.split())}.", err=True)
    for photo in result.no_face:
        typer.echo(f"stn-train: no face found in {photo}.", err=True)
    for image, what in result.warnings:
        typer.echo(f"stn-train: warning: {image}: {what}.", err=True)
