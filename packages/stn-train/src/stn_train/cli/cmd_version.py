"""``stn-train version``."""

from __future__ import annotations

import stn_core
import typer

import stn_train
from stn_train.cli.app import app


@app.command(short_help="Print the stn-train and stn-core versions.")
def version() -> None:
    """Print the stn-train and stn-core versions."""
    typer.echo(f"stn-train {stn_train.__version__} (stn-core {stn_core.__version__})")
