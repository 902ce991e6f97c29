"""The four losses of 3DMM-STN, with the original's meaning and a documented normalisation.

Every loss returns a scalar tensor in the dtype of its (first) input, differentiable in the
predictions; masks and visibilities are constants. Each is a mean over what contributes (see
each docstring), so its size does not depend on the batch size or the grid resolution, and it
is 0 (with a gradient graph) when nothing contributes.

Differences from the original (MATLAB ``vl_nn*`` layers):
- landmark: the original summed the visibility-weighted squared distances over landmarks and
  batch; here it is their mean over visible landmarks (divide by the count to compare).
- prior: the original summed alpha^2 over the batch; here it is the per-image sum, averaged over
  the batch.
- symmetry and siamese: the original divided the masked sum of squares by the number of
  non-zero values of the whole input; here by the number of values that contribute (channels
  times pixels visible in both images), i.e. a mean squared difference per value.
"""

from __future__ import annotations

import torch

from stn_core._validate import expect

__all__ = [
    "landmark_loss",
    "prior_loss",
    "symmetry_loss",
    "siamese_loss",
    "masked_mean_squared_difference",
]


def landmark_loss(
    points: torch.Tensor,
    target: torch.Tensor,
    indices: torch.Tensor | None = None,
    visibility: torch.Tensor | None = None,
) -> torch.Tensor:
    """Visibility-weighted mean squared landmark distance, pixels^2.

    Args:
        points: (B, N, 2) predicted image points of every grid vertex (pixels), or (B, L, 2)
            already selected when ``indices`` is None.
        target: (B, L, 2) observed landmark positions, pixels, our convention (x right, y down,
            (0, 0) the centre of the top-left pixel; see :mod:`stn_core.conventions` for the
            original's labels).
        indices: (L,) long grid vertex indices of the landmarks (e.g.
            ``model.landmarks["aflw21"]``), or None.
        visibility: (B, L) weights in [0, 1] (1 = annotated and visible), or None for all ones.

    Returns:
        ``sum_{b,l} v_bl * |p_bl - q_bl|^2 / sum_{b,l} v_bl``: the mean over visible landmarks
        and images of the squared Euclidean distance, in pixels^2 (its square root is the RMS
        landmark error in pixels). 0 when no landmark is visible.
    """
    pred = points if indices is None else points[:, indices.to(points.device)]
    expect(
        pred.shape == target.shape,
        f"predicted landmarks {tuple(pred.shape)} and target {tuple(target.shape)} "
        "differ in shape.",
    )
    sq = ((pred - target.to(pred.dtype)) ** 2).sum(-1)  # (B, L)
    if visibility is None:
        return sq.mean() if sq.numel() else sq.sum()  # no landmarks: 0, not NaN
    w = visibility.detach().to(sq.dtype)
    expect(w.shape == sq.shape, f"visibility must be {tuple(sq.shape)}, got {tuple(w.shape)}.")
    return (sq * w).sum() / w.sum().clamp_min(torch.finfo(sq.dtype).tiny)


def prior_loss(alpha: torch.Tensor) -> torch.Tensor:
    """Statistical shape prior: ``sum_k alpha_k^2`` per image, averaged over the batch.

    Args:
        alpha: (B, K) shape coefficients (unit variance per component, as the basis is scaled
            by the standard deviations), e.g. ``theta[:, 6:]``.

    Returns:
        Scalar: the negative log-likelihood of a standard normal prior up to a factor 2 and a
        constant.
    """
    return (alpha**2).sum(-1).mean()


def masked_mean_squared_difference(
    a: torch.Tensor, b: torch.Tensor, mask_a: torch.Tensor | None, mask_b: torch.Tensor | None
) -> torch.Tensor:
    """Mean of ``(a - b)^2`` over the values at pixels where both masks are non-zero.

    Args:
        a, b: (B, C, H, W). mask_a, mask_b: (B, 1, H, W) (or broadcastable) visibility; None
            means "the pixels where any channel is non-zero" (the original's rule, which works
            on masked images).

    Returns:
        ``sum (m_a m_b) (a - b)^2 / (C * sum_{b,h,w} m_a m_b)``: masks are weights in [0, 1]
        (0/1 for visibility), so with 0/1 masks this is the mean over the C values of every
        pixel visible in both. 0 when no pixel is visible in both.
    """
    expect(
        a.shape == b.shape,
        f"the two images differ in shape: {tuple(a.shape)} and {tuple(b.shape)}.",
    )
    expect(a.dim() == 4, f"images must be (B, C, H, W), got {tuple(a.shape)}.")
    acc = torch.promote_types(a.dtype, torch.float32)
    ma = (a != 0).any(1, keepdim=True) if mask_a is None else mask_a
    mb = (b != 0).any(1, keepdim=True) if mask_b is None else mask_b
    both = (ma.detach().to(acc) * mb.detach().to(acc)).expand(a.shape[0], 1, *a.shape[2:])
    diff = (a.to(acc) - b.to(acc)) ** 2
    count = both.sum() * a.shape[1]
    # The weighted mean for any positive total weight (also below 1); 0 (total is 0) when
    # nothing is visible in both, with a finite gradient.
    safe = torch.where(count > 0, count, torch.ones_like(count))
    return ((diff * both).sum() / safe).to(a.dtype)


def symmetry_loss(flattened: torch.Tensor, visibility: torch.Tensor | None = None) -> torch.Tensor:
    """Bilateral symmetry: the flattened image against its left-right mirror.

    The UV grid is symmetric about its middle column (u = 0.5 is the face's symmetry line), so
    mirroring the columns maps each grid point to its mirror partner on the face.

    Args:
        flattened: (B, C, R, R) flattened (usually masked) images.
        visibility: (B, 1, R, R) visibility mask, or None to use the non-zero pixels (the
            original's rule).

    Returns:
        The mean squared difference per value between ``flattened`` and ``flattened.flip(-1)``
        over the pixels visible in both (see :func:`masked_mean_squared_difference`).
    """
    mirrored_mask = None if visibility is None else visibility.flip(-1)
    return masked_mean_squared_difference(flattened, flattened.flip(-1), visibility, mirrored_mask)


def siamese_loss(
    flattened_a: torch.Tensor,
    flattened_b: torch.Tensor,
    visibility_a: torch.Tensor | None = None,
    visibility_b: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-view consistency: two views of the same face must flatten to the same texture.

    Args:
        flattened_a, flattened_b: (B, C, R, R) flattened images of the two views, pair b in
            row b of each (the original interleaved the pairs in one batch: a = x[0::2],
            b = x[1::2]).
        visibility_a, visibility_b: (B, 1, R, R) masks, or None for the non-zero pixels.

    Returns:
        The mean squared difference per value over the pixels visible in both views.
    """
    return masked_mean_squared_difference(flattened_a, flattened_b, visibility_a, visibility_b)
