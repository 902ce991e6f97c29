"""Reading a weights file as a state dict, with one-sentence errors (shared by the backbones)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from stn_train.errors import TrainError, refuse_folder


def read_state_dict(path: str | Path, what: str, missing_hint: str, format_hint: str) -> Mapping:
    """``torch.load(path, weights_only=True)`` as a mapping of tensors.

    Args:
        path: the weights file.
        what: what the file is for, in the messages (e.g. ``"VGG"``).
        missing_hint: what to pass instead when the file does not exist.
        format_hint: what a readable file looks like.

    A checkpoint-style ``{"state_dict": {...}}`` is unwrapped. Raises TrainError when the file
    is missing, unreadable, or holds something other than a mapping.
    """
    path = Path(path)
    refuse_folder(path, f"{what} weights file", f"pass {missing_hint}")
    if not path.is_file():
        raise TrainError(f"{what} weights file {path} does not exist; pass {missing_hint}.")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise TrainError(
            f"{path} is not a readable PyTorch state dict ({type(exc).__name__}); "
            f"pass {format_hint}."
        ) from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise TrainError(
            f"{path} holds a {type(state).__name__}, not a state dict; pass {format_hint}."
        )
    return state
