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
from stn_core import STN

from stn_train.checkpoint import restore_localiser
from stn_train.data.images import IMAGE_EXTENSIONS, ImageReadError, load_image
from stn_train.data.transforms import crop_image, crop_window, resize_square
from stn_train.errors import TrainError
from stn_train.outputs import (
    check_output_folder,
    make_output_folder,
    write_json,
    write_png,
    write_textured_obj,
)
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


def square_input(image: torch.Tensor, size: int) -> tuple[torch.Tensor, dict]:
    """Pad an image (3, H, W) to a centred square and resize it to ``size``.

    Returns the (3, size, size) input and ``to_image`` {"scale", "offset": [x, y]}: network
    pixel x maps to image pixel ``scale * (x + 0.5) - 0.5 + offset``.
    """
    h, w = image.shape[-2:]
    window = crop_window(torch.zeros(0, 2), torch.zeros(0), (h, w), box="image")
    out = resize_square(crop_image(image, window), size)
    return out, {"scale": window.side / size, "offset": [window.x0, window.y0]}


def _expand(images: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in images:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise TrainError(f"folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
            files += found
        else:
            files.append(p)
    if not files:
        raise TrainError("no images given; pass image files or folders.")
    return files


def _unique_names(files: list[Path]) -> list[str]:
    names, seen = [], defaultdict(int)
    stems = defaultdict(int)
    for f in files:
        stems[f.stem] += 1
    for f in files:
        name = f.stem if stems[f.stem] == 1 else f"{f.parent.name}_{f.stem}"
        seen[name] += 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"
        names.append(name)
    return names


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

    Raises:
        TrainError: no image could be read (named), a bad checkpoint or model, an unusable
            ``out``.
    """
    if batch_size < 1:
        raise TrainError(f"{{0}} must be at least 1, got {batch_size}.", ("batch_size",))
    check_output_folder(out)
    files = _expand([Path(p) for p in images])
    dev = resolve_device(device)
    model = load_grid_model(model_path, dev)
    net, ckpt = restore_localiser(checkpoint, model, dev)
    stn = STN(model, ckpt.get("visibility_mode", "normals")).to(dev)
    size = int(ckpt["image_size"])
    step = int(ckpt.get("step", -1))
    res = model.res
    faces = model.drawn_faces.cpu().numpy()
    out = Path(out)
    made = False  # the output folder is created with the first image's files
    skipped: list[tuple[Path, str]] = []
    warnings: list[tuple[Path, str]] = []
    n_done = 0
    names = _unique_names(files)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    totals: dict[str, int] = defaultdict(int)
    for start in range(0, len(files), batch_size):
        inputs, maps, chunk, idx = [], [], [], []
        for k in range(start, min(start + batch_size, len(files))):
            f = files[k]
            try:
                image, _ = load_image(f, from_manifest=False)
            except ImageReadError as e:
                skipped.append((f, str(e).rstrip(".")))
                continue
            h, w = image.shape[-2:]
            if min(h, w) < MIN_FACE_SIDE:
                warnings.append(
                    (
                        f,
                        f"only {w} x {h} pixels, enlarged to the network's {size} x {size}: "
                        "the prediction is unlikely to mean much; pass a face crop of at least "
                        f"{MIN_FACE_SIDE} pixels",
                    )
                )
            x, to_image = square_input(image, size)
            inputs.append(x)
            maps.append(to_image)
            chunk.append(f)
            idx.append(k)
        if inputs:
            if not made:
                out = make_output_folder(out)
                made = True
            n_done += len(chunk)
            batch = torch.stack(inputs).to(dev)
            theta = net(batch).float()
            o = stn(batch.float(), theta)
            flat = o.flattened.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
            vis = o.visibility[:, 0].cpu().numpy()
            shapes = model.shape(theta[:, 6:]).cpu().numpy()
            for i, f in enumerate(chunk):
                name = names[idx[i]]
                record = _theta_record(theta[i].cpu(), size, maps[i], f, step)
                write_json(out / f"{name}.theta.json", record, indent=1)
                write_png(out / f"{name}.flat.png", flat[i])
                write_png(out / f"{name}.mask.png", vis[i])
                write_textured_obj(
                    out / f"{name}.obj",
                    shapes[i],
                    faces,
                    res,
                    f"{name}.flat.png",
                    name=name,
                    comment="fitted 3DMM shape (stn-train predict; model frame, mm), "
                    "textured by the flattened face",
                )
                if average_by_subject:
                    subject = f.parent.name or "_"
                    sums.setdefault(subject, np.zeros((res, res, 3)))
                    counts.setdefault(subject, np.zeros((res, res)))
                    sums[subject] += flat[i] * vis[i][..., None]
                    counts[subject] += vis[i]
                    totals[subject] += 1
        if progress is not None:
            progress(min(start + batch_size, len(files)), len(files))
    if n_done == 0:
        if len(skipped) == 1:
            raise TrainError(f"{skipped[0][1]}.")
        shown = ", ".join(str(f) for f, _ in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        raise TrainError(
            f"none of the {len(files)} images could be read ({shown}); check the "
            "paths, and re-encode unreadable images as JPEG or PNG."
        )
    subjects = sorted(sums)
    if average_by_subject:
        folder = out / "subjects"
        folder.mkdir(exist_ok=True)
        for s in subjects:
            c = counts[s]
            mean = sums[s] / np.maximum(c, 1)[..., None]
            write_png(folder / f"{s}.png", mean)
            write_png(folder / f"{s}.count.png", c / max(totals[s], 1))
    return PredictResult(out, n_done, names, subjects, skipped, warnings)
