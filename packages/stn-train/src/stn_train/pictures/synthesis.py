"""The contact sheet of ``stn-train synthesize``, one per source face.

Top row: the photo with its landmarks (annotated: green rings, grey when marked missing;
fitted: red dots), the completed texture on the UV grid (row 0 the forehead, column 0 the
subject's right), and where the texture came from: the photo's own samples as they are,
mirror-filled texels tinted cyan, model-filled texels (seen in neither the photo nor its
mirror) tinted magenta, each in proportion to its blend weight; dark blue off the face.
Below: the first :data:`SHEET_VIEWS` new views, each with its landmarks (visible: green dots;
hidden by the depth test: red crosses) and its invented pixels (the quality mask) tinted
magenta.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image, ImageDraw

from stn_train.outputs import write_png
from stn_train.pictures.fitting import EMPTY, FITTED, HIDDEN, OBSERVED, to_pil, uv_map

__all__ = ["write_synthesis_sheet", "texture_sources", "SHEET_VIEWS"]

SHEET_VIEWS = 12
_PANEL = 200  # panel height, pixels
_COLUMNS = 6
_LABEL = 14  # label strip above each panel
_MIRROR_TINT = np.array([0.0, 0.85, 1.0])
_MODEL_TINT = np.array([1.0, 0.0, 1.0])


def texture_sources(albedo, mirrored, model, inside, res: int) -> np.ndarray:
    """(R, R, 3) uint8: the texture tinted by where it came from (module docstring)."""
    base = uv_map(albedo.clamp(0, 1), res).astype(np.float64) / 255.0
    m = mirrored.detach().cpu().double().numpy().reshape(res, res, 1)
    f = model.detach().cpu().double().numpy().reshape(res, res, 1)
    out = base * (1 - 0.6 * m - 0.75 * f) + 0.6 * m * _MIRROR_TINT + 0.75 * f * _MODEL_TINT
    out = np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)
    out[~inside.detach().cpu().numpy().reshape(res, res)] = EMPTY
    return out


def _panel(img: Image.Image, label: str, height: int = _PANEL) -> tuple[Image.Image, float]:
    """The picture scaled to ``height`` under a label strip; returns it and the scale."""
    scale = height / img.height
    width = max(1, round(img.width * scale))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
    body = img.resize((width, height), resample)
    out = Image.new("RGB", (max(width, 8), height + _LABEL), (255, 255, 255))
    out.paste(body, (0, _LABEL))
    ImageDraw.Draw(out).text((2, 1), label, fill=(0, 0, 0))
    return out, scale


def _point(scale: float, x: float, y: float) -> tuple[float, float]:
    # Pixel centres: (x + 0.5) * scale in the scaled picture, below the label.
    return (x + 0.5) * scale, (y + 0.5) * scale + _LABEL


def write_synthesis_sheet(
    path: str | os.PathLike,
    photo: torch.Tensor,
    observed: np.ndarray,
    weights: np.ndarray,
    fitted: np.ndarray,
    texture,
    res: int,
    inside: torch.Tensor,
    views: list,
    title: str = "",
) -> None:
    """Write one source face's contact sheet (module docstring).

    Args:
        photo: (3, H, W) in [0, 1]. observed: (L, 2) its annotated landmarks; weights (L,).
        fitted: (L, 2) the fit's landmarks. texture: the face's
            :class:`stn_train.synthesize.texture.FaceTexture`. res: R. inside: (N,) bool.
        views: (image (3, H, W), landmarks (L', 2), visible (L',), invented (H, W) bool) per
            view, in order.
        title: written above the sheet.
    """
    top = []
    img, s = _panel(to_pil(photo), "photo: annotated / fitted")
    draw = ImageDraw.Draw(img)
    r = 2.5
    for (x, y), w in zip(np.asarray(observed, np.float64), np.asarray(weights), strict=True):
        if np.isfinite(x) and np.isfinite(y):
            cx, cy = _point(s, x, y)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=OBSERVED if w > 0 else HIDDEN)
    for x, y in np.asarray(fitted, np.float64):
        cx, cy = _point(s, x, y)
        draw.ellipse([cx - 1.5, cy - 1.5, cx + 1.5, cy + 1.5], fill=FITTED)
    top.append(img)
    tex = Image.fromarray(uv_map(texture.albedo.clamp(0, 1), res, inside), "RGB")
    top.append(_panel(tex, "texture (UV)")[0])
    src = texture_sources(texture.albedo, texture.mirrored, texture.model, inside, res)
    top.append(_panel(Image.fromarray(src, "RGB"), "photo / mirror / model")[0])

    cells = []
    for k, (image, points, visible, invented) in enumerate(views[:SHEET_VIEWS]):
        a = image.detach().cpu().double().clamp(0, 1)
        m = invented.detach().cpu().double()[None]
        tint = torch.as_tensor(_MODEL_TINT, dtype=torch.float64)[:, None, None]
        a = a * (1 - 0.35 * m) + 0.35 * m * tint
        img, s = _panel(to_pil(a), f"view {k}")
        draw = ImageDraw.Draw(img)
        for (x, y), v in zip(np.asarray(points, np.float64), np.asarray(visible), strict=True):
            cx, cy = _point(s, x, y)
            if v > 0:
                draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=OBSERVED)
            else:
                draw.line([cx - 2.5, cy - 2.5, cx + 2.5, cy + 2.5], fill=FITTED)
                draw.line([cx - 2.5, cy + 2.5, cx + 2.5, cy - 2.5], fill=FITTED)
        cells.append(img)

    gap, head = 6, 18
    cols = min(_COLUMNS, max(len(cells), 1))
    cell_w = max((c.width for c in cells), default=0)
    rows = math.ceil(len(cells) / cols) if cells else 0
    width = max(sum(p.width for p in top) + gap * (len(top) - 1), cols * (cell_w + gap) - gap)
    height = head + top[0].height + rows * (_PANEL + _LABEL + gap)
    sheet = Image.new("RGB", (width + 2 * gap, height + 2 * gap), (255, 255, 255))
    ImageDraw.Draw(sheet).text((gap, 3), title, fill=(0, 0, 0))
    x = gap
    for p in top:
        sheet.paste(p, (x, head))
        x += p.width + gap
    y0 = head + top[0].height + gap
    for k, c in enumerate(cells):
        sheet.paste(
            c, (gap + (k % cols) * (cell_w + gap), y0 + (k // cols) * (_PANEL + _LABEL + gap))
        )
    write_png(path, sheet)
