"""Shared test fixtures: where the real reference data is, and the tolerance table."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """``$STN_REFERENCE`` or ``../shared/reference`` beside the repository."""
    env = os.environ.get("STN_REFERENCE")
    return Path(env) if env else REPO.parent / "shared" / "reference"


def reference_file(relpath: str) -> Path:
    """A file of the reference data, or a visible skip when it is absent."""
    path = reference_dir() / relpath
    if not path.is_file():
        pytest.skip(f"reference data absent: {path} (set STN_REFERENCE to its folder)")
    return path


@pytest.fixture
def ref():
    """``ref("3dmmasstn/BFM_UV.mat")`` -> Path, skipping visibly when absent."""
    return reference_file


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: small fits gain nothing from more, and on a machine whose
    cores are busy extra threads make every parallel operation wait."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
