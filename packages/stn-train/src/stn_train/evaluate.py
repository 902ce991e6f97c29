"""``stn-train eval``: landmark errors of a trained localiser, and pose / shape errors on
synthetic faces.

Metrics (per image, then averaged over images):

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

Outputs of :func:`evaluate` (``--out DIR``): ``eval.json`` (summary), ``per_image.csv``,
``per_landmark.csv``, ``ced.png``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stn_core import STN
from stn_core.geometry import axis_angle_to_matrix, morphable_shape
from torch.utils.data import DataLoader

from stn_train.errors import TrainError, check_output_folder, make_output_folder

__all__ = [
    "OUTER_EYE_CORNERS",
    "AUC_LIMIT",
    "EvalResult",
    "landmark_errors",
    "normalisers",
    "rotation_error_deg",
    "shape_error_mm",
    "predict_dataset",
    "summarise",
    "evaluate_localiser",
    "evaluate",
    "write_ced_plot",
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


@torch.no_grad()
def predict_dataset(
    net: torch.nn.Module,
    stn: STN,
    dataset,
    indices: torch.Tensor,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    workers: int = 0,
) -> dict[str, torch.Tensor]:
    """Run the localiser over a dataset of samples.

    Returns (on the CPU): ``theta`` (B, P), ``pred`` (B, L, 2), ``target`` (B, L, 2),
    ``visible`` (B, L), ``index`` (B,), ``theta_true`` (B, P) when the samples carry ``theta``,
    ``symmetry`` (B,) the per-image symmetry loss of the masked flattened face.
    """
    from stn_core.losses import symmetry_loss

    from stn_train.train.inputs import collate

    was_training = net.training
    net.eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate
    )
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        images = batch["image"].to(device)
        theta = net(images).float()
        out = stn(images.float(), theta)
        sym = torch.stack(
            [
                symmetry_loss(out.masked[i : i + 1], out.visibility[i : i + 1])
                for i in range(len(theta))
            ]
        )
        got = {
            "theta": theta,
            "pred": out.points[:, indices.to(out.points.device)],
            "target": batch["landmarks"],
            "visible": batch["visible"],
            "index": batch["index"],
            "symmetry": sym,
        }
        if "theta" in batch:
            got["theta_true"] = batch["theta"]
        for k, v in got.items():
            v = v.detach().float() if v.is_floating_point() else v
            parts.setdefault(k, []).append(v.cpu())
    net.train(was_training)
    if not parts:
        raise TrainError("the evaluation set is empty.")
    return {k: torch.cat(v) for k, v in parts.items()}


def _auc(nme: np.ndarray, limit: float = AUC_LIMIT) -> float:
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
        "auc_box_0.08": _auc(nme_box.numpy()),
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


def evaluate_localiser(
    net,
    stn: STN,
    dataset,
    indices,
    landmark_set: str | None,
    model=None,
    batch_size: int = 32,
    device="cpu",
    multipliers: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The summary of :func:`summarise` for one dataset; with ``multipliers``
    (:meth:`stn_train.train.losses.LossWeights.multipliers`) also ``loss``: the objective
    without the siamese term (landmark, prior and symmetry), as in training."""
    result = predict_dataset(net, stn, dataset, indices, batch_size, device)
    summary, _ = summarise(result, landmark_set, model)
    if multipliers is not None:
        vis = result["visible"]
        err = landmark_errors(result["pred"], result["target"], vis)
        lm = float(torch.nansum(err**2) / (vis > 0).sum().clamp_min(1))
        prior = float((result["theta"][:, 6:] ** 2).sum(-1).mean())
        summary["loss"] = (
            multipliers["landmark"] * lm
            + multipliers["prior"] * prior
            + multipliers["symmetry"] * summary["symmetry"]
        )
        summary["landmark"] = lm
        summary["prior"] = prior
    return summary


def write_ced_plot(curves: dict[str, np.ndarray], path: str | os.PathLike, title: str = "") -> None:
    """Cumulative error distribution: the fraction of images with NME below x, per normaliser."""
    from stn_train.train.pictures import _pyplot, atomic_savefig

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for i, (label, nme) in enumerate(curves.items()):
        x = np.sort(nme[np.isfinite(nme)])
        if x.size:
            ax.step(
                np.concatenate([[0], x]),
                np.arange(x.size + 1) / x.size,
                where="post",
                color=f"C{i}",
                label=f"{label} (n={x.size})",
            )
    ax.set(
        xlabel="NME",
        ylabel="fraction of images",
        xlim=(0, 1.5 * AUC_LIMIT),
        ylim=(0, 1.01),
        title=title or "cumulative error distribution",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


@dataclass
class EvalResult:
    """What :func:`evaluate` returns: the summary and where the files are."""

    summary: dict[str, Any]
    out_dir: Path


def _write_csv(path: Path, header: list[str], rows) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


def _fmt(v) -> str:
    return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.6g}"


def evaluate(
    checkpoint: str | os.PathLike,
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    synthetic: int | None = None,
    batch_size: int = 32,
    seed: int | None = None,
    landmarks: str | None = None,
    device: str | None = None,
    workers: int = 0,
) -> EvalResult:
    """Evaluate a checkpoint on a manifest (``data``) or ``synthetic`` rendered faces.

    Args:
        checkpoint: ``RUN_DIR/checkpoints/best.pt`` or ``last.pt``.
        model_path: the grid model it was trained with.
        out: the folder for the outputs (module docstring).
        data: a manifest (no augmentation; a bad entry is an error naming it).
        synthetic: a number of rendered faces, drawn with ``seed`` (default: the run's
            validation seed, i.e. the faces validated on during training).
        landmarks: the landmark set (default: the one the checkpoint was trained with).

    Raises:
        TrainError: bad files or arguments, or a checkpoint of another model.
    """
    from stn_train.data import ManifestDataset
    from stn_train.train.checkpoint import restore_localiser
    from stn_train.train.inputs import VAL_SEED_OFFSET, synthetic_faces
    from stn_train.train.loop import load_grid_model

    if (data is None) == (synthetic is None):
        raise TrainError("pass exactly one of --data manifest.jsonl and --synthetic N.")
    if synthetic is not None and synthetic < 1:
        raise TrainError(
            f"--synthetic must be at least 1 (the number of rendered faces to "
            f"evaluate on), got {synthetic}."
        )
    if batch_size < 1:
        raise TrainError(f"--batch-size must be at least 1, got {batch_size}.")
    check_output_folder(out)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_grid_model(model_path, dev)
    net, ckpt = restore_localiser(checkpoint, model, dev)
    landmark_set = landmarks or ckpt.get("landmarks", "aflw21")
    try:
        indices = model.landmark_indices(landmark_set)
    except ValueError as exc:
        raise TrainError(f"--landmarks: {exc}") from None
    size = int(ckpt["image_size"])
    if synthetic is not None:
        run_seed = int(ckpt.get("config", {}).get("seed", 0))
        s = run_seed + VAL_SEED_OFFSET if seed is None else seed
        dataset = synthetic_faces(model, synthetic, size, s, landmark_set)
    else:
        dataset = ManifestDataset(data, size, landmark_set, train=False, strict=True)
    stn = STN(model, ckpt.get("visibility_mode", "normals")).to(dev)
    result = predict_dataset(net, stn, dataset, indices, batch_size, dev, workers)
    summary, arrays = summarise(result, landmark_set, model if synthetic is not None else None)
    summary.update(
        {
            "checkpoint": str(checkpoint),
            "step": int(ckpt.get("step", -1)),
            "model": str(model_path),
            "data": str(data) if data is not None else f"synthetic {synthetic}",
            "landmark_set": landmark_set,
        }
    )
    out = make_output_folder(out)
    tmp = out / ".eval.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, out / "eval.json")
    names = ["index", "mean_error_px", "nme_box", "nme_interocular"] + [
        k for k in ("pose_error_deg", "shape_error_mm") if k in arrays
    ]
    _write_csv(
        out / "per_image.csv",
        names,
        (
            [int(arrays["index"][i])] + [_fmt(float(arrays[k][i])) for k in names[1:]]
            for i in range(len(arrays["index"]))
        ),
    )
    _write_csv(
        out / "per_landmark.csv",
        ["landmark", "mean_error_px", "mean_nme_box"],
        (
            [k, _fmt(float(a)), _fmt(float(b))]
            for k, (a, b) in enumerate(
                zip(arrays["per_landmark_px"], arrays["per_landmark_nme_box"])
            )
        ),
    )
    write_ced_plot(
        {"box": arrays["nme_box"], "inter-ocular": arrays["nme_interocular"]},
        out / "ced.png",
        title=f"CED, {summary['images']} images (step {summary['step']})",
    )
    return EvalResult(summary, out)
