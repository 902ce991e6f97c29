"""The batched Levenberg-Marquardt solver on problems with known solutions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stn_core.fitting import (
    STATUS_CODES,
    NormalEquations,
    autodiff_jacobian,
    huber_residuals,
    levenberg_marquardt,
)
from stn_core.fitting.solver import torch_threads

from tests.tolerances import LM_CONVERGED, TOL

RTOL64, ATOL64 = TOL[np.float64]
EXACT64 = LM_CONVERGED[np.float64]  # a solution against the known minimum
EXACT32 = LM_CONVERGED[np.float32]
# torch.func's first use scripts a helper with the deprecated torch.jit.script (torch's own).
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)
T = torch.linspace(0.0, 2.0, 25, dtype=torch.float64)


def exp_residual(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """r = a exp(b t) + c - y for x = (a, b, c); y (B, 25)."""
    a, b, c = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return a * torch.exp(b * T) + c - y


def exp_jacobian(y: torch.Tensor):
    def lin(x):
        a, b = x[:, 0:1], x[:, 1:2]
        e = torch.exp(b * T)
        r = a * e + x[:, 2:3] - y
        jac = torch.stack([e, a * T * e, torch.ones_like(e)], -1)
        return r, jac

    return lin


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([10.0 * (x[:, 1] - x[:, 0] ** 2), 1.0 - x[:, 0]], 1)


def make_exp_problem(b: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.stack(
        [
            torch.rand(b, generator=g, dtype=torch.float64) * 2 + 0.5,
            torch.rand(b, generator=g, dtype=torch.float64) * 1.5 - 0.75,
            torch.rand(b, generator=g, dtype=torch.float64) * 2 - 1,
        ],
        1,
    )
    y = exp_residual(truth, torch.zeros(b, 25, dtype=torch.float64))
    x0 = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64).expand(b, 3).clone()
    return truth, y, x0


def test_exact_recovery_closed_form_jacobian():
    truth, y, x0 = make_exp_problem()
    res = levenberg_marquardt(x0, exp_jacobian(y), n_iter=200)
    assert res.converged.all(), res.reasons()
    torch.testing.assert_close(res.x, truth, rtol=EXACT64, atol=EXACT64)
    assert (res.cost.sqrt() < EXACT64).all()  # the residual vector's norm


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_autodiff_matches_closed_form(mode):
    truth, y, x0 = make_exp_problem(seed=1)
    jac = autodiff_jacobian(lambda x: exp_residual(x, y), mode)
    xs = x0 + 0.3 * torch.randn_like(x0)
    r_ad, j_ad = jac(xs)
    r_cf, j_cf = exp_jacobian(y)(xs)
    torch.testing.assert_close(r_ad, r_cf, rtol=RTOL64, atol=ATOL64)
    torch.testing.assert_close(j_ad, j_cf, rtol=RTOL64, atol=ATOL64)
    res = levenberg_marquardt(
        x0, residual_fn=lambda x: exp_residual(x, y), autodiff=mode, n_iter=200
    )
    assert res.converged.all()
    torch.testing.assert_close(res.x, truth, rtol=EXACT64, atol=EXACT64)


def test_rosenbrock_from_classic_starts():
    x0 = torch.tensor([[-1.2, 1.0], [2.0, -2.0], [0.0, 0.0], [-3.0, 5.0]], dtype=torch.float64)
    res = levenberg_marquardt(x0, residual_fn=rosenbrock, n_iter=500)
    assert res.converged.all(), res.reasons()
    torch.testing.assert_close(res.x, torch.ones_like(x0), rtol=EXACT64, atol=EXACT64)


def test_cost_never_increases_and_accepted_steps_decrease():
    x0 = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 3
    res = levenberg_marquardt(x0, residual_fn=rosenbrock, n_iter=300)
    cost = res.history.cost
    assert cost.shape == (res.history.accepted.shape[0] + 1, 16)
    assert (cost[1:] <= cost[:-1]).all()
    acc = res.history.accepted
    assert (cost[1:][acc] < cost[:-1][acc]).all()
    assert (cost[1:][~acc] == cost[:-1][~acc]).all()
    # Some steps were rejected on this problem (the damping had to work).
    assert (~acc).any()
    torch.testing.assert_close(res.cost, cost[-1])


def test_least_squares_with_noise_matches_normal_equations_of_linear_model():
    # A linear problem r = A x - y: LM must land on the least-squares solution.
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3, 30, 4, dtype=torch.float64, generator=g)
    y = torch.randn(3, 30, dtype=torch.float64, generator=g)
    res = levenberg_marquardt(
        torch.zeros(3, 4, dtype=torch.float64),
        lambda x: ((a @ x[:, :, None])[..., 0] - y, a),
    )
    expect = torch.linalg.lstsq(a, y[:, :, None]).solution[..., 0]
    assert res.converged.all()
    torch.testing.assert_close(res.x, expect, rtol=EXACT64, atol=EXACT64)


def test_convergence_flags_and_status():
    x0 = torch.tensor([[-1.2, 1.0], [-1.2, 1.0], [1.0, 1.0], [-1.2, 1.0]], dtype=torch.float64)
    active = torch.tensor([True, True, True, False])
    res = levenberg_marquardt(x0, residual_fn=rosenbrock, n_iter=2, active=active)
    reasons = res.reasons()
    assert reasons[0] == reasons[1] == "max_iter"
    assert not res.converged[:2].any()
    assert reasons[2] == "atol" and res.converged[2]  # starts at the exact solution
    assert reasons[3] == "running" and not res.converged[3]  # inactive: untouched
    torch.testing.assert_close(res.x[3], x0[3], rtol=0, atol=0)
    assert set(STATUS_CODES.values()) >= set(reasons)
    full = levenberg_marquardt(x0, residual_fn=rosenbrock, n_iter=500)
    assert full.converged.all()
    assert (full.n_iter[:2] > 2).all() and full.n_iter[2] == 0


def test_non_finite_start_is_not_converged_and_does_not_spoil_others():
    x0 = torch.tensor([[-1.2, 1.0], [float("nan"), 1.0]], dtype=torch.float64)
    res = levenberg_marquardt(x0, residual_fn=rosenbrock, n_iter=200)
    assert res.converged.tolist() == [True, False]
    torch.testing.assert_close(res.x[0], torch.ones(2, dtype=torch.float64))


def test_fixed_parameters_stay_put():
    truth, y, x0 = make_exp_problem(seed=5)
    x0 = x0.clone()
    x0[:, 2] = truth[:, 2]  # c known: fix it, the rest must still be found
    fixed = torch.tensor([False, False, True])
    res = levenberg_marquardt(x0, exp_jacobian(y), n_iter=200, fixed=fixed)
    assert (res.x[:, 2] == x0[:, 2]).all()
    torch.testing.assert_close(res.x, truth, rtol=EXACT64, atol=EXACT64)


def test_normal_equations_input_gives_the_same_path():
    truth, y, x0 = make_exp_problem(seed=6)
    lin = exp_jacobian(y)

    def lin_ne(x):
        r, jac = lin(x)
        return NormalEquations(
            (r * r).sum(1),
            jac.transpose(1, 2) @ jac,
            (jac.transpose(1, 2) @ r[..., None])[..., 0],
            {"all": (r * r).sum(1)},
        )

    a = levenberg_marquardt(x0, lin, n_iter=100, terms={"all": slice(None)})
    b = levenberg_marquardt(x0, lin_ne, n_iter=100)
    torch.testing.assert_close(a.x, b.x, rtol=RTOL64, atol=ATOL64)
    torch.testing.assert_close(a.history.cost, b.history.cost, rtol=RTOL64, atol=ATOL64)
    torch.testing.assert_close(a.history.terms["all"], a.history.cost, rtol=0, atol=0)
    torch.testing.assert_close(b.history.terms["all"], b.history.cost, rtol=0, atol=0)


def test_named_terms_add_up_to_the_cost():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(2, 10, 3, dtype=torch.float64, generator=g)
    y = torch.randn(2, 10, dtype=torch.float64, generator=g)

    def lin(x):  # data term plus a ridge prior of weight 0.5
        r = torch.cat([(a @ x[..., None])[..., 0] - y, 0.5**0.5 * x], 1)
        jac = torch.cat([a, 0.5**0.5 * torch.eye(3, dtype=x.dtype).expand(2, 3, 3)], 1)
        return r, jac

    res = levenberg_marquardt(
        torch.zeros(2, 3, dtype=torch.float64),
        lin,
        terms={"data": slice(0, 10), "prior": slice(10, 13)},
    )
    h = res.history
    torch.testing.assert_close(h.terms["data"] + h.terms["prior"], h.cost, rtol=RTOL64, atol=ATOL64)


def test_batch_equals_single_problems():
    x0 = torch.tensor([[-1.2, 1.0], [2.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    batch = levenberg_marquardt(x0, residual_fn=rosenbrock, n_iter=300)
    for i in range(3):
        one = levenberg_marquardt(x0[i : i + 1], residual_fn=rosenbrock, n_iter=300)
        torch.testing.assert_close(one.x[0], batch.x[i], rtol=RTOL64, atol=ATOL64)
        assert int(one.n_iter[0]) == int(batch.n_iter[i])
        n = int(one.n_iter[0])
        torch.testing.assert_close(
            one.history.cost[: n + 1, 0], batch.history.cost[: n + 1, i], rtol=RTOL64, atol=ATOL64
        )


def test_float32_problem_converges():
    truth, y, x0 = make_exp_problem(seed=8)
    lin64 = exp_jacobian(y)

    def lin32(x):
        r, jac = lin64(x.double())
        return r.float(), jac.float()

    res = levenberg_marquardt(x0.float(), lin32, n_iter=200)
    assert res.x.dtype == torch.float32
    assert res.converged.all(), res.reasons()
    torch.testing.assert_close(res.x.double(), truth, rtol=EXACT32, atol=EXACT32)


def test_huber_residuals_square_to_huber_and_fit_robustly():
    r = torch.linspace(-5, 5, 101, dtype=torch.float64, requires_grad=True)
    rt, d = huber_residuals(r, 1.5)
    huber = torch.where(r.abs() <= 1.5, r**2, 3.0 * r.abs() - 2.25)
    torch.testing.assert_close(rt**2, huber, rtol=RTOL64, atol=ATOL64)
    (grad,) = torch.autograd.grad(rt.sum(), r)
    torch.testing.assert_close(d, grad, rtol=RTOL64, atol=ATOL64)
    # A robust line fit ignores gross outliers that pull a plain least-squares fit away.
    t = torch.linspace(0, 1, 40, dtype=torch.float64)
    y = 2.0 * t + 1.0
    y[::8] += 25.0

    def lin(x, robust):
        res = x[:, :1] + x[:, 1:2] * t - y
        jac = torch.stack([torch.ones_like(res), t.expand_as(res)], -1)
        if robust:
            res, dr = huber_residuals(res, 0.1)
            jac = dr[..., None] * jac
        return res, jac

    x0 = torch.zeros(1, 2, dtype=torch.float64)
    plain = levenberg_marquardt(x0, lambda x: lin(x, False))
    robust = levenberg_marquardt(x0, lambda x: lin(x, True), n_iter=200)
    assert robust.converged.all(), robust.reasons()
    assert (robust.history.cost[1:] <= robust.history.cost[:-1]).all()
    assert (robust.x - torch.tensor([[1.0, 2.0]], dtype=torch.float64)).abs().max() < 0.1
    assert (plain.x - torch.tensor([[1.0, 2.0]], dtype=torch.float64)).abs().max() > 1.0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="x0 must be"):
        levenberg_marquardt(torch.zeros(3), residual_fn=rosenbrock)
    with pytest.raises(ValueError, match="jacobian_fn"):
        levenberg_marquardt(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="mode"):
        autodiff_jacobian(rosenbrock, "sideways")


class TestTorchThreads:
    def test_scoped_on_the_cpu_and_restored(self):
        before = torch.get_num_threads()
        target = 1 if before != 1 else 2
        with torch_threads(target, torch.device("cpu")):
            assert torch.get_num_threads() == target
        assert torch.get_num_threads() == before
        with pytest.raises(RuntimeError), torch_threads(target, torch.device("cpu")):
            raise RuntimeError("inside")
        assert torch.get_num_threads() == before

    def test_none_or_another_device_leaves_it_alone(self):
        before = torch.get_num_threads()
        target = 1 if before != 1 else 2
        for n, device in ((None, "cpu"), (target, "cuda")):
            with torch_threads(n, torch.device(device)):
                assert torch.get_num_threads() == before


# ---------------------------------------------------------------------------------------------
# active-set compaction: a batch is its images run alone


def staggered_exp_problem(b: int = 13):
    """Exponential fits whose images stop at very different iterations (5 to 30 of them at
    n_iter 200), plus awkward rows: 3 starts at its exact solution (status "atol" before any
    iteration), 5 starts at NaN (never started), 8 is inactive, 10 is noise-free (an exact fit)."""
    g = torch.Generator().manual_seed(21)
    truth, y, _ = make_exp_problem(b, seed=20)
    y = y + 0.01 * torch.randn(y.shape, generator=g, dtype=torch.float64)
    spread = torch.logspace(-3, 0.5, b, dtype=torch.float64)[:, None]
    x0 = truth + spread * torch.randn(b, 3, generator=g, dtype=torch.float64)
    for i in (3, 10):
        y[i] = exp_residual(truth[i : i + 1], torch.zeros(1, 25, dtype=torch.float64))[0]
    x0[3] = truth[3]
    x0[5, 0] = float("nan")
    active = torch.ones(b, dtype=torch.bool)
    active[8] = False
    return y, x0, active


def exp_normal_equations(y: torch.Tensor):
    """exp_jacobian as NormalEquations with a named term."""
    lin = exp_jacobian(y)

    def ne(x):
        r, jac = lin(x)
        cost = (r * r).sum(1)
        jac_t = jac.transpose(1, 2)
        return NormalEquations(cost, jac_t @ jac, (jac_t @ r[..., None])[..., 0], {"data": cost})

    return ne


def solve_exp(y, x0, active, protocol: str, n_iter: int, calls: list | None = None):
    """levenberg_marquardt on the exponential fits through one of the Jacobian protocols:
    "whole" (jacobian_fn(x) on the whole batch), "rows" (jacobian_fn(x, rows)) or
    "rows_normal_equations" (the same, returning NormalEquations)."""
    kw = dict(n_iter=n_iter, active=active)
    if protocol == "whole":
        return levenberg_marquardt(x0, exp_jacobian(y), terms={"data": slice(None)}, **kw)
    make = exp_jacobian if protocol == "rows" else exp_normal_equations

    def lin(x, rows):
        if calls is not None:
            calls.append(rows.clone())
        assert x.shape == (rows.numel(), 3)
        return make(y[rows])(x)

    terms = {"data": slice(None)} if protocol == "rows" else None
    return levenberg_marquardt(x0, lin, jacobian_rows=True, terms=terms, **kw)


class TestActiveSetCompaction:
    @pytest.mark.parametrize("protocol", ["whole", "rows", "rows_normal_equations"])
    @pytest.mark.parametrize("n_iter", [200, 12])
    def test_batch_is_each_image_alone(self, protocol, n_iter):
        y, x0, active = staggered_exp_problem()
        batch = solve_exp(y, x0, active, protocol, n_iter)
        h = batch.history
        n_it = batch.n_iter.tolist()
        assert h.cost.shape == (max(n_it) + 1, 13)
        assert len(set(n_it)) > 5, n_it  # the images do stop at very different iterations
        if n_iter == 12:
            assert "max_iter" in batch.reasons()
        for i in range(13):
            one = solve_exp(y[i : i + 1], x0[i : i + 1], active[i : i + 1], protocol, n_iter)
            where = f"image {i} ({batch.reasons()[i]}, {n_it[i]} iterations)"
            assert batch.reasons()[i] == one.reasons()[0], where
            assert n_it[i] == int(one.n_iter[0]), where
            assert bool(batch.converged[i]) == bool(one.converged[0]), where
            torch.testing.assert_close(
                batch.x[i], one.x[0], rtol=RTOL64, atol=ATOL64, equal_nan=True, msg=where
            )
            # Its own history, then its last values repeated while others run on.
            n = n_it[i]
            for name, hb, h1 in (
                ("cost", h.cost, one.history.cost),
                ("lam", h.lam, one.history.lam),
                ("data", h.terms["data"], one.history.terms["data"]),
            ):
                col = hb[:, i]
                torch.testing.assert_close(
                    col[: n + 1], h1[:, 0], rtol=RTOL64, atol=ATOL64, equal_nan=True, msg=where
                )
                assert torch.equal(col[n + 1 :], col[n].expand(col.shape[0] - n - 1)) or (
                    torch.isnan(col[n:]).all()
                ), f"{name} of {where} changes after it stopped"
            assert torch.equal(h.accepted[:n, i], one.history.accepted[:, 0]), where
            assert not h.accepted[n:, i].any(), where

    def test_rows_protocol_evaluates_only_running_images(self):
        y, x0, active = staggered_exp_problem()
        calls = []
        res = solve_exp(y, x0, active, "rows", 200, calls)
        assert torch.equal(calls[0], torch.arange(13))  # the start: the whole batch
        for before, after in zip(calls[1:], calls[2:], strict=False):
            assert set(after.tolist()) <= set(before.tolist())
            assert torch.equal(after, after.sort().values)
        # Once at the start, then once per iteration the image ran: no wasted evaluation.
        counts = torch.bincount(torch.cat(calls), minlength=13)
        torch.testing.assert_close(counts, 1 + res.n_iter, rtol=0, atol=0)
        whole = solve_exp(y, x0, active, "whole", 200)
        torch.testing.assert_close(res.x, whole.x, rtol=RTOL64, atol=ATOL64, equal_nan=True)
        torch.testing.assert_close(res.history.cost, whole.history.cost, equal_nan=True)
        assert res.reasons() == whole.reasons()

    def test_fixed_parameters_per_image_follow_their_rows(self):
        y, x0, active = staggered_exp_problem()
        fixed = torch.zeros(13, 3, dtype=torch.bool)
        fixed[::3, 2] = True  # c held in every third image only
        res = levenberg_marquardt(x0, exp_jacobian(y), n_iter=200, fixed=fixed, active=active)
        ok = torch.isfinite(x0).all(1)
        assert (res.x[fixed & ok[:, None]] == x0[fixed & ok[:, None]]).all()
        for i in (1, 6, 9):
            one = levenberg_marquardt(
                x0[i : i + 1], exp_jacobian(y[i : i + 1]), n_iter=200, fixed=fixed[i : i + 1]
            )
            torch.testing.assert_close(res.x[i], one.x[0], rtol=RTOL64, atol=ATOL64)
            assert int(res.n_iter[i]) == int(one.n_iter[0])
