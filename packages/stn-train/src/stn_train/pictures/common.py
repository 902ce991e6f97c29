"""What the pictures share: matplotlib figures without pyplot (no screen and no global
backend switch: a caller's notebook keeps its own), image arrays for display."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from stn_core.shading import sh_ambient, sh_directional

__all__ = ["figure", "to_rgb_array", "display_lighting"]


def figure(**kwargs) -> Figure:
    """A new matplotlib Figure (``figsize``, ``dpi``, ...), drawn by Agg when saved."""
    return Figure(**kwargs)


def to_rgb_array(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) tensor or array in [0, 1] (C = 1 or 3) -> (H, W, 3) float array in [0, 1]."""
    a = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else image
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, -1)
    return np.clip(a, 0.0, 1.0)


def display_lighting(dtype=torch.float32, device=None) -> torch.Tensor:
    """(1, 9, 3) SH light for drawing a model whose appearance was not fitted: ambient plus a
    light from above the camera, so that a picture shows the shape, not a flat silhouette."""
    up = torch.tensor([0.3, 0.4, 1.0], dtype=dtype, device=device)
    return (sh_ambient(0.35, dtype=dtype, device=device) + sh_directional(up, 0.75))[None]
