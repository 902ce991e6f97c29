"""bfm-prep command (being written)."""

from bfm_prep.cli.app import app  # noqa: F401
