"""The pure-PyTorch reference of the fused STN sampler (the Triton kernel must agree with it).

Used on the CPU, when Triton is missing, and in deterministic mode (dispatch lives in
:func:`stn_core.sampler.stn_flatten`); float64 gradcheck and the benchmarks use it too.
"""

from __future__ import annotations

import torch

from stn_core._validate import check_images, check_mask, check_model_arrays, check_theta, expect
from stn_core.geometry import project_theta
from stn_core.sampler.bilinear import bilinear_sample_accumulate

__all__ = ["stn_flatten_reference"]


def stn_flatten_reference(
    images: torch.Tensor,
    theta: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """theta and the model -> the masked flattened image, in one function.

    Math (the contract shared with the Triton kernel; see docs/conventions.md)::

        r, t, log_s, alpha = theta[:, :3], theta[:, 3:5], theta[:, 5], theta[:, 6:]
        X = mean + basis @ alpha                 (B, N, 3) mm
        Y = X @ axis_angle_to_matrix(r)^T        (B, N, 3)
        p_x = exp(log_s) Y_x + t_x;  p_y = -exp(log_s) Y_y + t_y     pixels
        out[b, c, n] = mask[b, n] * bilinear(images[b, c], p_x, p_y)  (zeros outside)

    Args:
        images: (B, C, H, W) float32, float64 or bfloat16.
        theta: (B, 6 + K) float32 or float64 (the geometry is computed in this dtype).
        mean: (N, 3) mm. basis: (N, 3, K) mm per unit coefficient (cast to theta's dtype).
        mask: (B, N) or (N,) weights (visibility * inside), or None for all ones. Treated as a
            constant: no gradient flows into it.

    Returns:
        (B, C, N) in the images' dtype (accumulated in float32 for bfloat16 images). Reshape
        to (B, C, R, R): vertex k is row k // R, column k % R. Differentiable in theta and in
        images.
    """
    check_images(images)
    check_theta(theta)
    check_model_arrays(mean, basis)
    b, n = images.shape[0], mean.shape[0]
    expect(theta.shape[0] == b, f"theta has batch size {theta.shape[0]} but images have {b}.")
    expect(
        theta.shape[1] == 6 + basis.shape[2],
        f"theta has {theta.shape[1]} columns but the basis has {basis.shape[2]} components; "
        f"pass (B, {6 + basis.shape[2]}).",
    )
    check_mask(mask, b, n)
    points, _ = project_theta(theta, mean, basis)
    out = bilinear_sample_accumulate(images, points)
    if mask is not None:
        m = mask.detach().to(out.dtype)
        out = out * (m[None, None, :] if m.dim() == 1 else m[:, None, :])
    return out.to(images.dtype)
