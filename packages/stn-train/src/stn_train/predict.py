"""``stn-train predict``: apply a trained localiser to face images.

Input framing: each image is padded to a centred square and resized to the network input, so
pass face crops framed as the localiser was trained: manifests crop the landmarks' box with a
quarter of its size as margin on each side (``ManifestDataset``), rendered faces fill about
90 % of the image (``SyntheticFaces``).

For each image ``NAME`` (the file's stem; made unique when two inputs share one), in ``--out``:

- ``NAME.theta.json``: theta in stn-core's convention (``r`` radians, ``t`` pixels, ``log_s``,
  ``alpha``; docs/conventions.md) for the network input (the image padded to a square and
  resized to the checkpoint's input size), and ``to_image``: the map from network-input pixels
  to the original image's, ``x_image = scale * (x_input + 0.5) - 0.5 + offset``;
- ``NAME.flat.png``: the flattened face, R x R (row 0 the forehead, column 0 the subject's
  right), sampled from the network input;
- ``NAME.mask.png``: its visibility mask (white: visible);
- ``NAME.obj`` + ``NAME.mtl``: the fitted mesh (``mean + basis alpha``, model frame, mm: x
  right, y up, z towards the viewer; not posed), textured with ``NAME.flat.png``: each grid
  vertex's texture coordinate is the centre of its pixel in the flattened image,
  ``vt = ((col + 0.5) / R, 1 - (row + 0.5) / R)``. Only the grid cells on the face
  (all three vertices inside the source mesh) are written as faces.

With a face detector (``--detect``, the optional extra ``stn-train[detect]``), the inputs are
uncropped photos: each face found becomes its own input, cropped as the training data is
(:mod:`stn_train.detection.detector`), and is written as ``NAME.faceK.*`` (K = 1 the most
confident). Its ``theta.json`` also holds ``theta_photo`` (the same face in the photo's
pixels: ``log_s`` plus ``log(scale)``, ``t`` mapped like a point), ``box_photo`` and
``landmarks_detected_photo``; and ``NAME.overlay.png`` shows every face's fitted model drawn
over the whole photo (boxes white, detected landmarks green, the model's red). A photo with no
face is listed, not an error.

``--average-by-subject``: images are grouped by their parent folder's name (one folder per
person, as UMDFaces), and ``subjects/SUBJECT.png`` is the per-pixel mean of the flattened faces
over the images in which that pixel is visible (black where none sees it), with
``subjects/SUBJECT.count.png`` the number of images seeing each pixel (white: all).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from stn_core import STN, project_theta
from stn_core.renderer import render

from stn_train.checkpoint import restore_localiser
from stn_train.data.images import ImageReadError, image_files, load_image
from stn_train.data.transforms import (
    crop_image,
    crop_window,
    resize_square,
    theta_to_source,
    to_source,
)
from stn_train.errors import TrainError
from stn_train.flip_test import FlipTest
from stn_train.outputs import (
    check_output_folder,
    make_output_folder,
    unique_names,
    write_json,
    write_png,
    write_textured_obj,
)
from stn_train.pictures.common import display_lighting
from stn_train.pictures.detection import write_photo_overlay
from stn_train.runtime import load_grid_model, resolve_device

__all__ = ["PredictResult", "predict", "square_input", "MIN_FACE_SIDE"]

# Images smaller than this on their short side are predicted with a warning (the smallest
# network input stn-train trains at, RunConfig.image_size >= 32).
MIN_FACE_SIDE = 32


@dataclass
class PredictResult:
    """What :func:`predict` returns."""

    out_dir: Path
    n_images: int
    names: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """(image, reason) of each image that could not be read (the others were predicted)."""
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    """(image, what) of each image that was predicted but is unlikely to be a usable face
    (too small)."""
    no_face: list[Path] = field(default_factory=list)
    """With a detector: the photos in which it found no face."""


def square_input(image: torch.Tensor, size: int) -> tuple[torch.Tensor, dict]:
    """Pad an image (3, H, W) to a centred square and resize it to ``size``.

    Returns the (3, size, size) input and ``to_image`` {"scale", "offset": [x, y]}: network
    pixel x maps to image pixel ``scale * (x + 0.5) - 0.5 + offset``.
    """
    h, w = image.shape[-2:]
    window = crop_window(torch.zeros(0, 2), torch.zeros(0), (h, w), box="image")
    return resize_square(crop_image(image, window), size), to_source(window, size)


def _theta_record(theta: torch.Tensor, size: int, to_image: dict, source: Path, step: int) -> dict:
    t = theta.double().tolist()
    return {
        "image": str(source),
        "theta": t,
        "r": t[0:3],
        "t": t[3:5],
        "log_s": t[5],
        "alpha": t[6:],
        "input_size": [size, size],
        "to_image": to_image,
        "checkpoint_step": step,
        "convention": "stn-core docs/conventions.md: r axis-angle (rad), t pixels (x right, y "
        "down, (0, 0) centre of the top-left pixel) of the network input, s = exp(log_s) px/mm",
    }


@dataclass
class _Item:
    """One network input: a whole image, or one detected face of a photo."""

    source: Path
    name: str
    input: torch.Tensor  # (3, size, size)
    to_image: dict
    face: object = None  # stn_train.detection.DetectedFace


@torch.no_grad()
def predict(
    images: list[str | os.PathLike],
    checkpoint: str | os.PathLike,
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    batch_size: int = 16,
    average_by_subject: bool = False,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    detector=None,
    flip_test: bool = False,
) -> PredictResult:
    """Apply a checkpoint to images and write the files of the module docstring.

    A missing or unreadable image is skipped (listed in ``PredictResult.skipped``); the
    output folder is created with the first image's files.

    Args:
        images: image files or folders of images.
        checkpoint: ``RUN_DIR/checkpoints/best.pt`` or ``last.pt``.
        model_path: the grid model it was trained with.
        out: the output folder.
        batch_size: images per forward pass.
        average_by_subject: also write each subject's mean flattened face.
        device: where to run (None or ``"auto"``: CUDA when available, as
            :func:`stn_train.runtime.resolve_device`).
        progress: ``progress(done, total)``, called as images are done (a progress bar).
        detector: a :class:`stn_train.detection.FaceDetector`: the images are uncropped
            photos, and every face found is predicted (module docstring).
        flip_test: predict each input and its mirror image and average the two estimates
            (:mod:`stn_train.flip_test`; twice the cost); the theta JSON says ``flip_test``.

    Raises:
        TrainError: no image could be read (named), a bad checkpoint or model, an unusable
            ``out``.
    """
    if batch_size < 1:
        raise TrainError(f"{{0}} must be at least 1, got {batch_size}.", ("batch_size",))
    check_output_folder(out)
    files = image_files(images)
    dev = resolve_device(device)
    model = load_grid_model(model_path, dev)
    net, ckpt = restore_localiser(checkpoint, model, dev)
    if flip_test:
        net = FlipTest(net, model)
    stn = STN(model, ckpt.get("visibility_mode", "normals")).to(dev)
    size = int(ckpt["image_size"])
    step = int(ckpt.get("step", -1))
    res = model.res
    faces = model.drawn_faces.cpu().numpy()
    out = Path(out)
    result = PredictResult(out, 0)
    names = unique_names(files)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    totals: dict[str, int] = defaultdict(int)
    made = False  # the output folder is created with the first image's files
    pending: list[_Item] = []

    def run(batch: list[_Item]) -> list[torch.Tensor]:
        """Predict a batch and write its files; returns each item's theta."""
        nonlocal made
        if not made:
            make_output_folder(out)
            made = True
        x = torch.stack([it.input for it in batch]).to(dev)
        theta = net(x).float()
        o = stn(x.float(), theta)
        flat = o.flattened.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        vis = o.visibility[:, 0].cpu().numpy()
        shapes = model.shape(theta[:, 6:]).cpu().numpy()
        for i, it in enumerate(batch):
            record = _theta_record(theta[i].cpu(), size, it.to_image, it.source, step)
            record["flip_test"] = bool(flip_test)
            if it.face is not None:
                record.update(_photo_record(theta[i].cpu(), it))
            write_json(out / f"{it.name}.theta.json", record, indent=1)
            write_png(out / f"{it.name}.flat.png", flat[i])
            write_png(out / f"{it.name}.mask.png", vis[i])
            write_textured_obj(
                out / f"{it.name}.obj",
                shapes[i],
                faces,
                res,
                f"{it.name}.flat.png",
                name=it.name,
                comment="fitted 3DMM shape (stn-train predict; model frame, mm), "
                "textured by the flattened face",
            )
            if average_by_subject:
                subject = it.source.parent.name or "_"
                sums.setdefault(subject, np.zeros((res, res, 3)))
                counts.setdefault(subject, np.zeros((res, res)))
                sums[subject] += flat[i] * vis[i][..., None]
                counts[subject] += vis[i]
                totals[subject] += 1
        result.n_images += len(batch)
        return list(theta.cpu())

    for k, (f, name) in enumerate(zip(files, names, strict=True)):
        try:
            image, _ = load_image(f, from_manifest=False)
        except ImageReadError as e:
            result.skipped.append((f, str(e).rstrip(".")))
        else:
            if detector is None:
                h, w = image.shape[-2:]
                if min(h, w) < MIN_FACE_SIDE:
                    result.warnings.append((f, _tiny(w, h, size)))
                x, to_image = square_input(image, size)
                pending.append(_Item(f, name, x, to_image))
            else:
                found = detector(image)
                if not found:
                    result.no_face.append(f)
                items = [
                    _Item(f, f"{name}.face{j}", *_face_input(image, face, size), face)
                    for j, face in enumerate(found, start=1)
                ]
                thetas = []
                for start in range(0, len(items), batch_size):
                    thetas += run(items[start : start + batch_size])
                if items:
                    overlay = out / f"{name}.overlay.png"
                    _overlay(model, image, items, thetas, ckpt.get("landmarks", "aflw21"), overlay)
        if len(pending) >= batch_size or (k == len(files) - 1 and pending):
            run(pending)
            pending = []
        if progress is not None:
            progress(k + 1, len(files))
    if result.n_images == 0 and not result.no_face:
        skipped = result.skipped
        if len(skipped) == 1:
            raise TrainError(f"{skipped[0][1]}.")
        shown = ", ".join(str(f) for f, _ in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        raise TrainError(
            f"none of the {len(files)} images could be read ({shown}); check the "
            "paths, and re-encode unreadable images as JPEG or PNG."
        )
    result.names = names
    result.subjects = sorted(sums)
    if average_by_subject:
        folder = out / "subjects"
        for s in result.subjects:
            c = counts[s]
            mean = sums[s] / np.maximum(c, 1)[..., None]
            write_png(folder / f"{s}.png", mean)
            write_png(folder / f"{s}.count.png", c / max(totals[s], 1))
    return result


def _tiny(w: int, h: int, size: int) -> str:
    return (
        f"only {w} x {h} pixels, enlarged to the network's {size} x {size}: the prediction "
        f"is unlikely to mean much; pass a face crop of at least {MIN_FACE_SIDE} pixels"
    )


def _face_input(image: torch.Tensor, face, size: int) -> tuple[torch.Tensor, dict]:
    """A detected face's network input (its crop window resized) and the map back."""
    return resize_square(crop_image(image, face.window), size), to_source(face.window, size)


def _photo_record(theta: torch.Tensor, item: _Item) -> dict:
    """The photo-frame entries of a detected face's theta.json."""
    photo = theta_to_source(theta.double(), item.to_image).tolist()
    return {
        "theta_photo": photo,
        "box_photo": [float(v) for v in item.face.box],
        "detection_score": float(item.face.score),
        "landmarks_detected_photo": np.asarray(item.face.landmarks).tolist(),
        "landmark_set_detected": "ibug68",
    }


def _overlay(model, image: torch.Tensor, items: list[_Item], thetas, landmarks, path) -> None:
    """Every face's model, posed by its theta in the photo's pixels, drawn on the photo, with
    the detected landmarks and the model's (its ``landmarks`` set)."""
    h, w = image.shape[-2:]
    dev = model.device
    drawn, mask = image.to(dev), torch.zeros(h, w, dtype=torch.bool, device=dev)
    idx = model.landmark_indices(landmarks)
    light = display_lighting(device=dev) if not model.has_color else None
    fitted = []
    for it, theta in zip(items, thetas, strict=True):
        photo_theta = theta_to_source(theta.double(), it.to_image).float()[None].to(dev)
        out = render(model, photo_theta, image_size=(h, w), sh=light, background=drawn[None])
        drawn, mask = out.image[0], mask | out.mask[0].reshape(h, w)
        points, _ = project_theta(photo_theta, model.mean, model.basis)
        fitted.append(points[0, idx].cpu().numpy())
    write_photo_overlay(
        image,
        drawn.cpu(),
        mask.cpu(),
        [it.face.box for it in items],
        [it.face.landmarks for it in items],
        fitted,
        path,
    )
