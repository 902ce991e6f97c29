"""The manifest: one JSON object per line, one line per image (docs/data-format.md).

    {"image": "300w/afw/1051618982_1.jpg", "landmarks": [[412.5, 231.0, 1], ...], "subject": "id7"}

- ``image``: the file, relative to the manifest's folder or absolute.
- ``landmarks``: a list of ``[x, y, v]`` (or ``[x, y]``, meaning ``v = 1``) in **our** pixel
  convention (x right, y down, (0, 0) the centre of the top-left pixel, docs/conventions.md);
  ``v`` is 1 for an annotated (visible) landmark and 0 for a missing one, whose x and y may
  be ``null``.
- ``subject`` (optional): an identity label (string or integer), used to pair two images of
  one person (stn_train.data.pairs).

Blank lines and lines starting with ``#`` are ignored; other keys are kept in ``extra``.
Syntax errors are refused when the file is read; whether a line's *content* is usable
(landmark count, NaN coordinates, the image file) is the dataset's decision, which skips and
counts bad lines.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stn_train.errors import TrainError, refuse_folder
from stn_train.outputs import write_text

__all__ = ["ManifestEntry", "read_manifest", "write_manifest"]


@dataclass
class ManifestEntry:
    """One image and its landmarks.

    Attributes:
        image: the image file (absolute once read from a manifest).
        landmarks: (L, 2) float64, pixels in our convention; NaN where not annotated.
        visible: (L,) float64, 1 for an annotated landmark, 0 for a missing one.
        subject: identity label, or None.
        line: 1-based line number in the manifest it came from (for messages), or None.
        extra: other keys of the manifest line, kept as read.
        quality_mask: the image's quality mask (key ``"quality_mask"``, a path relative to
            the manifest's folder like the image's; ``stn-train synthesize`` writes it: 255
            where the pixel is invented), or None. Training leaves invented pixels out of the
            siamese and symmetry terms (docs/data-format.md).
    """

    image: Path
    landmarks: np.ndarray
    visible: np.ndarray
    subject: str | None = None
    line: int | None = None
    extra: dict = field(default_factory=dict)
    quality_mask: Path | None = None

    def __post_init__(self):
        self.image = Path(self.image)
        if self.quality_mask is not None:
            self.quality_mask = Path(self.quality_mask)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float64).reshape(-1, 2)
        self.visible = np.asarray(self.visible, dtype=np.float64).reshape(-1)
        if self.visible.shape[0] != self.landmarks.shape[0]:
            raise ValueError(
                f"visible has {self.visible.shape[0]} values for {self.landmarks.shape[0]} "
                "landmarks."
            )
        if self.subject is not None:
            self.subject = str(self.subject)


def _where(path: Path, line: int) -> str:
    return f"{path}, line {line}"


def _parse_point(p, where: str, k: int) -> tuple[float, float, float]:
    if not isinstance(p, list) or len(p) not in (2, 3):
        raise TrainError(
            f"{where}: landmark {k} is {json.dumps(p)}; write each landmark as [x, y, v] "
            "(or [x, y])."
        )
    xy = []
    for value in p[:2]:
        if value is None:
            xy.append(math.nan)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            xy.append(float(value))
        else:
            raise TrainError(f"{where}: landmark {k} has coordinate {value!r}; use a number.")
    v = 1 if len(p) == 2 else p[2]
    if v not in (0, 1):  # True/False compare equal to 1/0
        raise TrainError(f"{where}: landmark {k} has visibility {v!r}; use 0 or 1.")
    return xy[0], xy[1], float(v)


def _parse_line(text: str, path: Path, line: int) -> ManifestEntry:
    where = _where(path, line)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainError(
            f"{where} is not valid JSON ({exc.msg}); write one JSON object per line."
        ) from None
    if not isinstance(obj, dict):
        raise TrainError(
            f'{where} is not a JSON object; write {{"image": ..., '
            '"landmarks": [[x, y, v], ...]}}.'
        )
    image = obj.pop("image", None)
    if not isinstance(image, str) or not image:
        raise TrainError(f'{where} has no "image" path; every line needs one.')
    points = obj.pop("landmarks", None)
    if not isinstance(points, list):
        raise TrainError(f'{where} has no "landmarks" list; write [[x, y, v], ...].')
    parsed = [_parse_point(p, where, k) for k, p in enumerate(points)]
    arr = np.array(parsed, dtype=np.float64).reshape(-1, 3)
    subject = obj.pop("subject", None)
    if subject is not None and not isinstance(subject, (str, int)):
        raise TrainError(f"{where} has subject {subject!r}; use a string or an integer.")
    image_path = Path(image).expanduser()
    if not image_path.is_absolute():
        image_path = path.parent / image_path
    mask = obj.pop("quality_mask", None)
    mask_path = None
    if mask is not None:
        if not isinstance(mask, str) or not mask:
            raise TrainError(
                f"{where} has quality_mask {mask!r}; write the mask image's path as a string "
                "(or leave the key out)."
            )
        mask_path = Path(mask).expanduser()
        if not mask_path.is_absolute():
            mask_path = path.parent / mask_path
    return ManifestEntry(
        image=image_path,
        landmarks=arr[:, :2],
        visible=arr[:, 2],
        subject=subject,
        line=line,
        extra=obj,
        quality_mask=mask_path,
    )


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """All entries of a manifest file, image paths made absolute.

    Raises:
        TrainError: the file is missing, empty, or a line is not a valid manifest line.
    """
    path = Path(path).expanduser().absolute()
    refuse_folder(path, "manifest", "pass the path of a .jsonl manifest")
    if not path.is_file():
        raise TrainError(f"manifest not found: {path}; pass the path of a .jsonl manifest.")
    entries = []
    line = 0
    try:
        with path.open("r", encoding="utf-8") as f:
            for line, text in enumerate(f, start=1):
                text = text.strip()
                if text and not text.startswith("#"):
                    entries.append(_parse_line(text, path, line))
    except UnicodeDecodeError:
        raise TrainError(
            f"{path} is not a text manifest (line {line + 1} is not UTF-8 text); "
            "pass a .jsonl file with one JSON line per image."
        ) from None
    except OSError as e:
        raise TrainError(
            f"manifest {path} cannot be read ({e.strerror or e}); check its path and permissions."
        ) from None
    if not entries:
        raise TrainError(f"manifest {path} has no entries; add one JSON line per image.")
    return entries


def _image_text(image: Path, folder: Path) -> str:
    image = Path(os.path.abspath(image))
    try:
        return image.relative_to(folder).as_posix()
    except ValueError:  # outside the manifest's folder: keep it absolute
        return str(image)


def _entry_json(entry: ManifestEntry, folder: Path) -> str:
    points = []
    for (x, y), v in zip(entry.landmarks.tolist(), entry.visible.tolist(), strict=True):
        points.append([None if math.isnan(x) else x, None if math.isnan(y) else y, int(v > 0)])
    obj = {"image": _image_text(entry.image, folder), "landmarks": points}
    if entry.subject is not None:
        obj["subject"] = entry.subject
    if entry.quality_mask is not None:
        obj["quality_mask"] = _image_text(entry.quality_mask, folder)
    obj.update({k: v for k, v in entry.extra.items() if k != "quality_mask"})
    return json.dumps(obj, allow_nan=False)


def write_manifest(entries: Iterable[ManifestEntry], path: str | Path) -> Path:
    """Write entries as a manifest (atomically: a temporary file renamed into place).

    Image paths inside the manifest's folder are written relative to it, others absolute.
    Non-finite coordinates are written as ``null``. Returns the manifest's path.
    """
    path = Path(path).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(_entry_json(e, path.parent) + "\n" for e in entries))
    return path
