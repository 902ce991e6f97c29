"""Bilinear sampling of images at pixel coordinates, in pure PyTorch (the reference sampler)."""

from __future__ import annotations

import torch

from stn_core._validate import check_images, check_points

__all__ = ["bilinear_sample", "bilinear_sample_accumulate", "BilinearSampler"]


def bilinear_sample(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Sample ``images`` bilinearly at ``points``.

    Args:
        images: (B, C, H, W) float32, float64 or bfloat16.
        points: (B, N, 2) pixel coordinates (x, y), float32 or float64.

    Returns:
        (B, C, N) in the images' dtype.

    Convention:
        - x to the right, y down, (0, 0) is the centre of the top-left pixel, (W - 1, H - 1)
          the centre of the bottom-right one (``grid_sample(align_corners=True)`` after
          normalising x to ``2 x / (W - 1) - 1``).
        - The four taps are the pixel centres ``(floor(x) + {0, 1}, floor(y) + {0, 1})``; a tap
          outside the image reads 0 (``padding_mode="zeros"``), so the value fades to zero
          over the last pixel beyond the border.
        - Arithmetic is in float32 when the images are bfloat16 (or the points' dtype if
          wider), rounded once to the images' dtype at the end.
        - Differentiable in ``points`` (the derivative of the bilinear interpolant, one-sided
          at integer coordinates, as grid_sample) and in ``images``.
    """
    check_images(images)
    check_points(points, images.shape[0])
    return bilinear_sample_accumulate(images, points).to(images.dtype)


def bilinear_sample_accumulate(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """:func:`bilinear_sample` without the final rounding: (B, C, N) in the accumulation dtype
    (float64 if images or points are float64, else float32). No validation."""
    b, c, h, w = images.shape
    n = points.shape[1]
    acc = torch.promote_types(torch.promote_types(points.dtype, torch.float32), images.dtype)
    pts = points.to(acc)
    x, y = pts[..., 0], pts[..., 1]
    x0f, y0f = torch.floor(x), torch.floor(y)
    wx1, wy1 = x - x0f, y - y0f  # gradient flows through these; floor has none
    wx0, wy0 = 1 - wx1, 1 - wy1
    # Clamp before converting to integers so that far-away (or non-finite) points stay in the
    # integer range; such taps are invalid anyway.
    x0 = x0f.clamp(-2, w + 1).to(torch.long)
    y0 = y0f.clamp(-2, h + 1).to(torch.long)
    flat = images.reshape(b, c, h * w)
    out = None
    for dy, wy in ((0, wy0), (1, wy1)):
        yi = y0 + dy
        vy = (yi >= 0) & (yi < h)
        for dx, wx in ((0, wx0), (1, wx1)):
            xi = x0 + dx
            valid = vy & (xi >= 0) & (xi < w)
            idx = torch.where(valid, yi * w + xi, torch.zeros_like(xi))
            taps = flat.gather(2, idx[:, None, :].expand(b, c, n)).to(acc)
            weight = (wx * wy * valid.to(acc))[:, None, :]
            term = taps * weight
            out = term if out is None else out + term
    return out


class BilinearSampler(torch.nn.Module):
    """nn.Module front of :func:`bilinear_sample`: (images (B, C, H, W), points (B, N, 2) px)
    -> (B, C, N). For theta -> flattened image in one step use
    :func:`stn_core.sampler.stn_flatten` (or :class:`stn_core.STN`)."""

    def forward(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return bilinear_sample(images, points)
