"""The flip test (stn_train.flip_test): theta of the mirror image, the mean of two estimates,
the wrapped localiser, and ``--flip-test`` in eval and predict."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from stn_core import project_theta
from stn_core.geometry import axis_angle_to_matrix
from stn_train.flip_test import FlipTest, MirrorMap, mean_theta, mirror_index, mirror_theta

from tests.stn_train.train_helpers import (
    grid_model_file,
    load_model,
    random_theta,
    render_manifest,
    tiny_checkpoint,
)
from tests.tolerances import TOL

RTOL64, ATOL64 = TOL[np.float64]
WIDTH = 64


@pytest.fixture(scope="module")
def model():
    return load_model().to(dtype=torch.float64)


def asymmetric(model, seed=3):
    """The model with its mean and basis disturbed off mirror symmetry."""
    g = torch.Generator().manual_seed(seed)
    m = model.to(dtype=torch.float64)
    m.mean = m.mean + 0.5 * torch.randn(m.mean.shape, generator=g, dtype=torch.float64)
    m.basis = m.basis * (1 + 0.2 * torch.randn(m.basis.shape, generator=g, dtype=torch.float64))
    return m


class TestMirrorTheta:
    def test_the_test_model_is_mirror_symmetric(self, model):
        assert MirrorMap(model).residual < 1e-12

    def test_points_of_the_mirrored_theta_are_the_mirrored_points(self, model):
        """Vertex i of the face in the flipped image is where its mirror partner was, with x
        reflected: p'(mirror(i)) = (W - 1 - p_x(i), p_y(i)); depth reflects with it."""
        theta = random_theta(model, 6, WIDTH, seed=1).double()
        mirrored = mirror_theta(theta, WIDTH, MirrorMap(model))
        pts, rot = project_theta(theta, model.mean, model.basis)
        pts_m, rot_m = project_theta(mirrored, model.mean, model.basis)
        mi = mirror_index(model.res)
        expect = torch.stack([(WIDTH - 1) - pts[..., 0], pts[..., 1]], -1)
        torch.testing.assert_close(pts_m[:, mi], expect, rtol=RTOL64, atol=1e-9)
        torch.testing.assert_close(rot_m[:, mi, 2], rot[..., 2], rtol=RTOL64, atol=1e-9)

    def test_an_involution_for_a_symmetric_model(self, model):
        theta = random_theta(model, 5, WIDTH, seed=2).double()
        mm = MirrorMap(model)
        back = mirror_theta(mirror_theta(theta, WIDTH, mm), WIDTH, mm)
        torch.testing.assert_close(back, theta, rtol=RTOL64, atol=ATOL64)

    def test_frontal_centred_mean_face_is_its_own_mirror(self, model):
        theta = torch.zeros(1, model.n_params, dtype=torch.float64)
        theta[0, 0] = 0.2  # pitch alone keeps the face symmetric
        theta[0, 3:5] = (WIDTH - 1) / 2
        torch.testing.assert_close(mirror_theta(theta, WIDTH, MirrorMap(model)), theta)

    def test_asymmetric_model_gets_the_nearest_shape(self, model):
        """For a model without mirror symmetry, the mirrored coefficients are the least-squares
        fit of the mirrored shape: its residual is orthogonal to the basis (on the face)."""
        m = asymmetric(model)
        mm = MirrorMap(m)
        assert 0.01 < mm.residual < 1
        alpha = torch.randn(3, m.n_components, generator=torch.Generator().manual_seed(4))
        alpha = alpha.double()
        theta = torch.cat([torch.zeros(3, 6, dtype=torch.float64), alpha], 1)
        got = mirror_theta(theta, WIDTH, mm)[:, 6:]
        mi = mirror_index(m.res)
        flip = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
        keep = m.inside & m.inside[mi]
        target = (m.shape(alpha)[:, mi] * flip)[:, keep].reshape(3, -1)
        fitted = m.shape(got)[:, keep].reshape(3, -1)
        basis = m.basis[keep].reshape(-1, m.n_components)
        normal = (target - fitted) @ basis
        assert normal.abs().max() < 1e-8 * (target @ basis).abs().max()


class TestMeanTheta:
    def test_rotations_about_one_axis_meet_halfway(self):
        axis = torch.tensor([0.3, -0.8, 0.52], dtype=torch.float64)
        axis = axis / axis.norm()
        a = torch.cat([0.2 * axis, torch.tensor([10.0, 20.0, -1.0, 0.5])])[None]
        b = torch.cat([1.1 * axis, torch.tensor([14.0, 18.0, -3.0, -1.5])])[None]
        got = mean_theta(a, b)
        expect = torch.cat([0.65 * axis, torch.tensor([12.0, 19.0, -2.0, -0.5])])[None]
        torch.testing.assert_close(got, expect, rtol=RTOL64, atol=1e-12)
        torch.testing.assert_close(mean_theta(b, a), got, rtol=RTOL64, atol=1e-12)

    def test_the_mean_rotation_is_the_geodesic_midpoint(self):
        g = torch.Generator().manual_seed(5)
        a = torch.cat([torch.randn(8, 3, generator=g, dtype=torch.float64), torch.zeros(8, 4)], 1)
        b = torch.cat([torch.randn(8, 3, generator=g, dtype=torch.float64), torch.zeros(8, 4)], 1)
        ra, rb = axis_angle_to_matrix(a[:, :3]), axis_angle_to_matrix(b[:, :3])
        rm = axis_angle_to_matrix(mean_theta(a, b)[:, :3])

        def angle(x, y):
            c = ((x.transpose(-1, -2) @ y).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
            return torch.arccos(c.clamp(-1, 1))

        torch.testing.assert_close(angle(ra, rm), angle(ra, rb) / 2, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(angle(rb, rm), angle(ra, rb) / 2, rtol=1e-9, atol=1e-9)


class _Fixed(torch.nn.Module):
    """A stand-in localiser: ``theta`` for an image whose top-left pixel is bright, and
    ``flipped_theta`` for the others (the image flipped: its top-right pixel is bright)."""

    def __init__(self, theta, flipped_theta):
        super().__init__()
        self.theta, self.flipped_theta = theta, flipped_theta

    def forward(self, images):
        marked = images[:, 0, 0, 0] > 0.5
        k = images.shape[0] // self.theta.shape[0]  # the batch may hold both views
        plain, flipped = self.theta.repeat(k, 1), self.flipped_theta.repeat(k, 1)
        return torch.where(marked[:, None], plain, flipped)


def marked_images(n):
    x = torch.zeros(n, 3, WIDTH, WIDTH, dtype=torch.float64)
    x[:, :, 0, 0] = 1.0
    return x


class TestFlipTestLocaliser:
    def test_a_mirror_consistent_localiser_is_unchanged(self, model):
        theta = random_theta(model, 4, WIDTH, seed=6).double()
        mm = MirrorMap(model)
        net = FlipTest(_Fixed(theta, mirror_theta(theta, WIDTH, mm)), model)
        torch.testing.assert_close(net(marked_images(4)), theta, rtol=1e-9, atol=1e-9)

    def test_a_localiser_blind_to_the_flip_gets_a_symmetric_pose(self, model):
        """A network that gives the same theta for an image and its mirror has its yaw, roll
        and horizontal offset averaged away: the mean faces straight ahead, centred."""
        theta = random_theta(model, 4, WIDTH, seed=7).double()
        got = FlipTest(_Fixed(theta, theta), model)(marked_images(4))
        assert got[:, 1:3].abs().max() < 1e-9
        torch.testing.assert_close(got[:, 3], torch.full((4,), (WIDTH - 1) / 2.0).double())
        torch.testing.assert_close(got[:, 4:6], theta[:, 4:6])


def test_eval_flip_test_differs_and_says_so(tmp_path, capsys):
    from stn_train.cli import main

    results = {}
    for flag in ([], ["--flip-test"]):
        out = tmp_path / ("flip" if flag else "plain")
        args = ["eval", "--checkpoint", str(tiny_checkpoint()), "--model", str(grid_model_file())]
        args += ["--out", str(out), "--synthetic", "8", *flag]
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code in (0, None), capsys.readouterr().err
        results[bool(flag)] = json.loads((out / "eval.json").read_text())
    assert "(flip test)" in capsys.readouterr().out
    assert results[True]["flip_test"] is True and results[False]["flip_test"] is False
    for key in ("nme_box", "pose_error_deg", "shape_error_mm"):
        assert math.isfinite(results[True][key])
    assert results[True]["nme_box"] != results[False]["nme_box"]


def test_predict_flip_test_is_the_mean_of_an_image_and_its_mirror(tmp_path):
    """With ``flip_test``, predict's theta is the mean of its plain theta for the image and the
    mirrored-back plain theta for the image's mirror written as a file of its own."""
    from stn_train.predict import predict

    src = render_manifest().parent / "face_0003.png"
    face = Image.open(src)
    (tmp_path / "in").mkdir()
    face.save(tmp_path / "in" / "face.png")
    face.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "in" / "mirror.png")
    ckpt, grid = tiny_checkpoint(), grid_model_file()
    predict([tmp_path / "in"], ckpt, grid, tmp_path / "plain")
    predict([tmp_path / "in" / "face.png"], ckpt, grid, tmp_path / "flip", flip_test=True)

    def theta(folder, name):
        record = json.loads((tmp_path / folder / f"{name}.theta.json").read_text())
        return torch.tensor([record["theta"]], dtype=torch.float64), record

    plain, rec_plain = theta("plain", "face")
    mirror, _ = theta("plain", "mirror")
    flipped, rec_flip = theta("flip", "face")
    assert rec_flip["flip_test"] is True and rec_plain["flip_test"] is False
    width = rec_plain["input_size"][0]
    expect = mean_theta(plain, mirror_theta(mirror, width, MirrorMap(load_model())))
    torch.testing.assert_close(flipped, expect, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(flipped, plain, atol=1e-3)
