"""``bfm-prep inspect FILE``: print a summary of an artifact or a supported input file."""

from __future__ import annotations

from pathlib import Path

import typer

from bfm_prep.cli.app import app
from bfm_prep.cli.options import option_words

_HELP = (
    "Summarise an artifact or a supported input file.\n\n"
    "Prints counts, components by kind, units, colour, landmarks and, for artifacts, the "
    "provenance (input files with their SHA-256, parameters). A file that is not recognised or "
    "is damaged gives one error line and exit status 2."
)


@app.command("inspect", help=_HELP, short_help="Summarise an artifact or a supported input file.")
def inspect_command(
    file: Path = typer.Argument(
        ...,
        help=(
            "The file to summarise: a bfm-prep artifact (model, UV embedding, UV-grid model), "
            "a Basel Face Model 2009 .mat or 2017/2019 .h5, a 3DDFA Model_Expression.mat or "
            "map_tddfa_to_basel.mat, a CoarseData Exp_Pca.bin, BFM_UV.mat, a model_112.mat-like "
            "MATLAB model, a Surrey Face Model .npz, a .ply/.obj mesh, or a landmark list "
            "(.anl, index list, eos ibug_to_*.txt). Recognised by content, not by extension."
        ),
        show_default=False,
    ),
    plain: bool = typer.Option(
        False,
        "--plain",
        help="Print 'field  value' lines instead of a table (for scripts and logs).",
    ),
    no_hash: bool = typer.Option(
        False, "--no-hash", help="Skip the SHA-256 of an input file (faster on large files)."
    ),
) -> None:
    """``bfm-prep inspect FILE`` (help text: ``_HELP``)."""
    # lazy: inspect reads every format (scipy, h5py, trimesh) and draws its table with rich
    # (not needed for --plain); imported here, --help and the other commands go without them
    from bfm_prep.inspect import format_plain, inspect_file

    with option_words(help="--help"):
        summary = inspect_file(file, hash_inputs=not no_hash)
    if plain:
        typer.echo(format_plain(summary))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=summary.kind, show_header=False, title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in summary.rows:
        table.add_row(key, value)
    Console(soft_wrap=False).print(table)
