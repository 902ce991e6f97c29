"""stn-core: 3D Morphable Models as Spatial Transformer Networks in PyTorch.

Conventions: docs/conventions.md. The main entry points:

- :class:`UVGridModel` (the ``stn-uv-grid-model`` artifact as tensors),
- :class:`STN` (images, theta -> points, flattened image, visibility, masked image),
- :func:`fit_landmarks` (theta from 2D landmarks, :class:`FitResult`) and :func:`fit_image`
  (pose, shape, albedo and lighting from images, :class:`ImageFitResult`, weighted by
  :class:`FitWeights` in the stages :class:`FitStage`),
- :mod:`stn_core.geometry` (the grid generator's layers and the rotation helpers
  :func:`matrix_to_axis_angle`, :func:`euler_to_matrix`, :func:`so3_left_jacobian`,
  :func:`initial_log_scale`), :mod:`stn_core.sampler`, :mod:`stn_core.normals`,
  :mod:`stn_core.visibility`, :mod:`stn_core.losses`, :mod:`stn_core.shading`,
  :mod:`stn_core.rasterizer`, :mod:`stn_core.renderer`, :mod:`stn_core.fitting`,
  :mod:`stn_core.conventions`,
- :class:`StnError` and :class:`ArtifactError` (:mod:`stn_core.errors`), the errors a user can
  cause.
"""

from stn_core.errors import ArtifactError, StnError
from stn_core.fitting import (
    FitResult,
    FitStage,
    FitWeights,
    ImageFitResult,
    fit_image,
    fit_landmarks,
)
from stn_core.geometry import (
    GridGenerator,
    axis_angle_to_matrix,
    euler_to_matrix,
    initial_log_scale,
    initial_theta,
    matrix_to_axis_angle,
    morphable_shape,
    project_orthographic,
    project_theta,
    rotate,
    scale_points,
    so3_left_jacobian,
    split_theta,
    translate_points,
)
from stn_core.grid_model import UVGridModel
from stn_core.losses import landmark_loss, prior_loss, siamese_loss, symmetry_loss
from stn_core.normals import vertex_normals
from stn_core.sampler import stn_flatten
from stn_core.sampler.bilinear import BilinearSampler, bilinear_sample
from stn_core.sampler.reference import stn_flatten_reference
from stn_core.stn import STN, STNOutput
from stn_core.visibility import Visibility, visibility

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "StnError",
    "UVGridModel",
    "STN",
    "STNOutput",
    "GridGenerator",
    "BilinearSampler",
    "Visibility",
    "stn_flatten",
    "fit_landmarks",
    "fit_image",
    "FitResult",
    "ImageFitResult",
    "FitWeights",
    "FitStage",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "euler_to_matrix",
    "so3_left_jacobian",
    "initial_theta",
    "initial_log_scale",
    "morphable_shape",
    "project_orthographic",
    "project_theta",
    "rotate",
    "scale_points",
    "split_theta",
    "translate_points",
    "bilinear_sample",
    "stn_flatten_reference",
    "vertex_normals",
    "visibility",
    "landmark_loss",
    "prior_loss",
    "symmetry_loss",
    "siamese_loss",
]
