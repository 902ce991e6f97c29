"""Checkpoints: atomic saving, loading with clear refusals, RNG states, the model fingerprint.

A checkpoint is a ``torch.save`` dict readable with ``torch.load(weights_only=True)`` (only
tensors, numbers, strings, lists and dicts):

- ``format``, ``version``: ``"stn-train-checkpoint"``, 1;
- ``grid_model``: :func:`grid_model_fingerprint` of the model it was trained with;
- ``localiser``: the localiser's state dict; ``backbone``, ``image_size``, ``landmarks``,
  ``visibility_mode``: how to rebuild and apply it;
- ``optimizer``, ``scheduler``: their state dicts;
- ``step``: optimiser steps done; ``epoch``, ``batch_in_epoch``: where the sampler resumes
  (batch ``batch_in_epoch`` of epoch ``epoch``);
- ``best_metric``, ``best_step``: the best validation NME (box) so far (inf when none);
- ``rng``: one :func:`rng_state` per process, in rank order;
- ``config``: the run's settings (:class:`stn_train.config.RunConfig` as a dict);
- ``counters``: skipped steps and bad samples so far.

Writes go to a temporary file in the same folder, are flushed to disk and then renamed over
the target, so a crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stn_train.errors import TrainError, refuse_folder
from stn_train.localiser import build_localiser
from stn_train.outputs import save_torch

__all__ = [
    "FORMAT",
    "VERSION",
    "grid_model_fingerprint",
    "check_same_model",
    "rng_state",
    "set_rng_state",
    "save_checkpoint",
    "load_checkpoint",
    "restore_localiser",
]

FORMAT = "stn-train-checkpoint"
VERSION = 1


def grid_model_fingerprint(model) -> dict[str, Any]:
    """What identifies a grid model for a localiser: ``{"n_params", "res", "hash", "source"}``.

    ``hash`` is the SHA-256 of the float32 mean and basis, the faces, the inside mask and the
    landmark sets (sorted by name): two files with the same arrays have the same hash.
    """
    h = hashlib.sha256()
    for t in (model.mean, model.basis):
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(model.faces.detach().cpu().to(torch.int64).numpy().tobytes())
    h.update(model.inside.detach().cpu().to(torch.uint8).numpy().tobytes())
    for name in sorted(model.landmarks):
        h.update(name.encode())
        h.update(model.landmarks[name].detach().cpu().to(torch.int64).numpy().tobytes())
    return {
        "n_params": int(model.n_params),
        "res": int(model.res),
        "hash": h.hexdigest(),
        "source": str(model.source) if getattr(model, "source", None) else None,
    }


def check_same_model(saved: dict, current: dict, path: str | os.PathLike) -> None:
    """Raise :class:`TrainError` unless the checkpoint's model fingerprint is ``current``'s."""
    if saved.get("n_params") != current["n_params"]:
        raise TrainError(
            f"checkpoint {path} was trained for a grid model with {saved.get('n_params')} "
            f"parameters (6 + K) but {{0}} has {current['n_params']}; pass the grid model it "
            f"was trained with ({saved.get('source') or 'its path is not recorded'}).",
            ("model",),
        )
    if saved.get("res") is not None and saved.get("res") != current["res"]:
        r0, r1 = saved["res"], current["res"]
        raise TrainError(
            f"checkpoint {path} was trained with a {r0} x {r0} grid model but {{0}} is "
            f"{r1} x {r1}; pass the grid model it was trained with "
            f"({saved.get('source') or 'its path is not recorded'}).",
            ("model",),
        )
    if saved.get("hash") != current["hash"]:
        raise TrainError(
            f"checkpoint {path} was trained with another grid model (same size, different "
            f"arrays); pass the grid model it was trained with "
            f"({saved.get('source') or 'its path is not recorded'})."
        )


def rng_state() -> dict[str, Any]:
    """This process's torch (CPU and every CUDA device), numpy and python RNG states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": [int(version), [int(x) for x in internal], gauss],
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically; ``state`` holds the keys of the module docstring."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_torch({"format": FORMAT, "version": VERSION, **state}, path)


def load_checkpoint(
    path: str | os.PathLike, model_fingerprint: dict | None = None, map_location="cpu"
) -> dict[str, Any]:
    """Read a checkpoint, refusing anything that is not one or was trained for another model.

    Args:
        path: the file (``RUN_DIR/checkpoints/last.pt``, ``best.pt`` or ``step_*.pt``).
        model_fingerprint: :func:`grid_model_fingerprint` of the model it will be used with, or
            None to skip that check.

    Raises:
        TrainError: missing, unreadable, not a stn-train checkpoint, a newer version, or
            trained for another grid model (one sentence naming the file and what to pass).
    """
    path = Path(path)
    refuse_folder(path, "checkpoint", "pass RUN_DIR/checkpoints/last.pt or best.pt")
    if not path.is_file():
        raise TrainError(
            f"checkpoint {path} does not exist; pass a file written by stn-train run "
            "(RUN_DIR/checkpoints/last.pt or best.pt)."
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise TrainError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}); it is truncated or not a "
            "stn-train checkpoint."
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise TrainError(
            f"{path} is not a stn-train checkpoint; pass a file written by stn-train run."
        )
    if int(ckpt.get("version", -1)) > VERSION:
        raise TrainError(
            f"checkpoint {path} has format version {ckpt.get('version')}, newer than this "
            f"stn-train reads ({VERSION}); upgrade stn-train."
        )
    if model_fingerprint is not None:
        check_same_model(ckpt.get("grid_model", {}), model_fingerprint, path)
    return ckpt


def restore_localiser(checkpoint: str | os.PathLike, model, device="cpu"):
    """The trained localiser of a checkpoint, for the grid model ``model``, in eval mode.

    Returns:
        ``(localiser, ckpt)``: the network on ``device`` and the checkpoint dict (its
        ``image_size``, ``landmarks``, ``visibility_mode``, ``config``, ``step``).

    Raises:
        TrainError: see :func:`load_checkpoint` (another grid model included).
    """
    ckpt = load_checkpoint(checkpoint, grid_model_fingerprint(model))
    size = int(ckpt["image_size"])
    net = build_localiser(ckpt["backbone"], model.n_params, (size, size))
    try:
        net.load_state_dict(ckpt["localiser"])
    except RuntimeError as exc:
        raise TrainError(
            f"checkpoint {checkpoint}: its weights do not fit a {ckpt['backbone']} localiser "
            f"({str(exc).splitlines()[0]}); it was written by an incompatible stn-train."
        ) from None
    return net.to(device).eval(), ckpt
