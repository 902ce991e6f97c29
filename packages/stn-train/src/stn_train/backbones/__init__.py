"""Feature extractors for the localiser: (B, 3, H, W) RGB float in [0, 1] -> (B, D).

Every backbone normalises its input inside (VGG-Face: ``255 x - mean_rgb``; ResNet: ImageNet
mean / std; small: ``2 x - 1``) and has an ``out_features`` attribute (D).

| name | module | D | weights |
| --- | --- | --- | --- |
| ``vgg16`` | :class:`VGGFace` (VGG-Face, fc8 removed) | 4096 | ``vgg-face.mat`` or a state dict |
| ``resnet18`` / ``resnet50`` | torchvision (optional extra) | 512 / 2048 | torchvision state dict |
| ``small`` | :class:`SmallCNN` | 256 | a state dict of the same module |

Weights are only ever read from local files; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from stn_train.backbones._weights import read_state_dict
from stn_train.backbones.matconvnet import (
    convert_matconvnet_vggface,
    load_matconvnet_vggface,
    read_simplenn,
)
from stn_train.backbones.resnet import RESNET_DEPTHS, build_resnet
from stn_train.backbones.small import SmallCNN
from stn_train.backbones.vgg import VGGFACE_MEAN_RGB, VGGFace, load_vgg_state_dict
from stn_train.errors import TrainError

__all__ = [
    "BACKBONES",
    "build_backbone",
    "VGGFace",
    "VGGFACE_MEAN_RGB",
    "SmallCNN",
    "build_resnet",
    "load_matconvnet_vggface",
    "load_vgg_state_dict",
    "convert_matconvnet_vggface",
    "read_simplenn",
]

BACKBONES = ("vgg16", "resnet18", "resnet50", "small")


def build_backbone(
    name: str,
    weights: str | Path | None = None,
    *,
    dropout: float = 0.5,
    width_divisor: int = 1,
    **small_kwargs,
) -> nn.Module:
    """The backbone ``name`` (one of :data:`BACKBONES`), random or from a local weights file.

    Args:
        name: ``"vgg16"``, ``"resnet18"``, ``"resnet50"`` or ``"small"``.
        weights: None (random initialisation) or a local file. vgg16: a ``.mat`` file is read
            as the MatConvNet ``vgg-face.mat`` (:func:`load_matconvnet_vggface`), anything
            else as a state dict (:func:`load_vgg_state_dict`). resnet: a torchvision state
            dict. small: a state dict of :class:`SmallCNN` with the same ``small_kwargs``.
        dropout: vgg16's dropout after fc6 and fc7 (0.5 in VGG-Face).
        width_divisor: divides vgg16's channel counts (tests, quick runs); with weights the
            widths are read from the file instead.
        small_kwargs: passed to :class:`SmallCNN` (widths, out_features, norm, pool_grid).

    Raises:
        TrainError: unknown name, or a weights file that is missing, unreadable or does not
            fit (the message says which file and what to pass).
    """
    if name == "vgg16":
        if weights is None:
            return VGGFace(width_divisor=width_divisor, dropout=dropout)
        if Path(weights).suffix.lower() == ".mat":
            return load_matconvnet_vggface(weights, dropout=dropout)
        return load_vgg_state_dict(weights, dropout=dropout)
    if name in RESNET_DEPTHS:
        return build_resnet(name, weights)
    if name == "small":
        module = SmallCNN(**small_kwargs)
        if weights is not None:
            _load_plain_state_dict(module, weights, "small")
        return module
    raise TrainError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")


def _load_plain_state_dict(module: nn.Module, weights: str | Path, name: str) -> None:
    path = Path(weights)
    state = read_state_dict(
        path,
        name,
        f"the path of a saved {name} backbone state dict, or no weights for a random start",
        f"a {name} backbone state dict",
    )
    own = module.state_dict()
    bad = sorted(set(own) ^ set(state)) + [
        k for k in own if k in state and getattr(state[k], "shape", None) != own[k].shape
    ]
    if bad:
        raise TrainError(
            f"{path} does not fit the {name} backbone (keys or shapes differ: "
            f"{', '.join(bad[:4])}); pass a state dict saved from the same configuration."
        )
    module.load_state_dict(state)
