"""The geometric layers of the 3DMM-STN grid generator: theta -> 2D sampling points.

Conventions (docs/conventions.md):
- theta: (B, 6 + K) = [r (3) axis-angle, t (2) pixels, log_s (1), alpha (K)], the original's
  order.
- Model space: millimetres; x to the viewer's right in a frontal view (the subject's left),
  y up, z towards the viewer (the camera looks along -z).
- Rotation: ``R @ x`` rotates the column vector x by |r| radians about r / |r| (right hand);
  rows of points rotate as ``points @ R^T``.
- Image points: pixels, x to the right, y down, (0, 0) the centre of the top-left pixel. The
  orthographic projection drops z and flips y (model y up -> image y down).
- Scale: ``s = exp(log_s)`` pixels per mm. The original used ``s = 0.99 ** q``; its q
  converts as ``log_s = q * ln(0.99)`` (:func:`stn_core.conventions.log_scale_from_original`).

Every function accepts float32 or float64 tensors on any device and is differentiable in all
its floating-point inputs. Precision: the functions that multiply matrices run with autocast
disabled, so that under ``torch.autocast`` they keep their inputs' dtype rather than rounding
to bfloat16 (8 significant bits: half a pixel at 200 px); :func:`project_theta` also promotes
a float16 or bfloat16 theta (a localiser's output under autocast) to float32.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = [
    "ThetaParts",
    "split_theta",
    "skew",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "euler_to_matrix",
    "so3_left_jacobian",
    "morphable_shape",
    "rotate",
    "project_orthographic",
    "scale_points",
    "translate_points",
    "project_theta",
    "initial_theta",
    "initial_log_scale",
    "MorphableShape",
    "AxisAngleRotation",
    "OrthographicProjection",
    "Scale2d",
    "Translate2d",
    "GridGenerator",
]

# Below this squared angle (|r| < 0.1 rad) the Rodrigues coefficients use their Taylor series
# through theta^8: the truncation error (< 3e-18 relative) is below float64 epsilon, and the
# series has exact, finite gradients at r = 0 where sin|r| / |r| does not.
_SMALL_ANGLE_SQ = 1e-2
# so3_left_jacobian takes its series below this angle (radians), where the closed form's
# (|r| - sin|r|) / |r|^3 would cancel.
_LEFT_JACOBIAN_SERIES_BELOW = 0.5


# The device types for which torch has an autocast state to switch off.
_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _autocast_off(fn):
    """Run ``fn`` with autocast disabled on the device of its first tensor argument."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        if device in _AUTOCAST_DEVICES and torch.is_autocast_enabled(device):
            with torch.autocast(device, enabled=False):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


class ThetaParts(NamedTuple):
    """The parts of theta (views into it, no copies).

    r: (B, 3) axis-angle, radians. t: (B, 2) translation, pixels. log_s: (B,) log of the
    scale in pixels per mm. alpha: (B, K) shape coefficients (unit variance per component).
    """

    r: torch.Tensor
    t: torch.Tensor
    log_s: torch.Tensor
    alpha: torch.Tensor


def split_theta(theta: torch.Tensor) -> ThetaParts:
    """Split theta (B, 6 + K) into :class:`ThetaParts` ``(r, t, log_s, alpha)``.

    Layout (the original's order): ``[r_x, r_y, r_z, t_x, t_y, log_s, alpha_1 .. alpha_K]``.
    """
    if theta.dim() != 2 or theta.shape[1] < 6:
        raise ValueError(f"theta must be (B, 6 + K), got {tuple(theta.shape)}.")
    return ThetaParts(theta[:, 0:3], theta[:, 3:5], theta[:, 5], theta[:, 6:])


def skew(v: torch.Tensor) -> torch.Tensor:
    """The cross-product matrix [v]_x (..., 3, 3) of v (..., 3): ``skew(v) @ x = v x x``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack(
        [torch.stack([o, -z, y], -1), torch.stack([z, o, -x], -1), torch.stack([-y, x, o], -1)],
        -2,
    )


@_autocast_off
def axis_angle_to_matrix(r: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from axis-angle vectors (Rodrigues' formula).

    Args:
        r: (..., 3) float, radians; the rotation is by |r| about r / |r| (right hand).

    Returns:
        (..., 3, 3), same dtype and device: ``R = I + a K + b K^2`` with ``K = skew(r)``,
        ``a = sin|r| / |r|`` and ``b = (1 - cos|r|) / |r|^2``. ``R @ x`` rotates column
        vector x.

    Numerics: exact at r = 0 (R = I) and differentiable everywhere, including r = 0 exactly:
    for |r| < 0.1 the coefficients come from their Taylor series in |r|^2, so no square root
    or division by |r| is taken there (the original's MATLAB special case for r = 0 wrote its
    result to a copy and left the output unset; there is no special case here). ``b`` is
    evaluated as ``0.5 * (sin(|r|/2) / (|r|/2))^2`` to avoid the cancellation in
    ``1 - cos|r|`` in float32.
    """
    theta_sq = (r * r).sum(-1)
    small = theta_sq < _SMALL_ANGLE_SQ
    # The large-angle branch sees a harmless placeholder where the angle is small, so that its
    # (unused) gradient there is finite and torch.where does not propagate NaN.
    safe_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    angle = torch.sqrt(safe_sq)
    half = 0.5 * angle
    a_big = torch.sin(angle) / angle
    b_big = 0.5 * (torch.sin(half) / half) ** 2
    x = theta_sq
    a_small = 1 - x / 6 * (1 - x / 20 * (1 - x / 42 * (1 - x / 72)))
    b_small = 0.5 * (1 - x / 12 * (1 - x / 30 * (1 - x / 56 * (1 - x / 90))))
    a = torch.where(small, a_small, a_big)[..., None, None]
    b = torch.where(small, b_small, b_big)[..., None, None]
    k = skew(r)
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand(k.shape)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(m: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors (..., 3) of rotation matrices (..., 3, 3), angle in [0, pi].

    The inverse of :func:`axis_angle_to_matrix`. Goes through the unit quaternion, taking the
    best-conditioned of Shepperd's four branches, so it is accurate at every angle, 0 and pi
    included (at pi the sign of the axis is arbitrary). Not meant to be differentiated.
    """
    shape = m.shape[:-2]
    m = m.reshape(-1, 3, 3)
    m00, m01, m02 = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    m10, m11, m12 = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    m20, m21, m22 = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    q_abs = (
        torch.stack(
            [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
        )
        .clamp_min(0)
        .sqrt()
    )
    # Rows: (w, x, y, z) each scaled by 2 * (the component this branch solves for).
    cand = torch.stack(
        [
            torch.stack([q_abs[:, 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, q_abs[:, 1] ** 2, m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, q_abs[:, 2] ** 2, m12 + m21], -1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[:, 3] ** 2], -1),
        ],
        1,
    ) / (2.0 * q_abs.clamp_min(0.1)[:, :, None])
    best = q_abs.argmax(-1)
    q = cand[torch.arange(m.shape[0], device=m.device), best]
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    w, v = q[:, 0], q[:, 1:]
    n = v.norm(dim=-1)
    angle = 2.0 * torch.atan2(n, w)
    # angle / sin(angle / 2) -> 2 / w as the angle -> 0; its series avoids 0 / 0.
    factor = torch.where(n > 1e-7, angle / n.clamp_min(1e-30), 2.0 / w * (1 - n * n / (3 * w * w)))
    return (v * factor[:, None]).reshape(*shape, 3)


@_autocast_off
def euler_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from head-pose angles (..., 3) ``[yaw, pitch, roll]``.

    Convention: ``R = R_z(roll) R_y(yaw) R_x(pitch)``, radians, in the model's axes (x right,
    y up, z towards the viewer): positive yaw turns the face towards +x (yaw alone is the
    axis-angle (0, yaw, 0)), positive pitch tips the nose down, positive roll turns the face
    counter-clockwise in the image (the top of the head moves to the left).
    """
    yaw, pitch, roll = angles.unbind(-1)
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)

    def rows(*entries):
        return torch.stack([torch.stack(entries[i : i + 3], -1) for i in (0, 3, 6)], -2)

    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    rx = rows(one, zero, zero, zero, cp, -sp, zero, sp, cp)
    ry = rows(cy, zero, sy, zero, one, zero, -sy, zero, cy)
    rz = rows(cr, -sr, zero, sr, cr, zero, zero, zero, one)
    return rz @ ry @ rx


@_autocast_off
def so3_left_jacobian(r: torch.Tensor) -> torch.Tensor:
    """The left Jacobian of SO(3) at axis-angle vectors r (..., 3), (..., 3, 3).

    ``R(r + dr) = exp([J_l(r) dr]_x) R(r)`` to first order, so that
    ``d(R(r) x) / dr = -[R(r) x]_x J_l(r)``. ``J_l = I + b K + c K^2`` with ``K = skew(r)``,
    ``b = (1 - cos a) / a^2`` and ``c = (a - sin a) / a^3`` (a = |r|); below an angle of 0.5
    both come from their Taylor series, so J_l is exact (the identity) at r = 0.
    """
    a2 = (r * r).sum(-1)
    small = a2 < _LEFT_JACOBIAN_SERIES_BELOW**2
    safe = torch.where(small, torch.ones_like(a2), a2)
    a = safe.sqrt()
    half = 0.5 * a
    b_big = 0.5 * (torch.sin(half) / half) ** 2
    c_big = (a - torch.sin(a)) / (safe * a)
    x = a2
    b_small = 0.5 * (1 - x / 12 * (1 - x / 30 * (1 - x / 56 * (1 - x / 90 * (1 - x / 132)))))
    c_small = (1 - x / 20 * (1 - x / 42 * (1 - x / 72 * (1 - x / 110 * (1 - x / 156))))) / 6
    b = torch.where(small, b_small, b_big)[..., None, None]
    c = torch.where(small, c_small, c_big)[..., None, None]
    k = skew(r)
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    return eye + b * k + c * (k @ k)


@_autocast_off
def morphable_shape(alpha: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The morphable-model layer: vertices ``X = mean + basis @ alpha``.

    Args:
        alpha: (B, K) coefficients, unit variance per component (the basis is scaled by the
            standard deviations).
        mean: (N, 3) mm.
        basis: (N, 3, K) mm per unit coefficient.

    Returns:
        (B, N, 3) mm, in the dtype of ``alpha`` (mean and basis are cast to it).
    """
    n, _, k = basis.shape
    mean = mean.to(alpha.dtype)
    if k == 0:
        return mean.expand(alpha.shape[0], n, 3)
    basis = basis.to(alpha.dtype)
    offsets = (alpha @ basis.reshape(n * 3, k).T).reshape(alpha.shape[0], n, 3)
    return mean + offsets


@_autocast_off
def rotate(points: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate rows of points: ``points @ R^T``.

    Args:
        points: (B, N, 3). rotation: (B, 3, 3) (from :func:`axis_angle_to_matrix`).

    Returns:
        (B, N, 3), the rotated points (row n is ``R @ points[b, n]``).
    """
    return points @ rotation.transpose(-1, -2)


def project_orthographic(points: torch.Tensor) -> torch.Tensor:
    """Orthographic projection onto the image plane: ``(x, y, z) -> (x, -y)``.

    Args:
        points: (..., 3) model-space coordinates (y up, z towards the camera).

    Returns:
        (..., 2) in the same units, image axes (x right, y down): z is dropped and y flipped.
    """
    return torch.stack([points[..., 0], -points[..., 1]], -1)


def scale_points(points: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """2D scaling ``p * s`` with ``s = exp(log_s)``.

    Args:
        points: (B, N, 2), mm. log_s: (B,), log of pixels per mm.

    Returns:
        (B, N, 2), pixels (relative to the translation). The original's ``s = 0.99 ** q``
        corresponds to ``log_s = q * ln(0.99)``.
    """
    return points * torch.exp(log_s)[:, None, None]


def translate_points(points: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """2D translation ``p + t``.

    Args:
        points: (B, N, 2), pixels. t: (B, 2), pixels (x right, y down); t at the image centre
            ``((W - 1) / 2, (H - 1) / 2)`` puts the model origin there.

    Returns:
        (B, N, 2), image points in pixels.
    """
    return points + t[:, None, :]


@_autocast_off
def project_theta(
    theta: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole grid generator: theta -> image points of every model vertex.

    Args:
        theta: (B, 6 + K) ``[r, t, log_s, alpha]`` (see module docstring).
        mean: (N, 3) mm. basis: (N, 3, K) mm per unit coefficient.

    Returns:
        points: (B, N, 2) pixels, ``p_x = s Y_x + t_x``, ``p_y = -s Y_y + t_y``;
        rotated: (B, N, 3) mm, the rotated vertices ``Y = (mean + basis alpha) R^T``.
        Both in theta's dtype, or float32 when theta is float16 or bfloat16 (image points
        need float32; gradients flow back to the low-precision theta).
    """
    if theta.dtype in _LOW_PRECISION:
        theta = theta.float()
    r, t, log_s, alpha = split_theta(theta)
    if alpha.shape[1] != basis.shape[2]:
        raise ValueError(
            f"theta has {alpha.shape[1]} shape coefficients but the basis has {basis.shape[2]}."
        )
    shape = morphable_shape(alpha, mean, basis)
    rotated = rotate(shape, axis_angle_to_matrix(r))
    points = translate_points(scale_points(project_orthographic(rotated), log_s), t)
    return points, rotated


# ---------------------------------------------------------------------------------------------
# nn.Module fronts (no parameters of their own; the model arrays are buffers)


class MorphableShape(nn.Module):
    """nn.Module front of :func:`morphable_shape`; ``mean``/``basis`` are buffers that
    ``.to()`` moves but ``state_dict`` leaves out (the model comes from its artifact)."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        return morphable_shape(alpha, self.mean, self.basis)


class AxisAngleRotation(nn.Module):
    """nn.Module: rotate points (B, N, 3) by axis-angle r (B, 3)."""

    def forward(self, points: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return rotate(points, axis_angle_to_matrix(r))


class OrthographicProjection(nn.Module):
    """nn.Module front of :func:`project_orthographic`."""

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return project_orthographic(points)


class Scale2d(nn.Module):
    """nn.Module front of :func:`scale_points`."""

    def forward(self, points: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
        return scale_points(points, log_s)


class Translate2d(nn.Module):
    """nn.Module front of :func:`translate_points`."""

    def forward(self, points: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return translate_points(points, t)


class GridGenerator(nn.Module):
    """The grid layer: theta (B, 6 + K) -> (points (B, N, 2) px, rotated (B, N, 3) mm);
    ``mean``/``basis`` are non-persistent buffers, as in :class:`MorphableShape`."""

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return project_theta(theta, self.mean, self.basis)


def initial_theta(
    batch: int,
    n_components: int,
    height: int,
    width: int,
    log_s: float = 0.0,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A neutral theta (B, 6 + K): no rotation, the model origin at the image centre
    ``((W - 1) / 2, (H - 1) / 2)``, scale ``exp(log_s)`` pixels per mm, mean shape.

    (The original initialised t = 112 for 224-pixel images in its 1-based, y-up frame, which is
    (111, 112) here, half a pixel off the centre (111.5, 111.5).)
    """
    theta = torch.zeros(batch, 6 + n_components, device=device, dtype=dtype)
    theta[:, 3] = (width - 1) / 2
    theta[:, 4] = (height - 1) / 2
    theta[:, 5] = log_s
    return theta


def initial_log_scale(
    model_mean,
    image_size: tuple[int, int],
    fill: float = 0.9,
    inside=None,
) -> float:
    """The log-scale at which the model's mean face fills ``fill`` of the image.

    Args:
        model_mean: (N, 3) mm, the model's mean shape (``UVGridModel.mean``), tensor or array;
            x right, y up, the origin being the point theta's t places at the image centre.
        image_size: (H, W) pixels.
        fill: the fraction of the image's width or height (whichever is reached first) that
            the face's box covers; the box is symmetric about the model origin (half-sizes
            max |x| and max |y|), so the whole face is inside the image when fill <= 1.
        inside: optional (N,) bool, the points to measure (``UVGridModel.inside``: grid
            points that fell on the mesh); all points when None.

    Returns:
        ``log(fill * min((W / 2) / max|x|, (H / 2) / max|y|))``, a float (log of pixels per mm),
        the ``log_s`` of :func:`initial_theta` that frames the mean face. Example: the
        original's model_112 (max |x| 89 mm, max |y| 114 mm) at 224 x 224 with fill 0.9 gives
        log(0.884) = -0.123.
    """
    points = np.asarray(
        model_mean.detach().cpu().double() if isinstance(model_mean, torch.Tensor) else model_mean,
        dtype=np.float64,
    )
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise ValueError(f"model_mean must be (N, 3) with N > 0, got {points.shape}.")
    if inside is not None:
        mask = np.asarray(
            inside.detach().cpu() if isinstance(inside, torch.Tensor) else inside, dtype=bool
        )
        points = points[mask]
        if points.shape[0] == 0:
            raise ValueError("inside selects no point of model_mean.")
    if not 0 < fill:
        raise ValueError(f"fill must be positive, got {fill}.")
    height, width = image_size
    half_x, half_y = np.abs(points[:, 0]).max(), np.abs(points[:, 1]).max()
    if not (half_x > 0 and half_y > 0 and np.isfinite(half_x) and np.isfinite(half_y)):
        raise ValueError("model_mean must have a finite, non-zero extent in x and y.")
    return math.log(fill * min(width / 2 / half_x, height / 2 / half_y))
