"""The MatConvNet vgg-face.mat loader, against small simplenn files written here.

The files follow the published layout exactly (a 1 x L cell of structs name / type / weights
{W, b} / stride / pad / pool / method, W as H x W x Cin x Cout, fully connected layers stored as
convolutions, meta.normalization.averageImage 1 x 1 x 3 and imageSize), with every channel
count divided by 16 so they stay small. The loaded network is checked against an independent
numpy implementation of the MATLAB network (correlation with the H x W x Cin x Cout filters,
fc6 as a 7 x 7 filter over pool5), which fixes the weight permutation and fc6's flatten order.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io as sio
import torch
from stn_train.backbones import VGGFace, load_matconvnet_vggface, load_vgg_state_dict
from stn_train.backbones.matconvnet import convert_matconvnet_vggface, read_simplenn
from stn_train.backbones.vgg import VGG16_CONV_NAMES, VGG16_POOL_AFTER, VGGFACE_MEAN_RGB
from stn_train.errors import TrainError

from tests.tolerances import TOL

DIVISOR = 16
FC = 4096 // DIVISOR
N_CLASSES = 7  # fc8's width (2622 identities in VGG-Face)


def _cell(*items) -> np.ndarray:
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def vggface_layers(rng: np.random.Generator, fc8: bool = True) -> tuple[list[dict], dict]:
    """The simplenn layer structs of VGG-Face / DIVISOR, and name -> (W, b) float32 arrays."""
    layers, weights = [], {}

    def conv(name, kh, c_in, c_out, pad, bias_shape):
        w = rng.standard_normal((kh, kh, c_in, c_out)) * np.sqrt(2.0 / (kh * kh * c_in))
        b = rng.standard_normal(bias_shape) * 0.1
        w, b = w.astype(np.float32), b.astype(np.float32)
        weights[name] = (w, b)
        layers.append(
            {
                "name": name,
                "type": "conv",
                "weights": _cell(w, b),
                "stride": np.array([[1.0, 1.0]]),
                "pad": np.full((1, 4), float(pad)),
                "opts": np.empty((1, 0), dtype=object),
            }
        )

    c_in = 3
    for name, width in VGG16_CONV_NAMES:
        c_out = width // DIVISOR
        conv(name, 3, c_in, c_out, 1, (c_out, 1))
        layers.append({"name": "relu" + name[4:], "type": "relu", "leak": 0.0})
        if name in VGG16_POOL_AFTER:
            layers.append(
                {
                    "name": "pool" + name[4],
                    "type": "pool",
                    "method": "max",
                    "pool": np.array([[2.0, 2.0]]),
                    "stride": np.array([[2.0, 2.0]]),
                    "pad": np.zeros((1, 4)),
                }
            )
        c_in = c_out
    conv("fc6", 7, c_in, FC, 0, (1, FC))
    layers.append({"name": "relu6", "type": "relu"})
    conv("fc7", 1, FC, FC, 0, (1, FC))
    layers.append({"name": "relu7", "type": "relu"})
    if fc8:
        conv("fc8", 1, FC, N_CLASSES, 0, (1, N_CLASSES))
        layers.append({"name": "prob", "type": "softmax"})
    return layers, weights


def meta(average=VGGFACE_MEAN_RGB) -> dict:
    return {
        "normalization": {
            "averageImage": np.asarray(average, dtype=np.float32).reshape(1, 1, -1)
            if np.size(average) == 3
            else np.asarray(average, dtype=np.float32),
            "imageSize": np.array([[224.0, 224.0, 3.0]]),
            "interpolation": "bilinear",
        },
        "classes": {"name": _cell(*[f"id{i}" for i in range(N_CLASSES)])},
    }


def write_mat(path, layers: list[dict], meta_struct: dict | None = None, as_net=False) -> None:
    variables = {"layers": _cell(*layers), "meta": meta_struct or meta()}
    sio.savemat(path, {"net": variables} if as_net else variables)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(path of a tiny vgg-face.mat, its weights, its loaded VGGFace in float64, eval mode)."""
    rng = np.random.default_rng(5)
    layers, weights = vggface_layers(rng)
    path = tmp_path_factory.mktemp("vggface") / "vgg-face.mat"
    write_mat(path, layers)
    return path, weights, load_matconvnet_vggface(path).double().eval()


# ---- an independent numpy implementation of the MATLAB network -------------------------------


def np_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """MatConvNet vl_nnconv: correlation of x (Cin, H, W) with w (kh, kw, Cin, Cout)."""
    kh, kw = w.shape[:2]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    out = np.zeros((w.shape[3], ho, wo)) + b.reshape(-1, 1, 1)
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("chw,co->ohw", xp[:, i : i + ho, j : j + wo], w[i, j])
    return out


def np_maxpool(x: np.ndarray) -> np.ndarray:
    c, h, w = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))


def np_vggface_fc7(image: np.ndarray, weights: dict, mean_rgb) -> np.ndarray:
    """fc7 features (after ReLU) of one (3, 224, 224) image in [0, 1], float64."""
    x = image * 255.0 - np.asarray(mean_rgb, dtype=np.float64).reshape(3, 1, 1)
    for name, _ in VGG16_CONV_NAMES:
        w, b = (a.astype(np.float64) for a in weights[name])
        x = np.maximum(np_conv(x, w, b, 1), 0)
        if name in VGG16_POOL_AFTER:
            x = np_maxpool(x)
    for name in ("fc6", "fc7"):
        w, b = (a.astype(np.float64) for a in weights[name])
        x = np.maximum(np_conv(x, w, b, 0), 0)
    assert x.shape[1:] == (1, 1)
    return x.reshape(-1)


def assert_close(actual, expected, dtype, what: str) -> None:
    rtol, atol = TOL[dtype]
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = np.abs(expected).max()
    err = np.abs(actual - expected)
    worst = np.unravel_index(err.argmax(), err.shape)
    assert np.allclose(actual, expected, rtol=rtol, atol=atol * max(scale, 1.0)), (
        f"{what}: max error {err.max():.3g} at {worst} (value {expected[worst]:.6g}, "
        f"scale {scale:.3g})"
    )


# ---- tests ------------------------------------------------------------------------------------


class TestReadSimplenn:
    def test_layers_and_meta(self, tiny):
        path, weights, _ = tiny
        net = read_simplenn(path)
        assert len(net.layers) == 13 * 2 + 5 + 3 + 2 + 1  # 37 layers, as vgg-face.mat
        assert [layer.type for layer in net.layers[:5]] == ["conv", "relu", "conv", "relu", "pool"]
        first = net.layers[0]
        assert first.name == "conv1_1"
        np.testing.assert_array_equal(first.weights[0], weights["conv1_1"][0])
        assert first.weights[0].shape == (3, 3, 3, 64 // DIVISOR)  # H x W x Cin x Cout
        assert net.mean_rgb == pytest.approx(VGGFACE_MEAN_RGB, rel=1e-6)
        assert net.image_size == (224, 224)


class TestLoadMatconvnetVggface:
    def test_first_conv_is_matlab_correlation(self, tiny):
        path, weights, model = tiny
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, 3, 9, 11))  # non-square: a swapped H / W axis shows
        got = model.conv1_1(torch.from_numpy(x))[0].detach().numpy()
        want = np_conv(x[0], *(a.astype(np.float64) for a in weights["conv1_1"]), pad=1)
        assert_close(got, want, np.float64, "conv1_1")

    def test_fc6_reads_pool5_as_the_7x7_matlab_filter(self, tiny):
        _, weights, model = tiny
        c = 512 // DIVISOR
        pool5 = np.random.default_rng(1).standard_normal((c, 7, 7))
        got = model.fc6(torch.from_numpy(pool5).reshape(1, -1))[0].detach().numpy()
        w, b = (a.astype(np.float64) for a in weights["fc6"])
        want = np.einsum("hwco,chw->o", w, pool5) + b.reshape(-1)
        assert_close(got, want, np.float64, "fc6")

    def test_network_matches_numpy_reference(self, tiny):
        path, weights, model = tiny
        # The file stores averageImage in single precision, as the published one does.
        mean_rgb = np.float32(VGGFACE_MEAN_RGB).astype(np.float64)
        images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
        got = model(images.double()).detach().numpy()
        for i in range(2):
            want = np_vggface_fc7(images[i].double().numpy(), weights, mean_rgb)
            assert (want > 0).mean() > 0.1, "reference features are almost all zero"
            assert_close(got[i], want, np.float64, f"fc7 features of image {i}")

    def test_net_struct_and_missing_fc8_load_the_same(self, tiny, tmp_path):
        path, _, model = tiny
        rng = np.random.default_rng(5)  # the same weights as the fixture
        layers, _ = vggface_layers(rng, fc8=True)
        write_mat(tmp_path / "net.mat", layers, as_net=True)
        write_mat(tmp_path / "nofc8.mat", layers[:-2])
        for name in ("net.mat", "nofc8.mat"):
            other = load_matconvnet_vggface(tmp_path / name).double()
            for key, value in model.state_dict().items():
                assert torch.equal(other.state_dict()[key], value), f"{name}: {key} differs"

    def test_mean_colour_from_meta(self, tmp_path):
        layers, _ = vggface_layers(np.random.default_rng(3), fc8=False)
        write_mat(tmp_path / "a.mat", layers, meta((100.0, 110.0, 120.0)))
        assert load_matconvnet_vggface(tmp_path / "a.mat").mean_rgb.tolist() == pytest.approx(
            [100.0, 110.0, 120.0]
        )
        image = np.stack([np.full((4, 4), v, np.float32) for v in (10.0, 20.0, 30.0)], axis=2)
        image[0, 0, 0] = 26.0  # the average image is reduced to its mean colour
        write_mat(tmp_path / "b.mat", layers, meta(image))
        assert load_matconvnet_vggface(tmp_path / "b.mat").mean_rgb.tolist() == pytest.approx(
            [11.0, 20.0, 30.0]
        )

    def test_convert_round_trip(self, tiny, tmp_path):
        path, _, model = tiny
        out = convert_matconvnet_vggface(path, tmp_path / "vggface.pt")
        again = load_vgg_state_dict(out).double()
        assert isinstance(again, VGGFace) and again.width_divisor == DIVISOR
        for key, value in model.state_dict().items():
            assert torch.equal(again.state_dict()[key], value), key
        assert not list(tmp_path.glob("*.tmp"))


class TestBadFiles:
    def _error(self, path) -> str:
        with pytest.raises(TrainError) as info:
            load_matconvnet_vggface(path)
        message = str(info.value)
        assert "\n" not in message and message.endswith(".")
        return message

    def test_missing_file(self, tmp_path):
        message = self._error(tmp_path / "vgg-face.mat")
        assert "does not exist" in message and "vgg-face.mat" in message

    def test_not_a_mat_file(self, tmp_path):
        path = tmp_path / "vgg-face.mat"
        path.write_text("<html>404 not found</html>")
        assert "not a readable MATLAB MAT-file" in self._error(path)

    def test_no_layers_variable(self, tmp_path):
        path = tmp_path / "x.mat"
        sio.savemat(path, {"weights": np.zeros(3)})
        assert "no 'layers'" in self._error(path)

    def test_wrong_layer_count(self, tmp_path):
        layers, _ = vggface_layers(np.random.default_rng(4))
        del layers[14:16]  # conv3_3 and relu3_3: 12 convs before fc6
        write_mat(tmp_path / "x.mat", layers)
        assert "not VGG-16's 16 conv" in self._error(tmp_path / "x.mat")

    def test_wrong_filter_shape(self, tmp_path):
        layers, _ = vggface_layers(np.random.default_rng(4))
        conv2_1 = next(layer for layer in layers if layer["name"] == "conv2_1")
        w = np.zeros((5, 5, 64 // DIVISOR, 128 // DIVISOR), np.float32)  # 5 x 5, not 3 x 3
        conv2_1["weights"] = _cell(w, np.zeros((128 // DIVISOR, 1), np.float32))
        write_mat(tmp_path / "x.mat", layers)
        message = self._error(tmp_path / "x.mat")
        assert "wrong shape conv2_1.weight" in message and "(8, 4, 5, 5)" in message

    def test_wrong_fc6_input(self, tmp_path):
        layers, _ = vggface_layers(np.random.default_rng(4))
        fc6 = next(layer for layer in layers if layer["name"] == "fc6")
        fc6["weights"] = _cell(np.zeros((6, 6, 32, FC), np.float32), np.zeros((1, FC), np.float32))
        write_mat(tmp_path / "x.mat", layers)
        assert "wrong shape fc6.weight" in self._error(tmp_path / "x.mat")

    def test_wrong_pooling(self, tmp_path):
        layers, _ = vggface_layers(np.random.default_rng(4))
        next(layer for layer in layers if layer["type"] == "pool")["pool"] = np.array([[3.0, 3.0]])
        write_mat(tmp_path / "x.mat", layers)
        assert "2 x 2 max pool" in self._error(tmp_path / "x.mat")

    def test_conv_without_bias(self, tmp_path):
        layers, weights = vggface_layers(np.random.default_rng(4))
        layers[0]["weights"] = _cell(weights["conv1_1"][0])
        write_mat(tmp_path / "x.mat", layers)
        assert "not {W, b}" in self._error(tmp_path / "x.mat")
