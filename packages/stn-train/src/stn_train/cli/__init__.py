"""The command line of stn-train: one module per command (``cmd_*.py``), the only places that
parse flags, choose the device, print and set exit codes; :mod:`stn_train.cli.app` holds the
typer application and turns a user's error into one line and exit status 2.

    stn-train run --model grid.h5 --synthetic 2000 --out runs/a --backbone small --steps 2000
    torchrun --nproc-per-node 4 -m stn_train run --model grid.h5 --data train.jsonl --out runs/b
    stn-train eval --checkpoint runs/a/checkpoints/best.pt --model grid.h5 --synthetic 200 \\
        --out runs/a/eval
    stn-train predict faces/*.jpg --checkpoint runs/a/checkpoints/best.pt --model grid.h5 --out pred
    stn-train fit faces/*.jpg --model grid.h5 --landmarks faces/ --out fits
    stn-train detect photos/ --out faces   (the optional extra stn-train[detect])
    stn-train synthesize faces/manifest.jsonl --model grid.h5 --out synth --per-face 20
"""

from __future__ import annotations

import signal

# Importing a command module registers its command on ``app``.
from stn_train.cli import (  # noqa: F401
    cmd_detect,
    cmd_eval,
    cmd_fit,
    cmd_predict,
    cmd_run,
    cmd_synthesize,
    cmd_version,
)
from stn_train.cli.app import app

__all__ = ["app", "main"]


def _terminated(signum, frame) -> None:
    # SIGTERM (a scheduler's or torchrun's stop) unwinds like Ctrl-C: the writes in progress
    # remove their temporaries, and the exit status is the conventional 128 + 15.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """Console entry point ``stn-train``."""
    signal.signal(signal.SIGTERM, _terminated)
    app(args=argv, prog_name="stn-train")
