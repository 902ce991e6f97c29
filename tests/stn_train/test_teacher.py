"""The landmark teacher (``--teacher lm``): each view fitted once and cached, the cache's
scale-and-shift reuse equal to a fresh fit, the loss's values and gradient, and a resumed run
that fits nothing twice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stn_core import project_theta
from stn_core.fitting import fit_landmarks
from stn_train.checkpoint import load_checkpoint
from stn_train.data.transforms import hflip_points
from stn_train.train import teacher as teacher_module
from stn_train.train import train
from stn_train.train.run_log import read_run_log
from stn_train.train.teacher import LandmarkTeacher, teacher_loss, teacher_vertices

from tests.stn_train.train_helpers import load_model, random_theta, small_run_config

SIZE = 64


@pytest.fixture(scope="module")
def views():
    """Five faces' exact landmarks (aflw21) at SIZE px, all visible, and their thetas."""
    model = load_model()
    theta = random_theta(model, 5, SIZE, seed=3).double()
    m64 = model.to(torch.float64)
    pts, _ = project_theta(theta, m64.mean, m64.basis)
    idx = model.landmark_indices("aflw21")
    return model, pts[:, idx].float(), torch.ones(5, idx.numel()), theta


class CountingFits:
    """fit_landmarks wrapped to count the images it fits."""

    def __init__(self):
        self.images = 0

    def __call__(self, model, points, *args, **kwargs):
        self.images += points.shape[0]
        return fit_landmarks(model, points, *args, **kwargs)


def test_each_view_is_fitted_once(views, monkeypatch):
    model, q, vis, _ = views
    fits = CountingFits()
    monkeypatch.setattr(teacher_module, "fit_landmarks", fits)
    t = LandmarkTeacher(model, "aflw21", SIZE)
    index = torch.arange(5)
    first, ok1 = t.targets(index, q, vis)
    again, ok2 = t.targets(index, q, vis)
    assert fits.images == 5 and len(t) == 5 and t.reused == 5
    assert ok1.all() and ok2.all()
    assert torch.equal(first, again)
    # The same landmarks under another index are another image: fitted.
    t.targets(index + 100, q, vis)
    assert fits.images == 10


def test_fit_matches_fit_landmarks(views):
    """The target is fit_landmarks' theta on the view's landmarks, with the run's prior."""
    model, q, vis, _ = views
    t = LandmarkTeacher(model, "aflw21", SIZE, prior_weight=0.5)
    target, _ = t.targets(torch.arange(5), q, vis)
    direct = fit_landmarks(model, q.double(), vis.double(), "aflw21", prior_weight=0.5)
    torch.testing.assert_close(target, direct.theta.float(), rtol=0, atol=1e-6)


def test_a_scaled_and_shifted_view_reuses_the_fit(views, monkeypatch):
    """Crop jitter scales and shifts the landmarks: the cached fit, moved by t -> a t + b and
    log_s -> log_s + log a, equals a fresh fit of the moved landmarks."""
    model, q, vis, _ = views
    t = LandmarkTeacher(model, "aflw21", SIZE)
    t.targets(torch.arange(5), q, vis)
    a, b = 1.17, torch.tensor([-4.5, 2.25])
    moved = a * q + b
    fits = CountingFits()
    monkeypatch.setattr(teacher_module, "fit_landmarks", fits)
    reused, ok = t.targets(torch.arange(5), moved, vis)
    assert fits.images == 0 and ok.all()
    fresh = fit_landmarks(model, moved.double(), vis.double(), "aflw21").theta
    # Both are fits to a tolerance (the solver's ftol), not to round-off.
    torch.testing.assert_close(reused[:, :3], fresh[:, :3].float(), rtol=0, atol=2e-4)
    torch.testing.assert_close(reused[:, 3:5], fresh[:, 3:5].float(), rtol=0, atol=2e-3)
    torch.testing.assert_close(reused[:, 5], fresh[:, 5].float(), rtol=0, atol=1e-4)
    torch.testing.assert_close(reused[:, 6:], fresh[:, 6:].float(), rtol=0, atol=2e-3)


def test_a_mirrored_view_is_fitted_apart(views, monkeypatch):
    model, q, vis, theta = views
    t = LandmarkTeacher(model, "aflw21", SIZE)
    t.targets(torch.arange(5), q, vis)
    fits = CountingFits()
    monkeypatch.setattr(teacher_module, "fit_landmarks", fits)
    from stn_train.data.transforms import flip_permutation

    mirrored = hflip_points(q, SIZE, flip_permutation("aflw21"))
    target, _ = t.targets(torch.arange(5), mirrored, vis)
    assert fits.images == 5 and len(t) == 10
    # The mirror's yaw is the negated yaw of the face (sign of r_y flips).
    assert (target[:, 1] * theta[:, 1].float() < 0).all()


def test_too_few_landmarks_gives_no_target(views):
    model, q, vis, _ = views
    vis = vis.clone()
    vis[2, 1:] = 0
    _, ok = LandmarkTeacher(model, "aflw21", SIZE).targets(torch.arange(5), q, vis)
    assert ok.tolist() == [True, True, False, True, True]


def test_state_round_trip(views, monkeypatch):
    model, q, vis, _ = views
    t = LandmarkTeacher(model, "aflw21", SIZE)
    first, _ = t.targets(torch.arange(5), q, vis)
    fits = CountingFits()
    monkeypatch.setattr(teacher_module, "fit_landmarks", fits)
    u = LandmarkTeacher(model, "aflw21", SIZE)
    u.load_state_dict(t.state_dict(), t.state_dict())  # two processes' caches, merged
    assert len(u) == 5
    again, _ = u.targets(torch.arange(5), q, vis)
    assert fits.images == 0
    assert torch.equal(first, again)
    # Fits made with another prior weight are not taken.
    other = LandmarkTeacher(model, "aflw21", SIZE, prior_weight=2.0)
    other.load_state_dict(t.state_dict())
    assert len(other) == 0


def test_loss_of_a_shift_is_its_squared_length(views):
    """Every vertex moves by the same (dx, dy) px: the loss is dx^2 + dy^2 whatever the pose."""
    model, _, _, theta = views
    compared = teacher_vertices(model)
    mean, basis = model.mean[compared].double(), model.basis[compared].double()
    shifted = theta.clone()
    shifted[:, 3] += 3.0
    shifted[:, 4] -= 4.0
    have = torch.ones(5, dtype=torch.bool)
    value, count = teacher_loss(shifted, theta, have, mean, basis)
    assert count == 5
    torch.testing.assert_close(value, torch.tensor(25.0, dtype=torch.float64))
    zero, _ = teacher_loss(theta, theta, have, mean, basis)
    assert float(zero) == 0.0
    # Images without a target do not count.
    have[1:] = False
    shifted[1:, 3] += 100.0
    value, count = teacher_loss(shifted, theta, have, mean, basis)
    assert count == 1
    torch.testing.assert_close(value, torch.tensor(25.0, dtype=torch.float64))


@pytest.mark.parametrize("weight", [0.0, 2.5])
def test_loss_gradcheck(views, weight):
    model, _, _, theta = views
    compared = teacher_vertices(model, 16)
    mean, basis = model.mean[compared].double(), model.basis[compared].double()
    target = theta + 0.05 * torch.randn(theta.shape, generator=torch.Generator().manual_seed(1))
    have = torch.tensor([True, True, False, True, True])
    x = theta.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda th: teacher_loss(th, target, have, mean, basis, shape_weight=weight)[0], (x,)
    )


def test_shape_term_compares_shapes_at_the_teachers_scale(views):
    """Frontal faces (r = 0) with the same t and s and shapes apart by d = B (a - a_t) (mm):
    every placed vertex differs by s (d_x, -d_y, d_z), so the placed term is s^2 |d|^2 and the
    shape term adds w s_t^2 |d|^2 (means over the vertices), computed here with numpy from
    the basis alone."""
    model, _, _, theta = views
    compared = teacher_vertices(model, 64)
    mean, basis = model.mean[compared].double(), model.basis[compared].double()
    target = theta.clone()
    target[:, :3] = 0.0
    pred = target.clone()
    g = torch.Generator().manual_seed(7)
    pred[:, 6:] += torch.randn(pred[:, 6:].shape, generator=g, dtype=torch.float64)
    have = torch.ones(5, dtype=torch.bool)
    b = basis.numpy()
    d = np.einsum("vck,bk->bvc", b, (pred[:, 6:] - target[:, 6:]).numpy())
    s2 = np.exp(2 * target[:, 5].numpy())
    per_vertex = (d**2).sum(-1).mean(-1)
    for w in (0.0, 3.0):
        value, _ = teacher_loss(pred, target, have, mean, basis, shape_weight=w)
        expected = float(((1.0 + w) * s2 * per_vertex).mean())
        assert abs(float(value) - expected) <= 1e-9 * expected
    # Pose alone moves nothing in the shape term: a shifted, turned face with the teacher's
    # shape scores the same with any shape weight.
    turned = target.clone()
    turned[:, 1] += 0.3
    turned[:, 3] += 5.0
    a, _ = teacher_loss(turned, target, have, mean, basis, shape_weight=0.0)
    b2, _ = teacher_loss(turned, target, have, mean, basis, shape_weight=10.0)
    assert float(a) > 0
    torch.testing.assert_close(a, b2)


def test_vertices_spread_over_the_face():
    model = load_model()
    compared = teacher_vertices(model, 100)
    inside = torch.as_tensor(model.inside).reshape(-1)
    assert inside[compared].all()
    assert 100 <= compared.numel() <= 200
    assert len(set(compared.tolist())) == compared.numel()


def train_records(run_dir) -> list[dict]:
    return [r for r in read_run_log(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_resumed_run_fits_nothing_twice(tmp_path, monkeypatch):
    """A run of 4 steps over 8 rendered faces (2 steps an epoch, mirror pairs): the first epoch
    fits its 16 views, the second fits none. Killed after step 3 (checkpoint at 2) and
    resumed, the cache comes back from last.pt: the resumed steps fit nothing, and the losses
    equal an uninterrupted run's."""
    fits = CountingFits()
    monkeypatch.setattr(teacher_module, "fit_landmarks", fits)
    common = dict(
        synthetic=8,
        val_synthetic=4,
        steps=4,
        batch_size=8,
        checkpoint_every=2,
        val_every=10_000,
        teacher="lm",
    )
    train(small_run_config(out=str(tmp_path / "full"), **common))
    assert fits.images == 16
    full = train_records(tmp_path / "full")
    assert all(r["teacher"] > 0 for r in full)

    class Killed(Exception):
        pass

    def kill(step):
        if step >= 3:
            raise Killed

    fits.images = 0
    with pytest.raises(Killed):
        train(small_run_config(out=str(tmp_path / "cut"), **common), on_step=kill)
    cached = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["teacher"]
    assert len(cached) == 1 and cached[0]["theta"].shape[0] == 16
    fits.images = 0
    train(small_run_config(out=str(tmp_path / "cut"), resume=True), explicit={"out", "resume"})
    assert fits.images == 0
    cut = train_records(tmp_path / "cut")
    assert [r["step"] for r in cut] == [1, 2, 3, 4]
    assert [r["loss"] for r in cut] == [r["loss"] for r in full]


@pytest.mark.slow
def test_the_teacher_learns_pose_without_inventing_shape(tmp_path):
    """The curve's direction on a fixed seed (300 steps, 512 rendered faces, 64 held out):
    with the landmark loss alone the held-out shape error rises above the mean-shape guess
    (the start, alpha = 0) while the pose error barely falls; with the teacher the pose error
    falls below half its start, well below the run without it, and the shape error ends at or
    below the mean guess."""

    def run(name, **extra):
        cfg = small_run_config(
            synthetic=512,
            val_synthetic=64,
            out=str(tmp_path / name),
            steps=300,
            batch_size=16,
            lr=1e-3,
            warmup_steps=20,
            clip_grad=100.0,
            val_every=300,
            log_every=100,
            seed=0,
            **extra,
        )
        train(cfg)
        val = [r for r in read_run_log(tmp_path / name / "metrics.jsonl") if r["kind"] == "val"]
        assert [r["step"] for r in val] == [0, 300]
        return val

    (start, plain), (start_t, taught) = run("plain"), run("taught", teacher="lm")
    assert start == start_t  # the same held-out faces, the same start
    assert plain["shape_error_mm"] > start["shape_error_mm"]  # what the teacher fixes
    assert taught["pose_error_deg"] <= 0.5 * start["pose_error_deg"], (start, taught)
    assert taught["pose_error_deg"] <= 0.7 * plain["pose_error_deg"], (plain, taught)
    assert taught["shape_error_mm"] <= start["shape_error_mm"], (start, taught)
