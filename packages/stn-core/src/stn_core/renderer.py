"""Rendering the UV-grid model posed by theta: z-buffered by :mod:`stn_core.rasterizer`,
Gouraud-shaded, with Lambertian spherical-harmonics lighting (:mod:`stn_core.shading`), in
plain PyTorch.

Used to make synthetic training images (``stn_train.data.synthetic``) and fit overlays: every
pixel shows the nearest front-facing triangle that covers its centre, with
Gouraud-interpolated vertex colours.

Conventions (docs/conventions.md):

- The projection is :func:`stn_core.geometry.project_theta`: pixels, x right, y down, (0, 0)
  the centre of the top-left pixel; orthographic, so a vertex's image position does not depend
  on its depth. Coverage, the top-left fill rule and ties (the larger face index) are the
  rasteriser's.
- Depth is the camera-space z of the rotated vertices, mm; larger z is nearer the camera
  (the camera looks along -z).
- Faces are counter-clockwise seen from the front (the artifact's promise); back-facing and
  degenerate triangles are culled, and only faces whose three grid vertices are ``inside``
  the source mesh are drawn (the others fill holes and the area off the face).
- Vertex visibility (:attr:`RenderOutput.vertex_visible`): inside, in the image, facing the
  camera and passing a depth test against the z-buffer (see :func:`render_mesh`).

Nothing here is differentiable (``torch.no_grad``): the fits sample images at projected
vertices instead of differentiating a rasteriser.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from stn_core._validate import check_theta, expect
from stn_core.geometry import project_theta
from stn_core.grid_model import UVGridModel
from stn_core.normals import vertex_normals
from stn_core.rasterizer import rasterize_hits
from stn_core.shading import shade

__all__ = ["RenderOutput", "GREY", "render", "render_mesh"]

# Albedo used when neither colours nor a colour model are given.
GREY = 0.7


class RenderOutput(NamedTuple):
    """What :func:`render` returns.

    image: (B, 3, H, W) float in [0, 1] (clamped), the background where nothing is drawn; the
        dtype of theta.
    mask: (B, 1, H, W) bool, True where a drawn triangle covers the pixel centre.
    depth: (B, 1, H, W) camera-space z of the visible surface, mm (the rotated vertices' z,
        larger = nearer the camera); -inf where ``mask`` is False.
    vertex_visible: (B, N) bool (or (B, L) for ``render_mesh(visible_for=...)``): the vertex
        is ``inside`` the source mesh, projects into the image, faces the camera (the
        angle-weighted normal of the drawn faces has n_z > 0) and passes the depth test (see
        :func:`render_mesh`).
    """

    image: torch.Tensor
    mask: torch.Tensor
    depth: torch.Tensor
    vertex_visible: torch.Tensor


@torch.no_grad()
def render(
    model: UVGridModel,
    theta: torch.Tensor,
    colors: torch.Tensor | None = None,
    image_size: tuple[int, int] = (224, 224),
    sh: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
) -> RenderOutput:
    """Render the model posed by theta: z-buffered, Gouraud-shaded, Lambertian SH lighting.

    Args:
        model: the UV-grid model (its device is used; theta is moved there).
        theta: (B, 6 + K) ``[r, t, log_s, alpha]`` (docs/conventions.md).
        colors: (B, N, 3) per-vertex albedo in [0, 1]; None: the model's mean colour, or
            :data:`GREY` when the model has no colour model.
        image_size: (H, W) pixels.
        sh: (B, 9, 3) or (9, 3) spherical-harmonics lighting (:mod:`stn_core.shading`,
            camera space); None: ambient 1 (the albedo unchanged).
        background: (B, 3, H, W) shown where nothing is drawn; None: black.

    Returns:
        :class:`RenderOutput`. Not differentiable.
    """
    check_theta(theta, model.n_components)
    theta = theta.to(model.device)
    points, rotated = project_theta(theta, model.mean.to(theta.dtype), model.basis.to(theta.dtype))
    if colors is None:
        base = model.color_mean if model.has_color else None
        if base is None:
            colors = torch.full_like(rotated, GREY)
        else:
            colors = base.to(theta.dtype).expand_as(rotated)
    return render_mesh(
        points,
        rotated,
        model.drawn_faces,
        colors,
        image_size,
        sh=sh,
        background=background,
        inside=model.inside,
        pixels_per_mm=torch.exp(theta[:, 5]),
    )


@torch.no_grad()
def render_mesh(
    points: torch.Tensor,
    rotated: torch.Tensor,
    faces: torch.Tensor,
    colors: torch.Tensor,
    image_size: tuple[int, int],
    sh: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    inside: torch.Tensor | None = None,
    pixels_per_mm: torch.Tensor | None = None,
    visible_for: torch.Tensor | None = None,
) -> RenderOutput:
    """:func:`render` for vertices already projected (the grid generator's two outputs).

    Args:
        points: (B, N, 2) image positions, pixels. rotated: (B, N, 3) rotated vertices, mm
            (its z is the depth; x and y only enter through the vertex normals).
        faces: (F, 3) int64, counter-clockwise seen from the front; all of them are drawn.
        colors: (B, N, 3) albedo. image_size: (H, W). sh, background: as :func:`render`.
        inside: (N,) bool or None (all vertices may be visible).
        pixels_per_mm: (B,) the scale s (for the depth-test tolerance); None: estimated from
            the points and rotated x, y.
        visible_for: optional (L,) vertex indices: ``vertex_visible`` is then (B, L), for
            those vertices only (e.g. the landmarks; cheaper than all N).

    Vertex visibility: front-facing (normal n_z > 0) and not occluded: the z-buffer at the
    pixel nearest the vertex is in front of it by at most ``(1 + tan a) / s`` mm, a the angle
    between its normal and the view direction (tan capped at 10). The slope term allows for the
    vertex's own surface, which at the pixel centre (up to 0.71 px away) can be nearer by up to
    0.71 px times the slope; real occluders are many pixels nearer. A vertex whose pixel shows
    no surface is not occluded; a vertex outside the image is not visible.
    """
    h, w = (int(v) for v in image_size)
    expect(h > 0 and w > 0, f"image_size must be two positive integers, got {image_size}.")
    expect(
        points.dim() == 3 and points.shape[-1] == 2 and rotated.shape == (*points.shape[:2], 3),
        f"points must be (B, N, 2) and rotated (B, N, 3), got {tuple(points.shape)} and "
        f"{tuple(rotated.shape)}.",
    )
    expect(
        colors.shape == rotated.shape,
        f"colors must be (B, N, 3) = {tuple(rotated.shape)}, got {tuple(colors.shape)}.",
    )
    b, n, _ = rotated.shape
    dtype = points.dtype
    faces = faces.to(device=points.device, dtype=torch.long)
    normals = vertex_normals(rotated, faces)
    albedo = colors.to(dtype)
    shaded = albedo if sh is None else shade(albedo, normals, sh.to(device=points.device))

    screen = torch.cat([points, rotated[..., 2:]], -1)
    hits = rasterize_hits(screen, faces, (h, w))
    mask = torch.zeros(b * h * w, dtype=torch.bool, device=points.device)
    mask[hits.pixel] = True
    mask = mask.view(b, 1, h, w)
    depth = torch.full((b * h * w,), -math.inf, dtype=dtype, device=points.device)
    depth.index_copy_(0, hits.pixel, hits.depth)
    depth = depth.view(b, 1, h, w)

    # Gouraud: interpolate the shaded vertex colours with the winner's barycentrics, channel by
    # channel straight into the (B, 3, H, W) image.
    if background is None:
        image = torch.zeros(b, 3, h, w, dtype=dtype, device=points.device)
    else:
        expect(
            tuple(background.shape) == (b, 3, h, w),
            f"background must be ({b}, 3, {h}, {w}), got {tuple(background.shape)}.",
        )
        image = background.to(device=points.device, dtype=dtype, copy=True).contiguous()
    if hits.pixel.numel():
        hw = h * w
        img = torch.div(hits.pixel, hw, rounding_mode="floor")
        dst = img * (2 * hw) + hits.pixel  # index of channel 0 in the (B, 3, H, W) image
        channels = torch.stack(shaded.to(dtype).reshape(b * n, 3).unbind(1))  # (3, B N)
        for ch in range(3):
            c = channels[ch]
            value = sum(hits.bary[k] * c.index_select(0, hits.vertex[k]) for k in range(3))
            image.view(-1).index_copy_(0, dst + ch * hw, value)
    image = image.clamp_(0, 1)

    # Per-vertex visibility against the z-buffer.
    if pixels_per_mm is None:
        pixels_per_mm = _estimate_scale(points, rotated)
    pixels_per_mm = pixels_per_mm.to(device=points.device, dtype=dtype)
    if visible_for is not None:
        visible_for = visible_for.to(device=points.device, dtype=torch.long)
        points, rotated, normals = (t[:, visible_for] for t in (points, rotated, normals))
        if inside is not None:
            inside = inside.to(points.device)[visible_for]
    front = normals[..., 2] > 0
    col = torch.round(points[..., 0])
    row = torch.round(points[..., 1])
    in_image = (col >= 0) & (col <= w - 1) & (row >= 0) & (row <= h - 1)
    pix = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).long()  # (B, N)
    zbuf = depth.view(b, -1).gather(1, pix)
    nz = normals[..., 2].clamp_min(0.0995)  # tan capped at 10
    tan = torch.sqrt((1 - nz * nz).clamp_min(0)) / nz
    tol = (1 + tan) / pixels_per_mm[:, None]
    unoccluded = ~(zbuf > rotated[..., 2] + tol)  # -inf (no surface) never occludes
    visible = front & in_image & unoccluded
    if inside is not None:
        visible &= inside.to(visible.device)
    return RenderOutput(image, mask, depth, visible)


def _estimate_scale(points: torch.Tensor, rotated: torch.Tensor) -> torch.Tensor:
    """(B,) pixels per mm from the spread of the points relative to the rotated x, y."""
    p = points - points.mean(1, keepdim=True)
    q = rotated[..., :2] - rotated[..., :2].mean(1, keepdim=True)
    return (p.norm(dim=-1).mean(1) / q.norm(dim=-1).mean(1).clamp_min(1e-12)).clamp_min(1e-12)
