"""Augmentations on samples: horizontal flip with the landmark permutation, colour jitter, and
the crop / resize to the network input. Pure torch (no torchvision).

A sample is a dict (see stn_train.data.dataset): ``"image"`` (3, H, W) float32 in [0, 1],
``"landmarks"`` (L, 2) float32 pixels in our convention (x right, y down, (0, 0) the centre of
the top-left pixel), ``"visible"`` (L,) float32 0/1, and other keys passed through. Each
function returns a new dict and leaves its input unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from stn_train.errors import TrainError

__all__ = [
    "FLIP_PERMUTATIONS",
    "flip_permutation",
    "hflip",
    "hflip_points",
    "color_jitter",
    "CropWindow",
    "crop_window",
    "crop_points",
    "to_source",
    "points_to_source",
    "theta_to_source",
    "crop_image",
    "resize_square",
    "crop_resize",
]


def _ibug68_mirror() -> tuple[int, ...]:
    """0-based iBUG 68 mirror partners: the subject's right and left swap, midline stays."""
    p = list(range(68))

    def swap(a: Sequence[int], b: Sequence[int]) -> None:
        for i, j in zip(a, b, strict=True):
            p[i], p[j] = j, i

    swap(range(0, 8), range(16, 8, -1))  # jaw contour 0..16, 8 the chin
    swap(range(17, 22), range(26, 21, -1))  # brows
    swap((31, 32), (35, 34))  # nostrils; 27-30 (bridge) and 33 (below the tip) stay
    swap((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46))  # eyes: corners, lids
    swap((48, 49, 50, 55, 56), (54, 53, 52, 59, 58))  # outer lip; 51, 57 stay
    swap((60, 61, 65), (64, 63, 67))  # inner lip; 62, 66 stay
    return tuple(p)


# Index i of a flipped image is landmark FLIP_PERMUTATIONS[name][i] of the original, mirrored.
# Each is an involution. Checked geometrically against the BFM and Surrey models'
# landmark vertices in tests/stn_train/test_transforms.py.
FLIP_PERMUTATIONS: dict[str, tuple[int, ...]] = {
    # AFLW 21: 0-5 brows, 6-11 eyes, 12 ear, 13-15 nose, 16 ear, 17-19 mouth, 20 chin.
    "aflw21": (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20),
    "ibug68": _ibug68_mirror(),
}


def flip_permutation(landmarks: str | Sequence[int]) -> torch.Tensor:
    """A landmark set's name (``FLIP_PERMUTATIONS``) or an explicit permutation -> (L,) int64.

    Raises:
        TrainError: an unknown name, or a sequence that is not a permutation.
    """
    if isinstance(landmarks, str):
        if landmarks not in FLIP_PERMUTATIONS:
            raise TrainError(
                f"unknown landmark set {landmarks!r}; use one of "
                f"{', '.join(sorted(FLIP_PERMUTATIONS))}."
            )
        return torch.tensor(FLIP_PERMUTATIONS[landmarks], dtype=torch.int64)
    perm = torch.as_tensor(list(landmarks), dtype=torch.int64)
    if not torch.equal(perm.sort().values, torch.arange(len(perm))):
        raise TrainError("the flip permutation must contain each index 0..L-1 exactly once.")
    return perm


def hflip_points(points: torch.Tensor, width: int, perm: torch.Tensor | None = None):
    """Mirror points (..., L, 2) in an image of ``width`` pixels: ``x -> W - 1 - x`` (pixel
    centres map to pixel centres), then reorder the landmarks by ``perm`` if given."""
    out = points.clone()
    out[..., 0] = (width - 1) - points[..., 0]
    return out if perm is None else out[..., perm, :]


def hflip(sample: dict, landmarks: str | Sequence[int] = "aflw21") -> dict:
    """Mirror a sample left-right.

    The image's columns are reversed (and a ``"trust"`` map's), landmark x becomes
    ``W - 1 - x`` and the landmarks (and their visibility) are reordered so that index i is
    again the landmark the set names i (the left eye's corner of the mirror is the right eye's
    corner of the original).
    A ground-truth ``"theta"`` is dropped: the mirrored face's shape coefficients are not known
    for a general model.
    """
    perm = flip_permutation(landmarks)
    n = sample["landmarks"].shape[-2]
    if n != len(perm):
        raise TrainError(
            f"the sample has {n} landmarks but the flip permutation has "
            f"{len(perm)}; pass the matching landmark set."
        )
    out = {k: v for k, v in sample.items() if k != "theta"}
    out["image"] = sample["image"].flip(-1)
    if "trust" in sample:
        out["trust"] = sample["trust"].flip(-1)
    out["landmarks"] = hflip_points(sample["landmarks"], sample["image"].shape[-1], perm)
    out["visible"] = sample["visible"][..., perm]
    return out


def _grey(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (1, H, W) luma, ITU-R BT.601 weights (as PIL's convert("L"))."""
    w = image.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    return (image * w).sum(0, keepdim=True)


def color_jitter(
    sample: dict,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    generator: torch.Generator | None = None,
) -> dict:
    """Random brightness, contrast and saturation, in that order, each clamped to [0, 1].

    Each factor is uniform in ``[max(0, 1 - a), 1 + a]`` for its strength ``a``: brightness
    scales the image; contrast blends it with its mean luma; saturation blends each pixel
    with its luma. Three numbers are drawn from ``generator`` (always, so the stream does not
    depend on which strengths are zero): the same generator state gives the same result.
    """
    u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
    factors = [
        max(0.0, 1.0 - a) + ui * (1.0 + a - max(0.0, 1.0 - a))
        for a, ui in zip((brightness, contrast, saturation), u, strict=True)
    ]
    image = sample["image"]
    image = (image * factors[0]).clamp_(0.0, 1.0)
    mean = _grey(image).mean()
    image = (mean + (image - mean) * factors[1]).clamp_(0.0, 1.0)
    grey = _grey(image)
    image = (grey + (image - grey) * factors[2]).clamp_(0.0, 1.0)
    return {**sample, "image": image}


@dataclass(frozen=True)
class CropWindow:
    """A square window of whole pixels: columns ``x0 .. x0 + side - 1``, rows ``y0 ..
    y0 + side - 1`` of the source image (it may reach outside it: zeros there)."""

    x0: int
    y0: int
    side: int


def crop_window(
    landmarks: torch.Tensor,
    visible: torch.Tensor,
    image_hw: tuple[int, int],
    margin: float = 0.25,
    box: str = "landmarks",
    scale_jitter: float = 0.0,
    shift_jitter: float = 0.0,
    generator: torch.Generator | None = None,
) -> CropWindow:
    """The square crop around a face.

    ``box="landmarks"``: centred on the bounding box of the visible landmarks, side
    ``max(box width, box height) * (1 + 2 * margin)``. ``box="image"``: centred on the image,
    side ``max(H, W)`` (margin unused). Jitter (training): the side is multiplied by
    ``1 + scale_jitter * u0`` and the centre moved by ``shift_jitter * side * (u1, u2)``, with
    u uniform in [-1, 1) drawn from ``generator`` (three numbers whenever a jitter is > 0).
    The window is then rounded to whole pixels.

    Args:
        landmarks: (L, 2) pixels; visible: (L,) 0/1; image_hw: (H, W) of the source.

    Raises:
        TrainError: ``box="landmarks"`` with fewer than two visible landmarks or a box of zero
            size (nothing to crop around).
    """
    h, w = image_hw
    if box == "landmarks":
        ok = (visible > 0) & torch.isfinite(landmarks).all(-1)
        pts = landmarks[ok].double()
        if pts.shape[0] < 2:
            raise TrainError("fewer than two visible landmarks: no face box to crop around.")
        lo, hi = pts.min(0).values, pts.max(0).values
        size = float((hi - lo).max())
        if not size > 0:
            raise TrainError(
                "the visible landmarks are all at one point: no face box to crop around."
            )
        cx, cy = ((lo + hi) / 2).tolist()
        side = size * (1.0 + 2.0 * margin)
    elif box == "image":
        cx, cy, side = (w - 1) / 2.0, (h - 1) / 2.0, float(max(h, w))
    else:
        raise TrainError(f"crop box must be 'landmarks' or 'image', got {box!r}.")
    if scale_jitter > 0 or shift_jitter > 0:
        u = (torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1).tolist()
        side *= 1.0 + scale_jitter * u[0]
        cx += shift_jitter * side * u[1]
        cy += shift_jitter * side * u[2]
    n = max(1, int(round(side)))
    # window pixels x0 .. x0 + n - 1 have their centre (x0 + (n - 1) / 2) at cx
    return CropWindow(
        int(math.floor(cx - (n - 1) / 2.0 + 0.5)), int(math.floor(cy - (n - 1) / 2.0 + 0.5)), n
    )


def crop_points(points: torch.Tensor, window: CropWindow, size: int) -> torch.Tensor:
    """Points (..., 2) in the source image -> in the ``size`` x ``size`` output.

    ``x' = (x - x0 + 0.5) * size / side - 0.5`` (and so for y): pixel edges scale, so the
    centre of the window's first pixel maps to that of the output's first pixel only when
    ``side == size``; this is exactly the resampling of ``resize_square``.
    """
    scale = size / window.side
    origin = points.new_tensor([window.x0, window.y0])
    return (points - origin + 0.5) * scale - 0.5


def to_source(window: CropWindow, size: int) -> dict:
    """The map from a ``size`` x ``size`` crop's pixels back to the source image's, the inverse
    of :func:`crop_points`: ``x_source = scale * (x + 0.5) - 0.5 + offset`` (and so for y),
    as ``{"scale": side / size, "offset": [x0, y0]}`` (the form manifests and predictions
    record)."""
    return {"scale": window.side / size, "offset": [window.x0, window.y0]}


def points_to_source(points: torch.Tensor, transform: dict) -> torch.Tensor:
    """Points (..., 2) in a crop -> in its source image (:func:`to_source`'s map)."""
    offset = points.new_tensor(transform["offset"])
    return transform["scale"] * (points + 0.5) - 0.5 + offset


def theta_to_source(theta: torch.Tensor, transform: dict) -> torch.Tensor:
    """theta (..., 6 + K) of a face in a crop -> the same face in the source image.

    A projected point ``p = s R X + t`` maps to ``scale * (p + 0.5) - 0.5 + offset``, so the
    rotation and shape stay, ``log_s`` gains ``log(scale)`` and ``t`` maps as a point.
    """
    out = theta.clone()
    out[..., 3:5] = points_to_source(theta[..., 3:5], transform)
    out[..., 5] = theta[..., 5] + math.log(transform["scale"])
    return out


def crop_image(image: torch.Tensor, window: CropWindow) -> torch.Tensor:
    """(C, H, W) -> (C, side, side): the window's pixels, zeros where it leaves the image."""
    _, h, w = image.shape
    x0, y0, n = window.x0, window.y0, window.side
    xa, xb = max(x0, 0), min(x0 + n, w)
    ya, yb = max(y0, 0), min(y0 + n, h)
    if xa >= xb or ya >= yb:
        return image.new_zeros(image.shape[0], n, n)
    inner = image[:, ya:yb, xa:xb]
    return F.pad(inner, (xa - x0, x0 + n - xb, ya - y0, y0 + n - yb))


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """(C, S, S) -> (C, size, size), bilinear, antialiased when shrinking.

    Output pixel j's centre samples the input at ``(j + 0.5) * S / size - 0.5``
    (``align_corners=False``), the mapping of ``crop_points``.
    """
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    out = F.interpolate(
        image[None].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )[0]
    return out.clamp_(0.0, 1.0).to(image.dtype)  # bilinear keeps the range; rounding may not


def crop_resize(
    sample: dict,
    size: int,
    margin: float = 0.25,
    box: str = "landmarks",
    scale_jitter: float = 0.0,
    shift_jitter: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict:
    """Crop a square around the face (``crop_window``) and resize it to ``size`` x ``size``;
    the landmarks follow (``crop_points``). Evaluation: no jitter (the default)."""
    image = sample["image"]
    window = crop_window(
        sample["landmarks"],
        sample["visible"],
        tuple(image.shape[-2:]),
        margin,
        box,
        scale_jitter,
        shift_jitter,
        generator,
    )
    out = dict(sample)
    out["image"] = resize_square(crop_image(image, window), size)
    out["landmarks"] = crop_points(sample["landmarks"], window, size)
    return out
