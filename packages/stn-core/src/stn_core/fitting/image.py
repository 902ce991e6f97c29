"""Fitting the morphable model to images by inverse rendering: shape, expression, albedo and
spherical-harmonics lighting by batched Levenberg-Marquardt with exact Jacobians.

The cost (landmarks, a robust photometric term on the image sampled at the projected grid
vertices, and the priors), its weights (:class:`~stn_core.fitting.image_problem.FitWeights`)
and its closed-form Jacobian are defined in :mod:`stn_core.fitting.image_problem`; this module
holds the schedule (:class:`FitStage`), the result (:class:`ImageFitResult`) and the driver
:func:`fit_image`.

Coarse to fine (``stages``): the landmarks first (:func:`stn_core.fitting.fit_landmarks`:
pose, identity and expression), then the lighting in closed form and LM on albedo and
lighting with the geometry held, then everything; each photometric stage may use every
``stride``-th grid row and column (coarse) before the full grid (fine). Each LM stage stops
per image on a relative cost decrease below ``ftol``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from stn_core.fitting.image_problem import TERMS, FitWeights, ImageFitProblem
from stn_core.fitting.landmarks import fit_landmarks, resolve_landmark_indices
from stn_core.fitting.solver import LMHistory, levenberg_marquardt, torch_threads
from stn_core.sampler.bilinear import sample_with_gradient

__all__ = ["FitStage", "DEFAULT_STAGES", "ImageFitResult", "fit_image"]


@dataclass(frozen=True)
class FitStage:
    """One photometric LM stage.

    name: a label for the history. free: ``"appearance"`` (albedo and lighting, geometry
    held) or ``"all"``. stride: fit every stride-th grid row and column (1: the full grid).
    n_iter: maximum iterations. ftol: relative cost decrease below which an image stops.
    """

    name: str
    free: str = "all"
    stride: int = 1
    n_iter: int = 20
    ftol: float = 1e-4

    def __post_init__(self):
        if self.free not in ("appearance", "all"):
            raise ValueError(f"FitStage.free must be 'appearance' or 'all', got {self.free!r}.")
        if int(self.stride) < 1 or int(self.n_iter) < 0:
            raise ValueError("FitStage.stride must be >= 1 and n_iter >= 0.")


# Landmarks (fit_landmarks) come first and are not listed. The coarse stages run on a quarter
# of the grid vertices (every other row and column), which carries the same information at a
# quarter of the cost for a face a few hundred pixels wide; the last stage refines on all.
DEFAULT_STAGES = (
    FitStage("appearance", free="appearance", stride=2, n_iter=5, ftol=1e-3),
    FitStage("coarse", free="all", stride=2, n_iter=20, ftol=1e-3),
    FitStage("fine", free="all", stride=1, n_iter=10, ftol=1e-4),
)


@dataclass
class ImageFitResult:
    """What :func:`fit_image` returns (B images, K = K_id + K_exp shape components, Kc colour
    components, N grid vertices, L landmarks). Tensors are in the images' dtype and device.

    theta: (B, 6 + K) ``[r, t, log_s, alpha]`` (docs/conventions.md).
    beta: (B, Kc) albedo coefficients of the colour model (unit variance).
    sh: (B, 9, 3) spherical-harmonics lighting per colour channel (:mod:`stn_core.shading`).
    albedo: (B, N, 3) per-vertex albedo ``color_mean + color_basis @ beta`` (the model's mean
        colour, or 0.7 grey without a colour model).
    shading: (B, N, 3) per-vertex shading ``sh_basis(normal) @ sh`` of the fitted pose.
    visible: (B, N) bool: the vertices the final photometric term used (inside, facing the
        camera, in the image).
    landmarks: (B, L, 2) the fitted landmark positions, pixels.
    landmark_error_px: (B,) visibility-weighted mean distance to the observed landmarks.
    photometric_rms: (B,) RMS over the visible vertices and channels of the colour residual
        e (NaN for a landmark-only fit).
    converged: (B,) bool, the last stage's convergence flag (False for a skipped image).
    status: B strings: why the last stage stopped (:data:`~stn_core.fitting.solver.
        STATUS_CODES`) or ``"skipped"`` (fewer than 2 visible landmarks).
    usable: (B,) bool: the image had at least 2 visible landmarks and was fitted.
    n_iter: (B,) LM iterations, summed over all stages.
    history: {stage name: LMHistory}, in stage order; ``"landmarks"`` is fit_landmarks' own
        (its terms "landmarks" and "prior"), the photometric stages carry the terms of
        :data:`~stn_core.fitting.image_problem.TERMS`.
    n_identity: K_id (the first K_id alphas are identity, the rest expression).
    """

    theta: torch.Tensor
    beta: torch.Tensor
    sh: torch.Tensor
    albedo: torch.Tensor
    shading: torch.Tensor
    visible: torch.Tensor
    landmarks: torch.Tensor
    landmark_error_px: torch.Tensor
    photometric_rms: torch.Tensor
    converged: torch.Tensor
    status: list[str]
    usable: torch.Tensor
    n_iter: torch.Tensor
    history: dict[str, LMHistory] = field(default_factory=dict)
    n_identity: int = 0

    @property
    def identity(self) -> torch.Tensor:
        """(B, K_id) identity coefficients."""
        return self.theta[:, 6 : 6 + self.n_identity]

    @property
    def expression(self) -> torch.Tensor:
        """(B, K_exp) expression coefficients."""
        return self.theta[:, 6 + self.n_identity :]

    @property
    def colors(self) -> torch.Tensor:
        """(B, N, 3) the fitted model colour ``albedo * shading`` (not clamped)."""
        return self.albedo * self.shading

    def cost_history(self) -> tuple[list[str], dict[str, torch.Tensor]]:
        """The cost per iteration over all stages, for plots and reports.

        Returns ``(stage, costs)``: ``stage`` names the stage of each row; ``costs`` maps
        ``"total"`` and every term name to a (T, B) tensor (NaN where a stage lacks the
        term: the landmark stage reports ``"landmarks"`` and ``"prior"`` only). Row 0 of
        each stage is its starting cost.
        """
        stage: list[str] = []
        rows: dict[str, list[torch.Tensor]] = {"total": []}
        names = ["landmarks", "prior", *TERMS[1:]]
        for n in names:
            rows[n] = []
        for name, h in self.history.items():
            t = h.cost.shape[0]
            stage += [name] * t
            rows["total"].append(h.cost)
            for n in names:
                v = h.terms.get(n)
                rows[n].append(v if v is not None else torch.full_like(h.cost, math.nan))
        out = {k: torch.cat(v, 0) if v else torch.zeros(0) for k, v in rows.items()}
        out = {k: v for k, v in out.items() if k == "total" or not bool(torch.isnan(v).all())}
        return stage, out


def fit_image(
    model,
    images: torch.Tensor,
    landmarks: torch.Tensor,
    landmark_visibility: torch.Tensor | None = None,
    landmark_set: str | torch.Tensor = "aflw21",
    *,
    weights: FitWeights | None = None,
    stages: tuple[FitStage, ...] | None = None,
    landmarks_only: bool = False,
    landmark_iter: int = 50,
    visibility: str = "normals",
    init_theta: torch.Tensor | None = None,
    chunk_elements: int | None = None,
    cpu_threads: int | None = None,
) -> ImageFitResult:
    """Fit pose, identity, expression, albedo and SH lighting to images (inverse rendering).

    Args:
        model: a :class:`~stn_core.grid_model.UVGridModel` with a colour model (landmark-only
            fits work without one).
        images: (B, 3, H, W) float32 or float64, RGB in [0, 1], on the device to fit on.
        landmarks: (B, L, 2) observed landmarks in pixels (x right, y down, (0, 0) the centre
            of the top-left pixel). Non-finite points count as invisible.
        landmark_visibility: (B, L) weights (bool or float, 0 = invisible) or None.
        landmark_set: the model's landmark set name, or (L,) grid vertex indices.
        weights: :class:`FitWeights` (None: the documented defaults).
        stages: the photometric stages after the landmark fit (None: :data:`DEFAULT_STAGES`).
        landmarks_only: stop after the landmark fit (pose, identity and expression by
            :func:`~stn_core.fitting.fit_landmarks` with prior weight ``weights.identity``);
            the lighting is then the closed-form least-squares SH of the mean albedo (ambient
            1 without a colour model).
        landmark_iter: maximum iterations of the landmark fit.
        visibility: ``"normals"`` (facing the camera) or ``"depth"`` (and not occluded).
        init_theta: optional (B, 6 + K) start for the landmark fit.
        chunk_elements: bound on the Jacobian elements held at once (None: 2^24 on the CPU,
            2^28 on a GPU).
        cpu_threads: torch intra-op threads while fitting on the CPU (restored afterwards);
            None leaves torch's setting. On a machine shared with other busy processes use 1:
            with more threads than free cores, every parallel operation waits for a
            descheduled thread (measured: 2 threads 4-6x slower than 1 on 2 busy cores).

    Returns:
        :class:`ImageFitResult`. Images with fewer than 2 visible landmarks are not fitted
        (``usable`` False, status ``"skipped"``, the frontal mean face centred in the image).
    """
    weights = FitWeights() if weights is None else weights
    stages = DEFAULT_STAGES if stages is None else tuple(stages)
    _check_inputs(model, images, landmarks, landmark_visibility, visibility, landmarks_only)
    with torch_threads(cpu_threads, images.device):
        return _fit_image(
            model,
            images,
            landmarks,
            landmark_visibility,
            landmark_set,
            weights,
            stages,
            landmarks_only,
            landmark_iter,
            visibility,
            init_theta,
            chunk_elements,
        )


def _fit_image(
    model,
    images,
    landmarks,
    landmark_visibility,
    landmark_set,
    weights,
    stages,
    landmarks_only,
    landmark_iter,
    visibility,
    init_theta,
    chunk_elements,
) -> ImageFitResult:
    dt, dev = images.dtype, images.device
    bsz, _, h, w = images.shape
    idx = resolve_landmark_indices(model, landmark_set).to(dev)
    if model.device != dev:
        model = model.to(dev)
    q = landmarks.to(device=dev, dtype=dt)
    if landmark_visibility is None:
        lw = torch.ones(q.shape[:2], dtype=dt, device=dev)
    else:
        lw = landmark_visibility.to(device=dev, dtype=dt)
    finite = torch.isfinite(q).all(-1)
    lw = torch.where(finite, lw, torch.zeros_like(lw))
    q = torch.where(finite[..., None], q, torch.zeros_like(q))

    with torch.no_grad():
        lm = fit_landmarks(
            model,
            q,
            lw,
            idx,
            prior_weight=weights.identity,
            n_iter=landmark_iter,
            init=init_theta,
            image_size=(h, w),
        )
        usable = (lw > 0).sum(1) >= 2
        theta = lm.theta.to(dt)
        s0 = torch.exp(theta[:, 5]).clamp_min(1e-12)
        problem = ImageFitProblem(
            model, images, q, lw, idx, s0, weights, visibility, chunk_elements
        )
        beta = torch.zeros(bsz, problem.kc, dtype=dt, device=dev)
        sh = _initial_sh(problem, theta, beta, usable)
        x = problem.pack(theta, beta, sh).to(torch.float64)
        history = {"landmarks": lm.history}
        status = list(lm.status)
        converged = lm.converged.clone()
        n_iter = lm.n_iter.clone()
        fitted_photo = False
        if not landmarks_only:
            for stage in stages:
                if stage.n_iter == 0:
                    continue
                problem.set_vertices(stage.stride)
                fixed = None
                if stage.free == "appearance":
                    fixed = torch.zeros(problem.p, dtype=torch.bool, device=dev)
                    fixed[: 6 + problem.k] = True

                def lin(xx, _free=stage.free):
                    return problem.normal_equations(xx, _free)

                res = levenberg_marquardt(
                    x, lin, n_iter=stage.n_iter, ftol=stage.ftol, fixed=fixed, active=usable
                )
                x = res.x
                history[stage.name] = res.history
                reasons = res.reasons()
                status = [reasons[i] if bool(usable[i]) else "skipped" for i in range(bsz)]
                converged = res.converged & usable
                n_iter = n_iter + res.n_iter
                fitted_photo = True
        theta, beta, sh = problem.split(x.to(dt))
        problem.set_vertices(1)
        geo = problem.geometry(theta, jacobian=False)
        vis = problem.visible(geo)
        alb, _, shading = problem.appearance(beta, sh, geo["normals"])
        if fitted_photo:
            val, _ = sample_with_gradient(images, geo["points"])
            e = (val.transpose(1, 2) - alb * shading) * vis[..., None]
            rms = ((e * e).sum((1, 2)) / (3 * vis.sum(1)).clamp_min(1)).sqrt()
        else:
            rms = torch.full((bsz,), math.nan, dtype=dt, device=dev)
        pts = geo["points"][:, idx]
        dist = (pts - q).norm(dim=-1)
        err = (lw * dist).sum(1) / lw.sum(1).clamp_min(1e-30)
        nan = torch.full_like(err, math.nan)
        return ImageFitResult(
            theta=theta,
            beta=beta,
            sh=sh,
            albedo=alb,
            shading=shading,
            visible=vis,
            landmarks=pts,
            landmark_error_px=torch.where(usable, err, nan),
            photometric_rms=torch.where(usable, rms, nan),
            converged=converged & usable,
            status=[
                s if bool(u) else "skipped" for s, u in zip(status, usable.tolist(), strict=True)
            ],
            usable=usable,
            n_iter=n_iter,
            history=history,
            n_identity=model.n_identity,
        )


def _initial_sh(problem: ImageFitProblem, theta, beta, usable) -> torch.Tensor:
    """Closed-form lighting: per channel, the least-squares SH coefficients that best explain
    the sampled colours as albedo times shading over the visible vertices (ridge 1e-6 relative
    to the trace keeps it solvable for any view). Ambient 1 where nothing is visible."""
    bsz = theta.shape[0]
    dt, dev = problem.dtype, problem.device
    ambient = torch.zeros(bsz, 9, 3, dtype=dt, device=dev)
    ambient[:, 0, :] = 1.0
    if not problem.has_color:
        return ambient
    geo = problem.geometry(theta, jacobian=False)
    vis = problem.visible(geo) & usable[:, None]
    alb, ysh, _ = problem.appearance(beta, ambient, geo["normals"])
    val, _ = sample_with_gradient(problem.images, geo["points"])
    val = val.transpose(1, 2)  # (B, N, 3)
    wv = vis.to(dt)
    out = ambient.clone()
    for c in range(3):
        a = ysh * alb[..., c, None] * wv[..., None]  # (B, N, 9)
        ata = a.transpose(1, 2) @ a
        atb = (a.transpose(1, 2) @ (val[..., c] * wv)[..., None])[..., 0]
        ridge = 1e-6 * torch.diagonal(ata, dim1=1, dim2=2).sum(-1).clamp_min(1e-12)
        sol = torch.linalg.solve(
            ata + ridge[:, None, None] * torch.eye(9, dtype=dt, device=dev), atb
        )
        ok = (vis.sum(1) >= 9) & torch.isfinite(sol).all(1)
        out[:, :, c] = torch.where(ok[:, None], sol, ambient[:, :, c])
    return out


def _check_inputs(model, images, landmarks, vis, visibility, landmarks_only) -> None:
    if not (isinstance(images, torch.Tensor) and images.dim() == 4 and images.shape[1] == 3):
        raise ValueError(
            f"images must be a (B, 3, H, W) tensor, got {tuple(getattr(images, 'shape', ()))}."
        )
    if images.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"images must be float32 or float64 in [0, 1], got {images.dtype}.")
    b = images.shape[0]
    if not (
        isinstance(landmarks, torch.Tensor)
        and landmarks.dim() == 3
        and landmarks.shape[0] == b
        and landmarks.shape[2] == 2
    ):
        raise ValueError(
            f"landmarks must be a ({b}, L, 2) tensor of pixels, got "
            f"{tuple(getattr(landmarks, 'shape', ()))}."
        )
    if vis is not None and tuple(vis.shape) != tuple(landmarks.shape[:2]):
        raise ValueError(
            f"landmark_visibility must be {tuple(landmarks.shape[:2])}, got {tuple(vis.shape)}."
        )
    if visibility not in ("normals", "depth"):
        raise ValueError(f"visibility must be 'normals' or 'depth', got {visibility!r}.")
    if not landmarks_only and not model.has_color:
        raise ValueError(
            "the model has no colour model, so only a landmark fit is possible; "
            "pass landmarks_only=True or a grid model built with colour."
        )
