"""fit_image: monotone LM, recovery on rendered faces, robustness, real data (its exact
Jacobians: test_image_problem.py).

The synthetic faces (tests/stn_core/synthetic_faces.py) come from bfm-prep's pipeline on its
synthetic Basel-format model (a small grid, R = 40, 10 identity, 5 expression and 10 colour
components), rendered by stn-core's renderer with known pose, shape, albedo and
spherical-harmonics lighting, plus Gaussian noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stn_core import UVGridModel, axis_angle_to_matrix
from stn_core.fitting import fit_landmarks
from stn_core.fitting.image import DEFAULT_STAGES, FitStage, fit_image
from stn_core.fitting.image_problem import FitWeights
from stn_core.renderer import render

from tests.conftest import reference_file
from tests.stn_core.synthetic_faces import (
    BACKGROUND,
    K_COLOR,
    K_EXP,
    K_ID,
    NOISE,
    RES,
    SIZE,
    scene,
    synthetic_colour_model,
)
from tests.tolerances import SUM_OF_TERMS_TOL, TOL

RTOL64, ATOL64 = TOL[np.float64]
RTOL32, ATOL32 = TOL[np.float32]
# Recovery targets (the issue's): landmarks within 1 px, rotation within 2 degrees.
LANDMARK_PX = 1.0
ROTATION_DEG = 2.0
# The original's six demo images, landmark-only fit: under 3 px each (the target, as in
# test_fit_landmarks).
DEMO_MAX_PX = 3.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> UVGridModel:
    """A small grid model with a colour basis, through bfm-prep's own pipeline."""
    return synthetic_colour_model(tmp_path_factory.mktemp("synth"))


def rotation_error_deg(r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    rel = axis_angle_to_matrix(r1).transpose(1, 2) @ axis_angle_to_matrix(r2)
    cos = (rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return torch.rad2deg(torch.acos(cos.clamp(-1, 1)))


def interior_rms(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMS per image of a - b over the mask eroded by 2 pixels (the face without its
    silhouette, where one pixel of outline error is a whole face-to-background step)."""
    m = -F.max_pool2d(-mask.to(a.dtype), 5, 1, 2)
    return (((a - b) ** 2).sum(1, keepdim=True) * m).sum((1, 2, 3)).div(3 * m.sum((1, 2, 3))).sqrt()


@pytest.fixture(scope="module")
def fitted(model):
    """One batch fitted with the defaults (shared by the recovery tests)."""
    s = scene(model, b=3, seed=0)
    g = torch.Generator().manual_seed(7)
    observed = s["landmarks"] + 0.3 * torch.randn(
        s["landmarks"].shape, generator=g, dtype=torch.float64
    )
    return s, observed, fit_image(model, s["images"], observed)


# ---------------------------------------------------------------------------------------------
# the fit


class TestFitImage:
    def test_recovers_landmarks_rotation_and_image(self, model, fitted):
        s, _, fit = fitted
        assert fit.usable.all() and fit.converged.all(), fit.status
        err_lm = (fit.landmarks - s["landmarks"]).norm(dim=-1).amax(1)
        assert (err_lm < LANDMARK_PX).all(), err_lm
        err_rot = rotation_error_deg(fit.theta[:, :3], s["theta"][:, :3])
        assert (err_rot < ROTATION_DEG).all(), err_rot
        # The fit rendered again matches the clean image to within the noise level inside
        # the face, and explains the noisy image down to about the noise itself.
        bg = torch.full_like(s["images"], BACKGROUND)
        again = render(model, fit.theta, fit.albedo, SIZE, sh=fit.sh, background=bg)
        both = s["clean"].mask & again.mask
        rms_clean = interior_rms(again.image, s["clean"].image, both)
        assert (rms_clean < NOISE).all(), rms_clean
        rms_noisy = interior_rms(again.image, s["images"], both)
        assert (rms_noisy < 1.5 * NOISE).all(), rms_noisy
        # The silhouettes agree to within a thin outline.
        xor = (s["clean"].mask ^ again.mask).sum((1, 2, 3)).double()
        assert (xor < 0.05 * s["clean"].mask.sum((1, 2, 3))).all(), xor
        # The photometric stages improved on the landmark-only fit's image.
        assert (fit.photometric_rms < 1.5 * NOISE).all(), fit.photometric_rms

    def test_result_shapes_dtypes_and_history(self, model, fitted):
        s, _, fit = fitted
        b, n = 3, model.n_vertices
        assert fit.theta.shape == (b, model.n_params) and fit.theta.dtype == torch.float64
        assert fit.beta.shape == (b, K_COLOR) and fit.sh.shape == (b, 9, 3)
        assert fit.albedo.shape == fit.shading.shape == (b, n, 3)
        assert fit.visible.shape == (b, n) and fit.visible.dtype == torch.bool
        assert fit.identity.shape == (b, K_ID) and fit.expression.shape == (b, K_EXP)
        assert list(fit.history) == ["landmarks"] + [st.name for st in DEFAULT_STAGES]
        stage, costs = fit.cost_history()
        assert len(stage) == costs["total"].shape[0]
        for name in ("landmarks", "photometric", "prior_identity", "prior_albedo", "prior_sh"):
            assert name in costs
        h = fit.history["fine"]
        rtol, atol = SUM_OF_TERMS_TOL
        torch.testing.assert_close(sum(h.terms.values()), h.cost, rtol=rtol, atol=atol)
        assert int(fit.n_iter.min()) > sum(1 for _ in DEFAULT_STAGES)

    def test_cost_never_increases_between_accepted_steps(self, fitted):
        _, _, fit = fitted
        for name, h in fit.history.items():
            steps = h.cost[1:] - h.cost[:-1]
            assert (steps <= 0).all(), (name, steps.max())
            moved = h.accepted
            assert (steps[moved] < 0).all(), name
            assert (steps[~moved] == 0).all(), name

    def test_some_landmarks_invisible(self, model):
        s = scene(model, b=2, seed=11, max_yaw=0.5)
        vis = torch.ones(2, 21, dtype=torch.float64)
        hidden = [0, 1, 6, 7, 12, 17]  # one side's brow, eye, ear-side points
        vis[:, hidden] = 0
        observed = s["landmarks"].clone()
        observed[:, hidden] += 40.0  # wrong, and must be ignored
        observed[1, 2] = float("nan")  # non-finite counts as invisible too
        fit = fit_image(model, s["images"], observed, vis)
        assert fit.usable.all() and fit.converged.all(), fit.status
        err = (fit.landmarks - s["landmarks"]).norm(dim=-1).amax(1)
        assert (err < LANDMARK_PX).all(), err
        err_rot = rotation_error_deg(fit.theta[:, :3], s["theta"][:, :3])
        assert (err_rot < ROTATION_DEG).all(), err_rot

    def test_image_without_landmarks_is_skipped_not_fatal(self, model):
        s = scene(model, b=2, seed=5)
        vis = torch.ones(2, 21)
        vis[1, 1:] = 0  # a single visible landmark
        with pytest.warns(UserWarning, match="fewer than 2 visible landmarks"):
            fit = fit_image(model, s["images"], s["landmarks"], vis, stages=DEFAULT_STAGES[:2])
        assert fit.usable.tolist() == [True, False]
        assert fit.status[1] == "skipped" and not bool(fit.converged[1])
        assert torch.isfinite(fit.theta).all()
        assert math.isnan(float(fit.landmark_error_px[1]))
        assert float(fit.landmark_error_px[0]) < LANDMARK_PX

    def test_batch_equals_single_image_fits(self, model):
        s = scene(model, b=2, seed=21)
        stages = (FitStage("appearance", "appearance", 2, 3, 1e-3), FitStage("all", "all", 2, 4))
        both = fit_image(model, s["images"], s["landmarks"], stages=stages)
        for i in range(2):
            one = fit_image(model, s["images"][i : i + 1], s["landmarks"][i : i + 1], stages=stages)
            torch.testing.assert_close(one.theta[0], both.theta[i], rtol=RTOL64, atol=ATOL64)
            torch.testing.assert_close(one.sh[0], both.sh[i], rtol=RTOL64, atol=ATOL64)

    def test_robust_to_an_occluder(self, model):
        """A grey bar over the eyes (sunglasses) does not throw the pose or the rest off."""
        s = scene(model, b=1, seed=2)
        images = s["images"].clone()
        eyes_y = int(s["landmarks"][0, 6:12, 1].mean().round())
        images[:, :, eyes_y - 4 : eyes_y + 4, :] = 0.05
        fit = fit_image(model, images, s["landmarks"])
        err_rot = rotation_error_deg(fit.theta[:, :3], s["theta"][:, :3])
        assert (err_rot < ROTATION_DEG).all(), err_rot
        bg = torch.full_like(images, BACKGROUND)
        again = render(model, fit.theta, fit.albedo, SIZE, sh=fit.sh, background=bg)
        both = s["clean"].mask & again.mask
        both[:, :, eyes_y - 8 : eyes_y + 8, :] = False
        rms = interior_rms(again.image, s["clean"].image, both)
        assert (rms < 2 * NOISE).all(), rms

    def test_float32_and_depth_visibility(self, model):
        s = scene(model, b=1, seed=4)
        m32 = model.to(torch.float32)
        fit = fit_image(
            m32,
            s["images"].float(),
            s["landmarks"].float(),
            visibility="depth",
            stages=DEFAULT_STAGES[:2],
        )
        assert fit.theta.dtype == torch.float32 and fit.sh.dtype == torch.float32
        assert fit.converged.all(), fit.status
        err = (fit.landmarks.double() - s["landmarks"]).norm(dim=-1).amax(1)
        assert (err < LANDMARK_PX).all(), err

    def test_bad_arguments(self, model):
        s = scene(model, b=1, seed=0)
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            fit_image(model, s["images"][:, :1], s["landmarks"])
        with pytest.raises(ValueError, match="landmarks must be"):
            fit_image(model, s["images"], s["landmarks"][0])
        with pytest.raises(ValueError, match="visibility must be"):
            fit_image(model, s["images"], s["landmarks"], visibility="zbuffer")
        with pytest.raises(ValueError, match="huber_delta"):
            FitWeights(huber_delta=0.0)
        grey = UVGridModel.from_arrays(
            model.mean,
            model.basis,
            model.faces,
            RES,
            landmarks={"aflw21": model.landmarks["aflw21"]},
            dtype=torch.float64,
        )
        with pytest.raises(ValueError, match="no colour model"):
            fit_image(grey, s["images"], s["landmarks"])
        only = fit_image(grey, s["images"], s["landmarks"], landmarks_only=True)
        assert torch.isnan(only.photometric_rms).all()
        torch.testing.assert_close(only.sh[0, 0], torch.ones(3, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# the original's demo images


def load_demo():
    sio = pytest.importorskip("scipy.io")
    from stn_core.conventions import labels_from_original

    data = sio.loadmat(reference_file("3dmmasstn/demodata.mat"))
    m = sio.loadmat(reference_file("3dmmasstn/model_112.mat"))
    anl = reference_file("3dmmasstn/landmarks/Landmarks21_112.anl")
    idx = [int(s) for s in (ln.split("%")[0].strip() for ln in anl.read_text().splitlines()) if s]
    model = UVGridModel.from_arrays(
        m["shapeMU"],
        m["shapePC"],
        m["faces"].astype(np.int64) - 1,
        res=112,
        landmarks={"aflw21": np.asarray(idx) - 1},
    )
    labels = data["Labels"][0].transpose(2, 1, 0)  # (6, 21, 2), y up, 1-based
    points = labels_from_original(torch.as_tensor(labels, dtype=torch.float32), 224)
    images = torch.as_tensor(data["Images"], dtype=torch.float32).permute(3, 2, 0, 1)
    if float(images.max()) > 1.5:
        images = images / 255.0
    return model, images.contiguous(), points


@pytest.mark.reference
def test_demo_landmark_only_fit_matches_fit_landmarks():
    model, images, points = load_demo()
    fit = fit_image(model, images, points, landmarks_only=True)
    ref = fit_landmarks(model, points, prior_weight=FitWeights().identity)
    torch.testing.assert_close(fit.theta, ref.theta, rtol=0, atol=0)
    torch.testing.assert_close(fit.landmark_error_px, ref.error_px, rtol=RTOL32, atol=ATOL32)
    assert fit.converged.tolist() == ref.converged.tolist()
    assert (fit.landmark_error_px < DEMO_MAX_PX).all()
    assert list(fit.history) == ["landmarks"]
    # Without a colour model the lighting is the neutral ambient 1 and the albedo grey.
    torch.testing.assert_close(fit.sh[:, 0], torch.ones(6, 3))
    assert torch.isnan(fit.photometric_rms).all()
