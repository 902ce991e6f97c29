"""Fitting the morphable model by batched Levenberg-Marquardt.

- :func:`levenberg_marquardt`: the generic batched solver (per-image damping, convergence
  flags and cost history), reused by the fits (:mod:`stn_core.fitting.solver`).
- :func:`fit_landmarks`: theta from 2D landmarks with the statistical prior
  (:mod:`stn_core.fitting.landmarks`).
- :func:`fit_image`: pose, shape, expression, albedo and lighting from images by inverse
  rendering (:mod:`stn_core.fitting.image`, its cost in :mod:`stn_core.fitting.image_problem`).
"""

from stn_core.fitting.image import FitStage, ImageFitResult, fit_image
from stn_core.fitting.image_problem import FitWeights
from stn_core.fitting.landmarks import FitResult, fit_landmarks, landmark_residuals
from stn_core.fitting.solver import (
    STATUS_CODES,
    LMHistory,
    LMResult,
    NormalEquations,
    autodiff_jacobian,
    huber_residuals,
    levenberg_marquardt,
)

__all__ = [
    "FitResult",
    "fit_landmarks",
    "landmark_residuals",
    "fit_image",
    "FitWeights",
    "FitStage",
    "ImageFitResult",
    "levenberg_marquardt",
    "autodiff_jacobian",
    "huber_residuals",
    "NormalEquations",
    "LMHistory",
    "LMResult",
    "STATUS_CODES",
]
