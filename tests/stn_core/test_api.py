"""The public API: the main entry points import from ``stn_core`` itself and are the objects
of the modules that define them."""

from __future__ import annotations

import pytest
import stn_core
from stn_core import errors, fitting, geometry, normals

ENTRY_POINTS = [
    (fitting, "fit_landmarks"),
    (fitting, "fit_image"),
    (fitting, "FitResult"),
    (fitting, "ImageFitResult"),
    (fitting, "FitWeights"),
    (fitting, "FitStage"),
    (geometry, "matrix_to_axis_angle"),
    (geometry, "euler_to_matrix"),
    (geometry, "so3_left_jacobian"),
    (geometry, "initial_log_scale"),
    (normals, "vertex_normals"),
    (errors, "StnError"),
    (errors, "ArtifactError"),
]


@pytest.mark.parametrize(("module", "name"), ENTRY_POINTS, ids=[n for _, n in ENTRY_POINTS])
def test_entry_point_imports_from_the_top_level(module, name):
    assert name in stn_core.__all__
    assert getattr(stn_core, name) is getattr(module, name)


def test_from_import():
    from stn_core import (  # noqa: F401
        FitResult,
        FitStage,
        FitWeights,
        ImageFitResult,
        euler_to_matrix,
        fit_image,
        fit_landmarks,
        initial_log_scale,
        matrix_to_axis_angle,
        so3_left_jacobian,
    )


def test_everything_exported_exists():
    missing = [name for name in stn_core.__all__ if not hasattr(stn_core, name)]
    assert not missing, missing
