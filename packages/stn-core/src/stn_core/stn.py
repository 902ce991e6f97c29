"""The 3DMM spatial transformer: images and theta -> points, flattened texture, visibility."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from stn_core._validate import check_images, check_theta, expect
from stn_core.geometry import initial_theta, project_theta
from stn_core.grid_model import UVGridModel
from stn_core.sampler import BACKENDS, stn_flatten
from stn_core.visibility import MODES, visibility

__all__ = ["STN", "STNOutput"]


class STNOutput(NamedTuple):
    """What :class:`STN` returns (R = the grid size, N = R * R).

    points: (B, N, 2) image points of the grid vertices, pixels (x right, y down, (0, 0) the
        centre of the top-left pixel), theta's dtype, differentiable in theta.
    rotated: (B, N, 3) rotated vertices, mm (y up, z towards the camera), theta's dtype.
    flattened: (B, C, R, R) the image sampled at the grid (zeros outside the image), the images'
        dtype; row 0 is the top of the UV grid (forehead), column 0 the subject's right (the
        viewer's left in a frontal view).
    visibility: (B, 1, R, R) the mask applied, 1 where the vertex faces the camera (and, in
        "depth" mode, is not occluded) and lies inside the source mesh, else 0; the images'
        dtype; no gradient.
    masked: (B, C, R, R) ``flattened * visibility``.
    """

    points: torch.Tensor
    rotated: torch.Tensor
    flattened: torch.Tensor
    visibility: torch.Tensor
    masked: torch.Tensor


class STN(nn.Module):
    """3DMM as a spatial transformer: grid generator, sampler, visibility and mask.

    Args:
        model: the UV-grid model; its arrays become buffers: ``.to(device)`` moves them, and
            ``state_dict`` leaves them out (they are data of the model artifact, not learnt;
            a checkpoint of a network holding an STN stays small).
        visibility_mode: ``"normals"`` (the original's self-occlusion test) or ``"depth"``
            (adds occlusion by other parts of the face); see :mod:`stn_core.visibility`.
        backend: the sampler's backend, passed to :func:`stn_core.sampler.stn_flatten`:
            ``"auto"`` (the fused Triton kernel for CUDA tensors where available, the PyTorch
            reference otherwise), ``"reference"`` (needed for double backward, e.g. gradient
            penalties, and ``torch.func.jvp``) or ``"triton"``.

    ``forward(images (B, C, H, W), theta (B, 6 + K)) -> STNOutput``. Gradients flow to theta
    through the points and the sampler, and to the images only when they require grad. Under
    ``torch.autocast`` the geometry stays in float32 (see :mod:`stn_core.geometry`).
    """

    def __init__(self, model: UVGridModel, visibility_mode: str = "normals", backend: str = "auto"):
        super().__init__()
        expect(
            visibility_mode in MODES,
            f"visibility_mode must be one of {MODES}, got {visibility_mode!r}.",
        )
        expect(backend in BACKENDS, f"backend must be one of {BACKENDS}, got {backend!r}.")
        self.res = model.res
        self.n_components = model.n_components
        self.visibility_mode = visibility_mode
        self.backend = backend
        for name in ("mean", "basis", "faces", "inside"):
            self.register_buffer(name, getattr(model, name), persistent=False)

    @property
    def n_params(self) -> int:
        """Length of theta, 6 + K."""
        return 6 + self.n_components

    def initial_theta(
        self, batch: int, height: int, width: int, log_s: float = 0.0
    ) -> torch.Tensor:
        """Neutral theta (B, 6 + K) with the model origin at the image centre (see
        :func:`stn_core.geometry.initial_theta`), on this module's device and dtype."""
        return initial_theta(
            batch,
            self.n_components,
            height,
            width,
            log_s,
            device=self.mean.device,
            dtype=self.mean.dtype,
        )

    def forward(self, images: torch.Tensor, theta: torch.Tensor) -> STNOutput:
        check_images(images)
        check_theta(theta, self.n_components)
        b, c = images.shape[:2]
        expect(theta.shape[0] == b, f"theta has batch size {theta.shape[0]} but images have {b}.")
        r = self.res
        points, rotated = project_theta(theta, self.mean, self.basis)
        visible = visibility(rotated, self.faces, self.visibility_mode) & self.inside
        mask = visible.to(images.dtype)
        flat = stn_flatten(images, theta, self.mean, self.basis, None, backend=self.backend)
        flattened = flat.reshape(b, c, r, r)
        vis = mask.reshape(b, 1, r, r)
        return STNOutput(points, rotated, flattened, vis, flattened * vis)

    def extra_repr(self) -> str:
        return (
            f"res={self.res}, n_components={self.n_components}, "
            f"visibility_mode={self.visibility_mode!r}, backend={self.backend!r}"
        )
