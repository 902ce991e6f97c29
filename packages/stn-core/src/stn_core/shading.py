"""Lambertian shading under second-order spherical-harmonics lighting.

Convention (Ramamoorthi and Hanrahan, "An efficient representation for irradiance environment
maps", SIGGRAPH 2001):

- Normals and light directions are unit vectors in camera space: x right, y up, z towards the
  viewer (the camera looks along -z), i.e. the axes of the *rotated* model vertices
  (``stn_core.geometry.project_theta``'s second output). Lighting is therefore fixed to the
  camera, not to the face.
- The nine real spherical harmonics Y_lm, in the order (l, m) = (0, 0), (1, -1), (1, 0),
  (1, 1), (2, -2), (2, -1), (2, 0), (2, 1), (2, 2)::

      Y = [c0, c1 y, c1 z, c1 x, c2 xy, c2 yz, c3 (3 z^2 - 1), c2 xz, c4 (x^2 - y^2)]

  with c0 = 1 / (2 sqrt(pi)) = 0.282095, c1 = sqrt(3 / (4 pi)) = 0.488603,
  c2 = sqrt(15 / (4 pi)) = 1.092548, c3 = sqrt(5 / (16 pi)) = 0.315392,
  c4 = sqrt(15 / (16 pi)) = 0.546274.
- The clamped cosine max(n . w, 0) has the zonal coefficients A_0 = pi, A_1 = 2 pi / 3,
  A_2 = pi / 4 (higher orders are dropped: the second-order approximation of the irradiance is
  within about 3 % on average). :func:`sh_basis` folds them in and divides by ``pi * c0`` so
  that the first basis function is exactly 1::

      sh_basis(n)_lm = A_l Y_lm(n) / (pi c0)
                     = [1, k1 y, k1 z, k1 x, k2 xy, k2 yz, k3 (3 z^2 - 1), k2 xz, k4 (x^2 - y^2)]

  with k1 = 2 / sqrt(3), k2 = sqrt(15) / 4, k3 = sqrt(5) / 8, k4 = sqrt(15) / 8.
- Lighting coefficients ``sh`` are then ``c0 * L_lm`` for an environment of radiance
  ``L(w) = sum L_lm Y_lm(w)``, and ``shading(n) = sh_basis(n) @ sh`` is the Lambertian outgoing
  radiance for unit albedo (``E(n) / pi``). In particular ``sh[0]`` is the ambient term: a
  uniform environment gives ``shading = sh[0]`` everywhere, and :func:`sh_directional` gives
  the coefficients of ``intensity * max(n . d, 0)``.

Everything here is differentiable (normals, albedo and coefficients), in float32 or float64.
No clamping is applied: a strong directional term can make the second-order approximation
slightly negative on the far side; renderers clamp the final image.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "SH_BASIS_CONSTANTS",
    "SH_DIRECTIONAL_CONSTANTS",
    "sh_basis",
    "sh_basis_gradient",
    "shade",
    "shading",
    "sh_ambient",
    "sh_directional",
]

_K1 = 2.0 / math.sqrt(3.0)
_K2 = math.sqrt(15.0) / 4.0
_K3 = math.sqrt(5.0) / 8.0
_K4 = math.sqrt(15.0) / 8.0
# The constants multiplying [1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2] in sh_basis.
SH_BASIS_CONSTANTS = (1.0, _K1, _K1, _K1, _K2, _K2, _K3, _K2, _K4)

_C0 = 0.5 / math.sqrt(math.pi)
_C1 = math.sqrt(3.0 / (4.0 * math.pi))
_C2 = math.sqrt(15.0 / (4.0 * math.pi))
_C3 = math.sqrt(5.0 / (16.0 * math.pi))
_C4 = math.sqrt(15.0 / (16.0 * math.pi))
# pi * c0 * Y_lm(d) / [1, y, z, x, ...]: a directional light's coefficients per unit intensity.
SH_DIRECTIONAL_CONSTANTS = tuple(
    math.pi * _C0 * c for c in (_C0, _C1, _C1, _C1, _C2, _C2, _C3, _C2, _C4)
)


def _monomials(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 9): [1, y, z, x, xy, yz, 3z^2 - 1, xz, x^2 - y^2]."""
    x, y, z = v.unbind(-1)
    return torch.stack(
        [torch.ones_like(x), y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], -1
    )


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The irradiance basis: real second-order spherical harmonics with the clamped-cosine
    factors folded in (see the module docstring for order and constants).

    Args:
        normals: (..., 3) unit normals, camera space (x right, y up, z towards the viewer).
            They are not renormalised (pass unit vectors).

    Returns:
        (..., 9), same dtype and device: ``[1, k1 y, k1 z, k1 x, k2 xy, k2 yz,
        k3 (3 z^2 - 1), k2 xz, k4 (x^2 - y^2)]``, so that ``sh_basis(n) @ sh`` is the shading
        and ``sh[0]`` the ambient term.
    """
    if normals.shape[-1] != 3:
        raise ValueError(f"normals must be (..., 3), got {tuple(normals.shape)}.")
    k = torch.tensor(SH_BASIS_CONSTANTS, dtype=normals.dtype, device=normals.device)
    return _monomials(normals) * k


def sh_basis_gradient(normals: torch.Tensor) -> torch.Tensor:
    """The derivative of :func:`sh_basis` in the normal (for closed-form Jacobians).

    Args:
        normals: (..., 3) camera space (x right, y up, z towards the viewer); the derivative is
            that of the polynomial basis, taken where given (no renormalisation, as
            :func:`sh_basis`).

    Returns:
        (..., 9, 3), same dtype and device: entry [..., i, j] is ``d sh_basis(n)_i / d n_j``
        (rows: the nine basis functions in :func:`sh_basis`'s order; columns: x, y, z), e.g.
        row 4 (``k2 xy``) is ``(k2 y, k2 x, 0)``. So ``d shading_c / d n = sh[:, c] @
        sh_basis_gradient(n)``.
    """
    x, y, z = normals.unbind(-1)
    o = torch.zeros_like(x)
    k1, k2, k3, k4 = _K1, _K2, _K3, _K4
    rows = [
        (o, o, o),
        (o, k1 + o, o),
        (o, o, k1 + o),
        (k1 + o, o, o),
        (k2 * y, k2 * x, o),
        (o, k2 * z, k2 * y),
        (o, o, 6 * k3 * z),
        (k2 * z, o, k2 * x),
        (2 * k4 * x, -2 * k4 * y, o),
    ]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def shading(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """The Lambertian shading (irradiance / pi) per vertex and channel.

    Args:
        normals: (B, N, 3) unit normals, camera space.
        sh: (B, 9, C) coefficients per channel (C = 3 for RGB), or (9, C) for all images.

    Returns:
        (B, N, C): ``sh_basis(normals) @ sh``.
    """
    if sh.dim() == 2:
        sh = sh.expand(normals.shape[0], *sh.shape)
    if sh.dim() != 3 or sh.shape[1] != 9:
        raise ValueError(f"sh must be (B, 9, C) or (9, C), got {tuple(sh.shape)}.")
    # sh_basis(n) @ sh, with the constants folded into the (B, 9, C) coefficients rather than
    # the (B, N, 9) basis: one pass over the vertices fewer.
    k = torch.tensor(SH_BASIS_CONSTANTS, dtype=normals.dtype, device=normals.device)
    return _monomials(normals) @ (k[:, None] * sh.to(normals.dtype))


def shade(albedo: torch.Tensor, normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Lambertian reflection: albedo times the spherical-harmonics shading.

    Args:
        albedo: (B, N, 3) reflectance (RGB, [0, 1] for images).
        normals: (B, N, 3) unit normals, camera space (e.g.
            ``stn_core.normals.vertex_normals`` of the rotated vertices).
        sh: (B, 9, 3) lighting coefficients per colour channel (or (9, 3) for all images).

    Returns:
        (B, N, 3) ``albedo * (sh_basis(normals) @ sh)``, not clamped; differentiable in all
        three inputs.
    """
    if albedo.shape != normals.shape or albedo.shape[-1] != 3:
        raise ValueError(
            f"albedo and normals must both be (B, N, 3), got {tuple(albedo.shape)} and "
            f"{tuple(normals.shape)}."
        )
    return albedo * shading(normals, sh)


def sh_ambient(ambient, batch: int | None = None, dtype=torch.float32, device=None) -> torch.Tensor:
    """Coefficients of a uniform environment: shading = ``ambient`` everywhere.

    Args:
        ambient: a number, or (3,) per channel, or (B, 3).
        batch: when given and ``ambient`` has no batch dimension, expand to (batch, 9, 3).

    Returns:
        (9, 3) or (B, 9, 3): ``ambient`` in row 0, zeros elsewhere.
    """
    a = torch.as_tensor(ambient, dtype=dtype, device=device)
    if a.dim() == 0:
        a = a.expand(3)
    out = torch.zeros(*a.shape[:-1], 9, 3, dtype=dtype, device=device)
    out[..., 0, :] = a
    if batch is not None and out.dim() == 2:
        out = out.expand(batch, 9, 3).clone()
    return out


def sh_directional(direction: torch.Tensor, intensity) -> torch.Tensor:
    """Coefficients approximating a distant directional light: ``intensity * max(n . d, 0)``.

    Args:
        direction: (..., 3) direction towards the light, camera space (normalised here); e.g.
            (0, 0, 1) is a light at the camera.
        intensity: a number, (3,) per channel, or (..., 3) broadcastable to the batch.

    Returns:
        (..., 9, 3): ``intensity * pi * c0 * Y_lm(d)`` (the order-2 projection of the clamped
        cosine; its ambient entry is ``intensity / 4``, the clamped cosine's mean over the
        sphere). Differentiable in both arguments. Add :func:`sh_ambient` for fill light.
    """
    tiny = torch.finfo(direction.dtype).tiny
    d = direction / direction.norm(dim=-1, keepdim=True).clamp_min(tiny)
    k = torch.tensor(SH_DIRECTIONAL_CONSTANTS, dtype=d.dtype, device=d.device)
    y = _monomials(d) * k  # (..., 9)
    i = torch.as_tensor(intensity, dtype=d.dtype, device=d.device)
    if i.dim() == 0:
        i = i.expand(3)
    return y[..., :, None] * i[..., None, :]
