"""The typer application object; each command lives in its own module of this package."""

import typer

app = typer.Typer(
    name="bfm-prep",
    help=(
        "Prepare a morphable face model for 3DMM-STN: read the Basel Face Model (or make a "
        "synthetic one), transfer expressions, flatten to a symmetric UV square and resample "
        "onto a UV grid. Every command writes HDF5 artifacts described in docs/artifact-format.md."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
