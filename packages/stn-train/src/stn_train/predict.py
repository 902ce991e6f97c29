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

import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from stn_core import STN

from stn_train.errors import TrainError, check_output_folder, make_output_folder

__all__ = ["PredictResult", "predict", "write_png", "write_textured_obj", "square_input"]


@dataclass
class PredictResult:
    """What :func:`predict` returns."""

    out_dir: Path
    n_images: int
    names: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """(image, reason) of each image that could not be read (the others were predicted)."""


def write_png(array: np.ndarray, path: str | os.PathLike) -> None:
    """(H, W, 3) / (H, W) float in [0, 1] -> 8-bit PNG, written atomically."""
    from PIL import Image

    path = Path(path)
    a = np.clip(np.rint(np.asarray(array, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(a).save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_textured_obj(
    path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, res: int, texture: str
) -> None:
    """Write ``path`` (.obj) and its .mtl: grid vertices with texture coordinates at the
    texture's pixel centres (module docstring), faces 1-based ``v/vt``."""
    path = Path(path)
    mtl = path.with_suffix(".mtl")
    rows, cols = np.divmod(np.arange(res * res), res)
    vt = np.stack([(cols + 0.5) / res, 1.0 - (rows + 0.5) / res], 1)
    lines = [
        "# stn-train predict: fitted 3DMM shape (model frame, mm), textured by the flattened face",
        f"mtllib {mtl.name}",
        "usemtl face",
    ]
    lines += [f"v {x:.5f} {y:.5f} {z:.5f}" for x, y, z in vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in vt]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in (faces + 1)]
    _atomic_text(path, "\n".join(lines) + "\n")
    _atomic_text(
        mtl,
        f"newmtl face\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd {texture}\n",
    )


def square_input(image: torch.Tensor, size: int) -> tuple[torch.Tensor, dict]:
    """Pad an image (3, H, W) to a centred square and resize it to ``size``.

    Returns the (3, size, size) input and ``to_image`` {"scale", "offset": [x, y]}: network
    pixel x maps to image pixel ``scale * (x + 0.5) - 0.5 + offset``.
    """
    from stn_train.data.transforms import crop_image, crop_window, resize_square

    h, w = image.shape[-2:]
    window = crop_window(torch.zeros(0, 2), torch.zeros(0), (h, w), box="image")
    out = resize_square(crop_image(image, window), size)
    return out, {"scale": window.side / size, "offset": [window.x0, window.y0]}


def _expand(images: list[Path]) -> list[Path]:
    from stn_train.data.images import IMAGE_EXTENSIONS

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
    device: str | None = None,
    progress: bool = False,
) -> PredictResult:
    """Apply a checkpoint to images and write the files of the module docstring.

    A missing or unreadable image is skipped (listed in ``PredictResult.skipped``); the
    output folder is created with the first image's files.

    Raises:
        TrainError: no image could be read (named), a bad checkpoint or model, an unusable
            ``out``.
    """
    from stn_train.data.images import ImageReadError, load_image
    from stn_train.train.checkpoint import restore_localiser
    from stn_train.train.loop import load_grid_model

    if batch_size < 1:
        raise TrainError(f"--batch-size must be at least 1, got {batch_size}.")
    check_output_folder(out)
    files = _expand([Path(p) for p in images])
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
    n_done = 0
    names = _unique_names(files)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    totals: dict[str, int] = defaultdict(int)

    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        bar = Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn())
        bar.start()
        task = bar.add_task("predict", total=len(files))
    try:
        for start in range(0, len(files), batch_size):
            inputs, maps, chunk, idx = [], [], [], []
            for k in range(start, min(start + batch_size, len(files))):
                f = files[k]
                try:
                    image, _ = load_image(f, from_manifest=False)
                except ImageReadError as e:
                    skipped.append((f, str(e).rstrip(".")))
                    continue
                x, to_image = square_input(image, size)
                inputs.append(x)
                maps.append(to_image)
                chunk.append(f)
                idx.append(k)
            if not inputs:
                if bar is not None:
                    bar.update(task, advance=min(batch_size, len(files) - start))
                continue
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
                _atomic_text(out / f"{name}.theta.json", json.dumps(record, indent=1) + "\n")
                write_png(flat[i], out / f"{name}.flat.png")
                write_png(vis[i], out / f"{name}.mask.png")
                write_textured_obj(out / f"{name}.obj", shapes[i], faces, res, f"{name}.flat.png")
                if average_by_subject:
                    subject = f.parent.name or "_"
                    sums.setdefault(subject, np.zeros((res, res, 3)))
                    counts.setdefault(subject, np.zeros((res, res)))
                    sums[subject] += flat[i] * vis[i][..., None]
                    counts[subject] += vis[i]
                    totals[subject] += 1
            if bar is not None:
                bar.update(task, advance=min(batch_size, len(files) - start))
    finally:
        if bar is not None:
            bar.stop()
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
            write_png(mean, folder / f"{s}.png")
            write_png(c / max(totals[s], 1), folder / f"{s}.count.png")
    return PredictResult(out, n_done, names, subjects, skipped)
