"""Backbones: VGG-Face (state-dict loader), the small CNN, torchvision ResNets, the registry."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stn_train.backbones import BACKBONES, SmallCNN, VGGFace, build_backbone, load_vgg_state_dict
from stn_train.backbones.vgg import VGGFACE_MEAN_RGB, vgg_param_shapes
from stn_train.errors import TrainError

from tests.tolerances import TOL

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
DIVISOR = 16


def _random_state(divisor: int = DIVISOR, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(shape, generator=g) * 0.1 for k, shape in vgg_param_shapes(divisor).items()
    }


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    rtol, atol = TOL[np.float32] if actual.dtype == torch.float32 else TOL[np.float64]
    scale = max(expected.abs().max().item(), 1.0)
    err = (actual - expected).abs()
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol * scale), (
        f"{what}: max error {err.max().item():.3g} "
        f"at index {np.unravel_index(err.argmax(), err.shape)}"
    )


def _load_error(path) -> str:
    with pytest.raises(TrainError) as info:
        load_vgg_state_dict(path)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    return message


class TestVGGFace:
    def test_smoke_shapes(self):
        model = VGGFace(width_divisor=DIVISOR).eval()
        out = model(torch.rand(2, 3, 224, 224))
        assert out.shape == (2, 4096 // DIVISOR) and model.out_features == 4096 // DIVISOR
        assert (out >= 0).all() and out.abs().sum() > 0
        # other input sizes run too (pool5 is resized to 7 x 7)
        assert model(torch.rand(1, 3, 96, 112)).shape == (1, 4096 // DIVISOR)

    def test_full_width_parameter_count(self):
        # VGG-16 without fc8: 14,714,688 conv + 102,764,544 fc6 + 16,781,312 fc7
        shapes = vgg_param_shapes(1)
        assert sum(int(np.prod(s)) for s in shapes.values()) == 134_260_544

    def test_input_normalisation_is_vggface_mean_in_0_255(self):
        model = VGGFace(width_divisor=DIVISOR)
        x = torch.rand(1, 3, 4, 5)
        want = x * 255 - torch.tensor(VGGFACE_MEAN_RGB).view(1, 3, 1, 1)
        _close(model.normalise(x), want, "normalise")

    def test_channels_last_same_output(self):
        model = VGGFace(width_divisor=DIVISOR).eval()
        x = torch.rand(2, 3, 224, 224)
        want = model(x)
        got = model.to(memory_format=torch.channels_last)(
            x.contiguous(memory_format=torch.channels_last)
        )
        _close(got, want, "channels_last")


class TestLoadVggStateDict:
    def test_own_layout_round_trip_and_reference_conv(self, tmp_path):
        state = _random_state()
        torch.save(state, tmp_path / "w.pt")
        model = load_vgg_state_dict(tmp_path / "w.pt").eval()
        assert model.width_divisor == DIVISOR
        x = torch.randn(1, 3, 10, 13)
        want = F.conv2d(x, state["conv1_1.weight"], state["conv1_1.bias"], padding=1)
        _close(model.conv1_1(x), want, "conv1_1")
        assert model.mean_rgb.tolist() == pytest.approx(VGGFACE_MEAN_RGB)

    def test_torchvision_layout_and_conv_fc_weights(self, tmp_path):
        """torchvision keys (features.N / classifier.N), fc6 stored as a (F, C, 7, 7) conv
        (vgg_face_dag style), a module. prefix and an fc8 all load; fc6 equals that conv."""
        state = _random_state()
        names = [k.split(".")[0] for k in state if k.startswith("conv") and k.endswith("weight")]
        indices = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
        tv = {}
        for name, i in zip(names, indices, strict=True):
            for leaf in ("weight", "bias"):
                tv[f"module.features.{i}.{leaf}"] = state[f"{name}.{leaf}"]
        c = 512 // DIVISOR
        fc6_conv = state["fc6.weight"].reshape(-1, c, 7, 7)
        tv["module.classifier.0.weight"] = fc6_conv
        tv["module.classifier.0.bias"] = state["fc6.bias"]
        tv["module.classifier.3.weight"] = state["fc7.weight"]
        tv["module.classifier.3.bias"] = state["fc7.bias"]
        tv["module.classifier.6.weight"] = torch.zeros(10, 4096 // DIVISOR)
        tv["module.classifier.6.bias"] = torch.zeros(10)
        torch.save(tv, tmp_path / "tv.pth")
        model = load_vgg_state_dict(tmp_path / "tv.pth")
        pool5 = torch.randn(2, c, 7, 7)
        want = F.conv2d(pool5, fc6_conv, state["fc6.bias"]).flatten(1)
        _close(model.fc6(pool5.flatten(1)), want, "fc6 vs the 7 x 7 conv")
        for key, value in state.items():
            assert torch.equal(model.state_dict()[key], value), key

    def test_missing_file(self, tmp_path):
        message = _load_error(tmp_path / "vggface.pt")
        assert "does not exist" in message and "vggface.pt" in message

    def test_not_a_torch_file(self, tmp_path):
        (tmp_path / "w.pt").write_bytes(b"not a zip file at all")
        assert "not a readable PyTorch state dict" in _load_error(tmp_path / "w.pt")

    def test_not_a_mapping(self, tmp_path):
        torch.save(torch.zeros(3), tmp_path / "w.pt")
        assert "not a state dict" in _load_error(tmp_path / "w.pt")

    def test_missing_and_unexpected_keys(self, tmp_path):
        state = _random_state()
        del state["conv3_2.bias"]
        state["conv9_9.weight"] = torch.zeros(1)
        torch.save(state, tmp_path / "w.pt")
        message = _load_error(tmp_path / "w.pt")
        assert "missing conv3_2.bias" in message and "unexpected conv9_9.weight" in message

    def test_wrong_shape(self, tmp_path):
        state = _random_state()
        state["fc7.weight"] = torch.zeros(4096 // DIVISOR, 7)
        torch.save(state, tmp_path / "w.pt")
        assert "wrong shape fc7.weight (256, 7) (expected (256, 256))" in _load_error(
            tmp_path / "w.pt"
        )

    def test_bad_first_layer(self, tmp_path):
        state = _random_state()
        state["conv1_1.weight"] = torch.zeros(5, 3, 3, 3)
        torch.save(state, tmp_path / "w.pt")
        assert "conv1_1.weight" in _load_error(tmp_path / "w.pt")


class TestSmallCNN:
    @pytest.mark.parametrize("size", [(224, 224), (112, 112), (96, 80)])
    def test_shapes(self, size):
        model = SmallCNN()
        out = model(torch.rand(2, 3, *size))
        assert out.shape == (2, model.out_features)
        out.sum().backward()
        assert model.features[0].weight.grad.abs().sum() > 0

    def test_group_norm_output_independent_of_batch(self):
        model = SmallCNN().train()
        x = torch.rand(3, 3, 96, 96)
        _close(model(x[:1]), model(x)[:1], "one image alone vs in a batch")

    def test_batch_norm_option(self):
        model = SmallCNN(norm="batch")
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        with pytest.raises(ValueError):
            SmallCNN(norm="layer")

    def test_weights_round_trip_and_mismatch(self, tmp_path):
        model = SmallCNN()
        torch.save(model.state_dict(), tmp_path / "small.pt")
        again = build_backbone("small", tmp_path / "small.pt")
        for key, value in model.state_dict().items():
            assert torch.equal(again.state_dict()[key], value), key
        with pytest.raises(TrainError, match="does not fit the small backbone"):
            build_backbone("small", tmp_path / "small.pt", out_features=64)
        with pytest.raises(TrainError, match="does not exist"):
            build_backbone("small", tmp_path / "absent.pt")


class TestRegistry:
    def test_names(self):
        assert BACKBONES == ("vgg16", "resnet18", "resnet50", "small")
        assert isinstance(build_backbone("vgg16", width_divisor=DIVISOR), VGGFace)

    def test_unknown_name(self):
        with pytest.raises(TrainError, match="unknown backbone 'vgg19'; choose one of"):
            build_backbone("vgg19")

    def test_mat_suffix_goes_to_the_matconvnet_reader(self, tmp_path):
        (tmp_path / "vgg-face.mat").write_text("not a MAT-file")
        with pytest.raises(TrainError, match="not a readable MATLAB MAT-file"):
            build_backbone("vgg16", tmp_path / "vgg-face.mat")


@pytest.mark.skipif(HAS_TORCHVISION, reason="torchvision is installed: the absent case can't run")
def test_resnet_without_torchvision_names_the_extra():
    with pytest.raises(TrainError, match=r"pip install 'stn-train\[torchvision\]'"):
        build_backbone("resnet18")


@pytest.mark.skipif(
    not HAS_TORCHVISION, reason="torchvision not installed (stn-train[torchvision])"
)
class TestResNet:
    @pytest.mark.parametrize("name,dim", [("resnet18", 512), ("resnet50", 2048)])
    def test_features(self, name, dim):
        model = build_backbone(name).eval()
        assert model.out_features == dim
        assert model(torch.rand(1, 3, 112, 112)).shape == (1, dim)

    def test_local_weights_with_fc_and_mismatch(self, tmp_path):
        import torchvision

        net = torchvision.models.resnet18(weights=None)
        torch.save(net.state_dict(), tmp_path / "resnet18.pth")  # includes the ImageNet fc
        model = build_backbone("resnet18", tmp_path / "resnet18.pth")
        assert torch.equal(model.net.conv1.weight, net.conv1.weight)
        x = torch.rand(1, 3, 64, 64)
        net.fc = torch.nn.Identity()
        want = net.eval()(
            (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        )
        _close(model.eval()(x), want, "resnet18 features")
        with pytest.raises(TrainError, match="does not fit torchvision's resnet50"):
            build_backbone("resnet50", tmp_path / "resnet18.pth")
        with pytest.raises(TrainError, match="does not exist"):
            build_backbone("resnet18", tmp_path / "absent.pth")
