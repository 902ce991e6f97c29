"""New views of a fitted face: pose, expression and lighting drawn around the fit, rendered
with the face's completed texture over the photo's background.

Draws (all uniform unless stated; the ranges are :class:`ViewRanges`):

- pose: yaw in +-``yaw`` degrees (default 75), pitch +-``pitch`` (20), roll +-``roll`` (15),
  absolute (not added to the fitted pose; ``R = R_z(roll) R_y(yaw) R_x(pitch)``,
  :func:`stn_core.geometry.euler_to_matrix`), stored as the axis-angle r;
- scale: the fitted log-scale + U(+-``scale_jitter``); translation: the new face's centroid
  (the mean of its ``inside`` vertices) projects where the fitted face's centroid did, moved
  by +-``shift`` of the image size, so the face turns in place;
- identity: the fitted one (it is the person's); expression: the fitted coefficients plus
  N(0, ``expression_sigma``), clipped to +-``clip``;
- lighting: the fitted SH times exp(U(+-``ambient_jitter``)), plus a directional light
  within ``light_cone`` degrees of the view direction of intensity U(0, ``light``) times the
  fitted ambient (per channel), its own ambient part taken off band 0 so that the mean
  brightness over all directions stays the fitted one.

Every draw of view v of face f comes from ``numpy.random.SeedSequence([seed, f, v])``.
The geometry (theta, landmarks) is computed in float64.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from stn_core.geometry import axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle
from stn_core.grid_model import UVGridModel
from stn_core.renderer import render
from stn_core.shading import sh_directional

from stn_train.errors import TrainError

__all__ = ["ViewRanges", "ViewSampler", "RenderedView", "render_view"]


@dataclass(frozen=True)
class ViewRanges:
    """The ranges new views are drawn from (module docstring); angles in degrees."""

    yaw: float = 75.0
    pitch: float = 20.0
    roll: float = 15.0
    scale_jitter: float = 0.05
    shift: float = 0.03
    expression_sigma: float = 0.5
    clip: float = 3.0
    ambient_jitter: float = 0.15
    light: float = 0.4
    light_cone: float = 60.0

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value >= 0):
                raise TrainError(f"{{0}} must be a finite number >= 0, got {value}.", (name,))
        for name in ("yaw", "pitch", "roll", "light_cone"):
            if getattr(self, name) > 90:
                raise TrainError(
                    f"{{0}} must be at most 90 degrees, got {getattr(self, name)}.", (name,)
                )

    def to_json(self) -> dict:
        return asdict(self)


class ViewSampler:
    """Draws new views' theta and lighting for a model (module docstring).

    Args:
        model: the grid model. ranges: :class:`ViewRanges`.
    """

    def __init__(self, model: UVGridModel, ranges: ViewRanges):
        self.ranges = ranges
        inside = model.inside
        # The centroid of the inside vertices as a linear function of alpha (float64).
        self.centroid_mean = model.mean[inside].double().mean(0).cpu().numpy()
        self.centroid_basis = model.basis[inside].double().mean(0).cpu().numpy()  # (3, K)
        self.n_identity = int(model.n_identity)
        self.n_components = int(model.n_components)

    def centroid(self, alpha: np.ndarray) -> np.ndarray:
        return self.centroid_mean + self.centroid_basis @ alpha

    def draw(
        self, rng: np.random.Generator, theta: np.ndarray, sh: np.ndarray, image_size
    ) -> tuple[np.ndarray, np.ndarray]:
        """One new view of a face fitted at ``theta`` (6 + K,) under ``sh`` (9, 3), both
        float64: returns ``(theta (6 + K,), sh (9, 3))``, float64."""
        g = self.ranges
        h, w = image_size
        deg = math.pi / 180.0
        angles = rng.uniform(-1.0, 1.0, 3) * np.array([g.yaw, g.pitch, g.roll]) * deg
        rot = euler_to_matrix(torch.as_tensor(angles, dtype=torch.float64))
        r = matrix_to_axis_angle(rot).numpy()
        rot = rot.numpy()
        rot_fit = axis_angle_to_matrix(torch.as_tensor(theta[:3], dtype=torch.float64)).numpy()
        log_s_fit = float(theta[5])
        log_s = log_s_fit + rng.uniform(-1.0, 1.0) * g.scale_jitter
        alpha = theta[6:].copy()
        k_id = self.n_identity
        expr = alpha[k_id:] + rng.standard_normal(alpha.shape[0] - k_id) * g.expression_sigma
        alpha[k_id:] = np.clip(expr, -g.clip, g.clip)
        # The fitted centroid's image position, kept (plus the shift) by the new pose.
        c_fit = rot_fit @ self.centroid(theta[6:])
        p_fit = math.exp(log_s_fit) * np.array([c_fit[0], -c_fit[1]]) + theta[3:5]
        c_new = rot @ self.centroid(alpha)
        shift = rng.uniform(-1.0, 1.0, 2) * g.shift * np.array([w, h])
        t = p_fit + shift - math.exp(log_s) * np.array([c_new[0], -c_new[1]])
        new_theta = np.concatenate([r, t, [log_s], alpha])
        # Lighting around the fitted one.
        gain = math.exp(rng.uniform(-1.0, 1.0) * g.ambient_jitter)
        polar = math.acos(1.0 - rng.uniform() * (1.0 - math.cos(g.light_cone * deg)))
        phi = rng.uniform(0.0, 2.0 * math.pi)
        direction = np.array(
            [math.sin(polar) * math.cos(phi), math.sin(polar) * math.sin(phi), math.cos(polar)]
        )
        intensity = rng.uniform(0.0, g.light) * np.clip(sh[0], 0.0, None)
        extra = sh_directional(
            torch.as_tensor(direction, dtype=torch.float64),
            torch.as_tensor(intensity, dtype=torch.float64),
        ).numpy()
        extra[0] -= intensity / 4.0  # sh_directional's ambient part (the cosine's mean)
        return new_theta, sh * gain + extra


@dataclass
class RenderedView:
    """One rendered view.

    image: (3, H, W) in [0, 1]. face: (H, W) bool, where the face is drawn. invented: (H, W)
    bool, pixels not taken from the photo: face texture seen in neither the photo nor its
    mirror, and background filled where the fitted face was and the new one is not.
    visible: (N,) bool, the renderer's vertex visibility (depth test) in this view.
    """

    image: torch.Tensor
    face: torch.Tensor
    invented: torch.Tensor
    visible: torch.Tensor


@torch.no_grad()
def render_view(
    model: UVGridModel,
    theta: torch.Tensor,
    sh: torch.Tensor,
    albedo: torch.Tensor,
    unseen_weight: torch.Tensor,
    background: torch.Tensor,
    filled: torch.Tensor,
) -> RenderedView:
    """Render the face with its completed texture at ``theta`` under ``sh``.

    Args:
        model: the grid model. theta: (6 + K,). sh: (9, 3). albedo: (N, 3) the completed
            texture (:class:`stn_train.synthesize.texture.FaceTexture`). unseen_weight: (N,)
            its ``model`` weight (interpolated over the drawn face, > 0.5 is invented).
        background: (3, H, W) drawn where the face is not. filled: (H, W) bool, the
            background's invented pixels.
    """
    dev, dt = model.device, model.dtype
    h, w = background.shape[-2:]
    theta = theta.to(dev, dt)[None]
    out = render(
        model,
        theta,
        albedo.to(dev, dt)[None],
        (int(h), int(w)),
        sh=sh.to(dev, dt)[None],
        background=background.to(dev, dt)[None],
    )
    face = out.mask[0, 0]
    weight = unseen_weight.to(dev, dt)[None, :, None].expand(1, -1, 3).contiguous()
    unseen = render(model, theta, weight, (int(h), int(w))).image[0, 0]
    invented = torch.where(face, unseen > 0.5, filled.to(dev))
    return RenderedView(out.image[0], face, invented, out.vertex_visible[0])
