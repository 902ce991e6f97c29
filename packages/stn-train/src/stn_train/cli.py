"""Thin command-line front of stn-train (commands arrive with issue 5)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="stn-train",
    help="Train, evaluate and apply the 3DMM-STN localiser.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the stn-train and stn-core versions."""
    import stn_core

    import stn_train

    typer.echo(f"stn-train {stn_train.__version__} (stn-core {stn_core.__version__})")


def main(argv: list[str] | None = None) -> None:
    app(args=argv, prog_name="stn-train")
