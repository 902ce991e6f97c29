"""The canonical in-memory morphable model, converted once where data enters.

Conventions (see docs/artifact-format.md):
- vertices: float64 (N, 3), millimetres; model axes as in the Basel model: x to the viewer's
  right in a frontal view (the subject's left), y up, z towards the viewer;
- faces: int64 (M, 3), 0-based, C-contiguous;
- shape basis: float64 (N, 3, K), millimetres per unit coefficient, i.e. each component is
  already multiplied by its standard deviation so that coefficients follow N(0, 1);
- colour: RGB in [0, 1]; colour basis (N, 3, Kc) per unit coefficient, likewise scaled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from bfm_prep.errors import PrepError
from bfm_prep.validation import (
    INDEX,
    REAL,
    DamagedArray,
    check_finite,
    check_kind,
    check_positive,
)

IDENTITY = "identity"
EXPRESSION = "expression"
COMPONENT_KINDS = (IDENTITY, EXPRESSION)


@dataclass
class MorphableModel:
    """A linear shape (and optional colour) model on a triangle mesh.

    Attributes:
        shape_mean: (N, 3) float64, mm.
        shape_basis: (N, 3, K) float64, mm per unit coefficient (scaled by ``shape_std``).
        shape_std: (K,) float64, the standard deviation each stored component was multiplied
            by (the unit component is ``shape_basis[..., k] / shape_std[k]``).
        shape_kind: K strings, ``"identity"`` or ``"expression"``, in component order.
        faces: (M, 3) int64, 0-based vertex indices.
        color_mean: (N, 3) float64 RGB in [0, 1], or None.
        color_basis: (N, 3, Kc) float64 per unit coefficient, or None.
        color_std: (Kc,) float64, or None.
        landmarks: name -> (L,) int64 0-based vertex indices (e.g. ``"aflw21"``, ``"ibug68"``).
        provenance: ``{"inputs": {label: {"path", "sha256"}}, "parameters": {...}}``.
    """

    shape_mean: np.ndarray
    shape_basis: np.ndarray
    shape_std: np.ndarray
    shape_kind: list[str]
    faces: np.ndarray
    color_mean: np.ndarray | None = None
    color_basis: np.ndarray | None = None
    color_std: np.ndarray | None = None
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The data types first: a conversion would turn text into numbers ("1.5") and
        # fractional indices into whole ones without a word.
        with _invalid_model():
            for name in ("shape_mean", "shape_basis", "shape_std"):
                setattr(self, name, check_kind(getattr(self, name), name, REAL))
            self.faces = check_kind(self.faces, "faces", INDEX)
            if self.color_mean is not None:
                for name in ("color_mean", "color_basis", "color_std"):
                    setattr(self, name, check_kind(getattr(self, name), name, REAL))
            self.landmarks = {
                k: check_kind(v, f"landmark set {k!r}", INDEX) for k, v in self.landmarks.items()
            }
        self.shape_mean = np.ascontiguousarray(self.shape_mean, dtype=np.float64)
        self.shape_basis = np.ascontiguousarray(self.shape_basis, dtype=np.float64)
        self.shape_std = np.ascontiguousarray(self.shape_std, dtype=np.float64).reshape(-1)
        self.shape_kind = [str(k) for k in self.shape_kind]
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int64)
        if self.color_mean is not None:
            self.color_mean = np.ascontiguousarray(self.color_mean, dtype=np.float64)
            self.color_basis = np.ascontiguousarray(self.color_basis, dtype=np.float64)
            self.color_std = np.ascontiguousarray(self.color_std, dtype=np.float64).reshape(-1)
        self.landmarks = {
            str(k): np.ascontiguousarray(v, dtype=np.int64).reshape(-1)
            for k, v in self.landmarks.items()
        }
        self.validate()

    @property
    def n_vertices(self) -> int:
        return self.shape_mean.shape[0]

    @property
    def n_components(self) -> int:
        return self.shape_basis.shape[2]

    @property
    def n_identity(self) -> int:
        return sum(k == IDENTITY for k in self.shape_kind)

    @property
    def n_expression(self) -> int:
        return sum(k == EXPRESSION for k in self.shape_kind)

    @property
    def has_color(self) -> bool:
        return self.color_mean is not None

    def shape(self, alpha: np.ndarray | None = None) -> np.ndarray:
        """Vertices (N, 3) mm for coefficients ``alpha`` (K,) (None: the mean)."""
        if alpha is None:
            return self.shape_mean.copy()
        return self.shape_mean + self.shape_basis @ np.asarray(alpha, dtype=np.float64)

    def color(self, beta: np.ndarray | None = None) -> np.ndarray:
        """RGB (N, 3) for colour coefficients ``beta`` (Kc,) (None: the mean), unclipped."""
        if self.color_mean is None:
            raise PrepError(
                "This model has no colour model; build it from a file with texMU/texPC."
            )
        if beta is None:
            return self.color_mean.copy()
        return self.color_mean + self.color_basis @ np.asarray(beta, dtype=np.float64)

    def validate(self) -> None:
        """Check shapes, index ranges, finiteness and that every standard deviation is > 0;
        raise PrepError naming the offending field."""
        n = self.shape_mean.shape[0] if self.shape_mean.ndim else 0
        _expect(
            self.shape_mean.ndim == 2 and self.shape_mean.shape[1] == 3,
            f"shape_mean must be (N, 3), got {self.shape_mean.shape}",
        )
        _expect(
            self.shape_basis.ndim == 3 and self.shape_basis.shape[:2] == (n, 3),
            f"shape_basis must be ({n}, 3, K), got {self.shape_basis.shape}",
        )
        k = self.shape_basis.shape[2]
        _expect(
            self.shape_std.shape == (k,),
            f"shape_std must have {k} entries, got {self.shape_std.shape}",
        )
        _expect(
            len(self.shape_kind) == k,
            f"shape_kind must have {k} entries, got {len(self.shape_kind)}",
        )
        bad = sorted(set(self.shape_kind) - set(COMPONENT_KINDS))
        _expect(not bad, f"shape_kind has unknown kinds {bad}; use {COMPONENT_KINDS}")
        _expect(
            self.faces.ndim == 2 and self.faces.shape[1] == 3,
            f"faces must be (M, 3), got {self.faces.shape}",
        )
        if self.faces.size:
            _expect(
                self.faces.min() >= 0 and self.faces.max() < n,
                f"faces index vertices {self.faces.min()}..{self.faces.max()}, outside 0..{n - 1}",
            )
        if self.color_mean is not None:
            _expect(
                self.color_mean.shape == (n, 3),
                f"color_mean must be ({n}, 3), got {self.color_mean.shape}",
            )
            _expect(
                self.color_basis is not None
                and self.color_basis.ndim == 3
                and self.color_basis.shape[:2] == (n, 3),
                f"color_basis must be ({n}, 3, Kc)",
            )
            kc = self.color_basis.shape[2]
            _expect(
                self.color_std is not None and self.color_std.shape == (kc,),
                f"color_std must have {kc} entries",
            )
        for name, idx in self.landmarks.items():
            if idx.size:
                _expect(
                    idx.min() >= 0 and idx.max() < n,
                    f"landmark set {name!r} indexes vertices {idx.min()}..{idx.max()}, outside "
                    f"0..{n - 1}",
                )
        with _invalid_model():
            for name in ("shape_mean", "shape_basis", "color_mean", "color_basis"):
                check_finite(getattr(self, name), name)
            check_positive(self.shape_std, "shape_std")
            if self.color_std is not None:
                check_positive(self.color_std, "color_std")


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise PrepError(f"Invalid model: {message}.")


@contextlib.contextmanager
def _invalid_model() -> Iterator[None]:
    """A failed check of :mod:`bfm_prep.validation` as the model's "Invalid model: ..."."""
    try:
        yield
    except DamagedArray as e:
        raise PrepError(f"Invalid model: {e.name} {e.problem}.") from None
