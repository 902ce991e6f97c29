"""Fitting theta to 2D landmarks: batched Levenberg-Marquardt with the statistical prior.

Replaces the original demo.m's fixed-step gradient descent. Per image b the cost is

    C(theta) = sum_l w_l |p_l(theta) - q_l|^2 / s0^2  +  prior_weight * |alpha|^2

with p_l the projection (:func:`stn_core.geometry.project_theta`) of the model vertex of
landmark l, q_l the observed point (pixels), w_l its visibility weight and s0 the image's
initial scale (pixels per mm: that of the 2D similarity alignment of the mean shape's
landmarks to the observed ones, or ``exp(log_s)`` of ``init``): the landmark term is
measured in model millimetres, so the balance with the prior does not depend on the image
resolution or on how large the face is in the image. ``prior_weight`` is therefore the
variance, in mm^2, of a landmark's position error that one unit of |alpha|^2 is worth.

The starts are closed form: the scaled-orthographic alignment of the mean shape's landmarks
to the observed points (an affine fit projected to the nearest scaled rotation), its
depth-reversed twin (the orthographic ambiguity: yaw and pitch negated), and the 2D
similarity alignment of the frontal mean shape. LM runs from all three in one batch, on all
of theta, with exact closed-form Jacobians (the rotation's through the left Jacobian of
SO(3)), and each image keeps the start that reached the lowest cost.

The solver gets the normal equations (``J^T J``, ``J^T r``) built directly, without the
Jacobian matrix of :func:`landmark_residuals` (the same values up to rounding), and only for
the starts still running (``jacobian_rows=True``): a batch of many faces costs about what its
faces' own iterations cost, whatever its slowest start needs (``docs/benchmarks.md``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from stn_core.fitting.solver import LMHistory, NormalEquations, levenberg_marquardt, torch_threads
from stn_core.geometry import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    skew,
    so3_left_jacobian,
)

__all__ = [
    "FitResult",
    "fit_landmarks",
    "landmark_residuals",
    "resolve_landmark_indices",
    "DEFAULT_PRIOR_WEIGHT",
]

# mm^2 of landmark position error per unit |alpha|^2; see the module docstring. Chosen on the
# original's six demo images (tests/stn_core/test_fit_landmarks.py): the fits stay within
# 0.11 px of the unregularised ones (mean 2.08 against 2.03 px), while |alpha| drops from up
# to 13.8 (an implausible face) to at most 5.2 for 10 components. A maximum-a-posteriori
# reading (per-axis landmark noise of about 1.5 mm on these images) would put it near 2.5.
DEFAULT_PRIOR_WEIGHT = 1.0

_SIGN = {dt: torch.tensor([1.0, -1.0], dtype=dt) for dt in (torch.float32, torch.float64)}


@dataclass
class FitResult:
    """The result of :func:`fit_landmarks`.

    theta: (B, 6 + K) ``[r, t, log_s, alpha]`` in the dtype of the points.
    error_px: (B,) mean landmark error in pixels: visibility-weighted mean Euclidean distance
        between the fitted and the observed landmarks (NaN for an image that was not fitted).
    converged: (B,) bool, the solver's convergence flag.
    history: the solver's per-iteration record (cost, damping, accepted steps, and the
        ``"landmarks"`` and ``"prior"`` terms of the cost), per image that of the start kept.
    points: (B, L, 2) the fitted landmark positions in pixels.
    cost: (B,) final cost C(theta) (see the module docstring).
    n_iter: (B,) iterations used.
    status: list of str, why each image stopped ("ftol", "xtol", "atol", "stalled",
        "max_iter", or "skipped" for an image with fewer than 2 visible landmarks).
    """

    theta: torch.Tensor
    error_px: torch.Tensor
    converged: torch.Tensor
    history: LMHistory
    points: torch.Tensor
    cost: torch.Tensor
    n_iter: torch.Tensor
    status: list[str]


def landmark_residuals(
    theta: torch.Tensor,
    lm_mean: torch.Tensor,
    lm_basis: torch.Tensor,
    points: torch.Tensor,
    sqrt_weight: torch.Tensor,
    prior_sqrt: float | torch.Tensor = 0.0,
    jacobian: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Residuals and their exact Jacobian for the landmark fit (closed form).

    Args:
        theta: (B, 6 + K). lm_mean: (L, 3) mm, the mean shape at the landmark vertices.
        lm_basis: (L, 3, K) mm per unit coefficient, the basis rows of those vertices.
        points: (B, L, 2) observed pixels. sqrt_weight: (B, L) square roots of the weights
            (including any normalisation, e.g. visibility / s0).
        prior_sqrt: scalar or (B,), square root of the prior weight.
        jacobian: also return J.

    Returns:
        r: (B, 2 L + K) ``[sqrt_w_l (p_l - q_l) interleaved (x, y) per landmark,
        prior_sqrt * alpha]``; J: (B, 2 L + K, 6 + K) d r / d theta, or None.
    """
    bsz = theta.shape[0]
    nl, _, k = lm_basis.shape
    r_aa, t, log_s, alpha = theta[:, 0:3], theta[:, 3:5], theta[:, 5], theta[:, 6:]
    rot = axis_angle_to_matrix(r_aa)  # (B, 3, 3)
    if k:
        x = lm_mean + (alpha @ lm_basis.reshape(nl * 3, k).T.contiguous()).reshape(bsz, nl, 3)
    else:
        x = lm_mean.expand(bsz, nl, 3)
    y = x @ rot.transpose(1, 2)  # (B, L, 3)
    s = torch.exp(log_s)[:, None, None]
    sign = (
        _SIGN[theta.dtype].to(theta.device)
        if theta.dtype in _SIGN
        else torch.tensor([1.0, -1.0], dtype=theta.dtype, device=theta.device)
    )
    sy = s * y[..., :2] * sign  # (B, L, 2): (s Y_x, -s Y_y)
    p = sy + t[:, None, :]
    sw = sqrt_weight[..., None]
    res_lm = (sw * (p - points)).reshape(bsz, 2 * nl)
    prior_sqrt = torch.as_tensor(prior_sqrt, dtype=theta.dtype, device=theta.device)
    prior_sqrt = prior_sqrt.reshape(-1, 1) if prior_sqrt.dim() else prior_sqrt
    res = torch.cat([res_lm, prior_sqrt * alpha], 1)
    if not jacobian:
        return res, None
    # d p / d r = s * sign * (-[Y]_x J_l(r))[:2]
    dy_dr = -skew(y) @ so3_left_jacobian(r_aa)[:, None]  # (B, L, 3, 3)
    j_r = (s[..., None] * sign[:, None]) * dy_dr[:, :, :2, :]
    j_t = torch.eye(2, dtype=theta.dtype, device=theta.device).expand(bsz, nl, 2, 2)
    j_s = sy[..., None]
    j_a = (rot[:, None, :2, :] @ lm_basis) * (s[..., None] * sign[:, None])  # (B, L, 2, K)
    j_lm = torch.cat([j_r, j_t, j_s, j_a], -1) * sw[..., None]  # (B, L, 2, P)
    j_prior = torch.zeros(bsz, k, 6 + k, dtype=theta.dtype, device=theta.device)
    j_prior[:, :, 6:] = torch.eye(k, dtype=theta.dtype, device=theta.device) * (
        prior_sqrt[..., None] if prior_sqrt.dim() else prior_sqrt
    )
    return res, torch.cat([j_lm.reshape(bsz, 2 * nl, 6 + k), j_prior], 1)


class _LandmarkProblem:
    """The landmark fit's normal equations, built without the Jacobian matrix of
    :func:`landmark_residuals` (same cost, ``J^T J`` and ``J^T r`` up to rounding).

    The transposed, weighted Jacobian of each image is written into one (R, P + 1, 2, L)
    array (rows: theta's parameters, then the residual; columns: the x and the y residuals
    of the L landmarks), so that one batched product gives ``J^T J``, ``J^T r`` and the
    landmark cost together. The rotation's rows come from cross products with the left
    Jacobian of SO(3) (no 3 x 3 product per landmark); the shape's from one matrix product
    of the rotation's first two rows with the basis, laid out (by a block-diagonal copy of
    the basis) so that it lands in place; the prior adds ``prior_weight`` to the diagonal and
    ``prior_weight * alpha`` to ``J^T r`` (no rows for it).

    lm_mean: (L, 3) mm. lm_basis: (L, 3, K) mm. points: (B, L, 2) pixels. sqrt_weight: (B, L)
    (visibility / s0, as in :func:`landmark_residuals`). prior_weight: float, mm^2.
    Calling it is a ``jacobian_fn`` of :func:`levenberg_marquardt` with
    ``jacobian_rows=True``.
    """

    def __init__(self, lm_mean, lm_basis, points, sqrt_weight, prior_weight: float):
        nl, _, k = lm_basis.shape
        self.nl, self.k = nl, k
        self.mean_t = lm_mean.T.reshape(1, 3 * nl).contiguous()  # (1, 3 L): x.., y.., z..
        self.basis_t = lm_basis.permute(2, 1, 0).reshape(k, 3 * nl).contiguous()  # (K, 3 L)
        # (2 x 3, K x 2 x L): [(c', a), (k, c, l)] = basis[l, a, k] where c = c', else 0, so
        # that the rotation's rows (R, 2 x 3) times it are d p / d alpha laid out as jt's rows.
        block = lm_basis.new_zeros(2, 3, k, 2, nl)
        for c in range(2):
            block[c, :, :, c, :] = lm_basis.permute(1, 2, 0)
        self.basis_block = block.reshape(6, 2 * k * nl)
        self.sqrt_w = sqrt_weight.contiguous()
        self.sw_q = (sqrt_weight[:, None, :] * points.transpose(1, 2)).contiguous()  # (B, 2, L)
        self.prior_weight = float(prior_weight)
        self.sign = torch.tensor([[1.0], [-1.0]], dtype=lm_mean.dtype, device=lm_mean.device)

    def __call__(self, theta: torch.Tensor, rows: torch.Tensor) -> NormalEquations:
        """Normal equations at theta (R, 6 + K) of the images ``rows`` (R,) int64."""
        sqrt_w, sw_q = self.sqrt_w[rows], self.sw_q[rows]
        n, p = theta.shape
        nl, k = self.nl, self.k
        r_aa, t, log_s, alpha = theta[:, 0:3], theta[:, 3:5], theta[:, 5], theta[:, 6:]
        rot = axis_angle_to_matrix(r_aa)
        jl = so3_left_jacobian(r_aa)
        x = torch.addmm(self.mean_t, alpha, self.basis_t).view(n, 3, nl)
        y = torch.bmm(rot, x)  # (R, 3, L) rotated landmarks, mm
        ssw = torch.exp(log_s)[:, None] * sqrt_w  # (R, L)
        jt = theta.new_empty(n, p + 1, 2, nl)
        sy = jt[:, 5]  # d p / d log_s = p - t = (s Y_x, -s Y_y), weighted
        torch.mul(ssw[:, None, :], y[:, :2], out=sy)
        sy[:, 1].neg_()
        torch.addcmul(sy - sw_q, sqrt_w[:, None, :], t[:, :, None], out=jt[:, p])
        jt[:, 3, 0] = sqrt_w
        jt[:, 3, 1] = 0.0
        jt[:, 4, 0] = 0.0
        jt[:, 4, 1] = sqrt_w
        # d Y / d r_j = (J_l e_j) x Y: d p_x / d r = s (Y_z J_l[1] - Y_y J_l[2]),
        # d p_y / d r = s (Y_z J_l[0] - Y_x J_l[2]) (the image's y axis points down).
        sz = (ssw * y[:, 2])[:, None, :]
        torch.mul(jl[:, 1, :, None], sz, out=jt[:, 0:3, 0]).addcmul_(
            jl[:, 2, :, None], sy[:, None, 1]
        )
        torch.mul(jl[:, 0, :, None], sz, out=jt[:, 0:3, 1]).addcmul_(
            jl[:, 2, :, None], sy[:, None, 0], value=-1.0
        )
        # d p / d alpha = s (R B)[:2] with the y row negated, weighted.
        ja = jt[:, 6:p]
        torch.mm(
            (rot[:, :2] * self.sign).reshape(n, 6), self.basis_block, out=ja.view(n, 2 * k * nl)
        )
        ja.mul_(ssw[:, None, None, :])
        jm = jt.view(n, p + 1, 2 * nl)
        g = torch.bmm(jm, jm.transpose(1, 2))  # (R, P + 1, P + 1)
        jtj, jtr, lm_cost = g[:, :p, :p], g[:, :p, p], g[:, p, p]
        prior_cost = self.prior_weight * (alpha * alpha).sum(1)
        jtj.diagonal(dim1=1, dim2=2)[:, 6:] += self.prior_weight
        jtr[:, 6:] += self.prior_weight * alpha
        return NormalEquations(
            lm_cost + prior_cost, jtj, jtr, {"landmarks": lm_cost, "prior": prior_cost}
        )


def _weighted_mean(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean of v (B, L, D) with weights w (B, L) -> (B, D)."""
    return (v * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp_min(1e-30)


def _pose_theta(
    rot: torch.Tensor, scale: torch.Tensor, x: torch.Tensor, q: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    """theta[:, :6] for rotation (B, 3, 3) and scale (B,), with the translation that best
    aligns the projected x (L, 3) with q (B, L, 2) under weights w."""
    y = x @ rot.transpose(1, 2)
    proj = scale[:, None, None] * torch.stack([y[..., 0], -y[..., 1]], -1)
    t = _weighted_mean(q - proj, w)
    return torch.cat([matrix_to_axis_angle(rot), t, scale.log()[:, None]], 1)


def _init_similarity(x: torch.Tensor, q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """2D similarity (Umeyama, weighted) of the frontal mean landmarks (x, y) to q: in-plane
    rotation, scale and translation. Needs 2 visible landmarks."""
    qm = torch.stack([q[..., 0], -q[..., 1]], -1)  # model orientation: y up
    xm = x[:, :2].expand(q.shape[0], -1, -1)
    wn = w / w.sum(1, keepdim=True).clamp_min(1e-30)
    qc = qm - _weighted_mean(qm, w)[:, None]
    xc = xm - _weighted_mean(xm, w)[:, None]
    cov = (qc * wn[..., None]).transpose(1, 2) @ xc  # (B, 2, 2)
    var_x = (wn * (xc * xc).sum(-1)).sum(1).clamp_min(1e-30)
    u, sv, vh = torch.linalg.svd(cov)
    uv = u @ vh
    det = uv[:, 0, 0] * uv[:, 1, 1] - uv[:, 0, 1] * uv[:, 1, 0]
    d = torch.stack([torch.ones_like(det), det.sign()], -1)
    r2 = u @ (d[..., None] * vh)
    scale = (sv * d).sum(-1) / var_x
    phi = torch.atan2(r2[:, 1, 0], r2[:, 0, 0])
    rz = torch.zeros(q.shape[0], 3, dtype=q.dtype, device=q.device)
    rz[:, 2] = phi
    return _pose_theta(axis_angle_to_matrix(rz), scale.clamp_min(1e-12), x, q, w)


def _init_affine(x: torch.Tensor, q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Scaled-orthographic alignment: the weighted affine camera M (2 x 3) mapping the mean
    landmarks x to q, projected onto the nearest scaled rotation (SVD, s = mean singular
    value, third row = cross product). Needs 4 non-coplanar visible landmarks."""
    qm = torch.stack([q[..., 0], -q[..., 1]], -1)
    xb = x.expand(q.shape[0], -1, -1)
    qc = qm - _weighted_mean(qm, w)[:, None]
    xc = xb - _weighted_mean(xb, w)[:, None]
    cxx = (xc * w[..., None]).transpose(1, 2) @ xc  # (B, 3, 3)
    cqx = (qc * w[..., None]).transpose(1, 2) @ xc  # (B, 2, 3)
    ridge = 1e-9 * torch.diagonal(cxx, dim1=1, dim2=2).sum(-1).clamp_min(1e-30)
    eye = torch.eye(3, dtype=q.dtype, device=q.device)
    m = torch.linalg.solve(cxx + ridge[:, None, None] * eye, cqx.transpose(1, 2)).transpose(1, 2)
    u, sv, vh = torch.linalg.svd(m, full_matrices=False)  # u (2, 2), vh (2, 3)
    r2 = u @ vh
    rot = torch.cat([r2, torch.linalg.cross(r2[:, 0], r2[:, 1])[:, None]], 1)
    return _pose_theta(rot, sv.mean(-1).clamp_min(1e-12), x, q, w)


def resolve_landmark_indices(model, landmarks) -> torch.Tensor:
    """Grid vertex indices (L,) int64 of a landmark set: ``landmarks`` names one of
    ``model.landmarks`` or is an (L,) index sequence. The fits take any object with
    ``mean``, ``basis`` and ``landmarks`` (not only a UVGridModel), hence this function beside
    :meth:`UVGridModel.landmark_indices`."""
    if isinstance(landmarks, str):
        sets = getattr(model, "landmarks", None) or {}
        if landmarks not in sets:
            raise ValueError(
                f"the model has no landmark set {landmarks!r} (it has {sorted(sets)}); pass "
                "landmarks=<name> of one of those or a (L,) tensor of grid vertex indices."
            )
        return torch.as_tensor(sets[landmarks]).long()
    idx = torch.as_tensor(landmarks).long()
    if idx.dim() != 1:
        raise ValueError(f"landmark indices must be a (L,) tensor, got {tuple(idx.shape)}.")
    return idx


def fit_landmarks(
    model,
    points: torch.Tensor,
    visibility: torch.Tensor | None = None,
    landmarks: str | torch.Tensor = "aflw21",
    *,
    prior_weight: float = DEFAULT_PRIOR_WEIGHT,
    n_iter: int = 50,
    init: torch.Tensor | None = None,
    image_size: tuple[int, int] | None = None,
    ftol: float | None = None,
    fix_shape: bool = False,
    multi_start: bool = True,
    cpu_threads: int | None = 1,
) -> FitResult:
    """Fit theta to 2D landmarks: batched Levenberg-Marquardt with the statistical prior.

    Args:
        model: a :class:`~stn_core.grid_model.UVGridModel` (or any object with ``mean`` (N, 3)
            mm, ``basis`` (N, 3, K) and, to pass a set by name, ``landmarks`` {name: (L,)}).
        points: (B, L, 2) observed landmarks in pixels (x right, y down, (0, 0) the centre of
            the top-left pixel). Non-finite points count as invisible. The original's labels
            convert as ``x - 1, H - y``.
        visibility: (B, L) weights >= 0 (bool or float; 0 = invisible), or None for all ones.
        landmarks: the name of one of the model's landmark sets, or (L,) grid vertex indices.
        prior_weight: weight of ``|alpha|^2`` against the landmark term in mm^2 (see the
            module docstring); 0 for an unregularised fit.
        n_iter: maximum LM iterations.
        init: optional (B, 6 + K) starting theta (replaces the closed-form alignment).
        image_size: optional (H, W); an image with fewer than 2 visible landmarks is not
            fitted and gets the frontal pose centred in the image (without image_size: NaN).
        ftol: relative cost decrease below which an image has converged (default: the
            solver's, 1e-8).
        fix_shape: keep alpha at its start (zero, or init's) and fit the pose only.
        multi_start: without ``init``, run LM from three closed-form starts (the
            scaled-orthographic alignment, its depth-reversed twin with yaw and pitch negated,
            and the frontal 2D similarity) in one batch and keep, per image, the lowest final
            cost; False: one start, the better-fitting of the alignment and the similarity.
        cpu_threads: torch intra-op threads while fitting on the CPU (restored afterwards);
            default 1: the matrices are tiny, and extra threads only add synchronisation
            (on a busy machine, much of it: on 2 shared cores, 2 threads were 4 to 8 times
            slower than 1 for 6 faces and 4 times for 1,024, ``docs/benchmarks.md``). None
            leaves torch's setting alone.

    Returns:
        :class:`FitResult`. Computation is in float64 (the problem is tiny) without autograd;
        theta comes back in the points' floating dtype (float32 for integer points), on
        their device.
    """
    if not (isinstance(points, torch.Tensor) and points.dim() == 3 and points.shape[-1] == 2):
        raise ValueError(f"points must be a (B, L, 2) tensor of pixels, got {_shape(points)}.")
    if not (math.isfinite(float(prior_weight)) and float(prior_weight) >= 0):
        raise ValueError(f"prior_weight must be finite and >= 0, got {prior_weight}.")
    with torch_threads(cpu_threads, points.device), torch.no_grad():
        return _fit_landmarks(
            model,
            points,
            visibility,
            landmarks,
            prior_weight,
            n_iter,
            init,
            image_size,
            ftol,
            fix_shape,
            multi_start,
        )


def _fit_landmarks(
    model,
    points,
    visibility,
    landmarks,
    prior_weight,
    n_iter,
    init,
    image_size,
    ftol,
    fix_shape,
    multi_start,
) -> FitResult:
    out_dtype = points.dtype if points.is_floating_point() else torch.float32
    dev = points.device
    dt = torch.float64
    idx = resolve_landmark_indices(model, landmarks).to(dev)
    bsz, nl, _ = points.shape
    if idx.numel() != nl:
        raise ValueError(
            f"points has {nl} landmarks per image but the landmark set has {idx.numel()}."
        )
    mean = model.mean.to(device=dev)
    basis = model.basis.to(device=dev)
    n_vert = mean.shape[0]
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_vert):
        raise ValueError(f"landmark indices must lie in [0, {n_vert}), got {idx.tolist()}.")
    k = basis.shape[2]
    lm_mean = mean[idx].to(dt)
    lm_basis = basis[idx].to(dt)

    q = points.to(dt)
    if visibility is None:
        w = torch.ones(bsz, nl, dtype=dt, device=dev)
    else:
        if tuple(visibility.shape) != (bsz, nl):
            raise ValueError(f"visibility must be ({bsz}, {nl}), got {_shape(visibility)}.")
        w = visibility.to(device=dev, dtype=dt)
        if bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise ValueError("visibility weights must be finite and >= 0.")
    finite = torch.isfinite(q).all(-1)
    w = torch.where(finite, w, torch.zeros_like(w))
    q = torch.where(finite[..., None], q, torch.zeros_like(q))
    n_vis = (w > 0).sum(1)
    usable = n_vis >= 2
    if not bool(usable.all()):
        bad = torch.nonzero(~usable).flatten().tolist()
        warnings.warn(
            f"images {bad} have fewer than 2 visible landmarks and are not fitted.", stacklevel=3
        )

    # Starting thetas: init, or the closed-form candidates (each image keeps the best fit).
    ws = torch.where(usable[:, None], w, torch.ones_like(w))
    sim = _init_similarity(lm_mean, q, ws)
    if init is not None:
        if tuple(init.shape) != (bsz, 6 + k):
            raise ValueError(f"init must be ({bsz}, {6 + k}), got {_shape(init)}.")
        starts = [init.to(device=dev, dtype=dt).clone()]
        s0 = torch.exp(starts[0][:, 5])
    else:
        zeros = torch.zeros(bsz, k, dtype=dt, device=dev)
        aff = _init_affine(lm_mean, q, ws)
        aff_ok = (n_vis >= 4) & torch.isfinite(aff).all(1)
        aff = torch.where(aff_ok[:, None], aff, sim)
        if multi_start:
            # The orthographic depth ambiguity: F R F (F = diag(1, 1, -1)) images a nearly
            # planar face almost like R, with yaw and pitch negated.
            flip = torch.tensor([1.0, 1.0, -1.0], dtype=dt, device=dev)
            rf = flip[:, None] * axis_angle_to_matrix(aff[:, :3]) * flip[None, :]
            aff_flip = _pose_theta(rf, aff[:, 5].exp(), lm_mean, q, ws)
            poses = [aff, aff_flip, sim]
        else:
            poses = [_better_start(aff, sim, lm_mean, lm_basis, q, ws)]
        starts = [torch.cat([p_, zeros], 1) for p_ in poses]
        s0 = torch.exp(sim[:, 5])
    # The landmark term's normalisation (pixels -> model mm), common to every start.
    s0 = torch.where(usable & torch.isfinite(s0) & (s0 > 0), s0, torch.ones_like(s0))
    fallback = torch.full((6 + k,), float("nan"), dtype=dt, device=dev)
    if image_size is not None:
        h, wd = image_size
        width = mean[:, 0].max().to(dt) - mean[:, 0].min().to(dt)
        fallback = torch.zeros(6 + k, dtype=dt, device=dev)
        fallback[3] = (wd - 1) / 2
        fallback[4] = (h - 1) / 2
        fallback[5] = math.log(0.8 * min(h, wd)) - torch.log(width.clamp_min(1e-6))

    n_s = len(starts)
    theta_in = torch.cat(starts, 0)
    good = usable.repeat(n_s) & torch.isfinite(theta_in).all(1)
    theta_in = torch.where(good[:, None], theta_in, torch.zeros_like(theta_in))
    qq = q.repeat(n_s, 1, 1)
    sqrt_w = (w.sqrt() / s0[:, None]).repeat(n_s, 1)
    problem = _LandmarkProblem(lm_mean, lm_basis, qq, sqrt_w, float(prior_weight))

    fixed = None
    if fix_shape:
        fixed = torch.zeros(6 + k, dtype=torch.bool, device=dev)
        fixed[6:] = True
    res = levenberg_marquardt(
        theta_in, problem, n_iter=n_iter, ftol=ftol, fixed=fixed, active=good, jacobian_rows=True
    )
    # Per image, the start that reached the lowest cost.
    final = torch.where(good, res.cost, torch.full_like(res.cost, float("inf")))
    pick = final.reshape(n_s, bsz).argmin(0) * bsz + torch.arange(bsz, device=dev)
    theta = torch.where(usable[:, None], res.x[pick], fallback)
    hist = res.history
    history = LMHistory(
        cost=hist.cost[:, pick],
        lam=hist.lam[:, pick],
        accepted=hist.accepted[:, pick],
        terms={name: v[:, pick] for name, v in hist.terms.items()},
    )
    p, _ = landmark_residuals(
        torch.where(usable[:, None], theta, torch.zeros_like(theta)),
        lm_mean,
        lm_basis,
        torch.zeros_like(q),
        torch.ones_like(w),
        0.0,
        jacobian=False,
    )
    fitted = p[:, : 2 * nl].reshape(bsz, nl, 2)
    fitted = torch.where(usable[:, None, None], fitted, torch.full_like(fitted, float("nan")))
    dist = (fitted - q).norm(dim=-1)
    err = (w * dist).sum(1) / w.sum(1).clamp_min(1e-30)
    err = torch.where(usable, err, torch.full_like(err, float("nan")))
    reasons = res.reasons()
    status = [
        reasons[i] if u else "skipped" for i, u in zip(pick.tolist(), usable.tolist(), strict=True)
    ]
    converged = res.converged[pick] & usable
    return FitResult(
        theta=theta.to(out_dtype),
        error_px=err.to(out_dtype),
        converged=converged,
        history=history,
        points=fitted.to(out_dtype),
        cost=torch.where(usable, res.cost[pick], torch.full_like(err, float("nan"))).to(out_dtype),
        n_iter=res.n_iter[pick],
        status=status,
    )


def _better_start(a: torch.Tensor, b: torch.Tensor, lm_mean, lm_basis, q, w) -> torch.Tensor:
    """Per image, the pose (B, 6) of a and b whose mean shape fits the landmarks better."""
    zeros = torch.zeros(q.shape[0], lm_basis.shape[2], dtype=q.dtype, device=q.device)
    costs = []
    for pose in (a, b):
        r, _ = landmark_residuals(
            torch.cat([pose, zeros], 1), lm_mean, lm_basis, q, w.sqrt(), 0.0, jacobian=False
        )
        c = (r * r).sum(1)
        costs.append(torch.where(torch.isfinite(c), c, torch.full_like(c, float("inf"))))
    return torch.where((costs[0] <= costs[1])[:, None], a, b)


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
