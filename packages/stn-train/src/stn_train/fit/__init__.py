"""Per-image fitting of the model to photographs (``stn-train fit``): where the landmarks
come from, the driver, and the files written for each image."""

from stn_train.fit.driver import FitRecord, fit_images

__all__ = ["FitRecord", "fit_images"]
