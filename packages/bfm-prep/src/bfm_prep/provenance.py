"""Provenance records of input files: the path and SHA-256 that every artifact stores for
each file it was made from (``provenance["inputs"]``, docs/artifact-format.md).

Readers of external files make these records as they read; the artifact writer stores them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def input_record(path: str | os.PathLike) -> dict:
    """``{"path": ..., "sha256": ...}`` for an input file, to store in ``provenance["inputs"]``."""
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}


__all__ = ["input_record", "sha256_file"]
