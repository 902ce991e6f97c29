"""Conversions between this package's conventions and the original MATLAB 3DMM-STN's.

Ours (docs/conventions.md): image points are pixels with x to the right, y down and (0, 0) the
centre of the top-left pixel; theta = [r (3), t (2), log_s (1), alpha (K)] with
``s = exp(log_s)``.

The original's:
- labels: (x, y) with y **up** and **1-based**: a point's row from the top, 1-based, is
  ``H + 1 - y`` and its column ``x``; ours is ``(x - 1, H - y)``.
- MatConvNet ``vl_nnbilinearsampler`` grid: (2, Ho, Wo, N), channel 0 the **vertical**
  coordinate, channel 1 the horizontal one, normalised so that -1 and +1 are the centres of
  the first and last pixels (``align_corners=True``), zeros outside. (MATLAB's 1-based "channel
  1" is index 0 here.)
- scale: ``s = 0.99 ** q``, so ``log_s = q * ln(0.99)``.
- theta: the same order; its t is in the 1-based y-up frame (``t = 112`` was the centre of a
  224-pixel image there), its scale parameter is q.

Functions accept numpy arrays or torch tensors and return the same kind.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "LN_099",
    "labels_from_original",
    "labels_to_original",
    "points_from_matconvnet_grid",
    "points_to_matconvnet_grid",
    "log_scale_from_original",
    "log_scale_to_original",
    "theta_from_original",
    "theta_to_original",
]

LN_099 = math.log(0.99)


def _flip_y_index(xy, height: int, x_offset: float):
    """(x, y) -> (x + x_offset, H - y): its own inverse up to the x offset's sign."""
    if isinstance(xy, torch.Tensor):
        return torch.stack([xy[..., 0] + x_offset, height - xy[..., 1]], -1)
    xy = np.asarray(xy)
    return np.stack([xy[..., 0] + x_offset, height - xy[..., 1]], -1)


def labels_from_original(labels, height: int):
    """The original's landmark labels -> our image points.

    Args:
        labels: (..., 2) (x, y), y up, 1-based (``demodata.mat``'s ``Labels`` after moving
            the (x, y) axis last).
        height: H, the image height in pixels.

    Returns:
        (..., 2) ``(x - 1, H - y)``: x right, y down, (0, 0) the centre of the top-left pixel.
    """
    return _flip_y_index(labels, height, -1.0)


def labels_to_original(points, height: int):
    """Our image points (..., 2) -> the original's labels ``(x + 1, H - y)`` (y up, 1-based)."""
    return _flip_y_index(points, height, 1.0)


def points_from_matconvnet_grid(grid, height: int, width: int):
    """A MatConvNet bilinear-sampler grid -> our sampling points.

    Args:
        grid: (2, Ho, Wo, N): ``grid[0]`` vertical, ``grid[1]`` horizontal, in [-1, 1] at the
            centres of the input's corner pixels.
        height, width: H, W of the images being sampled.

    Returns:
        (N, Ho * Wo, 2) pixel points (x, y), output pixel (i, j) at index ``i * Wo + j`` (the
        grid order of the flattened image: vertex k at row k // R, column k % R).
    """
    if isinstance(grid, torch.Tensor):
        g = grid.permute(3, 1, 2, 0)  # (N, Ho, Wo, 2) as (vertical, horizontal)
        x = (g[..., 1] + 1) * (width - 1) / 2
        y = (g[..., 0] + 1) * (height - 1) / 2
        return torch.stack([x, y], -1).reshape(g.shape[0], -1, 2)
    g = np.transpose(np.asarray(grid), (3, 1, 2, 0))
    x = (g[..., 1] + 1) * (width - 1) / 2
    y = (g[..., 0] + 1) * (height - 1) / 2
    return np.stack([x, y], -1).reshape(g.shape[0], -1, 2)


def points_to_matconvnet_grid(points, height: int, width: int, out_shape: tuple[int, int]):
    """Our sampling points (N, Ho * Wo, 2) -> a MatConvNet grid (2, Ho, Wo, N).

    ``out_shape`` is (Ho, Wo); H, W are the input images' size. Inverse of
    :func:`points_from_matconvnet_grid`.
    """
    ho, wo = out_shape
    if isinstance(points, torch.Tensor):
        p = points.reshape(points.shape[0], ho, wo, 2)
        gy = 2 * p[..., 1] / (height - 1) - 1
        gx = 2 * p[..., 0] / (width - 1) - 1
        return torch.stack([gy, gx], 0).permute(0, 2, 3, 1)
    p = np.asarray(points).reshape(np.shape(points)[0], ho, wo, 2)
    gy = 2 * p[..., 1] / (height - 1) - 1
    gx = 2 * p[..., 0] / (width - 1) - 1
    return np.transpose(np.stack([gy, gx], 0), (0, 2, 3, 1))


def log_scale_from_original(q):
    """The original's scale parameter q (``s = 0.99 ** q``) -> our ``log_s = q ln 0.99``."""
    return q * LN_099


def log_scale_to_original(log_s):
    """Our ``log_s`` (``s = exp(log_s)``) -> the original's q = ``log_s / ln 0.99``."""
    return log_s / LN_099


def theta_from_original(theta, height: int):
    """The original's theta (B, 6 + K) -> ours, for images of height H.

    r and alpha are unchanged (same rotation, same model); t goes from the 1-based y-up frame
    to ours, ``(t_x - 1, H - t_y)``; q becomes ``log_s = q ln 0.99``. The 2D points the two
    predict then agree under :func:`labels_from_original`.
    """
    out = (
        theta.clone()
        if isinstance(theta, torch.Tensor)
        else np.array(theta, dtype=float, copy=True)
    )
    out[:, 3] = theta[:, 3] - 1
    out[:, 4] = height - theta[:, 4]
    out[:, 5] = log_scale_from_original(theta[:, 5])
    return out


def theta_to_original(theta, height: int):
    """Our theta (B, 6 + K) -> the original's (inverse of :func:`theta_from_original`)."""
    out = (
        theta.clone()
        if isinstance(theta, torch.Tensor)
        else np.array(theta, dtype=float, copy=True)
    )
    out[:, 3] = theta[:, 3] + 1
    out[:, 4] = height - theta[:, 4]
    out[:, 5] = log_scale_to_original(theta[:, 5])
    return out
