"""The sampler: bilinear sampling and the fused theta -> masked flattened image operation.

:func:`stn_flatten` is the public entry point and the one place that chooses between the
fused Triton kernel (CUDA, optional ``triton`` extra) and the pure-PyTorch reference
:func:`stn_flatten_reference`. Triton is imported lazily: stn-core imports without it.
"""

from stn_core.sampler._dispatch import BACKENDS, select_backend, stn_flatten, triton_available
from stn_core.sampler.reference import stn_flatten_reference

__all__ = [
    "BACKENDS",
    "select_backend",
    "stn_flatten",
    "stn_flatten_reference",
    "triton_available",
]
