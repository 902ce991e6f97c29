"""The evaluation's picture: the cumulative error distribution (``ced.png``)."""

from __future__ import annotations

import os

import numpy as np

from stn_train.metrics import AUC_LIMIT
from stn_train.outputs import save_figure
from stn_train.pictures.common import figure

__all__ = ["write_ced_plot"]


def write_ced_plot(curves: dict[str, np.ndarray], path: str | os.PathLike, title: str = "") -> None:
    """Cumulative error distribution: the fraction of images with NME below x, per normaliser.

    Args:
        curves: label -> (B,) per-image NME (non-finite values are left out).
    """
    fig = figure(figsize=(5.5, 4.2))
    ax = fig.subplots()
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
    save_figure(fig, path)
