"""``stn-train synthesize``: photo-realistic training faces from fitted photographs.

    stn-train synthesize faces/manifest.jsonl --model grid.h5 --out synth --per-face 20
    stn-train synthesize photos/ --landmarks photos/ --model grid.h5 --out synth --per-face 20
    stn-train synthesize photos/ --detect --model grid.h5 --out synth   (stn-train[detect])

:func:`stn_train.synthesize.synthesize_faces` does the work; this module reports the counts
and each skipped face, and exits with status 2 when no face could be used.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stn_train.cli.app import app, fail, plural, progress_bar
from stn_train.detection import FaceDetector
from stn_train.runtime import resolve_device
from stn_train.synthesize import ViewRanges, synthesize_faces

__all__ = ["synthesize"]

_O = typer.Option


@app.command(short_help="Re-render fitted photos in new poses: a photo-realistic training set.")
def synthesize(
    sources: list[Path] = typer.Argument(
        ..., help="One manifest (.jsonl: images and landmarks), or photos / folders of them."
    ),
    model: Path = _O(..., "--model", help="UV-grid model (.h5, bfm-prep uv-resample)."),
    out: Path = _O(
        ..., "--out", help="Output folder: images/, textures/, sheets/, manifest.jsonl."
    ),
    per_face: int = _O(10, "--per-face", help="New views per face."),
    landmarks: Path | None = _O(
        None,
        "--landmarks",
        help="For photos: folder of <stem>.pts, or a landmark .csv / .json / .jsonl file.",
    ),
    detect: bool = _O(
        False, "--detect", help="For photos: find the faces and their 68 landmarks (dlib)."
    ),
    landmark_set: str = _O("aflw21", help="The model's landmark set of the annotations."),
    out_landmarks: str | None = _O(
        None, help="Landmark set written to the manifest (default: --landmark-set's)."
    ),
    seed: int = _O(0, help="Seed of the drawn poses, expressions and lights."),
    background: str = _O(
        "photo", help="photo (its own, filled where the face was) | synthetic (random)."
    ),
    yaw: float = _O(75.0, help="Largest yaw drawn, degrees (+-)."),
    pitch: float = _O(20.0, help="Largest pitch drawn, degrees (+-)."),
    roll: float = _O(15.0, help="Largest roll drawn, degrees (+-)."),
    expression_sigma: float = _O(0.5, help="Expression drawn: fitted + N(0, this)."),
    light: float = _O(0.4, help="Added directional light, up to this times the ambient."),
    landmarks_only: bool = _O(
        False, "--landmarks-only", help="Fit the landmarks only (no photometric fit)."
    ),
    max_landmark_error: float = _O(
        0.08, help="A fit this far off (fraction of the landmark box) is skipped."
    ),
    convention: str = _O("ours", help="CSV coordinates: ours | one_based | original."),
    pts_zero_based: bool = _O(False, help=".pts files are 0-based (300-W: 1-based)."),
    detector: str = _O("hog", help="With --detect: hog | cnn (turned faces)."),
    crop_size: int = _O(256, help="With --detect: side of each face's crop."),
    device: str = _O("auto", help="auto | cpu | cuda."),
    batch_size: int = _O(8, help="Same-sized images fitted together."),
    cpu_threads: int | None = _O(
        None, help="Torch threads on the CPU (default: torch's; 1 when the cores are busy)."
    ),
    pictures: bool = _O(
        True, "--pictures/--no-pictures", help="Write a contact sheet per source face."
    ),
) -> None:
    """Fit each face, take its texture from the photo (completed from the mirror side and the
    model), and render --per-face new views with new pose, expression and lighting, with
    exact landmarks and theta in OUT/manifest.jsonl (stn-train run --data reads it)."""
    if detect and landmarks is not None:
        fail("pass --landmarks or --detect, not both (--detect finds the landmarks itself).")
    ranges = ViewRanges(
        yaw=yaw, pitch=pitch, roll=roll, expression_sigma=expression_sigma, light=light
    )
    finder = FaceDetector(detector) if detect else None
    with progress_bar("synthesizing", transient=True) as progress:
        result = synthesize_faces(
            sources,
            model,
            out,
            per_face,
            landmarks=landmarks,
            detector=finder,
            landmark_set=landmark_set,
            out_landmark_set=out_landmarks,
            convention=convention,
            pts_one_based=not pts_zero_based,
            ranges=ranges,
            seed=seed,
            backgrounds=background,
            landmarks_only=landmarks_only,
            max_landmark_error=max_landmark_error,
            device=resolve_device(device),
            batch_size=batch_size,
            cpu_threads=cpu_threads,
            crop_size=crop_size,
            pictures=pictures,
            progress=progress,
        )
    for face in result.skipped:
        typer.echo(f"stn-train: skipped {face.source}: {face.reason}.", err=True)
    n, k = len(result.faces), len(result.skipped)
    if result.manifest is None:
        fail(
            f"none of the {n} {plural(n, 'face')} could be used (the reasons are above); "
            "fix them and run again."
        )
    used = n - k
    typer.echo(
        f"{result.n_views} {plural(result.n_views, 'view')} of {used} {plural(used, 'face')} "
        f"({k} skipped) -> {result.out_dir}"
    )
    typer.echo(f"manifest: {result.manifest} (stn-train run --data ... --landmarks SET)")
