"""``bfm-prep plot``: pictures (and optionally meshes) of a model, UV or grid artifact."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from bfm_prep.cli.app import app
from bfm_prep.cli.options import check_outputs, option_words, plural

# Help text: no line breaks inside a paragraph (typer rewraps it to the terminal).
_HELP = (
    "Pictures: the UV layout (embedding), the inside mask with landmarks, the "
    "geometry image and the mean colour in UV (grid), and shaded front renders of the "
    "mean and random samples."
)


@app.command(
    "plot",
    help=_HELP,
    short_help="Pictures (and meshes) of a model, UV-embedding or UV-grid artifact.",
)
def plot(
    file: Path = typer.Argument(
        ..., help="A model, UV-embedding or UV-grid artifact (.h5).", show_default=False
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for the pictures (created if missing).", show_default=False
    ),
    export_mesh: bool = typer.Option(
        False,
        "--export-mesh",
        help="Also write the mean and the samples as PLY and OBJ (grid: with UV coordinates; the "
        "mean's OBJ carries the mean colour as a texture).",
    ),
    samples: int = typer.Option(
        4,
        "--samples",
        help="Random model samples to render, 0 to 64 (N(0, 1) coefficients for every component).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random samples."),
) -> None:
    """``bfm-prep plot`` (help text: ``_HELP``)."""
    # lazy: the pictures need matplotlib and the meshes trimesh; imported here, --help and the
    # other commands go without them
    from bfm_prep.pictures.model_views import plot_artifact, plot_file_names

    t0 = time.perf_counter()
    check_outputs(
        ("--out", out),
        folders=("--out",),
        inputs=[("FILE", file)],
        folder_files={"--out": plot_file_names(samples, export_mesh)},
    )
    with option_words(n_samples="--samples", outdir="--out"):
        written = plot_artifact(file, out, n_samples=samples, seed=seed, export_mesh=export_mesh)
    for p in written:
        print(p)
    seconds = time.perf_counter() - t0
    print(f"Wrote {plural(len(written), 'file')} to {out.resolve()} in {seconds:.1f} s")
