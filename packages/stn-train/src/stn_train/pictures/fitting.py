"""What ``stn-train fit`` draws for a person to look at: the overlay, the UV maps, the cost
plot (the textured mesh is :func:`stn_train.outputs.write_textured_obj`).

Conventions (docs/conventions.md): images (3, H, W) in [0, 1]; pixels x right, y down, (0, 0)
the centre of the top-left pixel; UV maps are the R x R grid, row 0 the forehead, column 0
the subject's right (the viewer's left in a frontal view), as the flattened image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from stn_train.outputs import save_figure, write_png
from stn_train.pictures.common import figure

__all__ = [
    "to_pil",
    "uv_map",
    "save_overlay",
    "save_uv_map",
    "save_cost_plot",
]

# Landmark marks: observed (green ring), fitted (red dot), observed but invisible (grey ring).
OBSERVED = (40, 220, 60)
FITTED = (235, 40, 40)
HIDDEN = (150, 150, 150)
# Grid points with no value (outside the face, or not visible) in UV maps: a dark blue that
# no face or shadow has, so that it does not read as image content.
EMPTY = (28, 38, 72)
# Pictures smaller than this (pixels on the short side) are enlarged by an integer factor.
MIN_SIDE = 256


def to_pil(image: torch.Tensor | np.ndarray) -> Image.Image:
    """(3, H, W) float in [0, 1] (tensor or array) -> 8-bit RGB PIL image (clipped)."""
    a = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else image
    a = np.clip(np.asarray(a, dtype=np.float64), 0.0, 1.0)
    return Image.fromarray(np.rint(np.moveaxis(a, 0, -1) * 255).astype(np.uint8), "RGB")


def _enlarge(
    img: Image.Image, min_side: int = MIN_SIDE, resample=Image.Resampling.NEAREST
) -> tuple[Image.Image, int]:
    k = max(1, math.ceil(min_side / min(img.size)))
    return (img.resize((img.width * k, img.height * k), resample) if k > 1 else img), k


def uv_map(
    values: torch.Tensor, res: int, mask: torch.Tensor | None = None, normalise: bool = False
) -> np.ndarray:
    """Per-vertex colours (N, 3) -> an (R, R, 3) uint8 UV image.

    Args:
        values: (N, 3) colours in [0, 1] (clipped), grid order (vertex k at row k // R,
            column k % R).
        res: R. mask: (N,) bool, grid points to show (others :data:`EMPTY`), or None.
        normalise: divide by the largest value shown (for shading, which may exceed 1).
    """
    v = values.detach().cpu().double().reshape(res, res, 3)
    m = None if mask is None else mask.detach().cpu().reshape(res, res)
    if normalise:
        shown = v[m] if m is not None else v.reshape(-1, 3)
        top = float(shown.max()) if shown.numel() else 1.0
        v = v / max(top, 1e-12)
    out = np.rint(v.clamp(0, 1).numpy() * 255).astype(np.uint8)
    if m is not None:
        out[~m.numpy()] = EMPTY
    return out


def save_uv_map(
    path: str | Path,
    values: torch.Tensor,
    res: int,
    mask: torch.Tensor | None = None,
    normalise: bool = False,
) -> Path:
    """:func:`uv_map` saved as PNG, enlarged (nearest) to at least :data:`MIN_SIDE` pixels."""
    img, _ = _enlarge(Image.fromarray(uv_map(values, res, mask, normalise), "RGB"))
    return write_png(path, img)


def _draw_landmarks(img: Image.Image, scale: int, observed, fitted, visible) -> None:
    draw = ImageDraw.Draw(img)
    r = max(2, scale + 1)
    obs = np.asarray(observed, dtype=np.float64)
    fit = np.asarray(fitted, dtype=np.float64)
    vis = np.asarray(visible, dtype=np.float64) > 0
    for (ox, oy), (fx, fy), v in zip(obs, fit, vis, strict=True):
        # Pixel centres: (x + 0.5) * scale in the enlarged picture.
        if np.isfinite(ox) and np.isfinite(oy):
            cx, cy = (ox + 0.5) * scale, (oy + 0.5) * scale
            if np.isfinite(fx) and np.isfinite(fy) and v:
                draw.line([(cx, cy), ((fx + 0.5) * scale, (fy + 0.5) * scale)], fill=FITTED)
            draw.ellipse(
                [cx - r - 1, cy - r - 1, cx + r + 1, cy + r + 1],
                outline=OBSERVED if v else HIDDEN,
                width=max(1, scale // 2),
            )
        if np.isfinite(fx) and np.isfinite(fy):
            cx, cy = (fx + 0.5) * scale, (fy + 0.5) * scale
            draw.ellipse([cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2], fill=FITTED)


def save_overlay(
    path: str | Path,
    image: torch.Tensor,
    rendered: torch.Tensor,
    mask: torch.Tensor,
    observed,
    fitted,
    visible,
) -> Path:
    """Three panels: the input with the landmarks (observed: green rings, grey when marked
    invisible; fitted: red dots, joined to their observation), the rendered fit drawn over
    the input, and the two blended half and half where the face is drawn.

    Args:
        image: (3, H, W) input in [0, 1]. rendered: (3, H, W) the fit rendered over the input
            (:func:`stn_core.renderer.render` with ``background=image``). mask: (1, H, W) or
            (H, W) bool, where the render drew the face.
        observed, fitted: (L, 2) pixels. visible: (L,) weights.
    """
    m = mask.reshape(1, *mask.shape[-2:]).to(image.dtype)
    blend = image * (1 - 0.5 * m) + rendered * 0.5 * m
    panels = []
    for k, picture in enumerate((image, rendered, blend)):
        img, scale = _enlarge(to_pil(picture))
        if k == 0:
            _draw_landmarks(img, scale, observed, fitted, visible)
        panels.append(img)
    gap = 4
    out = Image.new(
        "RGB", (sum(p.width for p in panels) + gap * 2, panels[0].height), (255, 255, 255)
    )
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return write_png(path, out)


def save_cost_plot(
    path: str | Path, stage: Sequence[str], costs: Mapping[str, np.ndarray], title: str = ""
) -> Path:
    """The cost per LM iteration (log scale), total and per term, one band per stage.

    Args:
        stage: T stage names (:meth:`stn_core.fitting.ImageFitResult.cost_history`).
        costs: name -> (T,) values (NaN where a stage lacks the term).
    """
    t = np.arange(len(stage))
    fig = figure(figsize=(8.4, 4.2), dpi=110)
    ax = fig.subplots()
    for name, values in costs.items():
        v = np.asarray(values, dtype=np.float64)
        v = np.where(v > 0, v, np.nan)
        if np.all(np.isnan(v)):
            continue
        style = (
            dict(color="black", lw=2.2, marker="o", ms=3)
            if name == "total"
            else dict(lw=1.2, marker=".", ms=3)
        )
        ax.plot(t, v, label=name, **style)
    # Stage bands: each stage's first row is its starting cost.
    starts = [i for i in range(len(stage)) if i == 0 or stage[i] != stage[i - 1]]
    for k, s0 in enumerate(starts):
        s1 = starts[k + 1] if k + 1 < len(starts) else len(stage)
        if k % 2:
            ax.axvspan(s0 - 0.5, s1 - 0.5, color="0.93", zorder=0)
        ax.text(
            (s0 + s1 - 1) / 2,
            1.01,
            stage[s0],
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_yscale("log")
    ax.set_xlabel("iteration (row 0 of each stage: its start)")
    ax.set_ylabel("cost")
    if title:
        ax.set_title(title, fontsize=9, pad=16)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
