"""The training objective: stn-core's four losses with the original's weights, adapted.

The original 3DMM-STN (MatConvNet, ``dagnn_3dmmasstn.m``) minimised

    J_orig = 0.8998 E_lm + 0.1 E_prior + 1e-4 E_siam + 1e-4 E_sym

on batches of M = 64 images at 224 x 224 (32 images and their mirrors), pixel values in
[0, 255], 21 AFLW landmarks, with

- ``E_lm = sum_{b,l} v_bl |p_bl - q_bl|^2`` (px^2, summed over landmarks and images),
- ``E_prior = sum_b |alpha_b|^2`` (summed over images),
- ``E_sym = sum_{both} (x - flip x)^2 / nnz(x)``: the squared differences over the values
  visible in an image and in its mirror, divided by the number of non-zero values of the whole
  batch; about ``255^2 * mean_sq`` (mean_sq in [0, 1] units, a mean over contributing values)
  when most visible pixels are visible in both,
- ``E_siam = sum_{pairs, both} (a - b)^2 / nnz(x)``: the same, but ``nnz`` counts both images
  of every pair, so about ``255^2 * mean_sq / 2``. (Its pairs were an image and its mirror,
  compared unflipped; here a mirrored partner's flattened face is flipped back first, see
  :func:`training_objective`.)

stn-core's losses (:mod:`stn_core.losses`) are means instead: ``L_lm`` over visible landmarks
and images (px^2), ``L_prior`` the per-image ``|alpha|^2`` averaged over images, ``L_siam`` and
``L_sym`` means over contributing values ([0, 1] pixel units). Dividing J_orig by its number
of landmark terms (M x 21, all visible) gives an objective with the same balance per image:

    J = c_lm L_lm + c_prior L_prior + c_siam L_siam + c_sym L_sym
    c_lm    = w_lm * (224 / S)^2            (S: the image side; px errors scale with S)
    c_prior = w_prior / 21
    c_siam  = w_siam * 255^2 / (2 * 64 * 21)   = 2.42e-3 for w_siam = 1e-4
    c_sym   = w_sym  * 255^2 / (64 * 21)       = 4.84e-3 for w_sym = 1e-4

with ``w`` the original's weights (the ``--weight-*`` options take them unchanged). So J is
about 0.9 x the mean squared landmark error in pixels of a 224 image, and the prior, siamese
and symmetry terms weigh what they weighed in the original's forward objective, whatever the
batch size, image size or landmark count. Two deliberate differences: the landmark term is a
mean over *visible* landmarks (an image with fewer annotations is not weighted less), and the
reference count 21 stays 21 with 68 landmarks (the landmark/prior balance per landmark is
the original's). The original's siamese and symmetry *backward* passes omitted the 1 / nnz
factor (and the mirror's share of the symmetry gradient), so the gradients it applied for those
terms were far larger than its forward objective says; here the gradient is that of J.

Many processes: each process computes its share as ``local sum / global count`` (counts are
all-reduced, sums are not), times the world size because DistributedDataParallel averages
gradients; the gradient is then exactly that of the global batch's means, whatever the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from stn_core.losses import landmark_loss, prior_loss, siamese_loss, symmetry_loss
from stn_core.stn import STNOutput

__all__ = [
    "ORIGINAL_WEIGHTS",
    "REFERENCE_IMAGE_SIZE",
    "REFERENCE_LANDMARKS",
    "REFERENCE_BATCH",
    "LossWeights",
    "LossTerms",
    "training_objective",
]

REFERENCE_IMAGE_SIZE = 224  # the original's input side, pixels
REFERENCE_LANDMARKS = 21  # AFLW landmarks of the original
REFERENCE_BATCH = 64  # images per batch in the original: 32 and their mirrors
_PIXEL_RANGE = 255.0  # the original's images were in [0, 255]; ours are in [0, 1]
ORIGINAL_WEIGHTS = {"landmark": 0.8998, "prior": 0.1, "siamese": 1e-4, "symmetry": 1e-4}


@dataclass(frozen=True)
class LossWeights:
    """The original's loss weights (``derOutputs`` of ``dagnn_3dmmasstn.m``), unchanged.

    :meth:`multipliers` turns them into the factors of stn-core's mean losses (module
    docstring).
    """

    landmark: float = ORIGINAL_WEIGHTS["landmark"]
    prior: float = ORIGINAL_WEIGHTS["prior"]
    siamese: float = ORIGINAL_WEIGHTS["siamese"]
    symmetry: float = ORIGINAL_WEIGHTS["symmetry"]
    teacher: float = 0.0

    def multipliers(self, image_size: int) -> dict[str, float]:
        """The factors c_lm, c_prior, c_siam, c_sym and c_teacher for images of side
        ``image_size`` px (the teacher term, :mod:`stn_train.train.teacher`, is in pixels
        squared like the landmark term and scales the same way)."""
        ref_terms = REFERENCE_BATCH * REFERENCE_LANDMARKS
        return {
            "teacher": self.teacher * (REFERENCE_IMAGE_SIZE / float(image_size)) ** 2,
            "landmark": self.landmark * (REFERENCE_IMAGE_SIZE / float(image_size)) ** 2,
            "prior": self.prior / REFERENCE_LANDMARKS,
            "siamese": self.siamese * _PIXEL_RANGE**2 / (2 * ref_terms),
            "symmetry": self.symmetry * _PIXEL_RANGE**2 / ref_terms,
        }


class LossTerms(NamedTuple):
    """The objective and its parts.

    total: scalar, differentiable (this process's share of the global batch's objective).
    landmark, prior, siamese, symmetry, teacher: detached scalars, this process's
    *unweighted* means (px^2, |alpha|^2, [0, 1] units, px^2; teacher 0 without one), for
    logging.
    """

    total: torch.Tensor
    landmark: torch.Tensor
    prior: torch.Tensor
    siamese: torch.Tensor
    symmetry: torch.Tensor
    teacher: torch.Tensor


def _count_both(mask_a: torch.Tensor, mask_b: torch.Tensor, channels: int) -> torch.Tensor:
    """What :func:`stn_core.losses.masked_mean_squared_difference` divides by."""
    return (mask_a.detach().float() * mask_b.detach().float()).sum() * channels


def training_objective(
    out: STNOutput,
    theta: torch.Tensor,
    landmarks: torch.Tensor,
    visible: torch.Tensor,
    indices: torch.Tensor,
    multipliers: dict[str, float],
    n_pairs: int = 0,
    all_reduce=None,
    mirrored: torch.Tensor | None = None,
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LossTerms:
    """The weighted objective J of one batch (module docstring).

    Args:
        out: the STN's output for the batch's images (B, ...).
        theta: (B, 6 + K) float32, the localiser's output.
        landmarks: (B, L, 2) target landmarks, pixels. visible: (B, L) 0/1 weights.
        indices: (L,) long grid indices of the landmark set.
        multipliers: :meth:`LossWeights.multipliers`.
        n_pairs: the first ``2 * n_pairs`` images are pairs: image i pairs with image
            ``n_pairs + i`` (the siamese term); 0 for no pairs.
        mirrored: (n_pairs,) bool, True where the partner is the image's mirror: its
            flattened face (and mask) is flipped back left-right before the comparison (a
            mirrored face flattens to the mirror of the face's texture). The original compared
            them unflipped, which for mirror pairs repeats the symmetry loss instead of
            asking the fit of the mirror to be the mirror of the fit.
        all_reduce: None in one process; else ``f(tensor) -> tensor`` summing over processes
            (no gradient), and the world size is ``all_reduce(1)``. The counts are reduced so
            that every process divides by the global batch's counts.
        teacher: None, or this batch's teacher term ``(mean, count)`` from
            :func:`stn_train.train.teacher.teacher_loss` (weighted by
            ``multipliers["teacher"]``).
    """
    vis = visible.to(theta.dtype)
    # An unannotated landmark may hold NaN: its weight is 0, but NaN * 0 is NaN.
    landmarks = torch.where(vis[..., None] > 0, landmarks.to(theta.dtype), 0.0)
    channels = out.masked.shape[1]
    means = [
        landmark_loss(out.points, landmarks, indices, vis),
        prior_loss(theta[:, 6:]),
    ]
    counts = [vis.sum(), torch.tensor(float(theta.shape[0]), device=theta.device)]
    if n_pairs > 0:
        a, b = slice(0, n_pairs), slice(n_pairs, 2 * n_pairs)
        masked_b, vis_b = out.masked[b], out.visibility[b]
        if mirrored is not None:
            flip = mirrored.to(torch.bool).reshape(-1, 1, 1, 1)
            masked_b = torch.where(flip, masked_b.flip(-1), masked_b)
            vis_b = torch.where(flip, vis_b.flip(-1), vis_b)
        means.append(siamese_loss(out.masked[a], masked_b, out.visibility[a], vis_b))
        counts.append(_count_both(out.visibility[a], vis_b, channels))
    else:
        means.append(torch.zeros((), dtype=theta.dtype, device=theta.device))
        counts.append(torch.zeros((), device=theta.device))
    means.append(symmetry_loss(out.masked, out.visibility))
    counts.append(_count_both(out.visibility, out.visibility.flip(-1), channels))
    if teacher is not None:
        means.append(teacher[0])
        counts.append(teacher[1])
    else:
        means.append(torch.zeros((), dtype=theta.dtype, device=theta.device))
        counts.append(torch.zeros((), device=theta.device))
    means = [m.float() for m in means]
    if all_reduce is not None:
        # mean * count is this process's sum; divide it by the global batch's count, times
        # the world size because DDP averages gradients over processes. One collective call.
        local = torch.stack([c.detach().float().reshape(()) for c in counts])
        world = torch.ones(1, device=local.device)
        reduced = all_reduce(torch.cat([local, world]))
        total_counts, world = reduced[:-1], reduced[-1]
        factors = local * world / total_counts.clamp_min(torch.finfo(torch.float32).tiny)
        shares = [m * f for m, f in zip(means, factors, strict=True)]
    else:
        shares = means
    lm, pr, siam, sym, teach = shares
    total = (
        multipliers["landmark"] * lm
        + multipliers["prior"] * pr
        + multipliers["siamese"] * siam
        + multipliers["symmetry"] * sym
    )
    if teacher is not None:
        total = total + multipliers["teacher"] * teach
    return LossTerms(total, *(m.detach() for m in means))
