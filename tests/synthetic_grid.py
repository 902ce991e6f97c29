"""A small UV-grid model with identity, expression and colour components, made by bfm-prep's
own pipeline (synth -> build_model -> embed_model -> resample_to_grid): shared by the tests of
stn-core's image fit and stn-train's fit command."""

from __future__ import annotations

from pathlib import Path

import pytest


def synthetic_grid(
    folder: Path, *, seed: int, n_vertices: int, res: int, n_id: int, n_exp: int, n_color: int
):
    """bfm-prep's resampled grid (``bfm_prep.resample.resample_to_grid``'s result) of the
    synthetic model written into ``folder``; skips when bfm-prep is not installed."""
    synth = pytest.importorskip("bfm_prep.synth")
    from bfm_prep.build import build_model
    from bfm_prep.embedding import embed_model
    from bfm_prep.resample import resample_to_grid

    files = synth.write_synthetic(
        folder, seed=seed, n_vertices=n_vertices, n_shape=n_id, n_color=n_color, n_exp=n_exp
    )
    mm = build_model(
        files["bfm"],
        files["expression"],
        files["mapping"],
        n_shape=n_id,
        n_exp=n_exp,
        landmarks={"aflw21": files["aflw21"]},
        n_color=n_color,
    )
    return resample_to_grid(mm, embed_model(mm).uv, res)
