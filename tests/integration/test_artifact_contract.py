"""The artifact contract across packages: bfm-prep writes a grid model, stn-core reads it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bfm_prep.artifact import UVGridModel as PrepGrid
from bfm_prep.artifact import write_grid, write_model
from bfm_prep.model import MorphableModel
from stn_core import ArtifactError, UVGridModel

from tests.tolerances import ARTIFACT_RTOL


def _grid_faces(res: int) -> np.ndarray:
    # Counter-clockwise seen from the front: row 0 is the top (v = 1), so going down a row
    # decreases y; (k, k + res, k + 1) is counter-clockwise with x right, y up.
    r, c = np.meshgrid(np.arange(res - 1), np.arange(res - 1), indexing="ij")
    k = (r * res + c).ravel()
    return np.concatenate(
        [np.stack([k, k + res, k + 1], 1), np.stack([k + 1, k + res, k + res + 1], 1)]
    )


def _prep_grid(rng, res=6, k_id=3, k_exp=2, color=True) -> PrepGrid:
    n = res * res
    rows, cols = np.divmod(np.arange(n), res)
    uv = np.stack([cols / (res - 1), 1 - rows / (res - 1)], 1)
    mean = np.stack([(uv[:, 0] - 0.5) * 100, (uv[:, 1] - 0.5) * 120, rng.uniform(0, 5, n)], 1)
    kw = {}
    if color:
        kw = dict(
            color_mean=rng.uniform(0, 1, (n, 3)),
            color_basis=rng.normal(0, 0.1, (n, 3, 4)),
            color_std=rng.uniform(1, 2, 4),
        )
    model = MorphableModel(
        shape_mean=mean,
        shape_basis=rng.normal(0, 1, (n, 3, k_id + k_exp)),
        shape_std=rng.uniform(1, 3, k_id + k_exp),
        shape_kind=["identity"] * k_id + ["expression"] * k_exp,
        faces=_grid_faces(res),
        landmarks={"aflw21": rng.integers(0, n, 21)},
        **kw,
    )
    return PrepGrid(model=model, res=res, uv=uv, inside=rng.uniform(size=n) > 0.2)


@pytest.mark.parametrize("color", [True, False])
def test_written_by_prep_read_by_core(tmp_path, color):
    rng = np.random.default_rng()
    grid = _prep_grid(rng, color=color)
    path = write_grid(tmp_path / "grid.h5", grid)
    m = UVGridModel.load(path, dtype=torch.float64)
    tol = dict(rtol=ARTIFACT_RTOL, atol=ARTIFACT_RTOL * 100)
    np.testing.assert_allclose(m.mean.numpy(), grid.model.shape_mean, **tol)
    np.testing.assert_allclose(m.basis.numpy(), grid.model.shape_basis, **tol)
    np.testing.assert_array_equal(m.faces.numpy(), grid.model.faces)  # already +z: not rewound
    assert not m.faces_flipped
    np.testing.assert_array_equal(m.inside.numpy(), grid.inside)
    np.testing.assert_array_equal(m.landmarks["aflw21"].numpy(), grid.model.landmarks["aflw21"])
    assert m.res == grid.res and m.n_identity == 3 and m.n_expression == 2
    assert m.n_params == 6 + 5
    assert m.has_color == color
    if color:
        np.testing.assert_allclose(m.color_mean.numpy(), grid.model.color_mean, **tol)


def test_core_refuses_a_model_artifact(tmp_path):
    grid = _prep_grid(np.random.default_rng())
    path = write_model(tmp_path / "model.h5", grid.model)
    with pytest.raises(ArtifactError, match="expected 'stn-uv-grid-model'"):
        UVGridModel.load(path)
