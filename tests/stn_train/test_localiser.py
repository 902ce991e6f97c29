"""The localiser: its start pose, head units, errors, utilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stn_train.backbones import SmallCNN
from stn_train.errors import TrainError
from stn_train.localiser import Localiser, build_localiser, count_parameters

from tests.tolerances import TOL

K = 10
N_PARAMS = 6 + K
RTOL32, ATOL32 = TOL[np.float32]


def _images(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def _start(size: tuple[int, int], log_s: float, dtype=torch.float32) -> torch.Tensor:
    """The documented start pose: r = 0, t = ((W - 1) / 2, (H - 1) / 2), log_s, alpha = 0."""
    height, width = size
    theta = torch.zeros(N_PARAMS, dtype=dtype)
    theta[3], theta[4], theta[5] = (width - 1) / 2, (height - 1) / 2, log_s
    return theta


class TestStartPose:
    @pytest.mark.parametrize("name,kwargs", [("small", {}), ("vgg16", {"width_divisor": 16})])
    def test_zero_head_weights_give_the_start_pose_exactly(self, name, kwargs):
        size = (112, 96)  # non-square: t_x is (W - 1) / 2 = 47.5, t_y is (H - 1) / 2 = 55.5
        model = build_localiser(
            name, N_PARAMS, size, init_log_s=-0.25, head_init_gain=0.0, **kwargs
        ).eval()
        theta = model(_images(3, size))
        assert theta.dtype == torch.float32 and theta.shape == (3, N_PARAMS)
        want = _start(size, -0.25).expand(3, -1)
        torch.testing.assert_close(theta, want, rtol=RTOL32, atol=ATOL32)
        torch.testing.assert_close(model.start_theta(), want[0], rtol=RTOL32, atol=ATOL32)

    def test_small_head_weights_stay_near_the_start_pose(self):
        """Default head: within the Cauchy-Schwarz bound of the small weights, and within a
        half a pixel / 0.01 (radians, log-scale, alpha) of the start pose, yet not exactly at it."""
        size = (112, 112)
        torch.manual_seed(0)
        model = build_localiser("small", N_PARAMS, size, init_log_s=-0.1).eval()
        images = _images(4, size)
        with torch.no_grad():
            features = model.features(images)
            theta = model(images)
        start = _start(size, -0.1)
        deviation = (theta - start).abs()
        bound = model.theta_scale * model.head.weight.norm(dim=1) * features.norm(dim=1)[:, None]
        assert (deviation <= bound * (1 + RTOL32) + RTOL32 * start.abs()).all()
        assert deviation[:, 3:5].max() < 0.5, "t moved more than half a pixel"
        assert deviation[:, [0, 1, 2, 5]].max() < 1e-2 and deviation[:, 6:].max() < 1e-2
        assert deviation.max() > 0, "head weights are exactly zero"

    def test_init_theta_override(self):
        size = (64, 64)
        pose = [0.1, -0.2, 0.3, 30.0, 20.0, 0.5]
        model = build_localiser("small", N_PARAMS, size, init_theta=pose, head_init_gain=0.0)
        want = torch.tensor(pose + [0.0] * K)
        torch.testing.assert_close(model(_images(1, size))[0], want, rtol=RTOL32, atol=ATOL32)
        full = torch.arange(N_PARAMS, dtype=torch.float32)
        model = Localiser(SmallCNN(), N_PARAMS, size, init_theta=full, head_init_gain=0.0)
        torch.testing.assert_close(model.start_theta(), full, rtol=RTOL32, atol=ATOL32)
        with pytest.raises(ValueError):
            Localiser(SmallCNN(), N_PARAMS, size, init_theta=[0.0] * 7)

    def test_head_units(self):
        """theta = head output * [1, 1, 1, W, H, 1, ...]: t is predicted in image fractions."""
        size = (90, 120)
        model = build_localiser("small", N_PARAMS, size)
        want = torch.ones(N_PARAMS)
        want[3], want[4] = 120, 90
        assert torch.equal(model.theta_scale, want)
        features = torch.randn(2, model.backbone.out_features)
        raw = model.head(features)
        torch.testing.assert_close(model.head_to_theta(features), raw * want)

    def test_float32_theta_under_bfloat16_autocast(self):
        size = (224, 224)
        model = build_localiser("small", N_PARAMS, size, init_log_s=-0.12, head_init_gain=0.0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            theta = model(_images(2, size))
        assert theta.dtype == torch.float32
        # in bfloat16, 111.5 px would survive but e.g. -0.12 would round to -0.1201..; the
        # float32 head keeps both to float32 precision
        torch.testing.assert_close(theta[0], _start(size, -0.12), rtol=RTOL32, atol=ATOL32)

    def test_float64_model_gives_float64_theta(self):
        size = (32, 32)
        model = build_localiser("small", N_PARAMS, size, init_log_s=-0.12, head_init_gain=0.0)
        theta = model.double()(_images(1, size).double())
        assert theta.dtype == torch.float64
        want = _start(size, -0.12, torch.float64)
        torch.testing.assert_close(theta[0], want, rtol=RTOL32, atol=ATOL32)  # float32 init


class TestTraining:
    def test_gradients_reach_the_backbone_from_the_first_step(self):
        size = (64, 64)
        torch.manual_seed(0)
        model = build_localiser("small", N_PARAMS, size)
        theta = model(_images(2, size))
        target = _start(size, 0.0) + 1.0
        ((theta - target) ** 2).sum().backward()
        first = model.backbone.features[0].weight.grad
        assert torch.isfinite(first).all() and first.abs().sum() > 0
        assert model.head.weight.grad.abs().sum() > 0

    def test_channels_last(self):
        size = (96, 96)
        torch.manual_seed(0)
        model = build_localiser("vgg16", N_PARAMS, size, width_divisor=16).eval()
        fast = build_localiser("vgg16", N_PARAMS, size, width_divisor=16, channels_last=True)
        fast.load_state_dict(model.state_dict())
        assert fast.backbone.conv1_1.weight.is_contiguous(memory_format=torch.channels_last)
        images = _images(2, size)
        want = model(images)
        got = fast.eval()(images.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(got, want, rtol=RTOL32, atol=ATOL32)


class TestErrors:
    def test_missing_weights_file_names_what_to_pass(self, tmp_path):
        path = tmp_path / "vgg-face.mat"
        with pytest.raises(TrainError) as info:
            build_localiser("vgg16", N_PARAMS, weights=path)
        message = str(info.value)
        assert str(path) in message and "pass the path of" in message and "\n" not in message

    def test_unknown_backbone(self):
        with pytest.raises(TrainError, match="unknown backbone 'alexnet'"):
            build_localiser("alexnet", N_PARAMS)

    def test_wrong_image_size(self):
        model = build_localiser("small", N_PARAMS, (64, 64))
        with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
            model(torch.rand(1, 3, 64, 80))
        with pytest.raises(ValueError):
            build_localiser("small", 5)


def test_count_parameters():
    model = build_localiser("small", N_PARAMS, (64, 64))
    head = model.backbone.out_features * N_PARAMS + N_PARAMS
    backbone = sum(p.numel() for p in model.backbone.parameters())
    assert count_parameters(model) == backbone + head
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == head
    assert count_parameters(model) == backbone + head
