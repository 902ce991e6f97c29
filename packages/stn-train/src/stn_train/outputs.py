"""Every file stn-train writes goes through here: atomically (a temporary file in the same
folder, renamed over the target, so that an interrupted run never leaves a half-written file
under the final name), with one writer per kind: text, JSON, CSV, PNG, a matplotlib figure,
a ``torch.save`` object, a textured Wavefront OBJ. And the checks of an output folder before
any work is done. (bfm-prep has its own atomic writer, ``bfm_prep.atomic``, and mesh export:
the packages share no code, only the artifact files; docs/layout.md.)

Conventions: images are (H, W, 3) or (H, W) arrays, float in [0, 1] (rounded to 8 bits) or
uint8; meshes are in the model frame, mm (x right, y up, z towards the viewer), on the R x R
UV grid (vertex k at row k // R, column k % R).
"""

from __future__ import annotations

import csv
import fcntl
import glob
import json
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image

from stn_train.errors import TrainError

__all__ = [
    "atomic_write",
    "write_text",
    "write_json",
    "write_csv",
    "write_png",
    "save_figure",
    "save_torch",
    "write_textured_obj",
    "unique_names",
    "check_output_folder",
    "make_output_folder",
]

PathLike = str | os.PathLike


# A temporary younger than this is left alone (between its creation and its lock it is
# unlocked).
_FRESH_S = 10.0


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries a killed write to ``path`` left behind (``.NAME.*.tmp``).

    A temporary being written is locked (``flock``) by its writer until it is renamed or
    removed, and the lock dies with the writer's process, even under ``kill -9``; so a
    temporary that can be locked here belongs to no live writer and is removed. Another
    process writing the same target at this moment keeps its file.
    """
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime < _FRESH_S:
                continue  # may be a writer's that has not taken its lock yet
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # locked: a live writer's
        else:
            tmp.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new ``.NAME.XXXXXXXX.tmp`` beside ``path``, opened for writing; created with mode
    0666 so that the umask gives it an ordinary file's mode (mkstemp's would be 0600)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_write(path: PathLike, mode: str = "w", sync: bool = False) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces
    ``path``, on an exception it is removed and ``path`` is left as it was.

    The file gets the mode an ordinary write would (the umask's), and the temporaries that a
    killed earlier write to the same ``path`` left behind are removed first.

    Args:
        path: the target file (its folder is created when missing).
        mode: ``"w"`` (text, UTF-8) or ``"wb"``.
        sync: flush to disk before the rename (checkpoints: a crash right after the rename
            must not leave an empty file under the final name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = _create_temporary(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours until renamed: see _remove_stale_temporaries
        text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **text) as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
            # Renamed while still open (and locked): no other cleaner can take it first.
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: PathLike, text: str) -> Path:
    """``text`` to ``path`` (UTF-8), atomically."""
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def write_json(path: PathLike, obj: Any, indent: int = 2) -> Path:
    """``obj`` as indented JSON plus a newline, atomically (NaN written as ``NaN``)."""
    return write_text(path, json.dumps(obj, indent=indent, allow_nan=True) + "\n")


def write_csv(path: PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV file with one header row, atomically."""
    with atomic_write(path) as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(header)
        w.writerows(rows)
    return Path(path)


def to_uint8(array: np.ndarray | torch.Tensor) -> np.ndarray:
    """An image array as uint8: float values in [0, 1] are clipped and rounded to 0..255."""
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    return np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def write_png(path: PathLike, image: np.ndarray | torch.Tensor | Image.Image) -> Path:
    """An (H, W, 3) / (H, W) image (float in [0, 1] or uint8) or a PIL image as an 8-bit
    PNG, atomically."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(to_uint8(image))
    with atomic_write(path, "wb") as f:
        img.save(f, format="PNG")
    return Path(path)


def save_figure(fig, path: PathLike, dpi: float | str = "figure") -> Path:
    """A matplotlib figure as PNG, atomically (at the figure's own dpi unless given)."""
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=dpi, format="png")
    return Path(path)


def save_torch(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj)`` to ``path``, flushed to disk and renamed into place."""
    with atomic_write(path, "wb", sync=True) as f:
        torch.save(obj, f)
    return Path(path)


def write_textured_obj(
    path: PathLike,
    vertices: np.ndarray | torch.Tensor,
    faces: np.ndarray | torch.Tensor,
    res: int,
    texture: str | np.ndarray,
    normals: np.ndarray | torch.Tensor | None = None,
    name: str = "face",
    comment: str = "fitted 3D morphable model (stn-train), millimetres",
) -> list[Path]:
    """A grid mesh as Wavefront OBJ with its MTL (and texture) beside it.

    Args:
        path: the ``.obj`` file; ``<stem>.mtl`` is written next to it.
        vertices: (N, 3) mm, grid order (N = R * R; model axes, which OBJ viewers take as
            they are).
        faces: (F, 3) 0-based, counter-clockwise seen from the front (OBJ's front faces).
        res: R.
        texture: the file name of a texture already written beside ``path``, or an (R, R, 3)
            uint8 UV image, written as ``<stem>_texture.png`` (row 0 the top of the grid).
        normals: optional (N, 3) unit vertex normals.
        name: the object's and the material's name.
        comment: the first line's comment.

    Vertex k's texture coordinate is the centre of texel k: ``u = (col + 0.5) / R``,
    ``v = 1 - (row + 0.5) / R`` (OBJ's v runs upwards from the image's bottom row).

    Returns:
        The files written: the OBJ, the MTL and (for an array texture) the PNG.
    """
    path = Path(path)
    mtl = path.with_suffix(".mtl")
    extra = []
    if not isinstance(texture, str):
        tex = path.with_name(f"{path.stem}_texture.png")
        extra.append(write_png(tex, texture))
        texture = tex.name
    v = _numpy(vertices, np.float64)
    f = _numpy(faces, np.int64) + 1
    rows, cols = np.divmod(np.arange(v.shape[0]), res)
    uv = np.stack([(cols + 0.5) / res, 1.0 - (rows + 0.5) / res], 1)
    lines = [f"# {name}: {comment}\n", f"mtllib {mtl.name}\n", f"o {name}\n"]
    lines += [f"v {a:.5f} {b:.5f} {c:.5f}\n" for a, b, c in v]
    lines += [f"vt {a:.6f} {b:.6f}\n" for a, b in uv]
    lines.append(f"usemtl {name}\n")
    if normals is not None:
        lines += [f"vn {a:.5f} {b:.5f} {c:.5f}\n" for a, b, c in _numpy(normals, np.float64)]
        lines += [f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}\n" for a, b, c in f]
    else:
        lines += [f"f {a}/{a} {b}/{b} {c}/{c}\n" for a, b, c in f]
    material = f"newmtl {name}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\nmap_Kd {texture}\n"
    return [write_text(path, "".join(lines)), write_text(mtl, material), *extra]


def _numpy(x: np.ndarray | torch.Tensor, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def unique_names(files: Sequence[PathLike]) -> list[str]:
    """One output name per input file, unique and safe in a file name: the file's stem; where
    two stems are equal, prefixed by their folder's name (``alice_img0``); then numbered."""
    paths = [Path(f) for f in files]
    stems = Counter(p.stem for p in paths)
    names, seen = [], Counter()
    for p in paths:
        name = p.stem if stems[p.stem] == 1 else f"{p.parent.name}_{p.stem}"
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip(".") or "image"
        seen[name] += 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return names


def check_output_folder(path: PathLike, setting: str = "out") -> None:
    """Refuse an output folder that cannot be created or written, before any work is done.

    ``setting`` names the folder in the message (the argument that gave it).

    Raises:
        TrainError: ``path`` is an existing file, lies below a file, or its nearest existing
            folder is not writable.
    """
    p = Path(path)
    named = (setting,)
    if p.exists() and not p.is_dir():
        raise TrainError(
            f"{{0}} {p} is an existing file, not a folder; choose another {{0}}.", named
        )
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
        if str(anc) == "":
            anc = Path(".")
    if anc.exists() and not anc.is_dir():
        raise TrainError(f"{{0}} {p}: {anc} is a file, not a folder; choose another {{0}}.", named)
    if anc.is_dir() and not os.access(anc, os.W_OK | os.X_OK):
        raise TrainError(
            f"{{0}} {p}: cannot write in {anc} (permission denied); choose another {{0}}.", named
        )


def make_output_folder(path: PathLike, setting: str = "out") -> Path:
    """Create the output folder ``path`` (and its parents) after :func:`check_output_folder`;
    returns it as a Path."""
    p = Path(path)
    check_output_folder(p, setting)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(
            f"{{0}} {p}: cannot create the folder ({e.strerror or e}); choose another {{0}}.",
            (setting,),
        ) from None
    return p
