"""The flip test: predict a face and its mirror image, mirror the second theta back, average.

A standard test-time augmentation of face alignment. The localiser sees each image twice,
as it is and flipped left-right; the two estimates err differently, and their mean is better
than either. Measured on held-out rendered faces (docs/benchmarks.md, "The flip test"), it
took the 30-minute localiser from 2.92 to 2.40 degrees, 3.03 to 2.97 mm and NME 0.0162 to
0.0145, at twice the cost of one prediction. It changes nothing in training.

Mirroring theta (docs/conventions.md, "Mirror images"): the image flip maps pixel x to
``W - 1 - x``, a reflection ``M = diag(-1, 1, 1)`` of the camera frame. A face
``Y = R S(alpha)`` seen in the mirror is ``M R S = (M R M)(M S)``, so:

- rotation: ``M R M``, i.e. the axis-angle ``r = (r_x, r_y, r_z) -> (r_x, -r_y, -r_z)``;
- translation: ``t_x -> W - 1 - t_x``, ``t_y`` unchanged; ``log_s`` unchanged;
- shape: ``M S`` with each grid vertex moved to its mirror partner (the grid is symmetric
  about its middle column, :func:`mirror_index`), written in the model's coefficients by
  least squares: ``alpha -> P alpha + c``. For a model whose mean and basis are mirror
  symmetric (the synthetic model) ``P`` is a signed permutation and ``c = 0``, and the map is
  exact; for a real model it is the nearest shape of the model to the mirrored one
  (:attr:`MirrorMap.residual` says how near: 0.11 of the basis's norm for the original's
  ``model_112.mat``).

Averaging: ``t``, ``log_s`` and ``alpha`` are averaged; the rotations by their chordal mean
(the rotation nearest to ``(R_a + R_b) / 2``: for two rotations, the midpoint of the arc
between them).
"""

from __future__ import annotations

import torch
from stn_core.geometry import axis_angle_to_matrix, matrix_to_axis_angle
from torch import nn

__all__ = ["mirror_index", "MirrorMap", "mirror_theta", "mean_theta", "FlipTest"]


def mirror_index(res: int, device=None) -> torch.Tensor:
    """(R * R,) int64: the mirror partner of each grid vertex, (row, col) -> (row, R-1-col)."""
    k = torch.arange(res * res, device=device)
    row, col = torch.div(k, res, rounding_mode="floor"), k % res
    return row * res + (res - 1 - col)


class MirrorMap:
    """The map of shape coefficients under the mirror: ``alpha -> coefficients @ alpha + offset``.

    Built from a grid model (its float64 copy) by least squares over the grid vertices on the
    face (``inside`` and whose partner is inside).

    Attributes:
        coefficients: (K, K) ``P``. offset: (K,) ``c``.
        residual: the part of the mirrored basis the model cannot express, relative to its
            norm (0 for a mirror-symmetric model).
    """

    def __init__(self, model):
        m = model.to(dtype=torch.float64)
        mirror = mirror_index(m.res, m.mean.device)
        keep = m.inside & m.inside[mirror]
        flip = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64, device=m.mean.device)
        k = m.n_components
        basis = m.basis[keep].reshape(-1, k)
        mirrored_basis = (m.basis[mirror] * flip[:, None])[keep].reshape(-1, k)
        mirrored_mean = (m.mean[mirror] * flip)[keep].reshape(-1, 1)
        # One solve for both right-hand sides.
        rhs = torch.cat([mirrored_basis, mirrored_mean - m.mean[keep].reshape(-1, 1)], 1)
        sol = torch.linalg.lstsq(basis, rhs).solution
        self.coefficients = sol[:, :k]
        self.offset = sol[:, k]
        fitted = basis @ self.coefficients
        self.residual = float(
            (fitted - mirrored_basis).norm() / mirrored_basis.norm().clamp_min(1e-300)
        )

    def like(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P, c)`` on ``tensor``'s device and dtype."""
        return (
            self.coefficients.to(tensor.device, tensor.dtype),
            self.offset.to(tensor.device, tensor.dtype),
        )


def mirror_theta(theta: torch.Tensor, width: int, mirror: MirrorMap) -> torch.Tensor:
    """theta (B, 6 + K) of a face -> theta of the same face in the image flipped left-right.

    Args:
        theta: in stn-core's convention, for an image ``width`` pixels wide.
        width: W, the image's width in pixels.
        mirror: the model's :class:`MirrorMap`.

    For a mirror-symmetric model the map is its own inverse (up to rounding).
    """
    p, c = mirror.like(theta)
    out = theta.clone()
    out[:, 1:3] = -theta[:, 1:3]
    out[:, 3] = (width - 1) - theta[:, 3]
    out[:, 6:] = theta[:, 6:] @ p.T + c
    return out


def mean_theta(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The mean of two estimates of theta (B, 6 + K): the rotations' chordal mean, the rest
    averaged."""
    out = (a + b) / 2
    r64 = torch.stack([a[:, :3], b[:, :3]]).double()
    m = axis_angle_to_matrix(r64).sum(0)
    u, _, vh = torch.linalg.svd(m)
    d = torch.linalg.det(u @ vh)  # +1 but for two rotations half a turn apart
    u = torch.cat([u[..., :2], u[..., 2:] * d[:, None, None]], -1)
    out[:, :3] = matrix_to_axis_angle(u @ vh).to(out.dtype)
    return out


class FlipTest(nn.Module):
    """A localiser wrapped for the flip test: ``forward(images)`` returns the mean of its theta
    for the images and the mirrored-back theta for the images flipped left-right.

    Args:
        localiser: the trained network, images (B, C, H, W) -> theta (B, 6 + K).
        model: its grid model (for :class:`MirrorMap`).
    """

    def __init__(self, localiser: nn.Module, model):
        super().__init__()
        self.localiser = localiser
        self.mirror = MirrorMap(model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, width = images.shape[0], images.shape[-1]
        both = self.localiser(torch.cat([images, images.flip(-1)]))
        return mean_theta(both[:n], mirror_theta(both[n:], width, self.mirror))
