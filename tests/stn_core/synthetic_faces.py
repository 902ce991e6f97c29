"""Synthetic faces for the image-fit tests: a small grid model with a colour model, built with
bfm-prep's own pipeline on its synthetic Basel-format model, and images rendered from it by
stn-core's renderer with known pose, shape, albedo and spherical-harmonics lighting, plus
Gaussian noise. Shared by test_fit_image, test_image_problem and test_normals."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from stn_core import UVGridModel, project_theta
from stn_core.renderer import render
from stn_core.shading import sh_ambient, sh_directional

from tests.synthetic_grid import synthetic_grid

# Grid side, identity, expression and colour components.
RES, K_ID, K_EXP, K_COLOR = 40, 10, 5, 10
SIZE = (128, 128)
NOISE = 0.02  # image noise, colour units
BACKGROUND = 0.3


def synthetic_colour_model(folder: Path) -> UVGridModel:
    """The R = 40 grid model (float64) of the synthetic model written into ``folder``; skips
    when bfm-prep is not installed."""
    grid = synthetic_grid(
        folder, seed=0, n_vertices=2000, res=RES, n_id=K_ID, n_exp=K_EXP, n_color=K_COLOR
    )
    g = grid.model
    return UVGridModel.from_arrays(
        g.shape_mean,
        g.shape_basis,
        g.faces,
        RES,
        std=g.shape_std,
        kind=g.shape_kind,
        uv=grid.uv,
        inside=grid.inside,
        landmarks=g.landmarks,
        color_mean=g.color_mean,
        color_basis=g.color_basis,
        color_std=g.color_std,
        dtype=torch.float64,
    )


def truth(model: UVGridModel, b: int, seed: int, max_yaw: float = 0.35):
    """Known theta (B, 6 + K), albedo coefficients (B, Kc) and SH lighting (B, 9, 3)."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dt)

    theta = torch.zeros(b, model.n_params, dtype=dt)
    theta[:, 0] = 0.1 * randn(b)
    theta[:, 1] = max_yaw * (2 * torch.rand(b, generator=g, dtype=dt) - 1)
    theta[:, 2] = 0.1 * randn(b)
    theta[:, 3] = (SIZE[1] - 1) / 2 + 3 * randn(b)
    theta[:, 4] = (SIZE[0] - 1) / 2 + 3 * randn(b)
    theta[:, 5] = math.log(0.5) + 0.05 * randn(b)
    theta[:, 6:] = 0.7 * randn(b, model.n_components)
    beta = 0.7 * randn(b, model.color_basis.shape[2])
    light = randn(b, 3)
    light[:, 2] = light[:, 2].abs() + 1.5  # from the camera's side
    sh = sh_ambient(torch.full((3,), 0.55, dtype=dt), batch=b, dtype=dt)
    sh = sh + sh_directional(light, torch.tensor([0.7, 0.65, 0.6], dtype=dt))
    return theta, beta, sh


def albedo_of(model: UVGridModel, beta: torch.Tensor) -> torch.Tensor:
    kc = beta.shape[1]
    return model.color_mean + (beta @ model.color_basis.reshape(-1, kc).T).reshape(
        beta.shape[0], -1, 3
    )


def scene(model: UVGridModel, b: int = 3, seed: int = 0, noise: float = NOISE, **kw):
    """Rendered noisy images, the clean render and the truth."""
    theta, beta, sh = truth(model, b, seed, **kw)
    background = torch.full((b, 3, *SIZE), BACKGROUND, dtype=torch.float64)
    clean = render(model, theta, albedo_of(model, beta), SIZE, sh=sh, background=background)
    g = torch.Generator().manual_seed(seed + 1000)
    images = clean.image + noise * torch.randn(clean.image.shape, generator=g, dtype=torch.float64)
    points = project_theta(theta, model.mean, model.basis)[0][:, model.landmarks["aflw21"]]
    return dict(images=images, clean=clean, theta=theta, beta=beta, sh=sh, landmarks=points)
