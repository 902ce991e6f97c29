"""Pictures a person can judge a training run by (drawn by rank 0).

- :func:`write_loss_curves`: ``RUN_DIR/pictures/curves.png``, the training objective and its
  terms against the step (log scale), and the validation errors.
- :func:`write_flattening_grid`: ``RUN_DIR/pictures/epoch_NNNN.png``, one row per fixed
  validation image: the input with the target (green) and predicted (red) landmarks, the
  flattened face, the visibility mask, and the masked flattened face (what the siamese and
  symmetry losses compare).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from stn_train.outputs import save_figure
from stn_train.pictures.common import figure, to_rgb_array

__all__ = ["write_loss_curves", "write_flattening_grid"]


def _series(records: list[dict[str, Any]], kind: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [
        (r["step"], r[key])
        for r in records
        if r.get("kind") == kind and isinstance(r.get(key), (int, float))
    ]
    if not pts:
        return np.zeros(0), np.zeros(0)
    s, v = np.asarray(pts, dtype=np.float64).T
    return s, v


def _smooth(v: np.ndarray, n: int) -> np.ndarray:
    if n <= 1 or v.size < n:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    head = c[1:n] / np.arange(1, n)
    return np.concatenate([head, (c[n:] - c[:-n]) / n])


def write_loss_curves(
    records: list[dict[str, Any]], path: str | os.PathLike, title: str = ""
) -> None:
    """Loss curves from metrics records (:mod:`stn_train.train.run_log`) to a PNG."""
    fig = figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    ax = axes[0]
    s, v = _series(records, "train", "loss")
    if s.size:
        window = max(1, s.size // 25)
        if window > 1:
            ax.plot(s, v, color="0.75", lw=0.8, label="training (logged steps)")
            ax.plot(s, _smooth(v, window), color="C0", lw=1.6, label=f"running mean of {window}")
        else:
            ax.plot(s, v, color="C0", lw=1.2, label="training (logged steps)")
    s, v = _series(records, "val", "loss")
    if s.size:
        ax.plot(s, v, "o-", color="C3", ms=3, label="validation")
    ax.set(title="objective J", xlabel="step", yscale="log")
    if ax.lines:
        ax.legend(fontsize=8)
    ax = axes[1]
    for i, key in enumerate(("landmark", "prior", "siamese", "symmetry")):
        s, v = _series(records, "train", key)
        v = np.where(v > 0, v, np.nan)
        if s.size and np.isfinite(v).any():
            ax.plot(s, _smooth(v, max(1, s.size // 25)), color=f"C{i}", label=key)
    ax.set(title="unweighted terms (landmark in px^2)", xlabel="step", yscale="log")
    if ax.lines:
        ax.legend(fontsize=8)
    ax = axes[2]
    for i, (key, label) in enumerate(
        (("nme_box", "NME (box)"), ("nme_interocular", "NME (inter-ocular)"))
    ):
        s, v = _series(records, "val", key)
        if s.size:
            ax.plot(s, 100 * v, "o-", ms=3, color=f"C{i}", label=label)
    ax.set(title="validation landmark error", xlabel="step", ylabel="% of normaliser")
    if ax.lines:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def write_flattening_grid(
    images,
    flattened,
    visibility,
    path: str | os.PathLike,
    target=None,
    predicted=None,
    visible=None,
    title: str = "",
) -> None:
    """Input / flattened / mask / masked, one row per image, to a PNG.

    Args:
        images: (B, 3, H, W) in [0, 1]. flattened: (B, 3, R, R). visibility: (B, 1, R, R).
        target, predicted: optional (B, L, 2) landmarks in pixels (x right, y down).
        visible: optional (B, L) 0/1 for the target landmarks.
    """
    b = images.shape[0]
    cols = ("input", "flattened", "visibility mask", "masked")
    fig = figure(figsize=(10, 2.6 * b))
    axes = fig.subplots(b, 4, squeeze=False)
    for i in range(b):
        flat = to_rgb_array(flattened[i])
        mask = to_rgb_array(visibility[i])
        panels = (to_rgb_array(images[i]), flat, mask, flat * mask)
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
        ax = axes[i, 0]
        if target is not None:
            t = np.asarray(target[i].detach().cpu() if hasattr(target, "detach") else target[i])
            keep = np.ones(len(t), bool)
            if visible is not None:
                vv = visible[i].detach().cpu() if hasattr(visible, "detach") else visible[i]
                keep = np.asarray(vv) > 0
            ax.plot(t[keep, 0], t[keep, 1], "o", ms=3, mfc="none", mec="lime", mew=0.8)
        if predicted is not None:
            p = np.asarray(
                predicted[i].detach().cpu() if hasattr(predicted, "detach") else predicted[i]
            )
            ax.plot(p[:, 0], p[:, 1], "+", ms=4, color="red", mew=0.8)
        h, w = images.shape[-2:]
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
