"""A small CNN for CPU runs, tests and the demo (not in the paper).

Architecture: a 5 x 5 stride-2 stem, then stages of [3 x 3 stride-2 conv, norm, ReLU] and
(from the third stage on, where the maps are small) [3 x 3 conv, norm, ReLU]; then an
adaptive average pool to a 4 x 4 grid, flattened, and a linear layer + ReLU to
``out_features``. The pool keeps a coarse 4 x 4 layout rather than a global average, because
the localiser must regress *where* the face is (t) and a global average discards position.

Normalisation: GroupNorm (8 groups) by default rather than BatchNorm, so that a sample's
features do not depend on the rest of its batch: the result is the same for any batch size
and for one process or many (DistributedDataParallel without SyncBatchNorm); ``norm="batch"``
gives BatchNorm.

Input: (B, 3, H, W) RGB float in [0, 1], any H, W >= 32, normalised inside as ``2 x - 1``.
Cost: 144 M multiply-adds per image at 224 x 224, 39 M at 112 x 112, 27 M at 96 x 96;
1.6 M parameters.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SmallCNN"]


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"norm must be 'group' or 'batch', got {kind!r}.")


def _block(c_in: int, c_out: int, stride: int, kernel: int, norm: str) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        _norm(norm, c_out),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, out_features) features.

    Args:
        widths: channels of the stem and of each stride-2 stage (5 entries: total stride 32).
        out_features: size of the feature vector.
        norm: ``"group"`` (default) or ``"batch"``.
        pool_grid: the side of the adaptive average pool before the linear layer.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64, 128, 192),
        out_features: int = 256,
        norm: str = "group",
        pool_grid: int = 4,
    ):
        super().__init__()
        layers = _block(3, widths[0], 2, 5, norm)
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers += _block(c_in, c_out, 2, 3, norm)
            if i >= 1:
                layers += _block(c_out, c_out, 1, 3, norm)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_grid)
        self.fc = nn.Linear(widths[-1] * pool_grid * pool_grid, out_features)
        self.out_features = out_features
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(images * 2.0 - 1.0))
        return torch.relu(self.fc(torch.flatten(x, 1)))
