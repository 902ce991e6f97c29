"""Fixtures shared by the bfm-prep tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.bfm_prep.cli_helpers import invoke


@pytest.fixture
def run_cli(capsys):
    """Run ``bfm-prep ARGS`` in this process: (returncode, stdout, stderr)."""

    def run(*args):
        code, out, err = invoke(args, capsys)
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run
