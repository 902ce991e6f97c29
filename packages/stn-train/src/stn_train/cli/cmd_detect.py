"""``stn-train detect``: faces in photographs as crops with 68 landmarks and a training
manifest (needs the optional extra ``stn-train[detect]``)."""

from __future__ import annotations

from pathlib import Path

import typer

from stn_train.cli.app import app, plural, progress_bar
from stn_train.detection import FaceDetector
from stn_train.detection.photos import detect_photos

_O = typer.Option


@app.command(short_help="Find faces in photos: crops, 68 landmarks, a training manifest.")
def detect(
    photos: list[Path] = typer.Argument(..., help="Photographs, or folders of them."),
    out: Path = _O(
        ..., help="Output folder: crops/, manifest.jsonl, summary.json, detections.png."
    ),
    detector: str = _O("hog", help="hog (fast, frontal to ~45 degrees) | cnn (turned faces)."),
    upsample: int = _O(1, help="Double the photo this often to find small faces."),
    max_side: int = _O(1600, help="Shrink larger photos to this side to search for faces."),
    min_score: float = _O(0.0, help="Drop detections scoring below this."),
    crop_size: int = _O(256, help="Side of the written crops, pixels."),
) -> None:
    """Find every face in the photos (dlib: HOG or CNN boxes, 68 iBUG landmarks) and write
    each as a crop with its landmarks, plus a manifest that stn-train run trains on
    (--data OUT/manifest.jsonl --landmarks ibug68). The 68-point model was trained on iBUG
    300-W, whose licence excludes commercial use."""
    finder = FaceDetector(detector, upsample=upsample, max_side=max_side, min_score=min_score)
    with progress_bar("detect") as progress:
        result = detect_photos(photos, out, finder, crop_size=crop_size, progress=progress)
    n, k = result.n_photos, result.n_faces
    typer.echo(f"{k} {plural(k, 'face')} in {n} {plural(n, 'photo')} -> {result.out_dir}")
    if result.manifest is not None:
        typer.echo(f"manifest: {result.manifest} (stn-train run --data ... --landmarks ibug68)")
    for photo in result.no_face:
        typer.echo(f"stn-train: no face found in {photo}.", err=True)
    for photo, reason in result.skipped:
        typer.echo(f"stn-train: skipped {photo}: {' '.join(reason.split())}.", err=True)
