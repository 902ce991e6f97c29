"""Readers for common landmark annotation files, and ``build_manifest`` which turns a folder of
images plus their annotations into a manifest (docs/data-format.md).

Conversions to our pixel convention (x right, y down, (0, 0) the centre of the top-left pixel):

- iBUG / 300-W ``.pts``: the coordinates are **1-based** (the 300-W annotations were made in
  MATLAB, where the centre of the top-left pixel is (1, 1); menpo, the iBUG group's own
  library, defines .pts as 1-based and subtracts 1 on import: menpo/menpo#160, #161), y down.
  Ours = ``(x - 1, y - 1)``; ``one_based=False`` reads a file written 0-based as is.
- landmark CSV (AFLW-style, 21 points by default): ``convention="ours"`` (as written),
  ``"one_based"`` (y down, 1-based: ``(x - 1, y - 1)``) or ``"original"`` (the original
  3DMM-STN's labels: y **up**, 1-based, ``(x - 1, H - y)`` with H the image height, read from
  the image file; stn_core.conventions.labels_from_original).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io as sio
from stn_core.conventions import labels_from_original

from stn_train.data.images import IMAGE_EXTENSIONS, image_size
from stn_train.data.manifest import ManifestEntry, write_manifest
from stn_train.errors import TrainError, refuse_folder
from stn_train.outputs import atomic_write, write_png, write_text

__all__ = [
    "CSV_CONVENTIONS",
    "read_pts",
    "write_pts",
    "read_landmark_csv",
    "read_aflw21",
    "write_landmark_csv",
    "import_demodata",
    "build_manifest",
]

CSV_CONVENTIONS = ("ours", "one_based", "original")


# --------------------------------------------------------------------------- .pts (iBUG / 300-W)


def read_pts(path: str | Path, one_based: bool = True) -> np.ndarray:
    """An iBUG / 300-W ``.pts`` file -> (L, 2) float64 points in our convention.

    Format::

        version: 1
        n_points:  68
        {
        x y
        ...
        }

    (``npoints:`` is accepted for ``n_points:``.) With ``one_based`` (the 300-W files), ours is
    ``(x - 1, y - 1)``.

    Raises:
        TrainError: the file is missing or not in this format.
    """
    path = Path(path)
    refuse_folder(path, "annotation file", "pass a .pts file")
    if not path.is_file():
        raise TrainError(f"annotation file not found: {path}.")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    n_points = None
    try:
        start = lines.index("{")
        end = lines.index("}", start)
    except ValueError:
        raise TrainError(
            f"{path} is not a .pts file: expected the points between a '{{' line and a '}}' line."
        ) from None
    for ln in lines[:start]:
        key, _, value = ln.partition(":")
        if key.strip().lower() in ("n_points", "npoints"):
            try:
                n_points = int(value)
            except ValueError:
                raise TrainError(f"{path}: cannot read the point count from {ln!r}.") from None
    points = []
    for k, ln in enumerate(lines[start + 1 : end]):
        fields = ln.split()
        try:
            if len(fields) != 2:
                raise ValueError
            points.append((float(fields[0]), float(fields[1])))
        except ValueError:
            raise TrainError(
                f"{path}: point {k + 1} is {ln!r}; each line between the braces must be 'x y'."
            ) from None
    if n_points is not None and n_points != len(points):
        raise TrainError(f"{path} says n_points: {n_points} but lists {len(points)} points.")
    out = np.array(points, dtype=np.float64).reshape(-1, 2)
    return out - 1.0 if one_based else out


def write_pts(path: str | Path, points, one_based: bool = True) -> Path:
    """Write (L, 2) points in our convention as a ``.pts`` file (1-based by default)."""
    path = Path(path)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) + (1.0 if one_based else 0.0)
    body = "".join(f"{x:.6f} {y:.6f}\n" for x, y in pts)
    write_text(path, f"version: 1\nn_points:  {len(pts)}\n{{\n{body}}}\n")
    return path


# --------------------------------------------------------------------------- landmark CSV (AFLW)


def _to_float(text: str, where: str) -> float:
    text = text.strip()
    if text == "" or text.lower() in ("nan", "null", "none"):
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise TrainError(f"{where}: {text!r} is not a number.") from None


def _convert(points: np.ndarray, convention: str, image: Path, where: str) -> np.ndarray:
    if convention == "ours":
        return points
    if convention == "one_based":
        return points - 1.0
    # the original's labels: y up, 1-based (stn_core.conventions.labels_from_original)
    try:
        _, height = image_size(image)
    except TrainError as exc:
        raise TrainError(f"{where}: convention='original' needs the image height: {exc}") from None
    return labels_from_original(points, height)


def read_landmark_csv(
    path: str | Path,
    n_points: int,
    convention: str = "ours",
    images_dir: str | Path | None = None,
) -> list[ManifestEntry]:
    """A landmark CSV -> manifest entries.

    Layout: one row per image, comma- (or tab-) separated: ``image, x1, y1, v1, ...,
    xn, yn, vn`` and optionally a last ``subject`` column. A first row whose first field is
    ``image`` is a header. Empty (or ``nan``) x and y mark a missing landmark (give it v = 0).

    Args:
        path: the CSV file.
        n_points: landmarks per row (21 for AFLW).
        convention: ``"ours"``, ``"one_based"`` or ``"original"`` (module docstring).
        images_dir: the folder image paths are relative to (default: the CSV's folder).

    Raises:
        TrainError: missing file, a row with the wrong number of fields, a non-number, or a
            visibility other than 0 / 1.
    """
    if convention not in CSV_CONVENTIONS:
        raise TrainError(
            f"convention must be one of {', '.join(CSV_CONVENTIONS)}; got {convention!r}."
        )
    path = Path(path)
    refuse_folder(path, "annotation file", "pass a landmark CSV file")
    if not path.is_file():
        raise TrainError(f"annotation file not found: {path}.")
    folder = Path(images_dir) if images_dir is not None else path.parent
    text = path.read_text(encoding="utf-8-sig")
    delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    entries = []
    for line, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if line == 1 and row[0].strip().lower() == "image":
            continue
        where = f"{path}, line {line}"
        if len(row) not in (1 + 3 * n_points, 2 + 3 * n_points):
            raise TrainError(
                f"{where} has {len(row)} fields; expected image, then x y v for each of "
                f"{n_points} landmarks ({1 + 3 * n_points} fields), and optionally a subject."
            )
        values = np.array([_to_float(t, where) for t in row[1 : 1 + 3 * n_points]]).reshape(-1, 3)
        vis = values[:, 2]
        if not np.all((vis == 0) | (vis == 1)):
            raise TrainError(f"{where}: visibility values must be 0 or 1.")
        image = Path(row[0].strip())
        image = image if image.is_absolute() else folder / image
        points = _convert(values[:, :2], convention, image, where)
        subject = (row[-1].strip() or None) if len(row) == 2 + 3 * n_points else None
        entries.append(
            ManifestEntry(image=image, landmarks=points, visible=vis, subject=subject, line=line)
        )
    if not entries:
        raise TrainError(f"{path} has no landmark rows.")
    return entries


def read_aflw21(
    path: str | Path, convention: str = "ours", images_dir: str | Path | None = None
) -> list[ManifestEntry]:
    """An AFLW-style 21-landmark CSV (``read_landmark_csv`` with ``n_points=21``)."""
    return read_landmark_csv(path, 21, convention, images_dir)


def write_landmark_csv(
    entries: Sequence[ManifestEntry], path: str | Path, images_dir: str | Path | None = None
) -> Path:
    """Write entries as a landmark CSV with a header, coordinates in our convention."""
    path = Path(path)
    folder = Path(images_dir) if images_dir is not None else path.parent
    n = entries[0].landmarks.shape[0]
    with_subject = any(e.subject is not None for e in entries)
    header = ["image"] + [f"{a}{k + 1}" for k in range(n) for a in "xyv"]
    with atomic_write(path) as f:
        w = csv.writer(f)
        w.writerow(header + (["subject"] if with_subject else []))
        for e in entries:
            try:
                name = e.image.relative_to(folder).as_posix()
            except ValueError:
                name = str(e.image)
            row = [name]
            for (x, y), v in zip(e.landmarks.tolist(), e.visible.tolist(), strict=True):
                row += [
                    "" if math.isnan(x) else repr(x),
                    "" if math.isnan(y) else repr(y),
                    str(int(v)),
                ]
            w.writerow(row + ([e.subject or ""] if with_subject else []))
    return path


# --------------------------------------------------------------------------- the original's demo


def import_demodata(mat_path: str | Path, out_dir: str | Path) -> Path:
    """The original's ``demodata.mat`` (six 224 x 224 photographs with 21 AFLW labels, y up,
    1-based) -> PNG files and ``manifest.jsonl`` in ``out_dir``; returns the manifest's path.
    """
    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise TrainError(f"demodata file not found: {mat_path}.")
    try:
        d = sio.loadmat(mat_path)
        images, labels = d["Images"], d["Labels"]
    except (ValueError, KeyError, NotImplementedError, OSError) as exc:
        raise TrainError(
            f"{mat_path} is not the original's demodata.mat (Images and Labels): {exc}."
        ) from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    height = images.shape[0]
    points = labels_from_original(np.transpose(labels[0], (2, 1, 0)).astype(np.float64), height)
    entries = []
    for k in range(images.shape[3]):
        name = out_dir / f"demo_{k + 1}.png"
        write_png(name, np.clip(np.rint(images[..., k]), 0, 255).astype(np.uint8))
        entries.append(
            ManifestEntry(image=name, landmarks=points[k], visible=np.ones(points.shape[1]))
        )
    return write_manifest(entries, out_dir / "manifest.jsonl")


# --------------------------------------------------------------------------- build_manifest


def _find_image(stem_path: Path) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        for candidate in (stem_path.with_suffix(ext), stem_path.with_suffix(ext.upper())):
            if candidate.is_file():
                return candidate
    return None


def _subject_of(image: Path, images_dir: Path) -> str | None:
    try:
        rel = image.parent.relative_to(images_dir)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else None


def build_manifest(
    images_dir: str | Path,
    annotations: str | Path | None = None,
    out: str | Path | None = None,
    *,
    n_points: int = 21,
    convention: str = "ours",
    pts_one_based: bool = True,
    subject_from: str | None = None,
) -> list[ManifestEntry]:
    """Build a manifest from images and their annotations; write it to ``out`` if given.

    Args:
        images_dir: the image folder.
        annotations: a folder of ``.pts`` files (searched recursively; each pairs with the image
            of the same relative path and stem under ``images_dir``), or a landmark CSV
            (``read_landmark_csv``). None: ``.pts`` files beside the images (300-W layout).
        out: the manifest to write (``.jsonl``), or None.
        n_points: landmarks per row of a CSV (21: AFLW).
        convention: the CSV's coordinate convention (``read_landmark_csv``).
        pts_one_based: the ``.pts`` files are 1-based (300-W; ``read_pts``).
        subject_from: None, or ``"folder"``: an image's subject is its folder relative to
            ``images_dir`` (one folder per person).

    Returns:
        The entries (also written to ``out``).

    Raises:
        TrainError: no annotations found, an annotation without its image, or a bad file.
    """
    images_dir = Path(images_dir).expanduser().absolute()
    if not images_dir.is_dir():
        raise TrainError(f"image folder not found: {images_dir}.")
    if subject_from not in (None, "folder"):
        raise TrainError(f"subject_from must be None or 'folder', got {subject_from!r}.")
    source = Path(annotations).expanduser().absolute() if annotations is not None else images_dir
    if source.is_dir():
        pts_files = sorted(source.rglob("*.pts"))
        if not pts_files:
            raise TrainError(f"no .pts files under {source}; pass the annotation folder or CSV.")
        entries, missing = [], []
        for pts in pts_files:
            image = _find_image(images_dir / pts.relative_to(source).with_suffix(""))
            if image is None:
                missing.append(pts)
                continue
            points = read_pts(pts, one_based=pts_one_based)
            entries.append(
                ManifestEntry(image=image, landmarks=points, visible=np.ones(len(points)))
            )
        if missing:
            raise TrainError(
                f"{len(missing)} of {len(pts_files)} .pts files have no image of the same name "
                f"under {images_dir} (first: {missing[0]}); put the images there with the same "
                "relative paths."
            )
    elif source.is_file():
        entries = read_landmark_csv(source, n_points, convention, images_dir)
        missing = [e.image for e in entries if not e.image.is_file()]
        if missing:
            raise TrainError(
                f"{len(missing)} of {len(entries)} images named in {source} are missing "
                f"(first: {missing[0]}); check images_dir or the paths in the CSV."
            )
    else:
        raise TrainError(f"annotations not found: {source}; pass a .pts folder or a CSV file.")
    if subject_from == "folder":
        for e in entries:
            e.subject = _subject_of(e.image, images_dir)
    if out is not None:
        write_manifest(entries, out)
    return entries
