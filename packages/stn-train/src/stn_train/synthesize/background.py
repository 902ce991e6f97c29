"""The photograph's own background where the fitted face was: filled from the pixels around it.

The fill is push-pull (a pyramid of weighted averages: known pixels are averaged down until
every pixel of a coarse level has a value, then the levels are blended back up, each known
pixel kept exactly): smooth, colour-continuous at the hole's border, no texture. It stands in
for what the face hid; the quality mask marks every filled pixel that stays in view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fill_holes", "grow_mask"]


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """(H, W) bool grown by ``pixels`` in every direction (a square structuring element)."""
    if pixels <= 0:
        return mask.clone()
    k = 2 * pixels + 1
    grown = F.max_pool2d(mask.to(torch.float32)[None, None], k, 1, pixels)
    return grown[0, 0] > 0


def fill_holes(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """``image`` with the pixels of ``hole`` filled by push-pull from the others.

    Args:
        image: (C, H, W) float. hole: (H, W) bool, the pixels to fill.

    Returns:
        (C, H, W), equal to ``image`` outside ``hole``. An image that is all hole is returned
        unchanged (nothing to fill from).
    """
    known = (~hole).to(image.dtype)[None, None]
    if not bool(known.any()) or not bool(hole.any()):
        return image.clone()
    x = image[None] * known
    w = known
    levels = [(x, w)]
    while min(x.shape[-2:]) > 1 and bool((w <= 0).any()):
        # Sums over 2 x 2 blocks (a clipped block at an odd edge): the ratio x / w is the mean
        # of the known pixels, whatever the divisor.
        x = F.avg_pool2d(x, 2, ceil_mode=True)
        w = F.avg_pool2d(w, 2, ceil_mode=True)
        levels.append((x, w))
    x, w = levels[-1]
    out = x / w.clamp_min(1e-12)
    for x, w in reversed(levels[:-1]):
        up = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        own = x / w.clamp_min(1e-12)
        # A pixel with enough known support keeps its own average, others blend towards the
        # coarser level's.
        trust = (4.0 * w).clamp(0.0, 1.0)
        out = trust * own + (1.0 - trust) * up
    filled = out[0]
    return torch.where(hole[None], filled, image)
