"""``stn-train fit``: fit the morphable model to photographs, one result folder per image.

    stn-train fit faces/*.jpg --model grid.h5 --landmarks faces/ --out fits
    stn-train fit a.png b.png --model grid.h5 --landmarks marks.csv --out fits --landmarks-only
    stn-train fit photo.jpg --model grid.h5 --out fits      (every face found; stn-train[detect])

:func:`stn_train.fit.fit_images` does the work; this module prints a table of the results and
the reasons for skipped images, and exits with status 2 when no image could be fitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from stn_core.fitting import FitWeights

from stn_train.cli.app import app, fail, plural, progress_bar
from stn_train.detection import CONTOUR_WEIGHT, FaceDetector
from stn_train.fit import FitRecord, fit_images
from stn_train.runtime import resolve_device

__all__ = ["fit", "summary_table"]


@app.command("fit", short_help="Fit the model to photographs, one folder per image.")
def fit(
    images: list[Path] = typer.Argument(..., help="Image files (JPEG, PNG, ...)."),
    model: Path = typer.Option(..., "--model", help="UV-grid model (.h5, bfm-prep uv-resample)."),
    landmarks: Path | None = typer.Option(
        None,
        "--landmarks",
        help="Folder of <stem>.pts, or one manifest .jsonl, landmark .csv or .json file "
        "(without it: the faces are detected, see --detect).",
    ),
    out: Path = typer.Option(..., "--out", help="Output folder (one subfolder per image)."),
    landmarks_only: bool = typer.Option(
        False, "--landmarks-only", help="Fit pose, identity and expression to landmarks only."
    ),
    landmark_set: str = typer.Option("aflw21", help="The model's landmark set of the annotations."),
    convention: str = typer.Option("ours", help="CSV coordinates: ours | one_based | original."),
    pts_zero_based: bool = typer.Option(False, help=".pts files are 0-based (300-W: 1-based)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    batch_size: int = typer.Option(8, help="Same-sized images fitted together."),
    visibility: str = typer.Option("normals", help="normals | depth (also self-occlusion)."),
    cpu_threads: int | None = typer.Option(
        None, help="Torch threads on the CPU (default: torch's; 1 when the cores are busy)."
    ),
    photometric_weight: float | None = typer.Option(
        None, help="Weight of the photometric term (default: stn_core's FitWeights)."
    ),
    pictures: bool = typer.Option(
        True,
        "--pictures/--no-pictures",
        help="Write the pictures and the mesh (--no-pictures: params.json only).",
    ),
    detect: bool = typer.Option(
        False,
        "--detect",
        help="Uncropped photos: find every face and fit its 68 detected landmarks (the "
        "default without --landmarks; needs stn-train[detect]).",
    ),
    detector: str = typer.Option("hog", help="With detection: hog | cnn (turned faces)."),
    crop_size: int = typer.Option(256, help="With detection: side of each face's crop."),
) -> None:
    """Fit the morphable model to photographs: pose, shape, expression, albedo and lighting;
    without --landmarks, to every face found in them."""
    if detect and landmarks is not None:
        fail("pass --landmarks or --detect, not both (--detect finds the landmarks itself).")
    finder = None
    if landmarks is None:
        finder = FaceDetector(detector)
        typer.echo(
            f"No --landmarks: finding the faces (dlib {detector}) and fitting their 68 detected "
            "iBUG landmarks (the model's ibug68 set; the jaw contour weighs "
            f"{CONTOUR_WEIGHT})."
        )
    weights = None
    if photometric_weight is not None:
        try:
            weights = FitWeights(photometric=photometric_weight)
        except ValueError as e:
            fail(f"--photometric-weight: {e}")
    with progress_bar("fitting", transient=True) as progress:
        records = fit_images(
            images,
            model,
            landmarks,
            out,
            landmarks_only,
            landmark_set=landmark_set,
            convention=convention,
            pts_one_based=not pts_zero_based,
            device=resolve_device(device),
            batch_size=batch_size,
            visibility=visibility,
            weights=weights,
            pictures=pictures,
            progress=progress,
            cpu_threads=cpu_threads,
            detector=finder,
            crop_size=crop_size,
        )
    n_fit = sum(r.status == "fitted" for r in records)
    skipped = [r for r in records if r.status != "fitted"]
    if n_fit == 0:
        if len(records) == 1:
            fail(f"{records[0].image} was not fitted: {records[0].reason}.")
        _report_skipped(skipped)
        fail(
            f"none of the {len(records)} images could be fitted (the reasons are above); fix "
            "them and run again."
        )
    console = Console()
    console.print(summary_table(records))
    unit = "image" if finder is None else "face"
    total = sum(r.face is not None for r in records) if finder is not None else len(records)
    console.print(f"{n_fit} of {total} {plural(total, unit)} fitted -> {out}")
    _report_skipped(skipped)


def _report_skipped(records: Sequence[FitRecord]) -> None:
    for r in records:
        typer.echo(f"stn-train: skipped {r.image}: {r.reason}.", err=True)


def summary_table(records: Sequence[FitRecord]):
    """A rich Table of the records, one row per image: landmark error (px), photometric RMS
    (colour units), LM iterations, seconds per image, convergence, and for a skipped image a
    short note (the full reason is printed on stderr)."""
    table = Table(title="stn-train fit", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("image", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for col in ("lm px", "rms", "iter", "s/img"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("conv", justify="center", no_wrap=True)
    table.add_column("note", min_width=16, overflow="fold")

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    photos = list(dict.fromkeys(r.image for r in records))
    short = dict(zip(photos, _display_names(photos), strict=True))
    shown = [short[r.image] + ("" if r.face is None else f" #{r.face}") for r in records]
    for r, name in zip(records, shown, strict=True):
        if r.note or r.reason:
            note = r.note or r.reason
        elif r.fit_status not in (None, "ftol", "xtol", "atol"):
            note = f"stopped: {r.fit_status}"
        else:
            note = ""
        table.add_row(
            name if len(name) <= 40 else "…" + name[-39:],
            r.status,
            num(r.landmark_error_px, ".2f"),
            num(r.photometric_rms, ".4f"),
            num(r.n_iter, "d"),
            num(r.seconds, ".2f"),
            "-" if r.converged is None else ("yes" if r.converged else "no"),
            note,
            style=None if r.status == "fitted" else "yellow",
        )
    return table


def _display_names(paths: Sequence[Path]) -> list[str]:
    """Each path's shortest trailing part (file name, then with its folders) that tells it
    apart from the other paths (the file name alone when no name repeats)."""
    parts = [Path(p).parts or (str(p),) for p in paths]
    n = [1] * len(parts)
    while True:
        shown = ["/".join(ps[-k:]) for ps, k in zip(parts, n, strict=True)]
        counts: dict[str, int] = {}
        for s_ in shown:
            counts[s_] = counts.get(s_, 0) + 1
        grow = [i for i, s_ in enumerate(shown) if counts[s_] > 1 and n[i] < len(parts[i])]
        if not grow:
            return shown
        for i in grow:
            n[i] += 1
