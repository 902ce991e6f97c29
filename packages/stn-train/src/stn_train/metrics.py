"""The evaluation metrics of a localiser's predictions (pure functions of tensors).

Per image, then averaged over images:

- landmark error: the Euclidean distance in pixels between each predicted landmark (the model
  vertex of the landmark set, projected by the predicted theta) and its annotation, over the
  visible landmarks;
- NME (box): the mean error divided by the size of the box of the visible annotations,
  ``sqrt(width * height)`` (the AFLW / AFLW2000-3D convention);
- NME (inter-ocular): divided by the distance between the outer eye corners (aflw21: 6 and 11,
  ibug68: 36 and 45; the 300-W convention); NaN for an image where either corner is missing;
- per-landmark mean error in pixels and as a fraction of the box size;
- the cumulative error distribution (CED) of the per-image NME, and its area under the curve
  up to NME 0.08 (AUC@0.08, in [0, 1], higher is better);
- synthetic faces (ground-truth theta): pose error, the angle in degrees of
  ``R(r_pred) R(r_true)^T``; shape error, the mean distance in mm between the predicted and
  the true face (``mean + basis alpha``, model frame, grid points inside the mesh).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from stn_core.geometry import axis_angle_to_matrix, morphable_shape

__all__ = [
    "OUTER_EYE_CORNERS",
    "AUC_LIMIT",
    "landmark_errors",
    "normalisers",
    "rotation_error_deg",
    "shape_error_mm",
    "ced_area",
    "summarise",
]

OUTER_EYE_CORNERS = {"aflw21": (6, 11), "ibug68": (36, 45)}
AUC_LIMIT = 0.08


def landmark_errors(
    pred: torch.Tensor, target: torch.Tensor, visible: torch.Tensor
) -> torch.Tensor:
    """(B, L) Euclidean distances in pixels, NaN where the landmark is not visible.

    Args:
        pred, target: (B, L, 2) pixels. visible: (B, L) 0/1.
    """
    d = (pred.double() - target.double()).norm(dim=-1)
    return torch.where(visible > 0, d, torch.full_like(d, math.nan))


def normalisers(
    target: torch.Tensor, visible: torch.Tensor, landmark_set: str | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image box size ``sqrt(w h)`` of the visible annotations and the outer-eye-corner
    distance (NaN when unknown), each (B,) float64 pixels."""
    t = target.double()
    vis = visible > 0
    big = torch.full_like(t, math.inf)
    lo = torch.where(vis[..., None], t, big).amin(1)
    hi = torch.where(vis[..., None], t, -big).amax(1)
    wh = (hi - lo).clamp_min(0)
    box = torch.sqrt(wh[:, 0] * wh[:, 1])
    box = torch.where(vis.sum(1) >= 2, box, torch.full_like(box, math.nan))
    io = torch.full_like(box, math.nan)
    corners = OUTER_EYE_CORNERS.get(landmark_set or "")
    if corners is not None and t.shape[1] > max(corners):
        i, j = corners
        d = (t[:, i] - t[:, j]).norm(dim=-1)
        io = torch.where(vis[:, i] & vis[:, j], d, io)
    return box, io


def rotation_error_deg(r_pred: torch.Tensor, r_true: torch.Tensor) -> torch.Tensor:
    """(B,) the angle in degrees of the rotation taking the true pose to the predicted one."""
    rel = axis_angle_to_matrix(r_pred.double()) @ axis_angle_to_matrix(r_true.double()).transpose(
        -1, -2
    )
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def shape_error_mm(alpha_pred: torch.Tensor, alpha_true: torch.Tensor, model) -> torch.Tensor:
    """(B,) mean vertex distance (mm) between the predicted and true shapes, model frame,
    over the grid points inside the mesh."""
    mean, basis = model.mean.double().cpu(), model.basis.double().cpu()
    a = morphable_shape(alpha_pred.double().cpu(), mean, basis)
    b = morphable_shape(alpha_true.double().cpu(), mean, basis)
    d = (a - b).norm(dim=-1)[:, model.inside.cpu()]
    return d.mean(1)


def ced_area(nme: np.ndarray, limit: float = AUC_LIMIT) -> float:
    """The area under the cumulative error distribution of ``nme`` (per-image NME) up to
    ``limit``, divided by ``limit``: in [0, 1], higher is better; NaN without a finite value."""
    x = np.sort(nme[np.isfinite(nme)])
    if x.size == 0:
        return math.nan
    grid = np.linspace(0, limit, 1001)
    frac = np.searchsorted(x, grid, side="right") / x.size
    return (
        float(np.trapezoid(frac, grid) / limit)
        if hasattr(np, "trapezoid")
        else float(np.trapz(frac, grid) / limit)
    )


def summarise(
    result: dict[str, torch.Tensor], landmark_set: str | None, model=None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Summary figures and per-image / per-landmark arrays from :func:`predict_dataset`."""
    err = landmark_errors(result["pred"], result["target"], result["visible"])  # (B, L)
    box, io = normalisers(result["target"], result["visible"], landmark_set)
    mean_err = torch.nanmean(err, dim=1)
    nme_box = mean_err / box
    nme_io = mean_err / io
    sq = torch.nansum(err**2) / (result["visible"] > 0).sum().clamp_min(1)
    per_landmark_px = torch.nanmean(err, dim=0)
    per_landmark_nme = torch.nanmean(err / box[:, None], dim=0)
    summary: dict[str, Any] = {
        "images": int(err.shape[0]),
        "landmarks": int(err.shape[1]),
        "mean_error_px": float(torch.nanmean(mean_err)),
        "landmark_rmse_px": float(torch.sqrt(sq)),
        "nme_box": float(torch.nanmean(nme_box)),
        "nme_interocular": (
            float(torch.nanmean(nme_io)) if torch.isfinite(nme_io).any() else math.nan
        ),
        "auc_box_0.08": ced_area(nme_box.numpy()),
        "failure_rate_box_0.1": float((nme_box[torch.isfinite(nme_box)] > 0.1).double().mean())
        if torch.isfinite(nme_box).any()
        else math.nan,
        "symmetry": float(result["symmetry"].mean()),
    }
    arrays = {
        "index": result["index"].numpy(),
        "mean_error_px": mean_err.numpy(),
        "nme_box": nme_box.numpy(),
        "nme_interocular": nme_io.numpy(),
        "per_landmark_px": per_landmark_px.numpy(),
        "per_landmark_nme_box": per_landmark_nme.numpy(),
    }
    if "theta_true" in result and model is not None:
        pose = rotation_error_deg(result["theta"][:, :3], result["theta_true"][:, :3])
        shape = shape_error_mm(result["theta"][:, 6:], result["theta_true"][:, 6:], model)
        scale = (result["theta"][:, 5] - result["theta_true"][:, 5]).abs()
        summary.update(
            {
                "pose_error_deg": float(pose.mean()),
                "pose_error_deg_median": float(pose.median()),
                "shape_error_mm": float(shape.mean()),
                "shape_error_mm_median": float(shape.median()),
                "log_scale_error": float(scale.mean()),
            }
        )
        arrays["pose_error_deg"] = pose.numpy()
        arrays["shape_error_mm"] = shape.numpy()
    return summary, arrays
