"""Option parsing shared by several commands (no math here either)."""

from __future__ import annotations

from pathlib import Path

from bfm_prep.errors import PrepError


def parse_landmark_options(items: list[str]) -> dict[str, Path]:
    """``["NAME=FILE", ...]`` -> ``{NAME: Path(FILE)}``; a one-line error for a bad item."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise PrepError(f"--landmarks {item!r}: expected NAME=FILE, e.g. "
                            "aflw21=Landmarks21_BFM.anl.")
        if name in out:
            raise PrepError(f"--landmarks: the name {name!r} is given twice.")
        out[name] = Path(path)
    return out


def check_out_path(out: Path) -> None:
    """Refuse an --out that is a folder before any work is done."""
    if out.exists() and out.is_dir():
        raise PrepError(f"--out {out}: is a folder; give the path of the .h5 file to write.")
