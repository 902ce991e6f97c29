"""A small grid model with a colour model, built with bfm-prep's own pipeline on its synthetic
Basel-format model: shared by the image-fit and the normal-Jacobian tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from stn_core import UVGridModel

# Grid side, identity, expression and colour components.
RES, K_ID, K_EXP, K_COLOR = 40, 10, 5, 10


def synthetic_colour_model(folder: Path) -> UVGridModel:
    """The R = 40 grid model (float64) of the synthetic model written into ``folder``; skips
    when bfm-prep is not installed."""
    synth = pytest.importorskip("bfm_prep.synth")
    from bfm_prep.build import build_model
    from bfm_prep.embedding import embed_model
    from bfm_prep.resample import resample_to_grid

    files = synth.write_synthetic(
        folder, seed=0, n_vertices=2000, n_shape=K_ID, n_color=K_COLOR, n_exp=K_EXP
    )
    mm = build_model(
        files["bfm"],
        files["expression"],
        files["mapping"],
        n_shape=K_ID,
        n_exp=K_EXP,
        landmarks={"aflw21": files["aflw21"]},
        n_color=K_COLOR,
    )
    grid = resample_to_grid(mm, embed_model(mm).uv, RES)
    g = grid.model
    return UVGridModel.from_arrays(
        g.shape_mean,
        g.shape_basis,
        g.faces,
        RES,
        std=g.shape_std,
        kind=g.shape_kind,
        uv=grid.uv,
        inside=grid.inside,
        landmarks=g.landmarks,
        color_mean=g.color_mean,
        color_basis=g.color_basis,
        color_std=g.color_std,
        dtype=torch.float64,
    )
