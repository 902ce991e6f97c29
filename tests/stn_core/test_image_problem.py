"""The image fit's problem: the closed-form Jacobian against central differences, and the
normal equations against the assembled Jacobian, on rendered synthetic faces
(tests/stn_core/synthetic_faces.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stn_core import UVGridModel
from stn_core.fitting.image_problem import FitWeights, ImageFitProblem

from tests.stn_core.synthetic_faces import scene, synthetic_colour_model
from tests.tolerances import FD_STEP, FD_TOL, NORMAL_EQUATIONS_TOL, SUM_OF_TERMS_TOL, TOL

RTOL64, ATOL64 = TOL[np.float64]
FD_RTOL, FD_ATOL = FD_TOL  # central differences with FD_STEP, on smooth rows
# A vertex this close (pixels) to an integer coordinate may straddle a kink of the bilinear
# interpolant within the finite-difference step: its rows are left out of the comparison.
KINK_PX = 2e-3


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> UVGridModel:
    """A small grid model with a colour basis, through bfm-prep's own pipeline."""
    return synthetic_colour_model(tmp_path_factory.mktemp("synth"))


class TestJacobian:
    @pytest.mark.parametrize("seed", [0, 1])
    def test_closed_form_jacobian_matches_finite_differences(self, model, seed):
        s = scene(model, b=2, seed=seed)
        q = s["landmarks"] + 0.5
        problem = ImageFitProblem(
            model,
            s["images"],
            q,
            torch.ones(q.shape[:2]),
            model.landmarks["aflw21"],
            torch.exp(s["theta"][:, 5]),
            FitWeights(huber_delta=0.02),
        )  # many Huber-linear rows
        g = torch.Generator().manual_seed(seed)
        x = problem.pack(s["theta"], s["beta"], s["sh"])
        x = x + 0.02 * torch.randn(x.shape, generator=g, dtype=torch.float64)
        geo = problem.geometry(x[:, : model.n_params], jacobian=False)
        vis = problem.visible(geo)
        assert vis.sum() > 0.8 * vis.numel()  # the test's premise: most vertices are compared
        jac = problem.jacobian(x, vis)
        fd = torch.zeros_like(jac)
        for i in range(x.shape[1]):
            xp, xm = x.clone(), x.clone()
            xp[:, i] += FD_STEP
            xm[:, i] -= FD_STEP
            fd[:, :, i] = (problem.residuals(xp, vis) - problem.residuals(xm, vis)) / (2 * FD_STEP)
        # Leave out the rows of vertices sitting on a kink of the bilinear interpolant.
        pts = geo["points"][:, problem.vertices]
        frac = (pts - pts.round()).abs().amin(-1)  # (B, N')
        nl = model.landmarks["aflw21"].numel()
        smooth = torch.ones(jac.shape[:2], dtype=torch.bool)
        smooth[:, 2 * nl : 2 * nl + 3 * pts.shape[1]] = (frac > KINK_PX).repeat_interleave(3, 1)
        assert smooth.float().mean() > 0.95  # and few rows are left out
        bad = ~torch.isclose(jac, fd, rtol=FD_RTOL, atol=FD_ATOL) & smooth[..., None]
        where = torch.nonzero(bad)[:5].tolist()
        assert not bad.any(), f"{int(bad.sum())} entries differ, first (image, row, col) {where}"
        # Every block is exercised (pose, shape, albedo, lighting).
        for name, sl in problem.slices.items():
            assert jac[:, 2 * nl :, sl].abs().amax() > 0, name

    def test_normal_equations_are_those_of_the_jacobian(self, model):
        s = scene(model, b=2, seed=3)
        problem = ImageFitProblem(
            model,
            s["images"],
            s["landmarks"],
            torch.ones(2, 21),
            model.landmarks["aflw21"],
            torch.exp(s["theta"][:, 5]),
            FitWeights(),
            chunk_elements=5000,
        )  # several chunks
        problem.set_vertices(2)
        x = problem.pack(s["theta"], s["beta"], s["sh"]) + 0.01
        ne = problem.normal_equations(x)
        r = problem.residuals(x)
        jac = problem.jacobian(x)
        torch.testing.assert_close(ne.cost, (r * r).sum(1), rtol=RTOL64, atol=ATOL64)
        rtol, atol = NORMAL_EQUATIONS_TOL  # entries of J^T J cancel
        torch.testing.assert_close(ne.jtj, jac.mT @ jac, rtol=rtol, atol=atol)
        torch.testing.assert_close(
            ne.jtr, (jac.mT @ r[..., None])[..., 0], rtol=RTOL64, atol=ATOL64
        )
        rtol, atol = SUM_OF_TERMS_TOL
        torch.testing.assert_close(sum(ne.terms.values()), ne.cost, rtol=rtol, atol=atol)
