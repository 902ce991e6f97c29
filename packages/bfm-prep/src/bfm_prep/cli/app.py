"""The typer application object; each command lives in its own module of this package."""

import typer

# Help is click's plain formatter, not typer's rich panels (rich_markup_mode=None): rich lays
# the options out in a table whose columns it shrinks to fit 80 columns (or a pipe) and then
# cuts option names and long words with "…"; click's definition list never cuts the name
# column (a long name puts its help on the next line) and wraps help text at spaces.
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
    rich_markup_mode=None,
)
