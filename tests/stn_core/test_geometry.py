"""The grid generator's layers: theta split, rotation, morphable model, projection, scale,
translation, and their composition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from stn_core import geometry as G

from tests.tolerances import GRADCHECK, LEFT_JACOBIAN_SWITCH_TOL, TOL

K = 10

F64 = TOL[np.float64]
F32 = TOL[np.float32]


def _close(a, b, tol=F64, msg=""):
    torch.testing.assert_close(a, b, rtol=tol[0], atol=tol[1], msg=msg or None)


def _gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, **GRADCHECK)


def _rand_model(n=13, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, 3, generator=g, dtype=torch.float64) * 30
    basis = torch.randn(n, 3, k, generator=g, dtype=torch.float64) * 3
    return mean, basis


def _unit(v):
    v = torch.as_tensor(v, dtype=torch.float64)
    return v / v.norm()


class TestSplitTheta:
    def test_smoke(self):
        theta = torch.arange(2 * 9, dtype=torch.float64).reshape(2, 9)
        r, t, log_s, alpha = G.split_theta(theta)
        assert (
            r.shape == (2, 3)
            and t.shape == (2, 2)
            and log_s.shape == (2,)
            and alpha.shape == (2, 3)
        )
        assert torch.equal(r[1], theta[1, :3]) and torch.equal(t[1], theta[1, 3:5])
        assert log_s[1] == theta[1, 5] and torch.equal(alpha[1], theta[1, 6:])

    def test_no_shape_coefficients(self):
        assert G.split_theta(torch.zeros(3, 6)).alpha.shape == (3, 0)

    def test_views_share_memory(self):
        theta = torch.zeros(2, 8)
        G.split_theta(theta).t.fill_(5)
        assert torch.all(theta[:, 3:5] == 5)

    def test_awkward_rejects_short_theta(self):
        with pytest.raises(ValueError, match="6 \\+ K"):
            G.split_theta(torch.zeros(2, 5))


class TestAxisAngleToMatrix:
    def test_smoke(self):
        R = G.axis_angle_to_matrix(torch.zeros(4, 3))
        assert R.shape == (4, 3, 3) and R.dtype == torch.float32
        assert torch.equal(R, torch.eye(3).expand(4, 3, 3))

    def test_batch_dims(self):
        r = torch.randn(2, 5, 3, dtype=torch.float64)
        R = G.axis_angle_to_matrix(r)
        assert R.shape == (2, 5, 3, 3)
        _close(R[1, 3], G.axis_angle_to_matrix(r[1, 3]))

    @pytest.mark.parametrize(
        "r",
        [
            [0.0, 0.0, 0.0],
            [1e-8, -2e-8, 0.5e-8],
            [0.03, -0.05, 0.07],
            [0.0999, 0.0, 0.0],
            [0.1001, 0.0, 0.0],
            [0.3, -1.2, 0.7],
            [math.pi - 1e-6, 0.0, 0.0],
            list(((math.pi - 1e-3) * _unit([1.0, 2.0, -2.0])).tolist()),
            [2.0, 2.5, -3.0],
        ],
    )
    def test_conventions_matrix_exponential(self, r):
        """Rodrigues agrees with the matrix exponential of the skew matrix, at every angle."""
        r = torch.tensor(r, dtype=torch.float64)
        expected = torch.linalg.matrix_exp(G.skew(r))
        _close(G.axis_angle_to_matrix(r), expected, msg=f"r = {r.tolist()}")

    def test_conventions_right_handed_about_z(self):
        R = G.axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
        _close(
            R @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
            torch.tensor([0.0, 1, 0], dtype=torch.float64),
        )

    def test_conventions_yaw_turns_face_to_its_left(self):
        """+yaw about y turns the face normal (+z) towards +x (the viewer's right)."""
        R = G.axis_angle_to_matrix(torch.tensor([0.0, math.pi / 3, 0.0], dtype=torch.float64))
        n = R @ torch.tensor([0.0, 0, 1], dtype=torch.float64)
        assert n[0] > 0.8 and abs(n[1]) <= F64[1]

    def test_orthonormal(self):
        r = torch.randn(50, 3, dtype=torch.float64) * 2
        R = G.axis_angle_to_matrix(r)
        _close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(50, 3, 3))
        _close(torch.linalg.det(R), torch.ones(50, dtype=torch.float64))

    @pytest.mark.parametrize(
        "r",
        [
            [0.0, 0.0, 0.0],
            [1e-8, 0.0, 0.0],
            [1e-8, -1e-8, 1e-8],
            [0.05, 0.02, -0.06],
            [0.0999, 0.0, 0.0],
            [0.1001, 0.0, 0.0],
            [0.4, -0.9, 1.3],
            [math.pi - 1e-4, 0.0, 0.0],
            list(((math.pi - 1e-3) * _unit([1.0, -1.0, 0.5])).tolist()),
        ],
    )
    def test_gradcheck(self, r):
        r = torch.tensor(r, dtype=torch.float64, requires_grad=True)
        _gradcheck(G.axis_angle_to_matrix, r)

    def test_gradient_at_zero_is_skew(self):
        """dR/dr_i at r = 0 is exactly skew(e_i), finite (no 0/0)."""
        r = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        jac = torch.autograd.functional.jacobian(G.axis_angle_to_matrix, r)  # (3, 3, 3)
        for i in range(3):
            e = torch.zeros(3, dtype=torch.float64)
            e[i] = 1
            _close(jac[..., i], G.skew(e))

    def test_awkward_float32_small_angles_accurate(self):
        r64 = torch.tensor(
            [[1e-7, 0, 0], [1e-3, 2e-3, 0], [0.0999, 0, 0], [0.1001, 0, 0]], dtype=torch.float64
        )
        R32 = G.axis_angle_to_matrix(r64.float())
        _close(R32.double(), torch.linalg.matrix_exp(G.skew(r64)), tol=F32)

    def test_awkward_continuous_across_taylor_threshold(self):
        r_in = torch.tensor([0.1 - 1e-12, 0.0, 0.0], dtype=torch.float64)
        r_out = torch.tensor([0.1 + 1e-12, 0.0, 0.0], dtype=torch.float64)
        _close(G.axis_angle_to_matrix(r_in), G.axis_angle_to_matrix(r_out))

    def test_awkward_gradient_finite_at_zero_float32(self):
        r = torch.zeros(2, 3, requires_grad=True)
        G.axis_angle_to_matrix(r).sum().backward()
        assert torch.isfinite(r.grad).all()


class TestMorphableShape:
    def test_smoke(self):
        mean, basis = _rand_model()
        alpha = torch.zeros(2, 4, dtype=torch.float64)
        X = G.morphable_shape(alpha, mean, basis)
        assert X.shape == (2, 13, 3) and X.dtype == torch.float64
        _close(X[1], mean)

    def test_batch_matches_einsum(self):
        mean, basis = _rand_model()
        alpha = torch.randn(5, 4, dtype=torch.float64)
        _close(
            G.morphable_shape(alpha, mean, basis), mean + torch.einsum("nck,bk->bnc", basis, alpha)
        )

    def test_casts_model_to_alpha_dtype(self):
        mean, basis = _rand_model()
        assert G.morphable_shape(torch.zeros(1, 4), mean, basis).dtype == torch.float32

    def test_gradcheck(self):
        mean, basis = _rand_model()
        alpha = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
        _gradcheck(lambda a: G.morphable_shape(a, mean, basis), alpha)

    def test_awkward_no_components(self):
        mean, _ = _rand_model()
        X = G.morphable_shape(
            torch.zeros(3, 0, dtype=torch.float64), mean, torch.zeros(13, 3, 0, dtype=torch.float64)
        )
        assert X.shape == (3, 13, 3)
        _close(X[2], mean)

    def test_module(self):
        mean, basis = _rand_model()
        alpha = torch.randn(2, 4, dtype=torch.float64)
        _close(G.MorphableShape(mean, basis)(alpha), G.morphable_shape(alpha, mean, basis))


class TestRotate:
    def test_smoke_and_convention(self):
        """Rows are rotated as column vectors: rotate(p, R)[n] = R @ p[n]."""
        p = torch.randn(2, 7, 3, dtype=torch.float64)
        R = G.axis_angle_to_matrix(torch.randn(2, 3, dtype=torch.float64))
        out = G.rotate(p, R)
        assert out.shape == (2, 7, 3)
        _close(out[1, 4], R[1] @ p[1, 4])

    def test_gradcheck(self):
        p = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
        r = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
        _gradcheck(lambda p_, r_: G.AxisAngleRotation()(p_, r_), p, r)


class TestProjectOrthographic:
    def test_smoke_flips_y_drops_z(self):
        p = torch.tensor([[[1.0, 2.0, 3.0], [-4.0, -5.0, 6.0]]], dtype=torch.float64)
        _close(
            G.project_orthographic(p),
            torch.tensor([[[1.0, -2.0], [-4.0, 5.0]]], dtype=torch.float64),
        )

    def test_gradcheck(self):
        p = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
        _gradcheck(G.OrthographicProjection(), p)


class TestScaleTranslate:
    def test_scale_is_exp(self):
        p = torch.randn(3, 4, 2, dtype=torch.float64)
        log_s = torch.tensor([0.0, math.log(2.0), -1.0], dtype=torch.float64)
        out = G.scale_points(p, log_s)
        _close(out[0], p[0])
        _close(out[1], 2 * p[1])
        _close(out[2], p[2] * math.exp(-1))

    def test_translate(self):
        p = torch.randn(3, 4, 2, dtype=torch.float64)
        t = torch.randn(3, 2, dtype=torch.float64)
        _close(G.translate_points(p, t), p + t[:, None])

    def test_gradcheck(self):
        p = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
        log_s = torch.randn(2, dtype=torch.float64, requires_grad=True)
        t = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
        _gradcheck(G.Scale2d(), p, log_s)
        _gradcheck(G.Translate2d(), p, t)


class TestProjectTheta:
    def _theta(self, b=3, k=4, seed=1):
        g = torch.Generator().manual_seed(seed)
        theta = torch.randn(b, 6 + k, generator=g, dtype=torch.float64)
        theta[:, 3:5] = theta[:, 3:5] * 10 + 50
        theta[:, 5] *= 0.3
        return theta

    def test_smoke(self):
        mean, basis = _rand_model()
        points, rotated = G.project_theta(self._theta(), mean, basis)
        assert points.shape == (3, 13, 2) and rotated.shape == (3, 13, 3)

    def test_matches_composition(self):
        mean, basis = _rand_model()
        theta = self._theta()
        points, rotated = G.project_theta(theta, mean, basis)
        X = mean + torch.einsum("nck,bk->bnc", basis, theta[:, 6:])
        R = torch.linalg.matrix_exp(G.skew(theta[:, :3]))
        Y = torch.einsum("bij,bnj->bni", R, X)
        s = torch.exp(theta[:, 5])[:, None]
        _close(rotated, Y)
        _close(points[..., 0], s * Y[..., 0] + theta[:, 3:4])
        _close(points[..., 1], -s * Y[..., 1] + theta[:, 4:5])

    def test_conventions_identity_pose(self):
        """No rotation, s = 1: the model origin lands on t, model up is image up (smaller y)."""
        mean = torch.tensor([[0.0, 0, 0], [0, 10, 0], [10, 0, 0]], dtype=torch.float64)
        theta = torch.tensor([[0, 0, 0, 111.5, 111.5, 0]], dtype=torch.float64)
        points, _ = G.project_theta(theta, mean, torch.zeros(3, 3, 0, dtype=torch.float64))
        _close(
            points[0],
            torch.tensor([[111.5, 111.5], [111.5, 101.5], [121.5, 111.5]], dtype=torch.float64),
        )

    def test_gradcheck(self):
        mean, basis = _rand_model(n=6, k=2)
        theta = self._theta(b=2, k=2).requires_grad_()
        _gradcheck(lambda th: G.project_theta(th, mean, basis), theta)
        _gradcheck(G.GridGenerator(mean, basis), theta)

    def test_awkward_wrong_coefficient_count(self):
        mean, basis = _rand_model()
        with pytest.raises(ValueError, match="4"):
            G.project_theta(torch.zeros(1, 8, dtype=torch.float64), mean, basis)


class TestInitialTheta:
    def test_centre(self):
        th = G.initial_theta(2, 10, height=224, width=200, log_s=0.5)
        assert th.shape == (2, 16)
        assert th[0, 3] == 99.5 and th[0, 4] == 111.5 and th[1, 5] == 0.5
        assert torch.all(th[:, :3] == 0) and torch.all(th[:, 6:] == 0)


class TestRotationHelpers:
    """matrix_to_axis_angle, euler_to_matrix and so3_left_jacobian."""

    def test_left_jacobian_series_and_closed_form_agree(self):
        g = torch.Generator().manual_seed(15)
        axis = torch.randn(4, 3, generator=g, dtype=torch.float64)
        axis = axis / axis.norm(dim=1, keepdim=True)
        below = G.so3_left_jacobian(axis * (0.5 - 1e-9))
        above = G.so3_left_jacobian(axis * (0.5 + 1e-9))
        torch.testing.assert_close(
            below, above, rtol=LEFT_JACOBIAN_SWITCH_TOL, atol=LEFT_JACOBIAN_SWITCH_TOL
        )
        torch.testing.assert_close(
            G.so3_left_jacobian(torch.zeros(1, 3, dtype=torch.float64)),
            torch.eye(3, dtype=torch.float64)[None],
            rtol=0,
            atol=0,
        )

    @pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-3, 1.0, 3.0, math.pi - 1e-7])
    def test_matrix_to_axis_angle_inverts_rodrigues(self, angle):
        g = torch.Generator().manual_seed(16)
        axis = torch.randn(6, 3, generator=g, dtype=torch.float64)
        r = axis / axis.norm(dim=1, keepdim=True) * angle
        back = G.matrix_to_axis_angle(G.axis_angle_to_matrix(r))
        _close(G.axis_angle_to_matrix(back), G.axis_angle_to_matrix(r))
        if angle < 3:
            _close(back, r)

    def test_euler_round_trip(self):
        g = np.random.default_rng(0)
        for _ in range(20):
            angles = torch.tensor(g.uniform(-1.2, 1.2, 3), dtype=torch.float64)
            rot = G.euler_to_matrix(angles)
            r = G.matrix_to_axis_angle(rot)
            np.testing.assert_allclose(G.axis_angle_to_matrix(r).numpy(), rot.numpy(), atol=1e-12)
        eye = torch.eye(3, dtype=torch.float64)
        np.testing.assert_allclose(G.matrix_to_axis_angle(eye).numpy(), np.zeros(3))
        # yaw alone is the axis-angle (0, yaw, 0): positive yaw turns the face towards +x
        yaw = G.euler_to_matrix(torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64))
        np.testing.assert_allclose(G.matrix_to_axis_angle(yaw).numpy(), [0, 0.3, 0], atol=1e-12)

    def test_batch_shapes(self):
        angles = torch.zeros(2, 5, 3, dtype=torch.float64)
        assert G.euler_to_matrix(angles).shape == (2, 5, 3, 3)
        assert G.matrix_to_axis_angle(G.euler_to_matrix(angles)).shape == (2, 5, 3)
        assert G.so3_left_jacobian(angles).shape == (2, 5, 3, 3)

    def test_euler_matches_the_elementary_rotations(self):
        """R = R_z(roll) R_y(yaw) R_x(pitch), each an axis-angle about its axis."""
        yaw, pitch, roll = 0.4, -0.3, 0.2
        got = G.euler_to_matrix(torch.tensor([yaw, pitch, roll], dtype=torch.float64))
        about = lambda axis, a: G.axis_angle_to_matrix(  # noqa: E731
            torch.tensor(axis, dtype=torch.float64) * a
        )
        want = about([0, 0, 1], roll) @ about([0, 1, 0], yaw) @ about([1, 0, 0], pitch)
        _close(got, want)


def _start(size: tuple[int, int], log_s: float, dtype=torch.float32) -> torch.Tensor:
    """The documented start pose: r = 0, t = ((W - 1) / 2, (H - 1) / 2), log_s, alpha = 0."""
    height, width = size
    theta = torch.zeros(6 + K, dtype=dtype)
    theta[3], theta[4], theta[5] = (width - 1) / 2, (height - 1) / 2, log_s
    return theta


class TestInitialLogScale:
    def test_box_formula(self):
        points = np.array([[50.0, -100.0, 3.0], [-20.0, 40.0, 0.0]])
        got = G.initial_log_scale(points, (224, 200), fill=0.9)
        # width binds: (200 / 2) / 50 = 2 > (224 / 2) / 100 = 1.12
        assert got == pytest.approx(math.log(0.9 * 1.12), rel=1e-12)

    def test_inside_mask_and_tensor_input(self):
        points = torch.tensor([[50.0, -100.0, 3.0], [-20.0, 40.0, 0.0], [900.0, 900.0, 0.0]])
        inside = torch.tensor([True, True, False])
        assert G.initial_log_scale(points, (224, 200), 0.9, inside=inside) == pytest.approx(
            math.log(0.9 * 1.12), rel=1e-6
        )

    def test_projected_mean_face_fills_the_image(self):
        """With the start pose, stn-core's projection puts the mean inside the image, and its
        binding half-extent is fill times the half-size of the image."""
        g = torch.Generator().manual_seed(1)
        mean = torch.randn(500, 3, generator=g, dtype=torch.float64) * torch.tensor(
            [40.0, 60.0, 30.0], dtype=torch.float64
        )
        size, fill = (120, 160), 0.8
        log_s = G.initial_log_scale(mean, size, fill)
        theta = _start(size, log_s, torch.float64)[None]
        basis = torch.zeros(500, 3, K, dtype=torch.float64)
        points = G.project_theta(theta, mean, basis)[0][0]  # (N, 2) pixels
        centre = torch.tensor([(160 - 1) / 2, (120 - 1) / 2], dtype=torch.float64)
        half = (points - centre).abs().max(0).values / torch.tensor([80.0, 60.0]).double()
        assert half.max().item() == pytest.approx(fill, rel=1e-9)
        assert (half <= fill + 1e-12).all()

    def test_bad_input(self):
        with pytest.raises(ValueError):
            G.initial_log_scale(np.zeros((4, 2)), (224, 224))
        with pytest.raises(ValueError):
            G.initial_log_scale(np.zeros((4, 3)), (224, 224))
