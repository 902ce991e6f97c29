"""``stn-train synthesize``: photo-realistic training faces from fitted photographs.

For each face (annotated in a manifest or a landmark file, or found by the optional
detector), :func:`synthesize_faces` fits the model (:func:`stn_core.fitting.fit_image`: the
landmark fit, then the photometric fit when the model has colour), takes the face's texture
from the photo and completes it (:mod:`stn_train.synthesize.texture`), and renders
``per_face`` new views (:mod:`stn_train.synthesize.views`) over the photo's own background,
filled where the fitted face was (:mod:`stn_train.synthesize.background`), or over the
synthetic faces' random backgrounds (``backgrounds="synthetic"``:
:meth:`stn_train.data.synthetic.SyntheticFaces.backgrounds`, the head alone without the
photo's hair, neck and surroundings).

Written in ``out`` (every file atomically, the manifest last):

- ``images/NAME_VVV.png``: view VVV of face NAME, the photo's size;
- ``images/NAME_VVV.quality.png``: its quality mask, 8-bit grey, 255 where the pixel is
  invented (face texture seen in neither the photo nor its mirror, background filled where
  the fitted face was, or a synthetic background), 0 where it comes from the photo;
- ``textures/NAME.png``: the completed texture on the UV grid (albedo units, row 0 the
  forehead);
- ``sheets/NAME.png``: the contact sheet (:mod:`stn_train.pictures.synthesis`);
- ``summary.json``: the settings, and per face its fit's figures, or why it was skipped;
- ``manifest.jsonl``: one line per view (docs/data-format.md): ``image``, ``landmarks``
  (``[x, y, v]``, the model's landmark vertices projected by the view's theta in float64,
  ``v`` the renderer's depth-tested visibility), ``subject`` (the source's subject, or its
  name: every view of a face is one subject) and the extra keys ``theta``, ``source``,
  ``quality_mask``, ``invented_fraction`` (of the face's pixels), ``landmark_set``, ``view``.
  ``stn-train run --data OUT/manifest.jsonl --landmarks SET`` reads it as it is.

A face is skipped, counted and listed (never an error) when its image cannot be read, it has
no annotation, the wrong landmark count, fewer than 2 visible landmarks, or when its fit
failed: non-finite parameters, a mean landmark error above ``max_landmark_error`` times the
annotations' box size, or (photometric fit) an RMS above ``max_photometric_rms``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from stn_core import project_theta
from stn_core.fitting import fit_image
from stn_core.fitting.solver import torch_threads

from stn_train.data.images import image_files, image_size, load_image
from stn_train.data.manifest import ManifestEntry, read_manifest, write_manifest
from stn_train.data.synthetic import SyntheticFaces
from stn_train.detection.photos import face_crop
from stn_train.errors import TrainError
from stn_train.fit.landmark_sources import LandmarkSource
from stn_train.outputs import (
    check_output_folder,
    make_output_folder,
    unique_names,
    write_json,
    write_png,
)
from stn_train.pictures.fitting import uv_map
from stn_train.pictures.synthesis import write_synthesis_sheet
from stn_train.runtime import load_grid_model, resolve_device
from stn_train.synthesize.background import fill_holes, grow_mask
from stn_train.synthesize.texture import face_texture
from stn_train.synthesize.views import ViewRanges, ViewSampler, render_view

__all__ = ["FaceRecord", "SynthesisResult", "synthesize_faces", "DETECTED_SET", "BACKGROUNDS"]

BACKGROUNDS = ("photo", "synthetic")

DETECTED_SET = "ibug68"
# The fitted face's mask is grown by this fraction of its landmark box (at least 2 pixels)
# before the background under it is filled: its edge pixels mix face, hair and background.
HOLE_GROWTH = 0.04


@dataclass
class FaceRecord:
    """One source face: ``status`` ``"synthesized"`` or ``"skipped"`` (``reason``, one
    sentence); the fit's figures; the views written."""

    source: str
    name: str
    status: str
    reason: str | None = None
    landmark_error_px: float | None = None
    photometric_rms: float | None = None
    converged: bool | None = None
    unseen_fraction: float | None = None
    views: list[str] = field(default_factory=list)


@dataclass
class SynthesisResult:
    """What :func:`synthesize_faces` returns: the output folder, the manifest (None when no
    face could be used) and one :class:`FaceRecord` per source face, in input order."""

    out_dir: Path
    manifest: Path | None
    faces: list[FaceRecord]

    @property
    def n_views(self) -> int:
        return sum(len(f.views) for f in self.faces)

    @property
    def skipped(self) -> list[FaceRecord]:
        return [f for f in self.faces if f.status != "synthesized"]


@dataclass
class _Face:
    """One face to fit. Photos are decoded when their batch is fitted (``image`` None until
    then; ``size`` from the file's header), so that thousands of photos are never all in
    memory; a detected face's crop is kept (the detector decoded the photo already)."""

    index: int
    source: Path
    name: str
    image: torch.Tensor | None  # (3, H, W), or None: decode ``source`` when fitted
    size: tuple[int, int]  # (H, W)
    points: np.ndarray  # (L, 2)
    weights: np.ndarray  # (L,)
    subject: str
    from_manifest: bool = False

    def load(self) -> torch.Tensor:
        """The face's image; raises TrainError when the photo cannot be decoded."""
        if self.image is not None:
            return self.image
        return load_image(self.source, from_manifest=self.from_manifest)[0]


def synthesize_faces(
    sources: Sequence[str | os.PathLike],
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    per_face: int,
    *,
    landmarks: str | os.PathLike | None = None,
    detector=None,
    landmark_set: str = "aflw21",
    out_landmark_set: str | None = None,
    convention: str = "ours",
    pts_one_based: bool = True,
    ranges: ViewRanges | None = None,
    seed: int = 0,
    backgrounds: str = "photo",
    landmarks_only: bool = False,
    max_landmark_error: float = 0.08,
    max_photometric_rms: float = 0.25,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    cpu_threads: int | None = None,
    crop_size: int = 256,
    pictures: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SynthesisResult:
    """Fit each face and write ``per_face`` new views of it (module docstring).

    Args:
        sources: one manifest ``.jsonl`` (images and landmarks), or image files / folders
            with ``landmarks`` (:mod:`stn_train.fit.landmark_sources`' formats) or a
            ``detector`` (:class:`stn_train.detection.FaceDetector`: every face found, fitted
            on its crop of ``crop_size`` pixels, which is then the photo of its views).
        model_path: the UV-grid model (.h5). out: the output folder (created).
        per_face: views per face (>= 1).
        landmark_set: the model's landmark set of the annotations (detected faces: ibug68).
        out_landmark_set: the set written to the manifest (None: ``landmark_set``); any set
            the model has, since the written landmarks are projected model vertices.
        convention, pts_one_based: as ``stn-train fit`` (a CSV's and .pts files' coordinates).
        ranges: :class:`ViewRanges` (None: the defaults). seed: the draws' seed.
        backgrounds: ``"photo"`` (the photo's own, filled where the fitted face was) or
            ``"synthetic"`` (the synthetic faces' random backgrounds, drawn from ``seed``).
        landmarks_only: fit the landmarks only, even with a colour model.
        max_landmark_error: a fit whose mean landmark error exceeds this fraction of the
            annotations' box (its larger side) failed. max_photometric_rms: a photometric fit
            whose RMS exceeds this failed.
        device, batch_size: as ``stn-train fit``. cpu_threads: torch threads for the whole
            work on the CPU (the fits and the renders; None: torch's setting).
        pictures: write the contact sheets.
        progress: ``progress(done, total)`` as faces are done.

    Returns:
        :class:`SynthesisResult`. When no face could be used, nothing is written.

    Raises:
        TrainError: bad arguments, an unreadable model, manifest or landmark source, a model
            without the landmark sets, an output folder that is an input's place or already
            holds a file or folder this command writes (nothing is ever replaced).
    """
    ranges = ViewRanges() if ranges is None else ranges
    if int(per_face) < 1:
        raise TrainError(f"{{0}} must be at least 1, got {per_face}.", ("per_face",))
    if batch_size < 1:
        raise TrainError(f"{{0}} must be at least 1, got {batch_size}.", ("batch_size",))
    if cpu_threads is not None and cpu_threads < 1:
        raise TrainError(f"{{0}} must be at least 1, got {cpu_threads}.", ("cpu_threads",))
    for name, value in (
        ("max_landmark_error", max_landmark_error),
        ("max_photometric_rms", max_photometric_rms),
    ):
        if not (math.isfinite(value) and value > 0):
            raise TrainError(f"{{0}} must be a number > 0, got {value}.", (name,))
    if convention not in ("ours", "one_based", "original"):
        raise TrainError(
            f"{{0}} must be ours, one_based or original, got {convention!r}.", ("convention",)
        )
    if backgrounds not in BACKGROUNDS:
        raise TrainError(
            f"{{0}} must be photo or synthetic, got {backgrounds!r}.",
            (("backgrounds", "--background"),),
        )
    sources = [Path(s) for s in sources]
    if not sources:
        raise TrainError("no photos or manifest given; pass image files, folders or a .jsonl.")
    manifest_in = None
    if any(s.suffix.lower() == ".jsonl" for s in sources):
        if len(sources) != 1:
            raise TrainError(
                "pass either one manifest (.jsonl) or photos, not both; the manifest names "
                "its images itself."
            )
        manifest_in = sources[0]
        if landmarks is not None or detector is not None:
            raise TrainError(
                "a manifest carries its landmarks; drop {0} and {1}.",
                ("landmarks", ("detector", "--detect")),
            )
    elif (landmarks is None) == (detector is None):
        raise TrainError(
            "photos need their landmarks: pass {0}, a manifest (.jsonl), or a face detector "
            "({1}), one of them.",
            ("landmarks", ("detector", "--detect")),
        )
    if detector is not None:
        landmark_set = DETECTED_SET
        if crop_size < 32:
            raise TrainError(f"{{0}} must be at least 32 pixels, got {crop_size}.", ("crop_size",))
    out_landmark_set = landmark_set if out_landmark_set is None else out_landmark_set
    out, model_path = Path(out), Path(model_path)
    check_output_folder(out)

    # Inputs never lie where outputs go (so none is overwritten).
    inputs = [model_path, *sources] + ([] if landmarks is None else [Path(landmarks)])
    entries = read_manifest(manifest_in) if manifest_in is not None else None
    photos = [e.image for e in entries] if entries is not None else image_files(sources)
    _refuse_inputs_in_outputs(out, inputs + photos)
    _refuse_earlier_outputs(out)

    dev = resolve_device(device)
    model = load_grid_model(model_path, dev, dtype=torch.float32)
    for name, which in (
        (landmark_set, ("landmark_set",)),
        (out_landmark_set, (("out_landmark_set", "--out-landmarks"),)),
    ):
        if name not in model.landmarks:
            raise TrainError(
                f"{model_path} has no landmark set {name!r} (it has "
                f"{', '.join(sorted(model.landmarks)) or 'none'}); pass {{0}}.",
                which,
            )
    photometric = model.has_color and not landmarks_only
    n_points = int(model.landmarks[landmark_set].numel())

    records: list[FaceRecord | None] = []
    ready: list[_Face] = []
    if entries is not None:
        _from_manifest(entries, n_points, landmark_set, records, ready)
    elif detector is None:
        source = LandmarkSource(Path(landmarks), n_points, convention, pts_one_based, len(photos))
        _from_landmarks(photos, source, n_points, landmark_set, records, ready)
    else:
        _from_detector(photos, detector, crop_size, records, ready)
    if not ready:
        return SynthesisResult(out, None, [r for r in records if r is not None])

    make_output_folder(out)
    sampler = ViewSampler(model, ranges)
    scenery = None if backgrounds == "photo" else _Scenery(model, len(records) * per_face, seed)
    out_index = model.landmarks[out_landmark_set].to(dev)
    mean64, basis64 = model.mean.double(), model.basis.double()
    lines: list[ManifestEntry] = []
    done = len(records) - len(ready)
    if progress is not None:
        progress(done, len(records))
    groups: dict[tuple[int, int], list[_Face]] = {}
    for item in ready:
        groups.setdefault(item.size, []).append(item)
    batches = [g[k : k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]
    per_face_lines: dict[int, list[ManifestEntry]] = {}
    with torch_threads(cpu_threads, dev):  # the renders too, not only the fits
        for batch in batches:
            images = []
            for item in list(batch):
                try:
                    images.append(item.load())
                except TrainError as err:
                    records[item.index] = FaceRecord(
                        str(item.source), item.name, "skipped", str(err).rstrip(".")
                    )
                    batch.remove(item)
                    done += 1
            if not batch:
                continue
            imgs = torch.stack(images).to(dev)
            q = torch.as_tensor(
                np.stack([b.points for b in batch]), dtype=torch.float32, device=dev
            )
            v = torch.as_tensor(
                np.stack([b.weights for b in batch]), dtype=torch.float32, device=dev
            )
            with torch.no_grad():
                fit = fit_image(
                    model,
                    imgs,
                    q,
                    v,
                    landmark_set,
                    landmarks_only=not photometric,
                    cpu_threads=cpu_threads,
                )
            for j, item in enumerate(batch):
                rec = _fit_record(
                    item, fit, j, photometric, max_landmark_error, max_photometric_rms
                )
                records[item.index] = rec
                if rec.status == "synthesized":
                    per_face_lines[item.index] = _write_face(
                        out,
                        item,
                        images[j],
                        rec,
                        model,
                        fit,
                        j,
                        photometric,
                        per_face,
                        seed,
                        sampler,
                        out_index,
                        out_landmark_set,
                        mean64,
                        basis64,
                        pictures,
                        scenery,
                    )
                done += 1
                if progress is not None:
                    progress(done, len(records))
    for index in sorted(per_face_lines):
        lines += per_face_lines[index]
    finished = [r for r in records if r is not None]
    summary = {
        "model": str(model_path),
        "sources": [str(s) for s in sources],
        "per_face": int(per_face),
        "seed": int(seed),
        "backgrounds": backgrounds,
        "ranges": ranges.to_json(),
        "photometric_fit": photometric,
        "landmark_set": landmark_set,
        "out_landmark_set": out_landmark_set,
        "n_faces": len(finished),
        "n_synthesized": sum(r.status == "synthesized" for r in finished),
        "n_skipped": sum(r.status != "synthesized" for r in finished),
        "n_views": len(lines),
        "faces": [asdict(r) for r in finished],
    }
    write_json(out / "summary.json", summary)
    manifest = write_manifest(lines, out / "manifest.jsonl") if lines else None
    return SynthesisResult(out, manifest, finished)


def _refuse_inputs_in_outputs(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse an ``out`` whose output files or folders hold one of the inputs."""
    root = Path(os.path.abspath(out))
    files = {root / "manifest.jsonl", root / "summary.json"}
    folders = [root / d for d in ("images", "textures", "sheets")]
    for p in inputs:
        a = Path(os.path.abspath(p))
        if a in files or any(f == a or f in a.parents for f in folders):
            raise TrainError(
                f"{{0}} {out} would write over the input {p}; choose an output folder apart "
                "from the inputs.",
                ("out",),
            )


def _refuse_earlier_outputs(out: Path) -> None:
    """Refuse an ``out`` that already holds a file or folder this command writes (an earlier
    set, or a manifest of the user's): nothing already there is ever replaced."""
    for name in ("manifest.jsonl", "summary.json", "images", "textures", "sheets"):
        if (out / name).exists():
            raise TrainError(
                f"{{0}} {out} already holds {name} (an earlier set, or a file of yours); "
                "choose a new output folder, or remove it first.",
                ("out",),
            )


def _skip(records, source: Path, name: str, reason: str) -> None:
    records.append(FaceRecord(str(source), name, "skipped", reason))


def _usable_points(points: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vis = visible * np.isfinite(points).all(1)
    return np.where(np.isfinite(points), points, 0.0), vis


def _from_manifest(entries, n_points, landmark_set, records, ready) -> None:
    names = unique_names([e.image for e in entries])
    for e, name in zip(entries, names, strict=True):
        where = f"{e.image} (manifest line {e.line})"
        if e.landmarks.shape[0] != n_points:
            _skip(
                records,
                e.image,
                name,
                f"{where} has {e.landmarks.shape[0]} landmarks, but the model's set "
                f"{landmark_set} has {n_points}",
            )
            continue
        try:
            w, h = image_size(e.image)
        except TrainError as err:
            _skip(records, e.image, name, str(err).rstrip("."))
            continue
        pts, vis = _usable_points(e.landmarks, e.visible)
        subject = e.subject if e.subject is not None else name
        ready.append(_Face(len(records), e.image, name, None, (h, w), pts, vis, subject, True))
        records.append(None)


def _from_landmarks(photos, source, n_points, landmark_set, records, ready) -> None:
    for p, name in zip(photos, unique_names(photos), strict=True):
        try:
            w, h = image_size(p)
        except TrainError as err:
            _skip(records, p, name, str(err).rstrip("."))
            continue
        ann = source.find(p)
        if isinstance(ann, str):
            _skip(records, p, name, ann)
            continue
        if ann.points.shape[0] != n_points:
            _skip(
                records,
                p,
                name,
                f"{ann.points.shape[0]} landmarks in {ann.source}, but the model's set "
                f"{landmark_set} has {n_points}",
            )
            continue
        pts, vis = _usable_points(ann.points, ann.visible)
        ready.append(_Face(len(records), p, name, None, (h, w), pts, vis, name))
        records.append(None)


def _from_detector(photos, detector, crop_size, records, ready) -> None:
    for p, name in zip(photos, unique_names(photos), strict=True):
        try:
            img, _ = load_image(p, from_manifest=False)
        except TrainError as err:
            _skip(records, p, name, str(err).rstrip("."))
            continue
        faces = detector(img)
        if not faces:
            _skip(records, p, name, "no face found")
        for k, face in enumerate(faces, start=1):
            crop, points, _ = face_crop(img, face, crop_size)
            face_name = f"{name}.face{k}"
            pts, vis = _usable_points(points.numpy(), np.asarray(face.visible, np.float64))
            size = (int(crop.shape[-2]), int(crop.shape[-1]))
            ready.append(_Face(len(records), p, face_name, crop, size, pts, vis, face_name))
            records.append(None)


def _fit_record(item, fit, j, photometric, max_landmark_error, max_rms) -> FaceRecord:
    rec = FaceRecord(str(item.source), item.name, "synthesized")
    err = float(fit.landmark_error_px[j])
    rms = float(fit.photometric_rms[j]) if photometric else None
    rec.landmark_error_px = err if math.isfinite(err) else None
    rec.photometric_rms = rms if rms is not None and math.isfinite(rms) else None
    rec.converged = bool(fit.converged[j])
    shown = item.points[item.weights > 0]
    box = float((shown.max(0) - shown.min(0)).max()) if len(shown) >= 2 else 0.0
    reason = None
    if not bool(fit.usable[j]):
        reason = "fewer than 2 visible landmarks"
    elif not (
        bool(torch.isfinite(fit.theta[j]).all())
        and bool(torch.isfinite(fit.sh[j]).all())
        and math.isfinite(err)
    ):
        reason = "the fit gave non-finite parameters"
    elif box <= 0 or err > max_landmark_error * box:
        reason = (
            f"the fit failed: its landmarks are {err:.1f} px from the annotations on average, "
            f"more than {max_landmark_error:g} of the face's {box:.0f}-px landmark box"
        )
    elif photometric and not (rms is not None and math.isfinite(rms) and rms <= max_rms):
        reason = f"the fit failed: its photometric RMS {rms:.3f} exceeds {max_rms:g}"
    if reason is not None:
        rec.status, rec.reason = "skipped", reason
    return rec


def _write_face(
    out: Path,
    item: _Face,
    image: torch.Tensor,
    rec: FaceRecord,
    model,
    fit,
    j: int,
    photometric: bool,
    per_face: int,
    seed: int,
    sampler: ViewSampler,
    out_index: torch.Tensor,
    out_landmark_set: str,
    mean64: torch.Tensor,
    basis64: torch.Tensor,
    pictures: bool,
    scenery: _Scenery | None = None,
) -> list[ManifestEntry]:
    """Texture, views, masks, sheet of one fitted face; returns its manifest lines."""
    dev, dt = model.device, model.dtype
    image = image.to(dev, dt)
    h, w = image.shape[-2:]
    theta_fit = fit.theta[j].detach()
    sh_fit = fit.sh[j].detach()
    if photometric:
        fallback = fit.albedo[j]
    elif model.has_color:
        fallback = model.color_mean
    else:
        fallback = None
    tex = face_texture(model, image, theta_fit, sh_fit, fallback)
    inside = model.inside
    rec.unseen_fraction = float(tex.unseen.sum()) / max(int(inside.sum()), 1)
    # The photo's background, filled where the fitted face was drawn.
    drawn = render_view(
        model,
        theta_fit,
        sh_fit,
        tex.albedo,
        tex.model,
        image,
        torch.zeros(h, w, dtype=torch.bool, device=dev),
    )
    shown = item.points[item.weights > 0]
    grow = max(2, int(round(HOLE_GROWTH * float((shown.max(0) - shown.min(0)).max()))))
    hole = grow_mask(drawn.face, grow)
    background = fill_holes(image, hole) if scenery is None else None

    theta64 = theta_fit.double().cpu().numpy()
    sh64 = sh_fit.double().cpu().numpy()
    lines, views = [], []
    for v in range(per_face):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, item.index, v])))
        theta_v, sh_v = sampler.draw(rng, theta64, sh64, (int(h), int(w)))
        theta_t = torch.as_tensor(theta_v, dtype=torch.float64)
        if scenery is None:
            backdrop, filled = background, hole
        else:  # none of it is the photo's
            backdrop = scenery((int(h), int(w)), item.index * per_face + v)
            filled = torch.ones(h, w, dtype=torch.bool, device=dev)
        view = render_view(
            model,
            theta_t,
            torch.as_tensor(sh_v, dtype=torch.float64),
            tex.albedo,
            tex.model,
            backdrop,
            filled,
        )
        points = project_theta(theta_t[None].to(dev), mean64, basis64)[0][0, out_index]
        visible = view.visible[out_index].cpu().numpy().astype(np.float64)
        stem = f"{item.name}_{v:03d}"
        image_path = write_png(out / "images" / f"{stem}.png", view.image.permute(1, 2, 0))
        mask_path = write_png(
            out / "images" / f"{stem}.quality.png",
            view.invented.cpu().numpy().astype(np.uint8) * 255,
        )
        n_face = int(view.face.sum())
        invented = float((view.invented & view.face).sum()) / max(n_face, 1)
        lines.append(
            ManifestEntry(
                image=image_path,
                landmarks=points.cpu().numpy(),
                visible=visible,
                subject=item.subject,
                quality_mask=mask_path,
                extra={
                    "theta": theta_v.tolist(),
                    "source": str(item.source),
                    "invented_fraction": invented,
                    "landmark_set": out_landmark_set,
                    "view": v,
                },
            )
        )
        views.append((view.image, points.cpu().numpy(), visible, view.invented))
        rec.views.append(f"images/{image_path.name}")
    write_png(
        out / "textures" / f"{item.name}.png", uv_map(tex.albedo.clamp(0, 1), model.res, inside)
    )
    if pictures:
        write_synthesis_sheet(
            out / "sheets" / f"{item.name}.png",
            image,
            item.points,
            item.weights,
            fit.landmarks[j].detach().cpu().numpy(),
            tex,
            model.res,
            inside,
            views,
            title=f"{item.name}: {per_face} views",
        )
    return lines


class _Scenery:
    """The synthetic faces' backgrounds, one per (source face, view): item
    ``face * per_face + view`` of a :class:`SyntheticFaces` of each image size (seeded by
    ``seed``), so a view's background does not depend on the other faces."""

    def __init__(self, model, n: int, seed: int):
        self.model, self.n, self.seed = model, n, seed
        self.by_size: dict[tuple[int, int], SyntheticFaces] = {}

    def __call__(self, size: tuple[int, int], index: int) -> torch.Tensor:
        if size not in self.by_size:
            self.by_size[size] = SyntheticFaces(
                self.model, self.n, size, seed=self.seed, device=self.model.device
            )
        return self.by_size[size].backgrounds([index])[0]
