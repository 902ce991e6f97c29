"""A fitted photograph's face texture in the model's UV space, completed where the photo did
not see it: first from the mirror side, then from the model's colour.

The texture lives on the UV grid (one RGB value per grid vertex, vertex k at row k // R,
column k % R) in **albedo** units: the photograph sampled at the projected vertices (the
3DMM-STN's flattening, :func:`stn_core.bilinear_sample` at :func:`stn_core.project_theta`)
divided by the fitted shading, so that it can be lit again under another light. Without a
colour model the fit's lighting is ambient 1 and the texture keeps the photo's shading.

Weights per grid vertex, all in [0, 1]:

- ``observed``: how much the photo's own sample is trusted: 0 where the vertex is not
  visible (outside ``inside``, facing away, hidden by the depth test, outside the image), a
  ramp from 1 at ``FULL_VIEW`` (n_z = 0.35, 70 degrees from the view direction) to 0 at
  ``GRAZING`` (n_z = 0.1, 84 degrees) towards the silhouette, where a texel stretches over
  many pixels and the background bleeds in, and a ramp of ``SEAM_TEXELS`` texels at the
  edge of the visible region (occlusion boundaries), so that no seam is a hard cut;
- ``mirrored``: the weight the mirror partner's sample gets (the grid is symmetric about its
  middle column: vertex (row, col) mirrors to (row, R - 1 - col)): ``(1 - w) * w[mirror]``;
- ``model``: what is left, ``(1 - w) * (1 - w[mirror])``, taken from the fallback colour
  (the fitted albedo of a colour model; without one, the local mean colour of the texture
  seen on either side: the seen texels' colours spread over the unseen ones by push-pull,
  :func:`stn_train.synthesize.background.fill_holes` on the UV grid).

``texture = w T + (1 - w) w_m T[mirror] + (1 - w) (1 - w_m) F``: a convex blend, continuous
in the weights. Where the vertex was not seen (w = 0) and its partner fully (w_m = 1) it is
exactly its partner's sample, hence exactly symmetric there. ``model`` > 0.5 marks the
vertices seen in neither the photo nor its mirror (the quality mask's source).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from stn_core import bilinear_sample, project_theta, vertex_normals
from stn_core.grid_model import UVGridModel
from stn_core.renderer import render
from stn_core.shading import shading

from stn_train.flip_test import mirror_index
from stn_train.synthesize.background import fill_holes

__all__ = [
    "FaceTexture",
    "face_texture",
    "mirror_index",
    "complete_texture",
    "seen_colour_fill",
    "observed_weight",
    "FULL_VIEW",
    "GRAZING",
    "SEAM_TEXELS",
    "SHADING_FLOOR",
    "UNSEEN",
]

# n_z of a vertex normal (camera space) from which its sample is fully trusted, and below
# which it is not used: cos 70 and cos 84 degrees. Between them a texel spreads over up to
# 10 pixels and its colour is still the surface's; nearer the silhouette the fitted outline's
# error lets the background in.
FULL_VIEW = 0.35
GRAZING = 0.1
# Width of the ramp at the edge of the visible region, texels (blends occlusion seams).
SEAM_TEXELS = 2
# Fitted shading below this is too dark to divide by (the texture is not trusted there).
SHADING_FLOOR = 0.05
# A vertex whose model weight exceeds this was seen in neither the photo nor its mirror.
UNSEEN = 0.5


@dataclass
class FaceTexture:
    """One face's completed texture on the R x R grid (N = R * R vertices).

    albedo: (N, 3) the completed texture, albedo units (see the module docstring).
    sampled: (N, 3) the photo's own texture, photo sample / fitted shading (meaningless where
        ``observed`` is 0).
    observed, mirrored, model: (N,) the blend weights (sum 1 on ``inside``).
    visible: (N,) bool, the fitted face's visible vertices (the renderer's depth test).
    unseen: (N,) bool, ``inside`` and ``model > UNSEEN``: seen in neither photo nor mirror.
    """

    albedo: torch.Tensor
    sampled: torch.Tensor
    observed: torch.Tensor
    mirrored: torch.Tensor
    model: torch.Tensor
    visible: torch.Tensor
    unseen: torch.Tensor


def _smoothstep(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def observed_weight(
    visible: torch.Tensor, normal_z: torch.Tensor, shade: torch.Tensor, res: int
) -> torch.Tensor:
    """(N,) the trust in each vertex's own sample (module docstring).

    Args:
        visible: (N,) bool. normal_z: (N,) the fitted pose's normal z (camera space).
        shade: (N, 3) the fitted shading. res: R.
    """
    vis = visible & (shade.amin(-1) > SHADING_FLOOR)
    view = _smoothstep((normal_z - GRAZING) / (FULL_VIEW - GRAZING))
    # The share of visible vertices in a (2 s + 1)^2 window: 1 well inside the visible region,
    # about a half at its edge; rescaled so that it reaches 0 at the edge itself. The mesh's
    # own border (outside ``inside``, and the grid's edge) counts as an edge too: it is the
    # face's outline in the photo, where the bilinear taps reach into the background (tried
    # without: re-rendering at the fit then matches the photo worse than the fitted model).
    k = 2 * SEAM_TEXELS + 1
    grid = vis.to(normal_z.dtype).reshape(1, 1, res, res)
    share = F.avg_pool2d(grid, k, 1, SEAM_TEXELS, count_include_pad=True).reshape(-1)
    seam = _smoothstep(2.0 * share - 1.0)
    return torch.where(vis, view * seam, torch.zeros_like(view))


def complete_texture(
    sampled: torch.Tensor,
    observed: torch.Tensor,
    fallback: torch.Tensor,
    inside: torch.Tensor,
    res: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The mirror-then-model completion (module docstring).

    Args:
        sampled: (N, 3) the photo's texture. observed: (N,) its weights in [0, 1] (0 off
            ``inside``). fallback: (N, 3) the colour where neither side was seen.
        inside: (N,) bool. res: R.

    Returns:
        ``(albedo (N, 3), observed (N,), mirrored (N,), model (N,))``; off ``inside`` the
        albedo is the fallback.
    """
    mirror = mirror_index(res, sampled.device)
    w = torch.where(inside, observed, torch.zeros_like(observed))
    w_m = torch.where(inside & inside[mirror], w[mirror], torch.zeros_like(w))
    mirrored = (1.0 - w) * w_m
    model = (1.0 - w) * (1.0 - w_m)
    albedo = w[:, None] * sampled + mirrored[:, None] * sampled[mirror] + model[:, None] * fallback
    # Zero-weight terms may hold anything (a sample outside the image): take them out exactly.
    albedo = torch.where((w > 0)[:, None] | (mirrored > 0)[:, None], albedo, fallback)
    return albedo, w, mirrored, model


def seen_colour_fill(
    sampled: torch.Tensor, observed: torch.Tensor, inside: torch.Tensor, res: int
) -> torch.Tensor:
    """(N, 3) a fallback colour for a model without colour: the texture where it was seen
    (by the photo or, mirrored, by its partner; weighted by ``observed``) where the seen
    weight exceeds a half, spread over the other texels by push-pull on the UV grid."""
    mirror = mirror_index(res, sampled.device)
    w = torch.where(inside, observed, torch.zeros_like(observed))
    w_m = w[mirror]
    total = w + w_m
    seen = (w * sampled.T + w_m * sampled[mirror].T) / total.clamp_min(1e-12)  # (3, N)
    known = inside & (total > 0.5)
    if not bool(known.any()):
        known = inside & (total > 0)
    if not bool(known.any()):
        return torch.full_like(sampled, 0.5)
    grid = seen.reshape(3, res, res)
    filled = fill_holes(grid, ~known.reshape(res, res))
    return filled.reshape(3, -1).T.contiguous()


@torch.no_grad()
def face_texture(
    model: UVGridModel,
    image: torch.Tensor,
    theta: torch.Tensor,
    sh: torch.Tensor,
    albedo: torch.Tensor | None = None,
) -> FaceTexture:
    """The completed texture of one fitted face.

    Args:
        model: the grid model (its device and dtype are used).
        image: (3, H, W) the photograph in [0, 1].
        theta: (6 + K,) the fitted ``[r, t, log_s, alpha]``. sh: (9, 3) the fitted lighting.
        albedo: (N, 3) the fitted albedo of a colour model (the fallback), or None: the
            texture seen on either side spread over the rest (:func:`seen_colour_fill`).

    Returns:
        :class:`FaceTexture`.
    """
    dev, dt = model.device, model.dtype
    image = image.to(dev, dt)
    theta = theta.to(dev, dt)[None]
    h, w = image.shape[-2:]
    points, rotated = project_theta(theta, model.mean, model.basis)
    photo = bilinear_sample(image[None], points)[0].T  # (N, 3)
    normals = vertex_normals(rotated, model.drawn_faces)
    shade = shading(normals, sh.to(dev, dt)[None])[0]
    visible = render(model, theta, image_size=(int(h), int(w))).vertex_visible[0]
    # Bilinear taps fade to zero over the last pixel beyond the border: keep whole pixels.
    x, y = points[0].unbind(-1)
    visible = visible & (x >= 0) & (y >= 0) & (x <= w - 1) & (y <= h - 1)
    weight = observed_weight(visible, normals[0, :, 2], shade, model.res)
    sampled = (photo / shade.clamp_min(SHADING_FLOOR)).clamp(0.0, 2.0)
    if albedo is None:
        fallback = seen_colour_fill(sampled, weight, model.inside, model.res)
    else:
        fallback = albedo.to(dev, dt)
    completed, observed, mirrored, model_w = complete_texture(
        sampled, weight, fallback, model.inside, model.res
    )
    unseen = model.inside & (model_w > UNSEEN)
    return FaceTexture(completed, sampled, observed, mirrored, model_w, visible, unseen)
