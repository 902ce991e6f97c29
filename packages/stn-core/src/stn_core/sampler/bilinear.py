"""Bilinear sampling of images at pixel coordinates, in pure PyTorch (the reference sampler),
and the samples' derivative in the points for closed-form Jacobians."""

from __future__ import annotations

import torch

from stn_core._validate import check_images, check_points

__all__ = [
    "bilinear_sample",
    "bilinear_sample_accumulate",
    "sample_with_gradient",
    "BilinearSampler",
]


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
    acc = torch.promote_types(torch.promote_types(points.dtype, torch.float32), images.dtype)
    pts = points.to(acc)
    wx1, wy1, taps = _taps(images, pts)
    wx0, wy0 = 1 - wx1, 1 - wy1
    out = None
    for (value, valid), wx, wy in zip(
        taps, (wx0, wx1, wx0, wx1), (wy0, wy0, wy1, wy1), strict=True
    ):
        weight = (wx * wy * valid.to(acc))[:, None, :]
        term = value.to(acc) * weight
        out = term if out is None else out + term
    return out


def sample_with_gradient(
    images: torch.Tensor, points: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear samples and their derivative in the points, the sampler's contract.

    Args:
        images: (B, C, H, W). points: (B, N, 2) pixels (x right, y down, (0, 0) the centre of
            the top-left pixel).

    Returns:
        ``(value, grad)``: value (B, C, N), equal to :func:`bilinear_sample` (taps outside the
        image read 0); grad (B, C, N, 2) its derivative in (x, y): the derivative of the
        bilinear interpolant, taken on the cell ``floor(p)`` (one-sided at integer
        coordinates, as grid_sample's backward). In the dtype of the points (images are
        cast). No validation. The image fit's Jacobian chains ``grad`` in closed form.
    """
    dt = points.dtype
    wx, wy, taps = _taps(images, points)
    i00, i01, i10, i11 = (value.to(dt) * valid[:, None, :].to(dt) for value, valid in taps)
    wx, wy = wx[:, None, :], wy[:, None, :]
    top = i00 + wx * (i01 - i00)
    bottom = i10 + wx * (i11 - i10)
    value = top + wy * (bottom - top)
    gx = (1 - wy) * (i01 - i00) + wy * (i11 - i10)
    gy = bottom - top
    return value, torch.stack([gx, gy], -1)


def _taps(images: torch.Tensor, points: torch.Tensor):
    """The four taps of the bilinear interpolant at each point: the one place that decides
    which pixels are read and which count as outside the image.

    Args:
        images: (B, C, H, W). points: (B, N, 2) pixels, in the dtype the weights are wanted in.

    Returns:
        ``(wx, wy, taps)``: wx, wy (B, N) the fractional parts ``x - floor(x)``, ``y -
        floor(y)`` (the gradient in the points flows through these; floor has none); taps the
        four ``(value, valid)`` pairs of the pixel centres ``(floor(x) + dx, floor(y) + dy)``
        for (dy, dx) = (0, 0), (0, 1), (1, 0), (1, 1): value (B, C, N) in the images' dtype
        (pixel 0 where the tap is outside the image), valid (B, N) bool, False outside.
    """
    b, c, h, w = images.shape
    n = points.shape[1]
    x, y = points[..., 0], points[..., 1]
    x0f, y0f = torch.floor(x), torch.floor(y)
    # Clamp before converting to integers so that far-away (or non-finite) points stay in the
    # integer range; such taps are invalid anyway.
    x0 = x0f.clamp(-2, w + 1).to(torch.long)
    y0 = y0f.clamp(-2, h + 1).to(torch.long)
    flat = images.reshape(b, c, h * w)
    taps = []
    for dy in (0, 1):
        yi = y0 + dy
        vy = (yi >= 0) & (yi < h)
        for dx in (0, 1):
            xi = x0 + dx
            valid = vy & (xi >= 0) & (xi < w)
            idx = torch.where(valid, yi * w + xi, torch.zeros_like(xi))
            taps.append((flat.gather(2, idx[:, None, :].expand(b, c, n)), valid))
    return x - x0f, y - y0f, taps


class BilinearSampler(torch.nn.Module):
    """nn.Module front of :func:`bilinear_sample`: (images (B, C, H, W), points (B, N, 2) px)
    -> (B, C, N). For theta -> flattened image in one step use
    :func:`stn_core.sampler.stn_flatten` (or :class:`stn_core.STN`)."""

    def forward(self, images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return bilinear_sample(images, points)
