"""torchvision ResNet-18 / ResNet-50 as the localiser's feature extractor (optional).

torchvision is an optional extra (``pip install stn-train[torchvision]``) and is imported only
when a ResNet is built. Weights come from a local file (``weights=PATH``: torchvision's
ImageNet file such as ``resnet18-f37072fd.pth``, or any state dict of the same architecture)
or are random; nothing is ever downloaded.

Input: (B, 3, H, W) RGB float in [0, 1], normalised inside with the ImageNet statistics that
torchvision's weights were trained with: ``(x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)``.
Output: (B, 512) for ResNet-18, (B, 2048) for ResNet-50, after the global average pool (the
classification layer ``fc`` is removed).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stn_train.backbones._weights import read_state_dict
from stn_train.errors import TrainError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "RESNET_DEPTHS", "ResNetFeatures", "build_resnet"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_DEPTHS = {"resnet18": 512, "resnet50": 2048}


def _torchvision_models():
    # lazy: torchvision is an optional extra (stn-train[torchvision]), and does not import
    # beside every torch build.
    try:
        import torchvision.models as models
    except ImportError as exc:
        raise TrainError(
            "the ResNet backbones need torchvision, which is not installed; run "
            "pip install 'stn-train[torchvision]' or choose the vgg16 or small backbone."
        ) from exc
    return models


class ResNetFeatures(nn.Module):
    """A torchvision ResNet without its classification layer: (B, 3, H, W) in [0, 1] ->
    (B, out_features)."""

    def __init__(self, net: nn.Module, out_features: int):
        super().__init__()
        net.fc = nn.Identity()
        self.net = net
        self.out_features = out_features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        return self.net(x)


def build_resnet(name: str, weights: str | Path | None = None) -> ResNetFeatures:
    """``"resnet18"`` or ``"resnet50"``, random or from a local torchvision state dict.

    The file is read with ``torch.load(path, weights_only=True, map_location="cpu")``; its
    ``fc.*`` entries (the ImageNet classifier) and a ``module.`` prefix are ignored; every
    other key must match the architecture.

    Raises:
        TrainError: torchvision absent, weights file missing / unreadable / not matching.
    """
    if name not in RESNET_DEPTHS:
        raise ValueError(f"unknown ResNet {name!r}; choose one of {sorted(RESNET_DEPTHS)}.")
    models = _torchvision_models()
    net = getattr(models, name)(weights=None)
    module = ResNetFeatures(net, RESNET_DEPTHS[name])
    if weights is None:
        return module
    path = Path(weights)
    state = read_state_dict(
        path,
        name,
        f"the path of a local torchvision {name} state dict (nothing is downloaded), or no "
        "weights for a random start",
        f"a torchvision {name} weights file",
    )
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        k
        for k in own
        if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != own[k].shape)
    ]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what} {', '.join(keys[:4])}"
            + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong", wrong))
            if keys
        )
        raise TrainError(
            f"{path} does not fit torchvision's {name}: {detail}; pass a {name} state dict."
        )
    net.load_state_dict(state)
    return module
