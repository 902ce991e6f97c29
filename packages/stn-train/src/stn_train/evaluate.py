"""Evaluation of a trained localiser: run it over a dataset, summarise its errors
(:mod:`stn_train.metrics`: landmark NME, per-landmark errors, CED; pose and shape errors on
rendered faces), and for ``stn-train eval`` write them.

Outputs of :func:`evaluate` (``out``): ``eval.json`` (summary), ``per_image.csv``,
``per_landmark.csv``, ``ced.png``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from stn_core import STN
from stn_core.losses import symmetry_loss
from torch.utils.data import DataLoader

from stn_train.checkpoint import restore_localiser
from stn_train.data import ManifestDataset, collate_batch
from stn_train.data.synthetic import VAL_SEED_OFFSET, synthetic_faces
from stn_train.errors import TrainError
from stn_train.flip_test import FlipTest
from stn_train.metrics import landmark_errors, summarise
from stn_train.outputs import check_output_folder, make_output_folder, write_csv, write_json
from stn_train.pictures.evaluation import write_ced_plot
from stn_train.runtime import load_grid_model, resolve_device

__all__ = ["EvalResult", "predict_dataset", "evaluate_localiser", "evaluate"]


@torch.no_grad()
def predict_dataset(
    net: torch.nn.Module,
    stn: STN,
    dataset,
    indices: torch.Tensor,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    workers: int = 0,
) -> dict[str, torch.Tensor]:
    """Run the localiser over a dataset of samples.

    Returns (on the CPU): ``theta`` (B, P), ``pred`` (B, L, 2), ``target`` (B, L, 2),
    ``visible`` (B, L), ``index`` (B,), ``theta_true`` (B, P) when the samples carry ``theta``,
    ``symmetry`` (B,) the per-image symmetry loss of the masked flattened face.
    """
    was_training = net.training
    net.eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_batch
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


@dataclass
class EvalResult:
    """What :func:`evaluate` returns: the summary and where the files are."""

    summary: dict[str, Any]
    out_dir: Path


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
    device: torch.device | str | None = None,
    workers: int = 0,
    flip_test: bool = False,
) -> EvalResult:
    """Evaluate a checkpoint on a manifest (``data``) or ``synthetic`` rendered faces.

    Args:
        checkpoint: ``RUN_DIR/checkpoints/best.pt`` or ``last.pt``.
        model_path: the grid model it was trained with.
        out: the folder for the outputs (module docstring).
        data: a manifest (no augmentation; a bad entry is an error naming it).
        synthetic: a number of rendered faces, drawn with ``seed`` (default: the run's
            validation seed, i.e. the faces validated on during training), framed as the
            run's (its ``synthetic_margin`` and ``synthetic_anchor``).
        landmarks: the landmark set (default: the one the checkpoint was trained with).
        device: where to run (None or ``"auto"``: CUDA when available, as
            :func:`stn_train.runtime.resolve_device`).
        workers: DataLoader worker processes.
        flip_test: predict each image and its mirror image and average the two estimates
            (:mod:`stn_train.flip_test`; twice the cost).

    Raises:
        TrainError: bad files or arguments, or a checkpoint of another model.
    """
    if (data is None) == (synthetic is None):
        raise TrainError("pass exactly one of {0} manifest.jsonl and {1} N.", ("data", "synthetic"))
    if synthetic is not None and synthetic < 1:
        raise TrainError(
            f"{{0}} must be at least 1 (the number of rendered faces to evaluate on), got "
            f"{synthetic}.",
            ("synthetic",),
        )
    if batch_size < 1:
        raise TrainError(f"{{0}} must be at least 1, got {batch_size}.", ("batch_size",))
    check_output_folder(out)
    dev = resolve_device(device)
    model = load_grid_model(model_path, dev)
    net, ckpt = restore_localiser(checkpoint, model, dev)
    if flip_test:
        net = FlipTest(net, model)
    landmark_set = landmarks or ckpt.get("landmarks", "aflw21")
    try:
        indices = model.landmark_indices(landmark_set)
    except ValueError as exc:
        raise TrainError(f"{{0}}: {exc}", ("landmarks",)) from None
    size = int(ckpt["image_size"])
    if synthetic is not None:
        run = ckpt.get("config", {})
        s = int(run.get("seed", 0)) + VAL_SEED_OFFSET if seed is None else seed
        # Framed as the run's rendered faces were (its synthetic_margin and _anchor).
        framing = (run.get("synthetic_margin"), run.get("synthetic_anchor", "centre"))
        dataset = synthetic_faces(model, synthetic, size, s, landmark_set, *framing)
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
            "flip_test": bool(flip_test),
        }
    )
    out = make_output_folder(out)
    write_json(out / "eval.json", summary)
    names = ["index", "mean_error_px", "nme_box", "nme_interocular"] + [
        k for k in ("pose_error_deg", "shape_error_mm") if k in arrays
    ]
    write_csv(
        out / "per_image.csv",
        names,
        (
            [int(arrays["index"][i])] + [_fmt(float(arrays[k][i])) for k in names[1:]]
            for i in range(len(arrays["index"]))
        ),
    )
    write_csv(
        out / "per_landmark.csv",
        ["landmark", "mean_error_px", "mean_nme_box"],
        (
            [k, _fmt(float(a)), _fmt(float(b))]
            for k, (a, b) in enumerate(
                zip(arrays["per_landmark_px"], arrays["per_landmark_nme_box"], strict=True)
            )
        ),
    )
    write_ced_plot(
        {"box": arrays["nme_box"], "inter-ocular": arrays["nme_interocular"]},
        out / "ced.png",
        title=f"CED, {summary['images']} images (step {summary['step']})",
    )
    return EvalResult(summary, out)
