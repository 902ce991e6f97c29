"""The localiser: a CNN that regresses theta (B, 6 + K) from a face image.

``Localiser = backbone features (B, D) -> head nn.Linear(D, 6 + K) -> theta``.

Head units (what the linear layer outputs, ``u``) and theta (stn-core units,
docs/conventions.md) are related column by column by a fixed scale, ``theta = u * theta_scale``:

| columns | theta (stn-core) | head output u | theta_scale |
| --- | --- | --- | --- |
| 0:3 | r, radians | r, radians | 1 |
| 3:5 | t, pixels (x right, y down) | t_x / W, t_y / H (fractions of the image size) | W, H |
| 5 | log_s, log(pixels per mm) | log_s | 1 |
| 6: | alpha, unit variance | alpha | 1 |

Why t in image fractions: a unit change of r (radians) or log_s moves the face's points by
about the face's size in pixels, while a unit change of t in pixels moves them by one pixel,
so in pixel units t's loss curvature would be ~10^4 times smaller than r's and t would barely
move under the same learning rate. As fractions of the image, all pose outputs move points by
a comparable number of pixels per unit.

Initial output (like the original 3DMM-STN, whose theta layer had Xavier weights times 0.001
and a bias holding the start pose): the head's bias is the initial theta in head units
(r = 0, t at the image centre ((W - 1) / 2, (H - 1) / 2), log_s = ``init_log_s``, alpha = 0;
see :func:`stn_core.geometry.initial_theta`), and its weights are normal with standard
deviation ``head_init_gain / sqrt(D)`` (default gain 1e-3, the same spread as the original's
scaled Xavier-uniform). The initial output then differs from the start pose by
``theta_scale * (W_head @ f)``, bounded per column by ``theta_scale_j * |W_j| * |f|`` (about
1e-3 times the rms feature: a fraction of a pixel); the backbone gets a gradient from the
first step. ``head_init_gain=0`` makes the initial output exactly the start pose.

The head runs in float32 (float64 for a float64 model) with autocast disabled: in bfloat16
t (~100 px) would be rounded to 0.5 px and log_s to ~0.01.

:func:`stn_core.geometry.initial_log_scale` picks log_s so that the model's mean face fills
the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from stn_core.geometry import initial_theta as neutral_theta
from torch import nn

from stn_train.backbones import BACKBONES, build_backbone
from stn_train.errors import TrainError

__all__ = [
    "DEFAULT_HEAD_INIT_GAIN",
    "Localiser",
    "build_localiser",
    "count_parameters",
]

DEFAULT_HEAD_INIT_GAIN = 1e-3


class Localiser(nn.Module):
    """Backbone + linear head: (B, 3, H, W) RGB float in [0, 1] -> theta (B, n_params).

    Args:
        backbone: module mapping the images to (B, D) features, with ``out_features`` = D
            (it normalises its own input).
        n_params: 6 + K.
        image_size: (H, W) pixels of the input images (fixes theta's t frame).
        init_theta: (6,) or (n_params,) start pose in stn-core units (alpha zero when (6,));
            default: r = 0, t = image centre, log_s = ``init_log_s``, alpha = 0.
        init_log_s: the start log-scale when ``init_theta`` is None
            (:func:`stn_core.geometry.initial_log_scale`).
        head_init_gain: the head weights' std times sqrt(D); 0 gives zero weights.

    Attributes:
        backbone, head (nn.Linear(D, n_params), float32), theta_scale: buffer (n_params,)
        [1, 1, 1, W, H, 1, 1 ...], image_size, n_params.
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_params: int,
        image_size: tuple[int, int] = (224, 224),
        init_theta: torch.Tensor | Sequence[float] | None = None,
        init_log_s: float = 0.0,
        head_init_gain: float = DEFAULT_HEAD_INIT_GAIN,
    ):
        super().__init__()
        if n_params < 6:
            raise ValueError(f"n_params must be 6 + K >= 6, got {n_params}.")
        height, width = (int(v) for v in image_size)
        self.image_size = (height, width)
        self.n_params = int(n_params)
        self.backbone = backbone
        features = int(backbone.out_features)
        self.head = nn.Linear(features, n_params)
        scale = torch.ones(n_params)
        scale[3], scale[4] = width, height
        self.register_buffer("theta_scale", scale)

        if init_theta is None:
            start = neutral_theta(1, n_params - 6, height, width, log_s=init_log_s)[0]
        else:
            given = torch.as_tensor(init_theta, dtype=torch.float32).reshape(-1)
            if given.numel() not in (6, n_params):
                raise ValueError(f"init_theta must be (6,) or ({n_params},), got {given.numel()}.")
            start = torch.zeros(n_params)
            start[: given.numel()] = given
        with torch.no_grad():
            nn.init.normal_(self.head.weight, 0.0, head_init_gain / math.sqrt(features))
            self.head.bias.copy_(start / scale)

    def start_theta(self) -> torch.Tensor:
        """(n_params,) the theta the head outputs for zero features (its bias, in stn-core
        units): the start pose."""
        return (self.head.bias.detach() * self.theta_scale).clone()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) backbone features."""
        if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != self.image_size:
            raise ValueError(
                f"images must be (B, 3, {self.image_size[0]}, {self.image_size[1]}), got "
                f"{tuple(images.shape)}."
            )
        return self.backbone(images)

    def head_to_theta(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) features -> theta (B, n_params) in stn-core units, computed with autocast off
        in float32 (float64 when the features are float64)."""
        dtype = torch.promote_types(features.dtype, torch.float32)
        with torch.autocast(device_type=features.device.type, enabled=False):
            u = nn.functional.linear(
                features.to(dtype), self.head.weight.to(dtype), self.head.bias.to(dtype)
            )
            return u * self.theta_scale.to(dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB float in [0, 1] -> theta (B, n_params), float32 also under
        autocast (float64 for a float64 model): [r (rad), t (px), log_s, alpha] as in
        docs/conventions.md."""
        return self.head_to_theta(self.features(images))


def build_localiser(
    name: str,
    n_params: int,
    image_size: tuple[int, int] = (224, 224),
    weights: str | Path | None = None,
    init_log_s: float = 0.0,
    init_theta: torch.Tensor | Sequence[float] | None = None,
    head_init_gain: float = DEFAULT_HEAD_INIT_GAIN,
    channels_last: bool = False,
    dropout: float = 0.5,
    **backbone_kwargs,
) -> Localiser:
    """The localiser network ``name`` with a fresh head (see the module docstring).

    Args:
        name: backbone, one of ``"vgg16"`` (VGG-Face), ``"resnet18"``, ``"resnet50"``
            (torchvision), ``"small"`` (CPU).
        n_params: 6 + K (``UVGridModel.n_params``).
        image_size: (H, W) of the input images.
        weights: None (random backbone) or a local backbone weights file: vgg16 the MatConvNet
            ``vgg-face.mat`` or a converted state dict; resnet a torchvision state dict; small a
            SmallCNN state dict. Never downloaded. (A trained localiser is restored from a
            checkpoint with ``load_state_dict`` instead.)
        init_log_s: start log-scale (:func:`stn_core.geometry.initial_log_scale` of the
            model's mean).
        init_theta: (6,) or (n_params,) start pose overriding the default (stn-core units).
        head_init_gain: head weight std times sqrt(D) (0: exact start pose).
        channels_last: convert the network's 4-D weights to channels_last memory format
            (feed channels_last images too for the speed-up on GPUs).
        dropout: vgg16's dropout probability after fc6 and fc7.
        backbone_kwargs: passed to :func:`stn_train.backbones.build_backbone`: vgg16's
            ``width_divisor``; the small CNN's widths, out_features, norm, pool_grid.

    Raises:
        TrainError: unknown backbone, torchvision missing for a ResNet, or a weights file
            missing / unreadable / not fitting (the message names the file and what to pass).
    """
    if name not in BACKBONES:
        raise TrainError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}.")
    backbone = build_backbone(name, weights, dropout=dropout, **backbone_kwargs)
    model = Localiser(
        backbone,
        n_params,
        image_size=image_size,
        init_theta=init_theta,
        init_log_s=init_log_s,
        head_init_gain=head_init_gain,
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """The number of parameter values of ``module`` (only those with requires_grad when
    ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
