"""Pictures of detected faces: the contact sheet of ``stn-train detect``, and results drawn
on a whole photo (``stn-train predict --detect``, ``stn-train fit`` without landmarks)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from stn_train.outputs import save_figure, write_png
from stn_train.pictures.common import figure, to_rgb_array

__all__ = ["write_contact_sheet", "write_photo_overlay"]

_COLUMNS = 8


def write_contact_sheet(
    faces: Sequence[tuple[torch.Tensor, torch.Tensor, str]], path: str | os.PathLike
) -> None:
    """Crops in a grid, each with its landmarks (green dots; the jaw contour, iBUG 0-16, in
    yellow) and its label.

    Args:
        faces: (crop (3, S, S) in [0, 1], landmarks (68, 2) crop pixels, label) per face.
    """
    n = len(faces)
    cols = min(_COLUMNS, n)
    rows = math.ceil(n / cols)
    fig = figure(figsize=(1.6 * cols, 1.75 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax in axes:
        ax.set_axis_off()
    for ax, (crop, points, label) in zip(axes, faces, strict=False):
        ax.imshow(to_rgb_array(crop), interpolation="nearest")
        p = np.asarray(points, dtype=np.float64)
        ax.plot(p[:17, 0], p[:17, 1], ".", ms=1.5, color="yellow")
        ax.plot(p[17:, 0], p[17:, 1], ".", ms=1.5, color="lime")
        ax.set_title(label, fontsize=6)
    fig.tight_layout(pad=0.8)
    save_figure(fig, path, dpi=110)


def write_photo_overlay(
    photo: torch.Tensor,
    drawn: torch.Tensor,
    mask: torch.Tensor,
    boxes: Sequence[Sequence[float]],
    observed: Sequence[np.ndarray],
    fitted: Sequence[np.ndarray],
    path: str | os.PathLike,
) -> None:
    """The whole photo with every face's result: the model drawn over it (blended half and
    half where ``mask``), each detector box (white), detected landmarks (green) and the
    result's landmarks (red), at the photo's own resolution.

    Args:
        photo: (3, H, W) in [0, 1]. drawn: (3, H, W) the faces rendered over the photo.
        mask: (H, W) bool, where a face was drawn. boxes: (x0, y0, x1, y1) per face.
        observed, fitted: (L, 2) landmarks per face, photo pixels.
    """
    m = mask.to(photo.dtype)[None]
    blend = photo * (1 - 0.5 * m) + drawn * 0.5 * m
    img = Image.fromarray(
        np.rint(blend.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    )
    draw = ImageDraw.Draw(img)
    h, w = photo.shape[-2:]
    r = max(1.5, min(h, w) / 300)
    width = max(1, round(min(h, w) / 400))
    for box in boxes:
        draw.rectangle([float(v) for v in box], outline=(255, 255, 255), width=width)
    for points, colour in ((observed, (40, 220, 60)), (fitted, (235, 40, 40))):
        for pts in points:
            for x, y in np.asarray(pts, dtype=np.float64):
                if np.isfinite(x) and np.isfinite(y):
                    draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    write_png(path, img)
