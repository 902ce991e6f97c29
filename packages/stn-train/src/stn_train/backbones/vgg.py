"""The VGG-Face network (VGG-16, Parkhi et al. 2015) as the localiser's feature extractor.

Architecture (the MatConvNet ``vgg-face.mat`` order, the classification layer fc8 removed):

    conv1_1 conv1_2 pool1 | conv2_1 conv2_2 pool2 | conv3_1..3 pool3 | conv4_1..3 pool4 |
    conv5_1..3 pool5 | fc6 relu6 drop6 | fc7 relu7 drop7 -> (B, 4096) features

Every conv is 3 x 3, stride 1, padding 1, followed by ReLU; every pool is 2 x 2 max, stride 2.
At 224 x 224 pool5 is (B, 512, 7, 7); an adaptive average pool to 7 x 7 (the identity at
224 x 224) lets other input sizes run too, though the pretrained weights expect 224. fc6 and
fc7 are ``nn.Linear``; fc6 reads pool5 flattened in PyTorch's (C, H, W) order, so fc6's weight
is the MatConvNet 7 x 7 x 512 x 4096 filter permuted to (4096, 512, 7, 7) and reshaped.

Input normalisation (inside the network): images are (B, 3, H, W) RGB float in [0, 1]; the
network computes ``255 * x - mean_rgb``, with ``mean_rgb`` the VGG-Face average colour, in
0..255 units: (129.1863, 104.7624, 93.5940) = ``meta.normalization.averageImage`` of the
MatConvNet ``vgg-face.mat`` (the MatConvNet demo subtracts it from images in 0..255 after
resizing to ``meta.normalization.imageSize`` = 224 x 224). No division by a standard deviation.

``width_divisor`` divides every channel count (64..512 convs, 4096 fc) for small test networks.

State dict keys (also those of the common VGG-Face conversion ``vgg_face_dag.pth``):
``conv1_1.weight`` (64, 3, 3, 3), ``conv1_1.bias`` (64,), ... ``conv5_3.*``, ``fc6.weight``
(4096, 25088), ``fc6.bias``, ``fc7.weight`` (4096, 4096), ``fc7.bias``, and the buffer
``mean_rgb`` (3,). :func:`load_vgg_state_dict` also accepts torchvision's VGG-16 key layout
(``features.N``, ``classifier.N``), fc weights stored as 4-D convolutions, a ``module.``
prefix, and drops ``fc8`` (the classification layer). The input normalisation stays
VGG-Face's: torchvision's own ImageNet VGG-16 weights, which expect ImageNet mean / std on
[0, 1] inputs, load but are not what this network is meant to start from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from stn_train.backbones._weights import read_state_dict
from stn_train.errors import TrainError

__all__ = [
    "VGGFACE_MEAN_RGB",
    "VGG16_CONV_NAMES",
    "VGG16_POOL_AFTER",
    "VGGFace",
    "vgg_param_shapes",
    "load_vgg_state_dict",
    "vgg_state_dict_from_any",
]

# meta.normalization.averageImage of the MatConvNet vgg-face.mat, RGB, 0..255.
VGGFACE_MEAN_RGB = (129.1863, 104.7624, 93.5940)

# (name, full-width output channels) of the 13 convolutions, in order.
VGG16_CONV_NAMES = (
    ("conv1_1", 64),
    ("conv1_2", 64),
    ("conv2_1", 128),
    ("conv2_2", 128),
    ("conv3_1", 256),
    ("conv3_2", 256),
    ("conv3_3", 256),
    ("conv4_1", 512),
    ("conv4_2", 512),
    ("conv4_3", 512),
    ("conv5_1", 512),
    ("conv5_2", 512),
    ("conv5_3", 512),
)
# A 2 x 2 max pool follows these convolutions (pool1 .. pool5).
VGG16_POOL_AFTER = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")
FC_WIDTH = 4096
POOL5_SIZE = 7

# torchvision's vgg16 module indices -> our names (fc8 = classifier.6 is dropped).
_TORCHVISION_NAMES = dict(
    zip(
        [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)],
        [name for name, _ in VGG16_CONV_NAMES],
        strict=True,
    )
) | {"classifier.0": "fc6", "classifier.3": "fc7", "classifier.6": "fc8"}


def _check_divisor(width_divisor: int) -> int:
    if (
        not isinstance(width_divisor, int)
        or width_divisor < 1
        or 64 % width_divisor
        or FC_WIDTH % width_divisor
    ):
        raise ValueError(f"width_divisor must be a divisor of 64, got {width_divisor!r}.")
    return width_divisor


def vgg_param_shapes(width_divisor: int = 1) -> dict[str, tuple[int, ...]]:
    """The PyTorch shape of every parameter of :class:`VGGFace` (fc8 excluded), in order."""
    _check_divisor(width_divisor)
    shapes: dict[str, tuple[int, ...]] = {}
    c_in = 3
    for name, width in VGG16_CONV_NAMES:
        c_out = width // width_divisor
        shapes[f"{name}.weight"] = (c_out, c_in, 3, 3)
        shapes[f"{name}.bias"] = (c_out,)
        c_in = c_out
    fc = FC_WIDTH // width_divisor
    shapes["fc6.weight"] = (fc, c_in * POOL5_SIZE * POOL5_SIZE)
    shapes["fc6.bias"] = (fc,)
    shapes["fc7.weight"] = (fc, fc)
    shapes["fc7.bias"] = (fc,)
    return shapes


class VGGFace(nn.Module):
    """VGG-Face features: (B, 3, H, W) RGB in [0, 1] -> (B, out_features) after fc7 + ReLU.

    Args:
        width_divisor: divides every channel count (1: the real VGG-Face; 16: a tiny test net).
        dropout: probability of the dropout after fc6 and fc7 (0.5 in VGG-Face), active in
            training mode only.
        mean_rgb: (3,) the average colour subtracted from ``255 * x``, 0..255 units.

    Initialisation (random, when no weights are loaded): convs Kaiming-normal (fan out, ReLU),
    fc normal(0, 0.01), biases zero, as torchvision's VGG; conv1_1's weights are then divided
    by 64 because the input is in 0..255 units, so that random-init features are O(1).
    """

    def __init__(
        self,
        width_divisor: int = 1,
        dropout: float = 0.5,
        mean_rgb: tuple[float, float, float] = VGGFACE_MEAN_RGB,
    ):
        super().__init__()
        self.width_divisor = _check_divisor(width_divisor)
        shapes = vgg_param_shapes(width_divisor)
        for name, _ in VGG16_CONV_NAMES:
            c_out, c_in = shapes[f"{name}.weight"][:2]
            setattr(self, name, nn.Conv2d(c_in, c_out, 3, padding=1))
        self.pool5_resize = nn.AdaptiveAvgPool2d(POOL5_SIZE)
        self.fc6 = nn.Linear(*reversed(shapes["fc6.weight"]))
        self.fc7 = nn.Linear(*reversed(shapes["fc7.weight"]))
        self.dropout = nn.Dropout(dropout)
        self.out_features = shapes["fc7.bias"][0]
        self.register_buffer("mean_rgb", torch.tensor(mean_rgb, dtype=torch.float32))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            # The input is in 0..255 units (std about 64 for face images), not unit scale:
            # without this, random-init activations would be ~64 times too large.
            self.conv1_1.weight /= 64.0

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> ``255 * x - mean_rgb`` (the VGG-Face input)."""
        mean = self.mean_rgb.to(images.dtype).view(1, 3, 1, 1)
        return images * 255.0 - mean

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.normalise(images)
        for name, _ in VGG16_CONV_NAMES:
            x = torch.relu(getattr(self, name)(x))
            if name in VGG16_POOL_AFTER:
                x = nn.functional.max_pool2d(x, 2, 2)
        x = self.pool5_resize(x)
        # (C, H, W) flatten order; reshape copies when x is channels_last, keeping that order.
        x = torch.flatten(x, 1)
        x = self.dropout(torch.relu(self.fc6(x)))
        return self.dropout(torch.relu(self.fc7(x)))


def vgg_state_dict_from_any(state: Mapping[str, torch.Tensor], source: str) -> dict:
    """Rename a VGG-16 state dict in any accepted layout to :class:`VGGFace`'s keys.

    Accepts our keys, torchvision's (``features.N``, ``classifier.N``), a ``module.`` prefix
    (DistributedDataParallel), 4-D fc weights (fc layers stored as convolutions, reshaped in
    (C, H, W) order). Drops ``fc8.*`` (the classification layer). ``source`` names the file
    in error messages.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TrainError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; pass a "
                "VGG state dict saved with torch.save(model.state_dict(), path)."
            )
        if key.startswith("module."):
            key = key[len("module.") :]
        prefix, _, leaf = key.rpartition(".")
        prefix = _TORCHVISION_NAMES.get(prefix, prefix)
        if prefix == "fc8":
            continue
        if prefix in ("fc6", "fc7") and leaf == "weight" and value.dim() == 4:
            value = value.reshape(value.shape[0], -1)
        out[f"{prefix}.{leaf}" if prefix else leaf] = value
    return out


def _infer_divisor(state: Mapping[str, torch.Tensor], source: str) -> int:
    w = state.get("conv1_1.weight")
    if w is None or w.dim() != 4 or w.shape[0] < 1 or 64 % w.shape[0]:
        shape = None if w is None else tuple(w.shape)
        raise TrainError(
            f"{source}: conv1_1.weight is {shape}, not (64, 3, 3, 3); pass a VGG-16 / VGG-Face "
            "state dict."
        )
    return 64 // w.shape[0]


def load_state_into_vgg(module: VGGFace, state: Mapping[str, torch.Tensor], source: str) -> VGGFace:
    """Copy a state dict (already in :class:`VGGFace`'s keys) into ``module``, checking every
    key and shape first; ``mean_rgb`` may be absent (the module's is kept)."""
    expected = dict(vgg_param_shapes(module.width_divisor))
    expected["mean_rgb"] = (3,)
    missing = [k for k in expected if k not in state and k != "mean_rgb"]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {_few(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {_few(wrong)}")
    if problems:
        raise TrainError(
            f"{source} does not fit VGG-16 (width / {module.width_divisor}): "
            + "; ".join(problems)
            + "; pass VGG-Face weights (vgg-face.mat or a state dict with keys conv1_1.weight .. "
            "fc7.bias)."
        )
    with torch.no_grad():
        own = module.state_dict()
        for k, v in state.items():
            own[k].copy_(v.to(own[k].dtype))
    return module


def _few(items: list[str], n: int = 4) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def load_vgg_state_dict(path: str | Path, dropout: float = 0.5) -> VGGFace:
    """A :class:`VGGFace` with the weights of a converted PyTorch state dict.

    Args:
        path: a file written by ``torch.save(state_dict, path)`` (e.g. by
            :func:`stn_train.backbones.matconvnet.convert_matconvnet_vggface`); read with
            ``torch.load(path, weights_only=True, map_location="cpu")``. Key layouts: see the
            module docstring. The width divisor is read from conv1_1's shape.
        dropout: as in :class:`VGGFace`.

    Raises:
        TrainError: the file is missing or unreadable, holds something other than tensors, or
            has missing / unexpected keys or wrong shapes (all listed in the message).
    """
    path = Path(path)
    state = read_state_dict(
        path,
        "VGG",
        "the path of vgg-face.mat or of a converted state dict (.pt), or no "
        "weights for a random initialisation",
        "a file written by torch.save(model.state_dict(), path) or the MatConvNet vgg-face.mat",
    )
    state = vgg_state_dict_from_any(state, str(path))
    module = VGGFace(width_divisor=_infer_divisor(state, str(path)), dropout=dropout)
    return load_state_into_vgg(module, state, str(path))
