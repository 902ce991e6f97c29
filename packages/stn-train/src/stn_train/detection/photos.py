"""``stn-train detect``'s work: every face of every photo as a crop with its 68 landmarks, and
a training manifest of them.

In ``out``:

- ``crops/NAME.faceK.png``: face K (1 = the detector's most confident) of photo NAME, the
  training data's crop (:mod:`stn_train.detection.detector`) resized to ``crop_size``;
- ``manifest.jsonl``: one line per face (docs/data-format.md), ``image`` the crop, the 68
  iBUG ``landmarks`` in the crop's pixels; and, kept by ``stn-train run`` as extra keys,
  ``source`` (the photo), ``box`` (the detector's box, photo pixels), ``crop`` (the map back
  to the photo: ``x_photo = scale * (x + 0.5) - 0.5 + offset``), ``score``, ``detector``;
- ``summary.json``: counts, the photos without a face and those that could not be read;
- ``detections.png``: a contact sheet of the crops with their landmarks (the first 48).

``stn-train run --data OUT/manifest.jsonl --landmarks ibug68`` trains on them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from stn_train.data.images import ImageReadError, image_files, load_image
from stn_train.data.manifest import ManifestEntry, write_manifest
from stn_train.data.transforms import crop_image, crop_points, resize_square, to_source
from stn_train.detection.detector import FaceDetector
from stn_train.errors import TrainError
from stn_train.outputs import (
    check_output_folder,
    make_output_folder,
    unique_names,
    write_json,
    write_png,
)
from stn_train.pictures.detection import write_contact_sheet

__all__ = ["DetectResult", "detect_photos", "face_crop"]


@dataclass
class DetectResult:
    """What :func:`detect_photos` returns."""

    out_dir: Path
    n_photos: int
    n_faces: int
    manifest: Path | None
    no_face: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """(photo, reason) of each photo that could not be read."""


def face_crop(image: torch.Tensor, face, size: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """A detected face's crop of ``image`` (3, H, W): the (3, size, size) crop, its 68
    landmarks in the crop's pixels, and the map back to the photo
    (:func:`stn_train.data.transforms.to_source`)."""
    crop = resize_square(crop_image(image, face.window), size)
    points = crop_points(torch.from_numpy(face.landmarks), face.window, size)
    return crop, points, to_source(face.window, size)


def detect_photos(
    photos: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    detector: FaceDetector,
    crop_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> DetectResult:
    """Detect the faces of ``photos`` (files or folders) and write the files of the module
    docstring into ``out``.

    A photo without a face is listed, not an error; one that cannot be read is skipped and
    listed. Nothing is written when no photo could be read.

    Raises:
        TrainError: no photos, an unusable ``out``, a bad ``crop_size``, or no photo readable.
    """
    if crop_size < 32:
        raise TrainError(f"{{0}} must be at least 32 pixels, got {crop_size}.", ("crop_size",))
    check_output_folder(out)
    files = image_files(photos)
    names = unique_names(files)
    out = Path(out)
    entries, sheet = [], []
    no_face, skipped = [], []
    for i, (path, name) in enumerate(zip(files, names, strict=True)):
        try:
            image, _ = load_image(path, from_manifest=False)
        except ImageReadError as e:
            skipped.append((path, str(e).rstrip(".")))
        else:
            faces = detector(image)
            if not faces:
                no_face.append(path)
            for k, face in enumerate(faces, start=1):
                crop, points, transform = face_crop(image, face, crop_size)
                file = out / "crops" / f"{name}.face{k}.png"
                write_png(file, crop.permute(1, 2, 0))
                entries.append(
                    ManifestEntry(
                        image=file.absolute(),
                        landmarks=points.numpy(),
                        visible=torch.ones(68).numpy(),
                        extra={
                            "source": str(Path(path).absolute()),
                            "face": k,
                            "box": [round(float(v), 2) for v in face.box],
                            "crop": transform,
                            "score": round(face.score, 4),
                            "detector": detector.method,
                        },
                    )
                )
                if len(sheet) < 48:
                    sheet.append((crop, points, f"{name} #{k}"))
        if progress is not None:
            progress(i + 1, len(files))
    if len(skipped) == len(files):
        raise TrainError(
            f"none of the {len(files)} photos could be read ({skipped[0][1]}); check the "
            "paths, and re-encode unreadable images as JPEG or PNG."
        )
    out = make_output_folder(out)
    manifest = write_manifest(entries, out / "manifest.jsonl") if entries else None
    write_json(
        out / "summary.json",
        {
            "photos": len(files),
            "faces": len(entries),
            "detector": detector.method,
            "crop_size": crop_size,
            "no_face": [str(p) for p in no_face],
            "skipped": [{"photo": str(p), "reason": r} for p, r in skipped],
        },
    )
    if sheet:
        write_contact_sheet(sheet, out / "detections.png")
    return DetectResult(out, len(files), len(entries), manifest, no_face, skipped)
