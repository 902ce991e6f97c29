"""Fitting the morphable model by batched Levenberg-Marquardt.

- :func:`levenberg_marquardt`: the generic batched solver (per-image damping, convergence
  flags and cost history), reused by later fits.
- :func:`fit_landmarks`: theta from 2D landmarks with the statistical prior.
"""

from stn_core.fitting.image import FitStage, FitWeights, ImageFitResult, fit_image
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
    "levenberg_marquardt",
    "autodiff_jacobian",
    "huber_residuals",
    "NormalEquations",
    "LMHistory",
    "LMResult",
    "STATUS_CODES",
]

__all__ += ["fit_image", "FitWeights", "FitStage", "ImageFitResult"]
