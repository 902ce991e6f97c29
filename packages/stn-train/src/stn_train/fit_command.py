"""``stn-train fit``: fit the morphable model to photographs, one result folder per image.

    stn-train fit faces/*.jpg --model grid.h5 --landmarks faces/ --out fits
    stn-train fit a.png b.png --model grid.h5 --landmarks marks.csv --out fits --landmarks-only

:func:`fit_images` does the work (stn_core.fitting.fit_image does the fitting); :func:`fit` is
the typer command (``register(app)`` adds it to a Typer app as ``fit``).

Landmarks (``--landmarks``), in the formats of stn-train's datasets (docs/data-format.md), in
our pixel convention unless said otherwise:

- a folder: ``<stem>.pts`` per image (iBUG / 300-W, 1-based unless ``--pts-zero-based``),
  found beside the name or anywhere below the folder;
- a manifest ``.jsonl`` (``stn_train.data.manifest``);
- a landmark CSV ``.csv`` / ``.tsv`` / ``.txt`` (``image, x1, y1, v1, ...``;
  ``--convention ours | one_based | original``);
- a ``.json`` file: ``{"<image name or stem>": [[x, y] or [x, y, v], ...], ...}`` or a list
  of ``{"image": ..., "landmarks": [...]}`` objects;
- a single ``.pts`` file (with one image).

Images are matched to annotations by path; otherwise by file name (then stem), the annotation
whose name shares the longest trailing run of folders with the image's path winning (an image
that two annotations match equally well is skipped, naming the clash). An image that cannot
be read, has no annotation, the wrong number of landmarks or fewer than 2 visible ones is
reported and skipped; the others are fitted.

Per image, in ``OUT/<stem>/``: ``params.json`` (pose, coefficients, lighting, errors),
``overlay.png`` (input with landmarks | fit rendered over it | blend; a model without colour
is drawn grey, lit from above the camera), ``flattened.png`` (the
image sampled at the UV grid, where visible), ``albedo.png`` and ``shading.png`` (UV),
``mesh.obj`` + ``mesh.mtl`` + ``mesh_texture.png`` (the fitted shape in mm, textured with the
fitted albedo; a landmark-only fit has no albedo, so its texture is the flattened photograph),
``cost.png`` (cost per iteration). ``OUT/summary.json`` lists every image.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import typer

from stn_train.errors import TrainError, check_output_folder, make_output_folder

__all__ = ["FitRecord", "fit_images", "fit", "register", "summary_table"]

LANDMARK_SUFFIXES = {
    ".jsonl": "manifest",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".pts": "pts",
}


@dataclass
class FitRecord:
    """The outcome for one image.

    status: ``"fitted"`` or ``"skipped"``; reason: why it was skipped (one sentence), note:
    the same in a few words (for the table).
    landmark_error_px, photometric_rms, converged, n_iter, seconds: the fit's figures (None
    when skipped; photometric_rms None for a landmark-only fit). out_dir: its result folder.
    """

    image: Path
    status: str
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


# ---------------------------------------------------------------------------------------------
# landmarks


@dataclass
class _Annotation:
    points: np.ndarray  # (L, 2) ours
    visible: np.ndarray  # (L,)
    source: str


class _Landmarks:
    """Annotations by image, from a folder of .pts files or one file."""

    def __init__(
        self, source: Path, n_points: int, convention: str, pts_one_based: bool, n_images: int
    ):
        from stn_train.data import annotations as ann

        self.source = source
        self.n_points = n_points
        self.pts_one_based = pts_one_based
        self.folder = source if source.is_dir() else None
        self.single: _Annotation | None = None
        self.by_key: dict[str, list[tuple[_Key, _Annotation]]] = {}
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
            self.single = _Annotation(pts, np.ones(len(pts)), str(source))
            return
        if kind == "manifest":
            from stn_train.data.manifest import read_manifest

            entries = [(e.image, e.landmarks, e.visible) for e in read_manifest(source)]
        elif kind == "csv":
            entries = [
                (e.image, e.landmarks, e.visible)
                for e in ann.read_landmark_csv(source, n_points, convention)
            ]
        else:
            entries = _read_json(source)
        for image, points, visible in entries:
            a = _Annotation(
                np.asarray(points, np.float64).reshape(-1, 2),
                np.asarray(visible, np.float64).reshape(-1),
                str(source),
            )
            key = _Key(str(image), source.parent)
            self.by_key.setdefault("name:" + key.parts[-1], []).append((key, a))
            self.by_key.setdefault("stem:" + key.stem, []).append((key, a))

    def find(self, image: Path) -> _Annotation | str:
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

    def _find_pts(self, image: Path) -> _Annotation | str:
        from stn_train.data.annotations import read_pts

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
        return _Annotation(pts, np.ones(len(pts)), str(direct))


def _resolve(p: Path) -> Path | None:
    try:
        return Path(p).expanduser().resolve()
    except (OSError, RuntimeError):
        return None


class _Key:
    """An annotation's image name as written, and the path it resolves to (relative names
    resolve against the landmark file's folder)."""

    def __init__(self, text: str, base: Path):
        import os

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


# ---------------------------------------------------------------------------------------------
# the work


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise TrainError(f"--device {name!r} is not a device; use auto, cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda was asked for but CUDA is not available; use cpu.")
    return dev


def _load_model(path: Path, device: torch.device):
    from stn_core import StnError, UVGridModel

    try:
        return UVGridModel.load(path, device=device, dtype=torch.float32)
    except StnError as e:
        raise TrainError(str(e)) from None


def _folder_names(images: Sequence[Path]) -> list[str]:
    """One result folder name per image: its stem, made unique and filesystem-safe."""
    names, seen = [], {}
    for p in images:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem) or "image"
        n = seen.get(base, 0)
        seen[base] = n + 1
        names.append(base if n == 0 else f"{base}_{n + 1}")
    return names


def fit_images(
    images: Sequence[str | Path],
    model_path: str | Path,
    landmarks: str | Path,
    out: str | Path,
    landmarks_only: bool = False,
    *,
    landmark_set: str = "aflw21",
    convention: str = "ours",
    pts_one_based: bool = True,
    device: str = "auto",
    batch_size: int = 8,
    visibility: str = "normals",
    weights=None,
    pictures: bool = True,
    progress: bool = False,
    cpu_threads: int | None = None,
) -> list[FitRecord]:
    """Fit the model to each image and write its results (see the module docstring).

    Args:
        images: image files. model_path: the UV-grid model (.h5, bfm-prep uv-resample; with a
            colour model unless ``landmarks_only``). landmarks: folder or file (module
            docstring). out: the output folder (created).
        landmarks_only: fit pose, identity and expression to the landmarks only.
        landmark_set: the model's landmark set the annotations follow (e.g. aflw21, ibug68).
        convention: a CSV's coordinate convention (ours, one_based, original).
        pts_one_based: .pts files are 1-based (300-W).
        device: auto, cpu or cuda. batch_size: images of one size fitted together.
        visibility: normals or depth (stn_core.fitting.fit_image). weights:
            stn_core.fitting.FitWeights or None.
        pictures: write the pictures and the mesh (params.json is always written).
        progress: show a progress bar (rich).
        cpu_threads: torch threads while fitting on the CPU (None: torch's setting; 1 on a
            machine whose cores are busy with other work, see stn_core.fitting.fit_image).

    Returns:
        One :class:`FitRecord` per image, in the order given. When every image was skipped
        before fitting, nothing is written (not even ``out``).

    Raises:
        TrainError: no images, an unreadable model or landmark source, a model without the
            landmark set or (for a photometric fit) without a colour model, an unusable out.
    """
    from stn_core.fitting import fit_image

    from stn_train.data.images import load_image

    paths = [Path(p) for p in images]
    if not paths:
        raise TrainError("no images given; pass one or more image files.")
    if batch_size < 1:
        raise TrainError(f"--batch-size must be at least 1, got {batch_size}.")
    if cpu_threads is not None and cpu_threads < 1:
        raise TrainError(f"--cpu-threads must be at least 1, got {cpu_threads}.")
    if visibility not in ("normals", "depth"):
        raise TrainError(f"--visibility must be normals or depth, got {visibility!r}.")
    if convention not in ("ours", "one_based", "original"):
        raise TrainError(f"--convention must be ours, one_based or original, got {convention!r}.")
    model_path, out = Path(model_path), Path(out)
    check_output_folder(out)
    dev = _device(device)
    model = _load_model(model_path, dev)
    if landmark_set not in model.landmarks:
        raise TrainError(
            f"{model_path} has no landmark set {landmark_set!r} (it has "
            f"{', '.join(sorted(model.landmarks)) or 'none'}); pass --landmark-set."
        )
    if not landmarks_only and not model.has_color:
        raise TrainError(
            f"{model_path} has no colour model, so only a landmark fit is possible; "
            "pass --landmarks-only or a grid model built with colour."
        )
    n_points = int(model.landmarks[landmark_set].numel())
    source = _Landmarks(Path(landmarks), n_points, convention, pts_one_based, len(paths))

    records: list[FitRecord | None] = [None] * len(paths)
    names = _folder_names(paths)
    ready = []  # (index, image tensor, points, visible)
    for i, p in enumerate(paths):
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
        ready.append((i, img, pts, vis))

    # Batches of same-sized images, in the order given.
    groups: dict[tuple[int, int], list] = {}
    for item in ready:
        groups.setdefault(tuple(item[1].shape[-2:]), []).append(item)
    batches = [g[k : k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]

    if not ready:  # nothing to fit: leave no (empty) output folder behind
        return [r for r in records if r is not None]
    make_output_folder(out)
    bar = _progress(progress)
    task = bar.add_task("fitting", total=len(paths)) if bar is not None else None
    if bar is not None:
        bar.start()
        bar.advance(task, len(paths) - len(ready))
    try:
        for batch in batches:
            idx = [b[0] for b in batch]
            imgs = torch.stack([b[1] for b in batch]).to(dev)
            q = torch.as_tensor(np.stack([b[2] for b in batch]), dtype=torch.float32, device=dev)
            v = torch.as_tensor(np.stack([b[3] for b in batch]), dtype=torch.float32, device=dev)
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
            stage, costs = result.cost_history()
            for j, i in enumerate(idx):
                folder = out / names[i]
                folder.mkdir(parents=True, exist_ok=True)
                rec = _record(paths[i], result, j, seconds, folder, landmarks_only)
                rec.files = _write_outputs(
                    folder,
                    paths[i],
                    model,
                    model_path,
                    imgs[j],
                    q[j],
                    v[j],
                    result,
                    j,
                    stage,
                    costs,
                    landmark_set,
                    landmarks_only,
                    weights,
                    pictures,
                )
                records[i] = rec
                if bar is not None:
                    bar.advance(task, 1)
    finally:
        if bar is not None:
            bar.stop()
    done = [r for r in records if r is not None]
    summary = out / "summary.json"
    summary.write_text(json.dumps([r.to_json() for r in done], indent=2) + "\n", encoding="utf-8")
    return done


def _progress(show: bool):
    if not show:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _float(x) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def _record(path, result, j, seconds, folder, landmarks_only) -> FitRecord:
    usable = bool(result.usable[j])
    return FitRecord(
        image=path,
        status="fitted" if usable else "skipped",
        reason=None if usable else "fewer than 2 visible landmarks",
        note=None if usable else "fewer than 2 visible landmarks",
        landmark_error_px=_float(result.landmark_error_px[j]),
        photometric_rms=None if landmarks_only else _float(result.photometric_rms[j]),
        converged=bool(result.converged[j]),
        fit_status=result.status[j],
        n_iter=int(result.n_iter[j]),
        seconds=seconds,
        out_dir=folder,
    )


def _write_outputs(
    folder,
    image_path,
    model,
    model_path,
    image,
    q,
    v,
    result,
    j,
    stage,
    costs,
    landmark_set,
    landmarks_only,
    weights,
    pictures,
) -> list[str]:
    from stn_core import bilinear_sample, project_theta
    from stn_core.fitting import FitWeights
    from stn_core.normals import vertex_normals
    from stn_core.renderer import render

    from stn_train import fit_pictures as fp

    theta = result.theta[j : j + 1]
    k_id = model.n_identity
    h, w = image.shape[-2:]
    params = {
        "image": str(image_path),
        "model": str(model_path),
        "image_size": [int(h), int(w)],
        "landmark_set": landmark_set,
        "landmarks_only": bool(landmarks_only),
        "conventions": "docs/conventions.md: theta = [r (axis-angle, rad), t (px), log_s, alpha]; "
        "pixels x right, y down, (0, 0) the centre of the top-left pixel; "
        "sh (9 x 3) as stn_core.shading (rows: 1, y, z, x, xy, yz, 3z^2-1, xz, "
        "x^2-y^2; columns R, G, B)",
        "theta": result.theta[j].tolist(),
        "rotation": result.theta[j, :3].tolist(),
        "translation_px": result.theta[j, 3:5].tolist(),
        "log_scale": float(result.theta[j, 5]),
        "scale_px_per_mm": float(torch.exp(result.theta[j, 5])),
        "identity": result.theta[j, 6 : 6 + k_id].tolist(),
        "expression": result.theta[j, 6 + k_id :].tolist(),
        "albedo": result.beta[j].tolist(),
        "sh": result.sh[j].tolist(),
        "landmark_error_px": _float(result.landmark_error_px[j]),
        "photometric_rms": None if landmarks_only else _float(result.photometric_rms[j]),
        "converged": bool(result.converged[j]),
        "status": result.status[j],
        "n_iter": int(result.n_iter[j]),
        "fitted_landmarks": result.landmarks[j].tolist(),
        "weights": asdict(weights if weights is not None else FitWeights()),
    }
    files = []
    p = folder / "params.json"
    p.write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    files.append(p.name)
    if not pictures:
        return files
    res = model.res
    colors = result.albedo[j : j + 1] if model.has_color else None
    sh = result.sh[j : j + 1]
    if not model.has_color:
        # No appearance was fitted: light the grey model from above the camera, for display
        # only, so that the overlay shows the fitted shape rather than a flat silhouette.
        from stn_core.shading import sh_ambient, sh_directional

        sh = (
            sh_ambient(0.35, dtype=sh.dtype, device=sh.device)
            + sh_directional(torch.tensor([0.3, 0.4, 1.0], dtype=sh.dtype, device=sh.device), 0.75)
        )[None]
    drawn = render(model, theta, colors, (int(h), int(w)), sh=sh, background=image[None])
    fp.save_overlay(
        folder / "overlay.png",
        image,
        drawn.image[0],
        drawn.mask[0],
        q.cpu().numpy(),
        result.landmarks[j].cpu().numpy(),
        v.cpu().numpy(),
    )
    points, _ = project_theta(theta, model.mean, model.basis)
    flat = bilinear_sample(image[None], points)[0].T  # (N, 3)
    vis = result.visible[j]
    fp.save_uv_map(folder / "flattened.png", flat, res, vis)
    fp.save_uv_map(folder / "albedo.png", result.albedo[j], res, model.inside)
    # Shading where the fit saw the face: back-facing normals (a mouth's inside) are dark.
    fp.save_uv_map(folder / "shading.png", result.shading[j], res, vis, normalise=True)
    files += ["overlay.png", "flattened.png", "albedo.png", "shading.png"]
    shape = model.shape(theta[0, 6:])
    faces = model.drawn_faces
    texture = (
        fp.uv_map(result.albedo[j], res, model.inside)
        if not landmarks_only
        else fp.uv_map(flat, res, vis)
    )
    written = fp.write_textured_obj(
        folder / "mesh.obj",
        shape,
        faces,
        res,
        texture,
        normals=vertex_normals(shape, faces),
        name=image_path.stem,
    )
    files += [x.name for x in written]
    cost = {name: values[:, j].cpu().numpy() for name, values in costs.items()}
    fp.save_cost_plot(folder / "cost.png", stage, cost, title=image_path.name)
    files.append("cost.png")
    return files


# ---------------------------------------------------------------------------------------------
# the command


def summary_table(records: Sequence[FitRecord]):
    """A rich Table of the records, one row per image: landmark error (px), photometric RMS
    (colour units), LM iterations, seconds per image, convergence, and for a skipped image a
    short note (the full reason is printed on stderr)."""
    from rich import box
    from rich.table import Table

    table = Table(title="stn-train fit", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("image", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for col in ("lm px", "rms", "iter", "s/img"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("conv", justify="center", no_wrap=True)
    table.add_column("note", min_width=16, overflow="fold")

    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    shown = _display_names([r.image for r in records])
    for r, name in zip(records, shown):
        if r.note or r.reason:
            note = r.note or r.reason
        elif r.fit_status not in (None, "ftol", "xtol", "atol"):
            note = f"stopped: {r.fit_status}"
        else:
            note = ""
        table.add_row(
            name if len(name) <= 40 else "…" + name[-39:],
            r.status,
            num(r.landmark_error_px, ".2f"),
            num(r.photometric_rms, ".4f"),
            num(r.n_iter, "d"),
            num(r.seconds, ".2f"),
            "-" if r.converged is None else ("yes" if r.converged else "no"),
            note,
            style=None if r.status == "fitted" else "yellow",
        )
    return table


def _display_names(paths: Sequence[Path]) -> list[str]:
    """Each path's shortest trailing part (file name, then with its folders) that tells it
    apart from the other paths (the file name alone when no name repeats)."""
    parts = [Path(p).parts or (str(p),) for p in paths]
    n = [1] * len(parts)
    while True:
        shown = ["/".join(ps[-k:]) for ps, k in zip(parts, n)]
        counts: dict[str, int] = {}
        for s_ in shown:
            counts[s_] = counts.get(s_, 0) + 1
        grow = [i for i, s_ in enumerate(shown) if counts[s_] > 1 and n[i] < len(parts[i])]
        if not grow:
            return shown
        for i in grow:
            n[i] += 1


def fit(
    images: list[Path] = typer.Argument(..., help="Image files (JPEG, PNG, ...)."),
    model: Path = typer.Option(..., "--model", help="UV-grid model (.h5, bfm-prep uv-resample)."),
    landmarks: Path = typer.Option(
        ...,
        "--landmarks",
        help="Folder of <stem>.pts, or one manifest .jsonl, landmark .csv or .json file.",
    ),
    out: Path = typer.Option(..., "--out", help="Output folder (one subfolder per image)."),
    landmarks_only: bool = typer.Option(
        False, "--landmarks-only", help="Fit pose, identity and expression to landmarks only."
    ),
    landmark_set: str = typer.Option("aflw21", help="The model's landmark set of the annotations."),
    convention: str = typer.Option("ours", help="CSV coordinates: ours | one_based | original."),
    pts_zero_based: bool = typer.Option(False, help=".pts files are 0-based (300-W: 1-based)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    batch_size: int = typer.Option(8, help="Same-sized images fitted together."),
    visibility: str = typer.Option("normals", help="normals | depth (also self-occlusion)."),
    cpu_threads: int | None = typer.Option(
        None, help="Torch threads on the CPU (default: torch's; 1 when the cores are busy)."
    ),
    photometric_weight: float | None = typer.Option(
        None, help="Weight of the photometric term (default: stn_core's FitWeights)."
    ),
    pictures: bool = typer.Option(
        True,
        "--pictures/--no-pictures",
        help="Write the pictures and the mesh (--no-pictures: params.json only).",
    ),
) -> None:
    """Fit the morphable model to photographs: pose, shape, expression, albedo and lighting."""
    from rich.console import Console
    from stn_core import StnError

    try:
        weights = None
        if photometric_weight is not None:
            from stn_core.fitting import FitWeights

            try:
                weights = FitWeights(photometric=photometric_weight)
            except ValueError as e:
                raise TrainError(f"--photometric-weight: {e}") from None
        records = fit_images(
            images,
            model,
            landmarks,
            out,
            landmarks_only,
            landmark_set=landmark_set,
            convention=convention,
            pts_one_based=not pts_zero_based,
            device=device,
            batch_size=batch_size,
            visibility=visibility,
            weights=weights,
            pictures=pictures,
            progress=True,
            cpu_threads=cpu_threads,
        )
    except (TrainError, StnError) as e:
        print(f"stn-train: error: {' '.join(str(e).split())}", file=sys.stderr)
        raise typer.Exit(2) from None
    n_fit = sum(r.status == "fitted" for r in records)
    skipped = [r for r in records if r.status != "fitted"]
    if n_fit == 0:
        if len(records) == 1:
            r = records[0]
            message = f"{r.image} was not fitted: {r.reason}."
        else:
            for r in skipped:
                print(f"stn-train: skipped {r.image}: {r.reason}.", file=sys.stderr)
            message = (
                f"none of the {len(records)} images could be fitted (the reasons are "
                "above); fix them and run again."
            )
        print(f"stn-train: error: {' '.join(message.split())}", file=sys.stderr)
        raise typer.Exit(2)
    console = Console()
    console.print(summary_table(records))
    console.print(f"{n_fit} of {len(records)} {_plural(len(records), 'image')} fitted -> {out}")
    for r in skipped:
        print(f"stn-train: skipped {r.image}: {r.reason}.", file=sys.stderr)


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def register(app: typer.Typer) -> None:
    """Add :func:`fit` to ``app`` as the ``fit`` command."""
    app.command("fit")(fit)
