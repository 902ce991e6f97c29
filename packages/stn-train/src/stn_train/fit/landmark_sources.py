"""Where ``stn-train fit`` finds each image's landmarks, in the formats of stn-train's
datasets (docs/data-format.md), in our pixel convention unless said otherwise:

- a folder: ``<stem>.pts`` per image (iBUG / 300-W, 1-based unless ``pts_one_based`` is
  False), found beside the name or anywhere below the folder;
- a manifest ``.jsonl`` (``stn_train.data.manifest``);
- a landmark CSV ``.csv`` / ``.tsv`` / ``.txt`` (``image, x1, y1, v1, ...``; ``convention``
  ours | one_based | original);
- a ``.json`` file: ``{"<image name or stem>": [[x, y] or [x, y, v], ...], ...}`` or a list
  of ``{"image": ..., "landmarks": [...]}`` objects;
- a single ``.pts`` file (with one image).

Images are matched to annotations by path; otherwise by file name (then stem), the annotation
whose name shares the longest trailing run of folders with the image's path winning (an image
that two annotations match equally well has none, and the reason names the clash).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stn_train.data import annotations as ann
from stn_train.data.annotations import read_pts
from stn_train.data.manifest import read_manifest
from stn_train.errors import TrainError

__all__ = ["LANDMARK_SUFFIXES", "Annotation", "LandmarkSource"]

LANDMARK_SUFFIXES = {
    ".jsonl": "manifest",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".pts": "pts",
}


@dataclass
class Annotation:
    points: np.ndarray  # (L, 2) ours
    visible: np.ndarray  # (L,)
    source: str


class LandmarkSource:
    """Annotations by image, from a folder of .pts files or one file (module docstring).

    Args:
        source: the folder or file. n_points: the model's landmark count (a CSV's columns).
        convention: a CSV's coordinates (ours, one_based, original). pts_one_based: .pts
        files are 1-based (300-W). n_images: how many images will be looked up (a single
        .pts file serves exactly one).
    """

    def __init__(
        self, source: Path, n_points: int, convention: str, pts_one_based: bool, n_images: int
    ):
        self.source = source
        self.n_points = n_points
        self.pts_one_based = pts_one_based
        self.folder = source if source.is_dir() else None
        self.single: Annotation | None = None
        self.by_key: dict[str, list[tuple[_Key, Annotation]]] = {}
        self._pts_index: dict[str, list[Path]] | None = None
        if self.folder is not None:
            return
        if not source.is_file():
            raise TrainError(
                f"landmarks not found: {source}; pass a folder of .pts files or "
                "a manifest, CSV or JSON file."
            )
        kind = LANDMARK_SUFFIXES.get(source.suffix.lower())
        if kind is None:
            raise TrainError(
                f"{source}: unknown landmark file type {source.suffix!r}; use .pts, "
                ".jsonl (manifest), .csv or .json."
            )
        if kind == "pts":
            if n_images != 1:
                raise TrainError(
                    f"{source} is one .pts file but {n_images} images were given; "
                    "pass a folder of .pts files (one per image) or one CSV/JSON."
                )
            pts = ann.read_pts(source, one_based=pts_one_based)
            self.single = Annotation(pts, np.ones(len(pts)), str(source))
            return
        if kind == "manifest":
            entries = [(e.image, e.landmarks, e.visible) for e in read_manifest(source)]
        elif kind == "csv":
            entries = [
                (e.image, e.landmarks, e.visible)
                for e in ann.read_landmark_csv(source, n_points, convention)
            ]
        else:
            entries = _read_json(source)
        for image, points, visible in entries:
            a = Annotation(
                np.asarray(points, np.float64).reshape(-1, 2),
                np.asarray(visible, np.float64).reshape(-1),
                str(source),
            )
            key = _Key(str(image), source.parent)
            self.by_key.setdefault("name:" + key.parts[-1], []).append((key, a))
            self.by_key.setdefault("stem:" + key.stem, []).append((key, a))

    def find(self, image: Path) -> Annotation | str:
        """The annotation of ``image``, or the reason there is none (one sentence).

        An annotation named by the image's own path wins; otherwise the one whose name shares
        the longest trailing run of folders with the image's path, if only one does (file names
        first, then stems). Several equally good matches are a clash: the image is skipped.
        """
        if self.single is not None:
            return self.single
        if self.folder is not None:
            return self._find_pts(image)
        resolved = _resolve(image)
        parts = resolved.parts if resolved is not None else Path(image).parts
        for tier, key in (("name", image.name), ("stem", image.stem)):
            cands = self.by_key.get(f"{tier}:{key}", [])
            if not cands:
                continue
            exact = [a for k, a in cands if resolved is not None and k.resolved == resolved]
            if exact:
                return exact[0]
            scored = [(k.suffix_match(parts, stem=tier == "stem"), k, a) for k, a in cands]
            best = max(s for s, _, _ in scored)
            top = [(k, a) for s, k, a in scored if s == best]
            if len({k.text for k, _ in top}) == 1:
                return top[0][1]
            names = sorted({k.text for k, _ in top})
            shown = ", ".join(names[:4]) + ("" if len(names) <= 4 else ", ...")
            return (
                f"ambiguous landmarks: {len(names)} annotations in {self.source} "
                f"({shown}) match {key} equally well; name the images there by paths "
                "that tell them apart"
            )
        return f"no annotation for it in {self.source}"

    def _find_pts(self, image: Path) -> Annotation | str:
        direct = self.folder / f"{image.stem}.pts"
        if not direct.is_file():
            if self._pts_index is None:
                self._pts_index = {}
                for p in sorted(self.folder.rglob("*.pts")):
                    self._pts_index.setdefault(p.stem, []).append(p)
            hits = self._pts_index.get(image.stem, [])
            if not hits:
                return f"no {image.stem}.pts in {self.folder}"
            if len(hits) > 1:
                return f"{len(hits)} files named {image.stem}.pts under {self.folder}"
            direct = hits[0]
        try:
            pts = read_pts(direct, one_based=self.pts_one_based)
        except TrainError as e:
            return str(e).rstrip(".")
        return Annotation(pts, np.ones(len(pts)), str(direct))


def _resolve(p: Path) -> Path | None:
    try:
        return Path(p).expanduser().resolve()
    except (OSError, RuntimeError):
        return None


class _Key:
    """An annotation's image name as written, and the path it resolves to (relative names
    resolve against the landmark file's folder)."""

    def __init__(self, text: str, base: Path):
        self.text = text
        p = Path(text).expanduser()
        self.parts = Path(os.path.normpath(text)).parts or (text,)
        self.stem = Path(self.parts[-1]).stem
        self.resolved = _resolve(p if p.is_absolute() else base / p)

    def suffix_match(self, parts: Sequence[str], stem: bool = False) -> int:
        """How many trailing path components this name shares with ``parts``."""
        mine = list(self.parts)
        theirs = list(parts)
        if not theirs:
            return 0
        if stem:
            mine[-1], theirs[-1] = Path(mine[-1]).stem, Path(theirs[-1]).stem
        n = 0
        while n < min(len(mine), len(theirs)) and mine[-1 - n] == theirs[-1 - n]:
            n += 1
        return n


def _read_json(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TrainError(
            f'{path}: not readable JSON ({e}); write {{"image": [[x, y], ...]}} '
            'or a list of {"image": ..., "landmarks": ...}.'
        ) from None
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list) and all(isinstance(d, dict) and "image" in d for d in data):
        items = [(d["image"], d.get("landmarks")) for d in data]
    else:
        raise TrainError(
            f"{path}: expected an object {{image: landmarks}} or a list of "
            '{"image": ..., "landmarks": ...} objects.'
        )
    out = []
    for name, pts in items:
        try:
            rows = [[math.nan if v is None else float(v) for v in p] for p in pts]
            if not rows or any(len(r) not in (2, 3) for r in rows):
                raise ValueError
        except (TypeError, ValueError):
            raise TrainError(
                f"{path}: the landmarks of {name!r} must be a list of [x, y] or [x, y, v]."
            ) from None
        a = np.array([r + [1.0] if len(r) == 2 else r for r in rows], dtype=np.float64)
        out.append((str(name), a[:, :2], a[:, 2]))
    return out
