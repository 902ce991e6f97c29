"""What ``stn-train fit`` writes for each fitted image, in ``OUT/<name>/``:

- ``params.json``: pose, coefficients, lighting, errors, the fit's settings (:func:`params_record`);
- ``overlay.png``: the input with its landmarks | the fit rendered over it | the two blended
  (a model without colour is drawn grey, lit from above the camera);
- ``flattened.png``: the image sampled at the UV grid, where visible; ``albedo.png`` and
  ``shading.png``: the fitted albedo and shading in UV;
- ``mesh.obj`` + ``mesh.mtl`` + ``mesh_texture.png``: the fitted shape in mm, textured with the
  fitted albedo (a landmark-only fit has no albedo: its texture is the flattened photograph);
- ``cost.png``: the cost per iteration.

For a face found by the detector (in ``OUT/<photo>.faceK/``) the fit ran on the face's crop,
so ``theta`` and the landmarks above are in the crop's pixels; ``params.json`` adds the photo's
view (:func:`photo_record`): ``theta_photo``, ``box_photo``, ``landmarks_detected_photo``,
``landmarks_fitted_photo`` and ``crop_to_photo``; and ``OUT/<photo>.overlay.png`` draws every
face's fit on the whole photo (:func:`write_photo_fit`).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from stn_core import bilinear_sample, project_theta, vertex_normals
from stn_core.fitting import FitWeights, ImageFitResult
from stn_core.renderer import render

from stn_train.data.images import load_image
from stn_train.data.transforms import points_to_source, theta_to_source
from stn_train.outputs import write_json, write_textured_obj
from stn_train.pictures.common import display_lighting
from stn_train.pictures.detection import write_photo_overlay
from stn_train.pictures.fitting import save_cost_plot, save_overlay, save_uv_map, uv_map

__all__ = [
    "CONVENTIONS",
    "finite_or_none",
    "params_record",
    "photo_record",
    "write_fit_files",
    "write_photo_fit",
]

CONVENTIONS = (
    "docs/conventions.md: theta = [r (axis-angle, rad), t (px), log_s, alpha]; "
    "pixels x right, y down, (0, 0) the centre of the top-left pixel; "
    "sh (9 x 3) as stn_core.shading (rows: 1, y, z, x, xy, yz, 3z^2-1, xz, "
    "x^2-y^2; columns R, G, B)"
)


def finite_or_none(x) -> float | None:
    """A float, or None for NaN / infinity (JSON has neither)."""
    v = float(x)
    return v if math.isfinite(v) else None


def params_record(
    result: ImageFitResult,
    j: int,
    model,
    image_path: Path,
    model_path: Path,
    image_size: tuple[int, int],
    landmark_set: str,
    landmarks_only: bool,
    weights: FitWeights | None,
) -> dict:
    """Image ``j``'s fit as the JSON-ready ``params.json`` record."""
    k_id = model.n_identity
    theta = result.theta[j]
    return {
        "image": str(image_path),
        "model": str(model_path),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "landmark_set": landmark_set,
        "landmarks_only": bool(landmarks_only),
        "conventions": CONVENTIONS,
        "theta": theta.tolist(),
        "rotation": theta[:3].tolist(),
        "translation_px": theta[3:5].tolist(),
        "log_scale": float(theta[5]),
        "scale_px_per_mm": float(torch.exp(theta[5])),
        "identity": theta[6 : 6 + k_id].tolist(),
        "expression": theta[6 + k_id :].tolist(),
        "albedo": result.beta[j].tolist(),
        "sh": result.sh[j].tolist(),
        "landmark_error_px": finite_or_none(result.landmark_error_px[j]),
        "photometric_rms": None if landmarks_only else finite_or_none(result.photometric_rms[j]),
        "converged": bool(result.converged[j]),
        "status": result.status[j],
        "n_iter": int(result.n_iter[j]),
        "fitted_landmarks": result.landmarks[j].tolist(),
        "weights": asdict(weights if weights is not None else FitWeights()),
    }


def write_fit_files(
    folder: Path,
    params: dict,
    result: ImageFitResult,
    j: int,
    model,
    image: torch.Tensor,
    observed: torch.Tensor,
    visible: torch.Tensor,
    cost_history: tuple[list[str], dict[str, torch.Tensor]],
    landmarks_only: bool,
    pictures: bool = True,
) -> list[str]:
    """Write image ``j``'s files (module docstring) into ``folder``; returns their names.

    Args:
        folder: the image's result folder (existing). params: :func:`params_record`.
        result: the batch's fit; j: the image's index in it.
        image: (3, H, W) the input in [0, 1]. observed: (L, 2) its landmarks, pixels.
        visible: (L,) their weights. cost_history: :meth:`ImageFitResult.cost_history`.
        landmarks_only: the fit had no appearance (its texture is the flattened photograph).
        pictures: False: ``params.json`` only.
    """
    files = [write_json(folder / "params.json", params).name]
    if not pictures:
        return files
    res = model.res
    h, w = image.shape[-2:]
    theta = result.theta[j : j + 1]
    colors = result.albedo[j : j + 1] if model.has_color else None
    sh = (
        result.sh[j : j + 1]
        if model.has_color
        else display_lighting(result.sh.dtype, result.sh.device)
    )
    drawn = render(model, theta, colors, (int(h), int(w)), sh=sh, background=image[None])
    save_overlay(
        folder / "overlay.png",
        image,
        drawn.image[0],
        drawn.mask[0],
        observed.cpu().numpy(),
        result.landmarks[j].cpu().numpy(),
        visible.cpu().numpy(),
    )
    points, _ = project_theta(theta, model.mean, model.basis)
    flat = bilinear_sample(image[None], points)[0].T  # (N, 3)
    vis = result.visible[j]
    save_uv_map(folder / "flattened.png", flat, res, vis)
    save_uv_map(folder / "albedo.png", result.albedo[j], res, model.inside)
    # Shading where the fit saw the face: back-facing normals (a mouth's inside) are dark.
    save_uv_map(folder / "shading.png", result.shading[j], res, vis, normalise=True)
    files += ["overlay.png", "flattened.png", "albedo.png", "shading.png"]
    shape = model.shape(theta[0, 6:])
    faces = model.drawn_faces
    texture = (
        uv_map(flat, res, vis) if landmarks_only else uv_map(result.albedo[j], res, model.inside)
    )
    name = Path(params["image"]).stem
    written = write_textured_obj(
        folder / "mesh.obj",
        shape,
        faces,
        res,
        texture,
        normals=vertex_normals(shape, faces),
        name=name,
        comment="fitted 3D morphable model (stn-train fit), millimetres",
    )
    files += [x.name for x in written]
    stage, costs = cost_history
    cost = {key: values[:, j].cpu().numpy() for key, values in costs.items()}
    save_cost_plot(folder / "cost.png", stage, cost, title=Path(params["image"]).name)
    files.append("cost.png")
    return files


def photo_record(result: ImageFitResult, j: int, face, to_photo: dict) -> dict:
    """The photo-frame entries of a detected face's ``params.json``: the fit of crop ``j``
    mapped back to the photo (:func:`stn_train.data.transforms.theta_to_source`)."""
    theta = result.theta[j].detach().cpu().double()
    fitted = points_to_source(result.landmarks[j].detach().cpu().double(), to_photo)
    return {
        "theta_photo": theta_to_source(theta, to_photo).tolist(),
        "crop_to_photo": to_photo,
        "box_photo": [float(v) for v in face.box],
        "detection_score": float(face.score),
        "landmarks_detected_photo": np.asarray(face.landmarks).tolist(),
        "landmarks_fitted_photo": fitted.tolist(),
        "landmark_weights": np.asarray(face.visible).tolist(),
    }


def write_photo_fit(model, photo: Path, faces: list, path: Path) -> Path:
    """Every fitted face of ``photo`` drawn on it at full resolution (its fitted albedo and
    lighting, or grey under a display light for a landmark-only fit): ``faces`` holds each
    face's (DetectedFace, params record with ``theta_photo``, ``albedo``, ``sh``)."""
    image, _ = load_image(photo, from_manifest=False)
    h, w = image.shape[-2:]
    dev, dt = model.device, model.dtype
    drawn, mask = image.to(dev, dt), torch.zeros(h, w, dtype=torch.bool, device=dev)
    fitted = []
    for _, params in faces:
        theta = torch.tensor(params["theta_photo"], dtype=dt, device=dev)[None]
        if model.has_color and not params["landmarks_only"]:
            beta = torch.tensor(params["albedo"], dtype=dt, device=dev)
            colors = (model.color_mean + model.color_basis @ beta)[None]
            sh = torch.tensor(params["sh"], dtype=dt, device=dev)[None]
        else:
            colors, sh = None, display_lighting(dt, dev)
        out = render(model, theta, colors, (h, w), sh=sh, background=drawn[None])
        drawn, mask = out.image[0], mask | out.mask[0].reshape(h, w)
        fitted.append(np.asarray(params["landmarks_fitted_photo"]))
    write_photo_overlay(
        image,
        drawn.cpu().float(),
        mask.cpu(),
        [face.box for face, _ in faces],
        [face.landmarks for face, _ in faces],
        fitted,
        path,
    )
    return path
