"""Faces in a photograph: boxes, 68 iBUG landmarks and the crop the localiser expects.

The optional extra ``stn-train[detect]`` (``pip install 'stn-train[detect]'``: the binary
wheels dlib-bin and face-recognition-models, no compiler) provides dlib's detectors and the
68-point landmark predictor; nothing is downloaded at run time. Without it, everything else in
stn-train works, and what needs detection says in one line how to install it
(:data:`INSTALL_HINT`).

- Boxes: dlib's HOG detector (default; fast, frontal to about 45 degrees of yaw) or its CNN
  detector (``method="cnn"``: slower, finds more turned faces). A large photo is shrunk so its
  longer side is at most ``max_side`` for the box search; the landmarks are found in the photo
  at full resolution, and everything is returned in the photo's pixels.
- Landmarks: the iBUG 300-W 68-point layout (the grid models' ``ibug68`` set). Points 0-16
  are the jaw *contour*: where the face is turned they lie on the silhouette, not on fixed
  skin, so fits down-weight them (:data:`CONTOUR_WEIGHT`, ``visible`` of each face).
  The 68-point model was trained on iBUG 300-W, whose licence excludes commercial use.
- The crop: the training data's rule (:func:`stn_train.data.transforms.crop_window`), a square
  centred on the box of the landmarks, its side the box's larger side times ``1 + 2 margin``
  (margin 0.25, ``ManifestDataset``'s default), padded with zeros where it leaves the photo.

Pixel convention (docs/conventions.md): x right, y down, (0, 0) the centre of the top-left
pixel. dlib's pixel coordinates are the same (integer positions are pixel centres).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stn_train.data.transforms import CropWindow, crop_window
from stn_train.errors import TrainError

__all__ = [
    "INSTALL_HINT",
    "CONTOUR_WEIGHT",
    "CROP_MARGIN",
    "METHODS",
    "DetectedFace",
    "FaceDetector",
    "detection_available",
]

INSTALL_HINT = (
    "pip install 'stn-train[detect]' (the dlib-bin and face-recognition-models wheels; no "
    "compiler, nothing downloaded when it runs)"
)
# The weight of the 17 jaw-contour landmarks (iBUG 0-16) in fits: silhouette points, not fixed
# vertices (module docstring). The other 51 weigh 1.
CONTOUR_WEIGHT = 0.25
CONTOUR = slice(0, 17)
CROP_MARGIN = 0.25
METHODS = ("hog", "cnn")
_MODELS = "face_recognition_models"


def detection_available() -> bool:
    """Whether the ``stn-train[detect]`` extra is installed (without importing it)."""
    return all(importlib.util.find_spec(m) is not None for m in ("dlib", _MODELS))


def _model_file(name: str) -> Path:
    # face_recognition_models' own __init__ imports pkg_resources, gone from recent
    # setuptools: its files are found without importing it.
    spec = importlib.util.find_spec(_MODELS)
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise TrainError(f"the detection model {path} is missing; reinstall with {INSTALL_HINT}.")
    return path


@dataclass
class DetectedFace:
    """One face in a photo.

    box: (x0, y0, x1, y1) the detector's box, photo pixels (corner pixels' centres).
    score: the detector's confidence (HOG: SVM margin; CNN: its score); higher is surer.
    landmarks: (68, 2) float64, iBUG layout, photo pixels.
    visible: (68,) float64 weights for fits: :data:`CONTOUR_WEIGHT` on the jaw contour, 1
        elsewhere.
    window: the crop around it (module docstring), photo pixels.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    visible: np.ndarray
    window: CropWindow


class FaceDetector:
    """Finds faces and their 68 landmarks in photos (module docstring).

    Args:
        method: ``"hog"`` (default) or ``"cnn"``.
        upsample: how many times the (shrunk) photo is doubled for the box search: finds
            smaller faces, costs 4x per step (default 1: faces from about 40 pixels).
        max_side: the longer side of the photo searched for boxes (larger photos are shrunk).
        min_score: boxes scoring below this are dropped.
        margin: the crop's margin (module docstring).

    Raises:
        TrainError: the extra is not installed (the message says how to install it), or an
            unknown method.
    """

    def __init__(
        self,
        method: str = "hog",
        upsample: int = 1,
        max_side: int = 1600,
        min_score: float = 0.0,
        margin: float = CROP_MARGIN,
    ):
        if method not in METHODS:
            raise TrainError(
                f"{{0}} must be one of {', '.join(METHODS)}, got {method!r}.", ("detector",)
            )
        if upsample < 0:
            raise TrainError(f"{{0}} must not be negative, got {upsample}.", ("upsample",))
        if max_side < 64:
            raise TrainError(f"{{0}} must be at least 64 pixels, got {max_side}.", ("max_side",))
        if not detection_available():
            raise TrainError(f"face detection needs the detect extra: {INSTALL_HINT}.")
        # lazy: dlib is the optional extra stn-train[detect]; stn-train imports without it.
        import dlib

        self.method, self.upsample, self.max_side = method, int(upsample), int(max_side)
        self.min_score, self.margin = float(min_score), float(margin)
        if method == "hog":
            self._boxes = dlib.get_frontal_face_detector()
        else:
            self._boxes = dlib.cnn_face_detection_model_v1(
                str(_model_file("mmod_human_face_detector.dat"))
            )
        self._shape = dlib.shape_predictor(
            str(_model_file("shape_predictor_68_face_landmarks.dat"))
        )
        self._rect = dlib.rectangle

    def __call__(self, image: np.ndarray | torch.Tensor) -> list[DetectedFace]:
        """The faces of one photo, most confident first.

        Args:
            image: (H, W, 3) uint8 RGB, or (3, H, W) float in [0, 1] (stn-train's images).
        """
        rgb = _uint8_rgb(image)
        h, w = rgb.shape[:2]
        shrink = min(1.0, self.max_side / max(h, w))
        small, fx, fy = (rgb, 1.0, 1.0) if shrink == 1.0 else _shrink(rgb, shrink)
        found = []
        if self.method == "hog":
            rects, scores, _ = self._boxes.run(small, self.upsample, self.min_score)
            found = list(zip(rects, scores, strict=True))
        else:
            found = [(d.rect, d.confidence) for d in self._boxes(small, self.upsample)]
            found = [(r, s) for r, s in found if s >= self.min_score]
        faces = []
        for rect, score in sorted(found, key=lambda rs: -rs[1]):
            # Box corners in the photo: pixel centres scale about the pixel edges.
            x0, x1 = ((v + 0.5) / fx - 0.5 for v in (rect.left(), rect.right()))
            y0, y1 = ((v + 0.5) / fy - 0.5 for v in (rect.top(), rect.bottom()))
            full = self._rect(*(int(round(v)) for v in (x0, y0, x1, y1)))
            shape = self._shape(rgb, full)
            pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float64)
            visible = np.ones(68)
            visible[CONTOUR] = CONTOUR_WEIGHT
            window = crop_window(torch.from_numpy(pts), torch.ones(68), (h, w), margin=self.margin)
            faces.append(DetectedFace((x0, y0, x1, y1), float(score), pts, visible, window))
        return faces


def _uint8_rgb(image: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}.")
        a = image.detach().cpu().float().clamp(0, 1).mul(255).round().to(torch.uint8)
        return np.ascontiguousarray(a.permute(1, 2, 0).numpy())
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {a.shape} {a.dtype}.")
    return np.ascontiguousarray(a)


def _shrink(rgb: np.ndarray, factor: float) -> tuple[np.ndarray, float, float]:
    """The photo shrunk by about ``factor`` (area-averaged), and the exact x and y factors."""
    h, w = rgb.shape[:2]
    size = (max(1, math.floor(w * factor)), max(1, math.floor(h * factor)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
    return small, size[0] / w, size[1] / h
