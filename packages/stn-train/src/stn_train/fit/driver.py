"""The fit driver behind ``stn-train fit``: fit the morphable model to photographs, one
result folder per image.

:func:`fit_images` reads each image and its landmarks (:mod:`stn_train.fit.landmark_sources`),
fits same-sized images in batches (:func:`stn_core.fit_image` does the fitting) and writes
each image's files (:mod:`stn_train.fit.results`) and ``OUT/summary.json`` listing every image.
An image that cannot be read, has no annotation, the wrong number of landmarks or fewer than 2
visible ones is reported and skipped; the others are fitted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from stn_core.fitting import FitWeights, fit_image

from stn_train.data.images import image_files, load_image
from stn_train.detection.photos import face_crop
from stn_train.errors import TrainError
from stn_train.fit.landmark_sources import LandmarkSource
from stn_train.fit.results import (
    finite_or_none,
    params_record,
    photo_record,
    write_fit_files,
    write_photo_fit,
)
from stn_train.outputs import check_output_folder, make_output_folder, unique_names, write_json
from stn_train.runtime import load_grid_model, resolve_device

__all__ = ["FitRecord", "fit_images", "DETECTED_SET"]

# The landmark set of detected faces (the 68 iBUG points of dlib's predictor).
DETECTED_SET = "ibug68"


@dataclass
class FitRecord:
    """The outcome for one image.

    face: the face's number in the photo (1: the detector's most confident), or None for an
    annotated image. status: ``"fitted"`` or ``"skipped"``; reason: why it was skipped (one
    sentence), note: the same in a few words (for the table).
    landmark_error_px, photometric_rms, converged, n_iter, seconds: the fit's figures (None
    when skipped; photometric_rms None for a landmark-only fit). out_dir: its result folder.
    """

    image: Path
    status: str
    face: int | None = None
    reason: str | None = None
    note: str | None = None
    landmark_error_px: float | None = None
    photometric_rms: float | None = None
    converged: bool | None = None
    fit_status: str | None = None
    n_iter: int | None = None
    seconds: float | None = None
    out_dir: Path | None = None
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["image"] = str(self.image)
        d["out_dir"] = None if self.out_dir is None else str(self.out_dir)
        return d


def fit_images(
    images: Sequence[str | Path],
    model_path: str | Path,
    landmarks: str | Path | None,
    out: str | Path,
    landmarks_only: bool = False,
    *,
    landmark_set: str = "aflw21",
    convention: str = "ours",
    pts_one_based: bool = True,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    visibility: str = "normals",
    weights: FitWeights | None = None,
    pictures: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cpu_threads: int | None = None,
    detector=None,
    crop_size: int = 256,
) -> list[FitRecord]:
    """Fit the model to each image and write its results (see the module docstring).

    Args:
        images: image files, or folders of them. model_path: the UV-grid model (.h5,
            bfm-prep uv-resample; with a colour model unless ``landmarks_only``).
            landmarks: folder or file (:mod:`stn_train.fit.landmark_sources`), or None with
            a ``detector``. out: the output folder (created).
        landmarks_only: fit pose, identity and expression to the landmarks only.
        landmark_set: the model's landmark set the annotations follow (e.g. aflw21, ibug68).
        convention: a CSV's coordinate convention (ours, one_based, original).
        pts_one_based: .pts files are 1-based (300-W).
        device: None or auto (CUDA when available), cpu, cuda.
        batch_size: images of one size fitted together.
        visibility: normals or depth (stn_core.fitting.fit_image). weights:
            stn_core.fitting.FitWeights or None.
        pictures: write the pictures and the mesh (params.json is always written).
        progress: ``progress(done, total)``, called as images are done (a progress bar).
        detector: a :class:`stn_train.detection.FaceDetector`: the images are uncropped
            photos; every face found is fitted to its 68 detected landmarks (the model's
            ``ibug68`` set, the jaw contour down-weighted) on its crop (``crop_size`` pixels)
            and mapped back to the photo (module docstring). Needs ``landmarks`` None.
        crop_size: the side of a detected face's crop, pixels.
        cpu_threads: torch threads while fitting on the CPU (None: torch's setting; 1 on a
            machine whose cores are busy with other work, see stn_core.fitting.fit_image).

    Returns:
        One :class:`FitRecord` per image (with a detector: per face found, and one per photo
        with no face or that could not be read), in the order given. When every image was skipped
        before fitting, nothing is written (not even ``out``).

    Raises:
        TrainError: no images, an unreadable model or landmark source, a model without the
            landmark set or (for a photometric fit) without a colour model, an unusable out.
    """
    paths = image_files(images)
    if batch_size < 1:
        raise TrainError(f"{{0}} must be at least 1, got {batch_size}.", ("batch_size",))
    if cpu_threads is not None and cpu_threads < 1:
        raise TrainError(f"{{0}} must be at least 1, got {cpu_threads}.", ("cpu_threads",))
    if visibility not in ("normals", "depth"):
        raise TrainError(f"{{0}} must be normals or depth, got {visibility!r}.", ("visibility",))
    if convention not in ("ours", "one_based", "original"):
        raise TrainError(
            f"{{0}} must be ours, one_based or original, got {convention!r}.", ("convention",)
        )
    if (landmarks is None) == (detector is None):  # exactly one source of landmarks
        raise TrainError(
            "pass landmarks ({0}) or a face detector ({1}), not both.",
            ("landmarks", ("detector", "--detect")),
        )
    if detector is not None:
        landmark_set = DETECTED_SET
        if crop_size < 32:
            raise TrainError(f"{{0}} must be at least 32 pixels, got {crop_size}.", ("crop_size",))
    model_path, out = Path(model_path), Path(out)
    check_output_folder(out)
    dev = resolve_device(device)
    model = load_grid_model(model_path, dev, dtype=torch.float32)
    if landmark_set not in model.landmarks:
        detected = (
            "; detected faces carry the 68 iBUG landmarks: build the grid model with an ibug68 "
            "set (bfm-prep --landmarks ibug68=FILE)"
            if detector is not None
            else ""
        )
        raise TrainError(
            f"{model_path} has no landmark set {landmark_set!r} (it has "
            f"{', '.join(sorted(model.landmarks)) or 'none'}){detected}; pass {{0}}.",
            ("landmark_set",) if detector is None else ("model",),
        )
    if not landmarks_only and not model.has_color:
        raise TrainError(
            f"{model_path} has no colour model, so only a landmark fit is possible; "
            "pass {0} or a grid model built with colour.",
            (("landmarks_only=True", "--landmarks-only"),),
        )
    n_points = int(model.landmarks[landmark_set].numel())
    if detector is None:
        source = LandmarkSource(Path(landmarks), n_points, convention, pts_one_based, len(paths))
        records, ready = _annotated(paths, source, n_points, landmark_set)
    else:
        records, ready = _detected(paths, detector, crop_size)

    if not ready:  # nothing to fit: leave no (empty) output folder behind
        return [r for r in records if r is not None]
    # Batches of same-sized images, in the order given.
    groups: dict[tuple[int, int], list[_Face]] = {}
    for item in ready:
        groups.setdefault(tuple(item.image.shape[-2:]), []).append(item)
    batches = [g[k : k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]
    make_output_folder(out)
    done = len(records) - len(ready)
    if progress is not None:
        progress(done, len(records))
    on_photo: dict[tuple[Path, str], list] = {}  # (photo, name) -> its faces' (face, params)
    for batch in batches:
        imgs = torch.stack([b.image for b in batch]).to(dev)
        q = torch.as_tensor(np.stack([b.points for b in batch]), dtype=torch.float32, device=dev)
        v = torch.as_tensor(np.stack([b.visible for b in batch]), dtype=torch.float32, device=dev)
        t0 = time.perf_counter()
        with torch.no_grad():
            result = fit_image(
                model,
                imgs,
                q,
                v,
                landmark_set,
                weights=weights,
                landmarks_only=landmarks_only,
                visibility=visibility,
                cpu_threads=cpu_threads,
            )
        seconds = (time.perf_counter() - t0) / len(batch)
        history = result.cost_history()
        for j, item in enumerate(batch):
            folder = out / item.name
            folder.mkdir(parents=True, exist_ok=True)
            rec = _record(item, result, j, seconds, folder, landmarks_only)
            params = params_record(
                result,
                j,
                model,
                item.photo,
                model_path,
                tuple(imgs.shape[-2:]),
                landmark_set,
                landmarks_only,
                weights,
            )
            if item.face is not None:
                params.update(photo_record(result, j, item.face, item.to_photo))
                on_photo.setdefault((item.photo, item.photo_name), []).append((item.face, params))
            rec.files = write_fit_files(
                folder,
                params,
                result,
                j,
                model,
                imgs[j],
                q[j],
                v[j],
                history,
                landmarks_only,
                pictures,
            )
            records[item.index] = rec
            done += 1
            if progress is not None:
                progress(done, len(records))
    if pictures:
        for (photo, name), faces in on_photo.items():
            write_photo_fit(model, photo, faces, out / f"{name}.overlay.png")
    finished = [r for r in records if r is not None]
    write_json(out / "summary.json", [r.to_json() for r in finished])
    return finished


def _record(item: _Face, result, j, seconds, folder, landmarks_only) -> FitRecord:
    usable = bool(result.usable[j])
    return FitRecord(
        image=item.photo,
        face=None if item.face is None else item.number,
        status="fitted" if usable else "skipped",
        reason=None if usable else "fewer than 2 visible landmarks",
        note=None if usable else "fewer than 2 visible landmarks",
        landmark_error_px=finite_or_none(result.landmark_error_px[j]),
        photometric_rms=None if landmarks_only else finite_or_none(result.photometric_rms[j]),
        converged=bool(result.converged[j]),
        fit_status=result.status[j],
        n_iter=int(result.n_iter[j]),
        seconds=seconds,
        out_dir=folder,
    )


@dataclass
class _Face:
    """One face to fit: an annotated image, or one detected face's crop of a photo."""

    index: int  # its slot in the records
    photo: Path
    photo_name: str  # the photo's unique output name
    name: str  # its result folder's name
    image: torch.Tensor  # (3, H, W) what is fitted: the image, or the face's crop
    points: np.ndarray  # (L, 2) landmarks in ``image``'s pixels
    visible: np.ndarray  # (L,) weights
    face: object = None  # stn_train.detection.DetectedFace
    number: int = 0  # the face's number in its photo (1: the most confident)
    to_photo: dict | None = None  # the crop's map to the photo (data.transforms.to_source)


def _annotated(paths: list[Path], source, n_points: int, landmark_set: str):
    """Records (None where a face will be fitted) and the faces to fit, from images and
    their annotations."""
    records: list[FitRecord | None] = [None] * len(paths)
    ready = []
    for i, (p, name) in enumerate(zip(paths, unique_names(paths), strict=True)):
        reason = note = None
        try:
            img, _ = load_image(p, from_manifest=False)
        except TrainError as e:
            reason, note = str(e).rstrip("."), "unreadable image"
        if reason is None:
            ann = source.find(p)
            if isinstance(ann, str):
                reason = ann
                note = "ambiguous landmarks" if ann.startswith("ambiguous") else "no landmarks"
            elif ann.points.shape[0] != n_points:
                reason = (
                    f"{ann.points.shape[0]} landmarks in {ann.source}, but the model's "
                    f"set {landmark_set} has {n_points}"
                )
                note = f"{ann.points.shape[0]} landmarks, not {n_points}"
            else:
                vis = ann.visible * np.isfinite(ann.points).all(1)
                if int((vis > 0).sum()) < 2:
                    reason = note = "fewer than 2 visible landmarks"
        if reason is not None:
            records[i] = FitRecord(image=p, status="skipped", reason=reason, note=note)
            continue
        pts = np.where(np.isfinite(ann.points), ann.points, 0.0)
        ready.append(_Face(i, p, name, name, img, pts, vis))
    return records, ready


def _detected(paths: list[Path], detector, crop_size: int):
    """Records (None where a face will be fitted) and the faces to fit: every face the
    detector finds in each photo, as its crop with its 68 landmarks."""
    records: list[FitRecord | None] = []
    ready = []
    for p, name in zip(paths, unique_names(paths), strict=True):
        try:
            img, _ = load_image(p, from_manifest=False)
        except TrainError as e:
            records.append(
                FitRecord(
                    image=p, status="skipped", reason=str(e).rstrip("."), note="unreadable image"
                )
            )
            continue
        faces = detector(img)
        if not faces:
            records.append(
                FitRecord(image=p, status="skipped", reason="no face found", note="no face found")
            )
        for k, face in enumerate(faces, start=1):
            crop, points, to_photo = face_crop(img, face, crop_size)
            ready.append(
                _Face(
                    len(records),
                    p,
                    name,
                    f"{name}.face{k}",
                    crop,
                    points.numpy(),
                    face.visible,
                    face,
                    k,
                    to_photo,
                )
            )
            records.append(None)
    return records, ready
