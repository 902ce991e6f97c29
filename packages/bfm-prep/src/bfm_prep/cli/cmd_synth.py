"""``bfm-prep synth OUTDIR``: write the synthetic face model in the licensed files' formats."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from bfm_prep.cli.app import app
from bfm_prep.cli.options import check_outputs, option_words
from bfm_prep.synth import (
    DEFAULT_N_COLOR,
    DEFAULT_N_EXP,
    DEFAULT_N_SHAPE,
    DEFAULT_VERTICES,
    MAX_VERTICES,
    MIN_VERTICES,
    write_synthetic,
)

_HELP = (
    "Write a synthetic, face-like morphable model in the exact formats and units of the "
    "licensed inputs, so every command runs without them.\n\n"
    "OUTDIR receives 01_MorphableModel.mat (Basel Face Model 2009 layout: micrometres, "
    "orthonormal components with standard deviations, colour in [0, 255], 1-based triangles), "
    "Model_Expression.mat and map_tddfa_to_basel.mat (3DDFA layout: expression components on "
    "every vertex except the mouth interior, 0-based uint16 mapping), Landmarks21_BFM.anl and "
    "Landmarks68_BFM.anl (AFLW 21 and iBUG 68, 1-based) and a README.txt. The mesh is an "
    "exactly mirror-symmetric disk with a mouth interior behind the lips; it depends only on "
    "--vertices, the seed draws the components. --vertices 53490 gives the Basel size "
    "(53,490 vertices, 106,466 triangles)."
)


@app.command(
    "synth", help=_HELP, short_help="Write a synthetic face model in the licensed files' formats."
)
def synth(
    outdir: Path = typer.Argument(
        ...,
        help="Folder to write into (created if missing; existing files are replaced).",
        show_default=False,
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of the components (>= 0)."),
    vertices: int = typer.Option(
        DEFAULT_VERTICES,
        "--vertices",
        help=f"Number of mesh vertices, exactly ({MIN_VERTICES}..{MAX_VERTICES}; "
        "53490 = Basel size).",
    ),
    n_shape: int = typer.Option(DEFAULT_N_SHAPE, "--n-shape", help="Identity components (1..199)."),
    n_color: int = typer.Option(DEFAULT_N_COLOR, "--n-color", help="Colour components (1..199)."),
    n_exp: int = typer.Option(DEFAULT_N_EXP, "--n-exp", help="Expression components (1..99)."),
) -> None:
    t0 = time.perf_counter()
    check_outputs(("OUTDIR", outdir), folders=("OUTDIR",))
    with option_words(
        n_vertices="--vertices",
        seed="--seed",
        n_shape="--n-shape",
        n_color="--n-color",
        n_exp="--n-exp",
    ):
        paths = write_synthetic(
            outdir, seed=seed, n_vertices=vertices, n_shape=n_shape, n_color=n_color, n_exp=n_exp
        )
    dt = time.perf_counter() - t0
    typer.echo(
        f"Synthetic face model (seed {seed}, {vertices} vertices) written in {dt:.1f} s to "
        f"{Path(outdir).resolve()}:"
    )
    for path in paths.values():
        typer.echo(f"  {path}")
