"""The shape checks of stn-core's public functions, each raising :class:`StnError` with one
sentence (the errors themselves live in :mod:`stn_core.errors`)."""

from __future__ import annotations

import torch

from stn_core.errors import StnError


def expect(ok: bool, message: str) -> None:
    """Raise :class:`StnError` with ``message`` unless ``ok``."""
    if not ok:
        raise StnError(message)


def check_images(images: torch.Tensor, name: str = "images") -> None:
    expect(
        isinstance(images, torch.Tensor) and images.dim() == 4,
        f"{name} must be a (B, C, H, W) tensor, got {_shape(images)}; add a batch dimension.",
    )
    expect(
        images.is_floating_point(),
        f"{name} must be floating point (float32, float64 or bfloat16), got {images.dtype}.",
    )


def check_points(points: torch.Tensor, batch: int | None = None, name: str = "points") -> None:
    expect(
        isinstance(points, torch.Tensor) and points.dim() == 3 and points.shape[-1] == 2,
        f"{name} must be a (B, N, 2) tensor of pixel coordinates, got {_shape(points)}.",
    )
    if batch is not None:
        expect(
            points.shape[0] == batch,
            f"{name} has batch size {points.shape[0]} but the images have {batch}.",
        )


def check_theta(theta: torch.Tensor, n_components: int | None = None) -> None:
    expect(
        isinstance(theta, torch.Tensor) and theta.dim() == 2 and theta.shape[1] >= 6,
        f"theta must be a (B, 6 + K) tensor [r(3), t(2), log_s(1), alpha(K)], got {_shape(theta)}.",
    )
    expect(theta.is_floating_point(), f"theta must be floating point, got {theta.dtype}.")
    if n_components is not None:
        expect(
            theta.shape[1] == 6 + n_components,
            f"theta has {theta.shape[1]} columns but the model has {n_components} components; "
            f"pass (B, {6 + n_components}).",
        )


def check_model_arrays(mean: torch.Tensor, basis: torch.Tensor) -> None:
    expect(
        isinstance(mean, torch.Tensor) and mean.dim() == 2 and mean.shape[1] == 3,
        f"mean must be a (N, 3) tensor in mm, got {_shape(mean)}.",
    )
    expect(
        isinstance(basis, torch.Tensor) and basis.dim() == 3 and basis.shape[:2] == mean.shape,
        f"basis must be a ({mean.shape[0]}, 3, K) tensor, got {_shape(basis)}.",
    )


def check_mask(mask: torch.Tensor | None, batch: int, n: int) -> None:
    if mask is None:
        return
    expect(
        isinstance(mask, torch.Tensor)
        and (tuple(mask.shape) == (n,) or tuple(mask.shape) == (batch, n)),
        f"mask must be ({n},) or ({batch}, {n}), got {_shape(mask)}.",
    )


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
