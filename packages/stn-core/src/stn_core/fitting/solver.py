"""A batched Levenberg-Marquardt solver for many small, independent least-squares problems.

Each image ``b`` of a batch has its own parameters ``x[b]`` (P,) and residuals ``r[b]`` (M,)
that depend on ``x[b]`` only; the solver minimises, per image,

    cost(x) = sum_m r_m(x)^2

(no factor 1/2) with damped Gauss-Newton steps: each iteration solves

    (J^T J + lambda_b * D) dx = -J^T r,   D = diag(J^T J)   (Marquardt's scaling)

and accepts the step for image b only if it lowers that image's cost. Damping is per image
(Nielsen's update from the gain ratio), so one hard image never slows the others; images stop
one by one and keep their parameters once converged. The Jacobian comes either from the
caller in closed form or from automatic differentiation (forward mode, one tangent per
parameter, batched with ``torch.func.vmap``; or reverse mode, one cotangent per residual).

The caller may also hand the normal equations directly (:class:`NormalEquations`), so that a
problem with very many residuals (a photometric fit) never materialises its Jacobian.

Active-set compaction: each iteration works only on the images still running. Their state
(x, ``J^T J``, ``J^T r``, damping, costs) is kept packed, in batch order; an image that stops
is written back into the batch's state and dropped from the pack, so late iterations with a
few slow images cost only those images (a batch's images typically stop after 4 to 20
iterations, its slowest start after 50). With ``jacobian_rows=True`` the Jacobian function is
called as ``jacobian_fn(x, rows)`` on the running images only (``rows`` their batch indices,
by which it selects its per-image data); without, it gets the whole batch as before and the
solver keeps the running rows of its answer. Results, status, iteration counts and history
are those of iterating every image alone: stopped images repeat their last values in the
history, as before.

Stopping, per image (the first that holds):
- ``"ftol"``: an accepted step lowered the cost by less than ``ftol`` relative to it;
- ``"xtol"``: a step taken with little damping (lambda <= 1) is below
  ``xtol * (|x| + xtol)`` in norm (a stationary point, also at round-off level for a problem
  fitted exactly);
- ``"atol"``: the cost is at most ``atol``;
- ``"stalled"`` (not converged): the damping reached ``lambda_max`` without progress;
- ``"max_iter"`` (not converged): ``n_iter`` iterations ran out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

__all__ = [
    "NormalEquations",
    "LMHistory",
    "LMResult",
    "levenberg_marquardt",
    "autodiff_jacobian",
    "huber_residuals",
    "STATUS_CODES",
    "torch_threads",
]


@contextmanager
def torch_threads(n: int | None, device: torch.device) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads when ``device`` is the CPU, restoring
    the setting afterwards; ``None`` (or another device) leaves it alone.

    The fits' matrices are small: extra threads mostly add synchronisation, and on a machine
    whose cores are busy with other work, much of it (``fit_landmarks`` defaults to 1).
    """
    old = torch.get_num_threads()
    scoped = n is not None and torch.device(device).type == "cpu" and int(n) != old
    if scoped:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if scoped:
            torch.set_num_threads(old)


# Per-image status codes (LMResult.status) and their names (LMResult.reasons()).
STATUS_CODES = {0: "running", 1: "ftol", 2: "xtol", 3: "atol", 4: "stalled", 5: "max_iter"}
_RUNNING, _FTOL, _XTOL, _ATOL, _STALLED, _MAXITER = range(6)


class NormalEquations(NamedTuple):
    """A linearisation handed to the solver instead of ``(r, J)``.

    cost: (B,) sum of squared residuals at x. jtj: (B, P, P) ``J^T J``. jtr: (B, P) ``J^T r``.
    terms: optional {name: (B,)} costs of named parts of the residual (recorded in the
    history; they should add up to ``cost``).
    """

    cost: torch.Tensor
    jtj: torch.Tensor
    jtr: torch.Tensor
    terms: Mapping[str, torch.Tensor] | None = None


# What a Jacobian callable returns: (r (B, M), J (B, M, P)) or NormalEquations.
Linearization = tuple[torch.Tensor, torch.Tensor] | NormalEquations


@dataclass
class LMHistory:
    """Per-iteration record. Row 0 is the start; row i the state after iteration i.

    cost: (T + 1, B). lam: (T + 1, B) damping used for the next step. accepted: (T, B) bool,
    whether iteration i moved that image (False once it has stopped). terms: {name: (T + 1,
    B)} costs of the named residual parts.
    """

    cost: torch.Tensor
    lam: torch.Tensor
    accepted: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class LMResult:
    """x: (B, P) the solution. cost: (B,) its cost. converged: (B,) bool. status: (B,) long
    (:data:`STATUS_CODES`). n_iter: (B,) iterations each image ran. history: :class:`LMHistory`.
    """

    x: torch.Tensor
    cost: torch.Tensor
    converged: torch.Tensor
    status: torch.Tensor
    n_iter: torch.Tensor
    history: LMHistory

    def reasons(self) -> list[str]:
        """The stopping reason of each image as a word (see the module docstring)."""
        return [STATUS_CODES[s] for s in self.status.tolist()]


def autodiff_jacobian(
    residual_fn: Callable[[torch.Tensor], torch.Tensor], mode: str = "forward"
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A ``jacobian_fn`` for :func:`levenberg_marquardt` by automatic differentiation.

    ``residual_fn`` maps x (B, P) to r (B, M), each row depending on its own row of x only,
    and must be traceable by ``torch.func`` (pure torch operations, no in-place writes to
    inputs, no ``.item()``). ``mode="forward"`` pushes P one-hot tangents (each the same
    one-hot for every image) through ``torch.func.jvp`` under ``vmap``: cheap when P is small
    and M large. ``mode="reverse"`` pulls M one-hot cotangents through ``torch.func.vjp``:
    cheap when M is small. Both give the exact Jacobian (B, M, P).
    """
    if mode not in ("forward", "reverse"):
        raise ValueError(f"mode must be 'forward' or 'reverse', got {mode!r}.")

    def jac_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, p = x.shape
        eye = torch.eye(p, dtype=x.dtype, device=x.device)
        tangents = eye[:, None, :].expand(p, b, p)

        def push(v):
            return torch.func.jvp(residual_fn, (x,), (v,))

        r, cols = torch.func.vmap(push, out_dims=(None, 0))(tangents)  # cols (P, B, M)
        return r, cols.permute(1, 2, 0)

    def jac_reverse(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r, pull = torch.func.vjp(residual_fn, x)
        b, m = r.shape
        eye = torch.eye(m, dtype=r.dtype, device=r.device)
        cotangents = eye[:, None, :].expand(m, b, m)
        (rows,) = torch.func.vmap(pull)(cotangents)  # (M, B, P)
        return r.detach(), rows.permute(1, 0, 2)

    return jac_forward if mode == "forward" else jac_reverse


def huber_residuals(r: torch.Tensor, delta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Square-rooted Huber residuals for a robust term in a least-squares solver.

    Returns ``(rt, d)`` with ``rt^2 = huber(r)`` (``r^2`` for ``|r| <= delta``, else
    ``2 delta |r| - delta^2``), the sign of r kept, and ``d = d rt / d r`` (1 inside, ``delta
    / |rt|`` outside), so that the robust term's Jacobian is ``d[..., None] * J``. Gauss-Newton
    on rt minimises the Huber cost exactly (its cost is what LM compares between steps, so
    the acceptance test stays consistent, unlike reweighting with weights frozen per step).
    """
    a = r.abs()
    inside = a <= delta
    big = (2.0 * delta * a - delta * delta).clamp_min(0).sqrt()
    rt = torch.where(inside, r, torch.sign(r) * big)
    d = torch.where(inside, torch.ones_like(r), delta / big.clamp_min(torch.finfo(r.dtype).tiny))
    return rt, d


def _normal_equations(
    lin: Linearization, terms: Mapping[str, slice | torch.Tensor] | None
) -> NormalEquations:
    if isinstance(lin, NormalEquations):
        return lin
    r, jac = lin
    if r.dim() != 2 or jac.dim() != 3 or jac.shape[:2] != r.shape:
        raise ValueError(
            f"the Jacobian function must return r (B, M) and J (B, M, P), got "
            f"{tuple(r.shape)} and {tuple(jac.shape)}."
        )
    cost = (r * r).sum(1)
    # A contiguous J^T: bmm on the strided transpose takes a slow (and, on a busy CPU, badly
    # contended multi-threaded) path in torch's CPU kernels.
    jac_t = jac.transpose(1, 2).contiguous()
    jtj = jac_t @ jac
    jtr = (jac_t @ r[:, :, None])[..., 0]
    named = None
    if terms:
        named = {k: (r[:, idx] ** 2).sum(1) for k, idx in terms.items()}
    return NormalEquations(cost, jtj, jtr, named)


def _select(lin: Linearization, rows: torch.Tensor) -> Linearization:
    """The rows ``rows`` of a whole-batch linearisation (R rows, in that order)."""
    if isinstance(lin, NormalEquations):
        return NormalEquations(
            lin.cost[rows],
            lin.jtj[rows],
            lin.jtr[rows],
            None if lin.terms is None else {k: v[rows] for k, v in lin.terms.items()},
        )
    r, jac = lin
    return r[rows], jac[rows]


def _damped_step(
    jtj: torch.Tensor, jtr: torch.Tensor, lam: torch.Tensor, free: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Levenberg-Marquardt step dx (R, P) and whether it could be computed (R,) bool.

    Jacobi-scaled damped system (unit diagonal, so float32 problems stay well posed):
    (S JtJ S + lam I) dS = -S g with S = D^-1/2, dx = S dS; fixed parameters get a decoupled
    unit row and a zero right-hand side, so their step is exactly zero.
    """
    dt = jtj.dtype
    freef = free.to(dt)
    diag = torch.diagonal(jtj, dim1=1, dim2=2)
    dmax = diag.amax(1, keepdim=True).clamp_min(torch.finfo(dt).tiny)
    d = torch.where(free, diag.clamp_min(dmax * torch.finfo(dt).eps), torch.ones_like(diag))
    sc = d.rsqrt() * freef
    a = jtj * (sc[:, :, None] * sc[:, None, :])
    a.diagonal(dim1=1, dim2=2).add_(lam[:, None] * freef + (1.0 - freef))
    g = jtr * sc
    chol, info = torch.linalg.cholesky_ex(a)
    step_s = torch.cholesky_solve(-g[:, :, None], chol)[..., 0]
    dx = step_s * sc
    ok = (info == 0) & torch.isfinite(dx).all(1)
    return torch.where(ok[:, None], dx, torch.zeros_like(dx)), ok


def levenberg_marquardt(
    x0: torch.Tensor,
    jacobian_fn: Callable[..., Linearization] | None = None,
    *,
    residual_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    autodiff: str = "forward",
    n_iter: int = 100,
    lambda0: float = 1e-3,
    lambda_min: float = 1e-12,
    lambda_max: float = 1e10,
    ftol: float | None = None,
    xtol: float | None = None,
    atol: float = 0.0,
    fixed: torch.Tensor | None = None,
    active: torch.Tensor | None = None,
    terms: Mapping[str, slice | torch.Tensor] | None = None,
    jacobian_rows: bool = False,
) -> LMResult:
    """Minimise ``sum(r(x)^2)`` per batch row by Levenberg-Marquardt.

    Args:
        x0: (B, P) float starting parameters (float64 recommended for small problems on CPU:
            the cost is the same and the steps are exact).
        jacobian_fn: x (B, P) -> ``(r (B, M), J (B, M, P))`` or :class:`NormalEquations`
            at x. Called once at x0 for the whole batch, then once per iteration at the trial
            points of the images still running (its linearisation is kept only where the step
            is accepted). If None, built from ``residual_fn`` by :func:`autodiff_jacobian`
            with ``mode=autodiff``. See ``jacobian_rows`` for its two signatures.
        residual_fn: x (B, P) -> r (B, M); only needed when ``jacobian_fn`` is None.
        n_iter: maximum number of iterations.
        lambda0: initial damping, relative to diag(J^T J).
        lambda_min, lambda_max: damping bounds; reaching lambda_max stops an image ("stalled").
        ftol: stop when an accepted step lowers the cost by less than ``ftol * cost``
            (default: 1e-8, at least 64 machine epsilons of x's dtype, i.e. 7.6e-6 in float32).
        xtol: stop when a lightly damped step is below ``xtol * (|x| + xtol)`` (default:
            1e-10, at least 64 machine epsilons).
        atol: stop when the cost is at most ``atol`` (0: only an exact fit).
        fixed: optional (P,) or (B, P) bool, parameters held at their starting value.
        active: optional (B,) bool, images to optimise (the others keep x0, status "atol"
            is not set: they report status "running" -> not converged).
        terms: optional {name: slice or index tensor into the residual's M axis}: their costs
            are recorded per iteration in ``history.terms`` (ignored when the Jacobian
            function returns :class:`NormalEquations`, which carries its own).
        jacobian_rows: False (default): ``jacobian_fn(x)`` takes the whole batch x (B, P)
            every iteration, the images that have stopped at their final x, and the solver
            keeps the rows of the images still running. True: ``jacobian_fn(x, rows)`` takes
            only the images being evaluated: ``rows`` (R,) int64, increasing batch indices,
            and x (R, P) their parameters; it returns their linearisation (R rows, in the
            order of ``rows``), so that a fit whose images stop at very different iterations
            costs what its images' iterations cost (the per-image data are indexed by
            ``rows`` inside the function).

    Returns:
        :class:`LMResult`. Each accepted step lowers its image's cost (never increases it),
        so ``history.cost`` is non-increasing along each column.
    """
    if x0.dim() != 2:
        raise ValueError(f"x0 must be (B, P), got {tuple(x0.shape)}.")
    if not x0.is_floating_point():
        raise ValueError(f"x0 must be floating point, got {x0.dtype}.")
    if jacobian_fn is None:
        if residual_fn is None:
            raise ValueError("pass jacobian_fn, or residual_fn for automatic differentiation.")
        jacobian_fn = autodiff_jacobian(residual_fn, autodiff)
        jacobian_rows = False
    b, p = x0.shape
    dev, dt = x0.device, x0.dtype
    eps = torch.finfo(dt).eps
    tiny = torch.finfo(dt).tiny
    ftol = max(1e-8, 64 * eps) if ftol is None else float(ftol)
    xtol = max(1e-10, 64 * eps) if xtol is None else float(xtol)

    free = torch.ones(b, p, dtype=torch.bool, device=dev)
    if fixed is not None:
        free = free & ~fixed.to(device=dev, dtype=torch.bool).expand(b, p)
    running = torch.ones(b, dtype=torch.bool, device=dev)
    if active is not None:
        running = running & active.to(device=dev, dtype=torch.bool)
    status = torch.zeros(b, dtype=torch.long, device=dev)
    iters = torch.zeros(b, dtype=torch.long, device=dev)

    # The whole batch's state: what the result and the history report.
    x = x0.detach().clone()
    all_rows = torch.arange(b, device=dev)
    lin0 = jacobian_fn(x, all_rows) if jacobian_rows else jacobian_fn(x)
    ne = _normal_equations(lin0, terms)
    cost, jtj, jtr = ne.cost.detach().clone(), ne.jtj.detach(), ne.jtr.detach()
    tcost = {k: v.detach().clone() for k, v in (ne.terms or {}).items()}
    bad0 = ~torch.isfinite(cost)
    running = running & ~bad0

    lam = torch.full((b,), float(lambda0), dtype=dt, device=dev)

    started = running.clone()
    done_atol = running & (cost <= atol)
    status[done_atol] = _ATOL
    running = running & ~done_atol

    h_cost, h_lam, h_acc = [cost.clone()], [lam.clone()], []
    h_terms = {k: [v.clone()] for k, v in tcost.items()}

    # Active-set compaction: the iterations work on the running images only ("_r": their
    # rows, in the order of ``rows``); an image that stops is written back to the batch's
    # state and dropped, so the late iterations of a few slow images cost only theirs.
    rows = torch.nonzero(running).flatten()
    x_r, cost_r, lam_r = x[rows], cost[rows], lam[rows]
    jtj_r, jtr_r, free_r = jtj[rows], jtr[rows], free[rows]
    tcost_r = {k: v[rows] for k, v in tcost.items()}
    nu_r = torch.full_like(cost_r, 2.0)
    del jtj, jtr

    for _ in range(n_iter):
        if rows.numel() == 0:
            break
        dx, ok = _damped_step(jtj_r, jtr_r, lam_r, free_r)

        # Predicted decrease of the linear model: -(2 g.dx + dx' JtJ dx) > 0 for a descent step.
        jdx = (jtj_r @ dx[:, :, None])[..., 0]
        pred = -(2.0 * (jtr_r * dx).sum(1) + (dx * jdx).sum(1))

        xn = x_r + dx
        if jacobian_rows:
            ne_n = _normal_equations(jacobian_fn(xn, rows), terms)
        else:
            whole = rows.numel() == b
            lin = jacobian_fn(xn if whole else x.index_copy(0, rows, xn))
            ne_n = _normal_equations(lin if whole else _select(lin, rows), terms)
        cost_n = torch.where(
            torch.isfinite(ne_n.cost), ne_n.cost.detach(), torch.full_like(cost_r, float("inf"))
        )
        accept = ok & (cost_n < cost_r)

        # Convergence tests (on the state before the update).
        rel_dec = (cost_r - cost_n) / cost_r.clamp_min(tiny)
        small_step = (dx.norm(dim=1) <= xtol * (x_r.norm(dim=1) + xtol)) & ok & (lam_r <= 1.0)
        conv_f = accept & (rel_dec < ftol)
        conv_x = small_step & ~conv_f

        # Update the accepted images.
        cost_old = cost_r
        acc2 = accept[:, None]
        x_r = torch.where(acc2, xn, x_r)
        cost_r = torch.where(accept, cost_n, cost_r)
        jtj_r = torch.where(acc2[:, :, None], ne_n.jtj.detach(), jtj_r)
        jtr_r = torch.where(acc2, ne_n.jtr.detach(), jtr_r)
        for k in tcost_r:
            tcost_r[k] = torch.where(accept, ne_n.terms[k].detach(), tcost_r[k])

        # Nielsen's damping update from the gain ratio.
        rho = torch.where(
            pred > 0, (cost_old - cost_n) / pred.clamp_min(tiny), torch.zeros_like(cost_r)
        )
        shrink = torch.clamp(1.0 - (2.0 * rho - 1.0) ** 3, min=1.0 / 3.0)
        lam_acc = torch.clamp(lam_r * shrink, lambda_min, lambda_max)
        lam_r = torch.where(accept, lam_acc, lam_r * nu_r)
        nu_r = torch.where(accept, torch.full_like(nu_r, 2.0), nu_r * 2.0)

        conv_a = (cost_r <= atol) & ~conv_f & ~conv_x
        stalled = ~accept & (lam_r >= lambda_max) & ~conv_x
        status_r = torch.zeros_like(rows)
        status_r = torch.where(conv_f, torch.full_like(status_r, _FTOL), status_r)
        status_r = torch.where(conv_x, torch.full_like(status_r, _XTOL), status_r)
        status_r = torch.where(conv_a, torch.full_like(status_r, _ATOL), status_r)
        status_r = torch.where(stalled, torch.full_like(status_r, _STALLED), status_r)

        # Back into the batch's state; stopped images keep (repeat) their last values.
        x.index_copy_(0, rows, x_r)
        cost.index_copy_(0, rows, cost_r)
        lam.index_copy_(0, rows, lam_r)
        status.index_copy_(0, rows, status_r)
        iters.index_add_(0, rows, torch.ones_like(rows))
        for k in tcost:
            tcost[k].index_copy_(0, rows, tcost_r[k])
        h_acc.append(torch.zeros(b, dtype=torch.bool, device=dev).index_copy_(0, rows, accept))
        h_cost.append(cost.clone())
        h_lam.append(lam.clone())
        for k in tcost:
            h_terms[k].append(tcost[k].clone())

        keep = status_r == _RUNNING
        if not bool(keep.all()):
            rows, x_r, cost_r, lam_r, nu_r = (
                rows[keep],
                x_r[keep],
                cost_r[keep],
                lam_r[keep],
                nu_r[keep],
            )
            jtj_r, jtr_r, free_r = jtj_r[keep], jtr_r[keep], free_r[keep]
            tcost_r = {k: v[keep] for k, v in tcost_r.items()}

    # Images still running when the iterations ran out.
    status[rows] = _MAXITER
    # Images excluded from the start (active False or a non-finite starting cost) stay
    # "running" (0): not converged.
    status = torch.where(started, status, torch.zeros_like(status))
    converged = (status == _FTOL) | (status == _XTOL) | (status == _ATOL)
    history = LMHistory(
        cost=torch.stack(h_cost),
        lam=torch.stack(h_lam),
        accepted=torch.stack(h_acc) if h_acc else torch.zeros(0, b, dtype=torch.bool, device=dev),
        terms={k: torch.stack(v) for k, v in h_terms.items()},
    )
    return LMResult(
        x=x, cost=cost, converged=converged, status=status, n_iter=iters, history=history
    )
