"""Face detection for photographs (the optional extra ``stn-train[detect]``): the detector,
and ``stn-train detect``'s work (crops, landmarks, a training manifest, a contact sheet)."""

from stn_train.detection.detector import (
    CONTOUR_WEIGHT,
    INSTALL_HINT,
    DetectedFace,
    FaceDetector,
    detection_available,
)

__all__ = ["CONTOUR_WEIGHT", "INSTALL_HINT", "DetectedFace", "FaceDetector", "detection_available"]
