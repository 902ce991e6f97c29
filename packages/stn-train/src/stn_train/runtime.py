"""What the work runs on: the device (chosen here, and only here) and the grid model."""

from __future__ import annotations

import os

import torch
from stn_core import StnError, UVGridModel

from stn_train.errors import TrainError

__all__ = ["resolve_device", "load_grid_model"]


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``None`` or ``"auto"``: CUDA when available, else the CPU;
    ``"cpu"``, ``"cuda"``, ``"cuda:N"``: that one.

    Raises:
        TrainError: not a device name, or CUDA asked for where there is none.
    """
    if isinstance(name, torch.device):
        dev = name
    elif name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(name)
        except RuntimeError:
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda"):
            raise TrainError(
                f"{{0}} {name!r} is not a device; use auto, cpu, cuda or cuda:N.", ("device",)
            )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError("{0} cuda was asked for but CUDA is not available; use cpu.", ("device",))
    return dev


def load_grid_model(
    path: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> UVGridModel:
    """The UV-grid model artifact at ``path`` on ``device`` (float32 unless ``dtype``);
    stn-core's one-sentence artifact errors become :class:`TrainError`."""
    try:
        return UVGridModel.load(path, device=device, **({} if dtype is None else {"dtype": dtype}))
    except StnError as exc:
        raise TrainError(str(exc)) from None
