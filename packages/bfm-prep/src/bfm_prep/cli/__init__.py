"""Thin command-line front: a command parses, calls one library function, reports.

Errors a user can cause (:class:`bfm_prep.PrepError`) print one line and exit with status 2.
"""

from __future__ import annotations

import sys

from bfm_prep.cli.app import app
from bfm_prep.errors import PrepError

# Importing a command module registers its command on ``app``.
from bfm_prep.cli import (  # noqa: E402,F401  (import order: registration)
    cmd_synth,
    cmd_expression,
    cmd_inspect,
    cmd_embed,
    cmd_resample,
    cmd_matlab,
    cmd_plot,
)


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``bfm-prep``."""
    try:
        app(args=argv, prog_name="bfm-prep")
    except PrepError as e:
        print(f"bfm-prep: error: {e}", file=sys.stderr)
        sys.exit(2)


__all__ = ["app", "main"]
