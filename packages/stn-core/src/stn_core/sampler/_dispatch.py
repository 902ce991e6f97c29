"""The one place that chooses between the fused Triton kernel and the PyTorch reference."""

from __future__ import annotations

import functools

import torch

from stn_core._validate import check_images, check_mask, check_model_arrays, check_theta, expect
from stn_core.errors import StnError
from stn_core.sampler._interpreter import interpreter_on
from stn_core.sampler.reference import stn_flatten_reference

__all__ = ["stn_flatten", "select_backend", "triton_available", "BACKENDS"]

BACKENDS = ("auto", "reference", "triton")


@functools.lru_cache(maxsize=1)
def _triton_import_error() -> str | None:
    """None when the kernel module imports, else why not (triton is an optional extra)."""
    # lazy: triton is an optional dependency (stn-core[triton]); stn-core imports without it.
    try:
        import stn_core.sampler.triton_kernels  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising something else
        return f"{type(exc).__name__}: {exc}"
    return None


def triton_available() -> bool:
    """True when triton and the fused kernels import."""
    return _triton_import_error() is None


def _on_cuda(t: torch.Tensor) -> bool:
    return t.device.type == "cuda"


def _functorch_wrapped(t: torch.Tensor) -> bool:
    """Whether ``t`` is a torch.func (functorch) wrapper, whose storage a kernel cannot read."""
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(check(t)) if check is not None else False


def _triton_unusable(images, theta, mean, basis, mask) -> str | None:
    """Why the fused path cannot compute this call, or None when it can."""
    err = _triton_import_error()
    if err is not None:
        return f"triton is not importable ({err}); install stn-core[triton]"
    tensors = [images, theta, mean, basis] + ([mask] if mask is not None else [])
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        return f"the tensors are on several devices {sorted(map(str, devices))}"
    device = images.device
    if device.type == "cpu" and not interpreter_on():
        return "the tensors are on the CPU, where Triton runs only under TRITON_INTERPRET=1"
    if device.type not in ("cuda", "cpu"):
        return f"the tensors are on {device.type}, and the Triton kernels target CUDA"
    if images.dtype not in (torch.float32, torch.bfloat16):
        return f"the images are {images.dtype}; the kernel takes float32 or bfloat16"
    if theta.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return f"theta is {theta.dtype}; the kernel takes float32 (or bfloat16, float16)"
    if any(_functorch_wrapped(t) for t in tensors):
        return (
            "a torch.func transform (grad, vjp, jvp, vmap) is active, and the kernel reads "
            "raw device memory; the reference computes the same function"
        )
    if mean.requires_grad or basis.requires_grad:
        return "mean or basis requires grad, and the kernel gives no gradient to the model arrays"
    return None


def select_backend(
    images: torch.Tensor,
    theta: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    mask: torch.Tensor | None = None,
    backend: str = "auto",
) -> str:
    """``"triton"`` or ``"reference"`` for this call.

    ``"auto"`` takes the Triton kernel for CUDA tensors when triton imports, deterministic
    algorithms are off (``torch.are_deterministic_algorithms_enabled()``: the kernel's image
    gradient uses atomic adds) and the call is within what the kernel supports (float32 or
    bfloat16 images, float32 theta (bfloat16 and float16 are read as float32, like the
    reference does), model arrays without gradient, no torch.func transform active);
    otherwise the reference.
    ``"triton"`` insists on the kernel and raises :class:`StnError` saying why it cannot run
    (CPU tensors need ``TRITON_INTERPRET=1``). ``"reference"`` always takes the reference.
    """
    expect(backend in BACKENDS, f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "reference":
        return "reference"
    if backend == "auto":
        if not _on_cuda(images) or torch.are_deterministic_algorithms_enabled():
            return "reference"
        return "reference" if _triton_unusable(images, theta, mean, basis, mask) else "triton"
    reason = _triton_unusable(images, theta, mean, basis, mask)
    if reason is None and torch.are_deterministic_algorithms_enabled() and images.requires_grad:
        reason = (
            "deterministic algorithms are enabled and the images require grad, which the "
            "kernel accumulates with atomic adds"
        )
    if reason is not None:
        raise StnError(f"backend='triton' cannot run this call: {reason}; use backend='auto'.")
    return "triton"


def stn_flatten(
    images: torch.Tensor,
    theta: torch.Tensor,
    mean: torch.Tensor,
    basis: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """theta and the model -> the masked flattened image (the fused grid generator + sampler).

    Math (shared by both backends; see docs/conventions.md)::

        r, t, log_s, alpha = theta[:, :3], theta[:, 3:5], theta[:, 5], theta[:, 6:]
        X = mean + basis @ alpha                 (B, N, 3) mm
        Y = X @ axis_angle_to_matrix(r)^T        (B, N, 3)
        p_x = exp(log_s) Y_x + t_x;  p_y = -exp(log_s) Y_y + t_y     pixels (x right, y down,
                                                 (0, 0) the centre of the top-left pixel)
        out[b, c, n] = mask[b, n] * bilinear(images[b, c], p_x, p_y)  (taps outside read 0)

    Args:
        images: (B, C, H, W) float32 or bfloat16 (float64 too, on the reference).
        theta: (B, 6 + K) ``[r (3) rad, t (2) px, log_s (1), alpha (K)]``, float32 (float64
            on the reference; float16 and bfloat16 are promoted to float32).
        mean: (N, 3) mm. basis: (N, 3, K) mm per unit coefficient.
        mask: (B, N) or (N,) weights (visibility * inside), or None for ones; a constant (no
            gradient).
        backend: ``"auto"`` (default: the fused Triton kernel for CUDA tensors when triton
            imports and deterministic algorithms are off, else the reference),
            ``"reference"`` (:func:`stn_core.sampler.reference.stn_flatten_reference`) or
            ``"triton"`` (the kernel or a :class:`StnError`; on CPU tensors only under
            ``TRITON_INTERPRET=1``). See :func:`select_backend`.

    Returns:
        (B, C, N) in the images' dtype, accumulated in float32; reshape to (B, C, R, R) with
        vertex k at row k // R, column k % R. Differentiable in theta and in images (the
        image gradient only when they require grad). The fused path gives no gradient to
        mean, basis or mask (``auto`` sends model arrays that require grad to the reference)
        and supports no double backward.
    """
    check_images(images)
    check_theta(
        theta, basis.shape[2] if isinstance(basis, torch.Tensor) and basis.dim() == 3 else None
    )
    check_model_arrays(mean, basis)
    expect(
        theta.shape[0] == images.shape[0],
        f"theta has batch size {theta.shape[0]} but images have {images.shape[0]}.",
    )
    check_mask(mask, images.shape[0], mean.shape[0])
    if select_backend(images, theta, mean, basis, mask, backend) == "reference":
        return stn_flatten_reference(images, theta, mean, basis, mask)
    # lazy: triton is an optional dependency; select_backend chose "triton", so it imports.
    from stn_core.sampler.triton_kernels import stn_flatten_triton

    return stn_flatten_triton(images, theta, mean, basis, mask)
