"""The in-memory expression basis that both expression readers return (3DDFA and CoarseData).

It lives below the readers (:mod:`bfm_prep.io.tddfa`, :mod:`bfm_prep.io.coarsedata`) and the
dispatcher that recognises their files (:mod:`bfm_prep.io.expression`), which all import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bfm_prep.errors import PrepError

TDDFA = "3ddfa"
COARSEDATA = "coarsedata"
SOURCES = (TDDFA, COARSEDATA)


@dataclass
class ExpressionBasis:
    """A linear expression model on V vertices (the 3DDFA topology, V = 53215 for real files).

    Attributes:
        mean: (V, 3) float64, mm: the file's mean expression offset (3DDFA ``mu_exp``,
            CoarseData's stored mean). The original 3DMM-STN ignores it; kept for inspection.
        components: (V, 3, D) float64, mm per unit coefficient (already multiplied by ``std``).
        std: (D,) float64, the factor each stored component was multiplied by, in the units of
            its coefficient (1 where the file's components are used as stored).
        source: ``"3ddfa"`` or ``"coarsedata"``.
        scaling: one sentence saying how ``components`` were made from the file.
        file_std: standard deviations found in the file but not applied (3DDFA ``sigma_exp``),
            or None.
        provenance: ``{"inputs": {label: {"path", "sha256"}}, "parameters": {...}}``.
    """

    mean: np.ndarray
    components: np.ndarray
    std: np.ndarray
    source: str
    scaling: str
    file_std: np.ndarray | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.mean = np.ascontiguousarray(self.mean, dtype=np.float64)
        self.components = np.ascontiguousarray(self.components, dtype=np.float64)
        self.std = np.ascontiguousarray(self.std, dtype=np.float64).reshape(-1)
        if self.file_std is not None:
            self.file_std = np.asarray(self.file_std, dtype=np.float64).reshape(-1)
        v = self.mean.shape[0]
        if self.mean.ndim != 2 or self.mean.shape[1] != 3:
            raise PrepError(
                f"Invalid expression basis: mean must be (V, 3), got {self.mean.shape}."
            )
        if self.components.ndim != 3 or self.components.shape[:2] != (v, 3):
            raise PrepError(
                f"Invalid expression basis: components must be ({v}, 3, D), "
                f"got {self.components.shape}."
            )
        if self.std.shape != (self.components.shape[2],):
            raise PrepError(
                f"Invalid expression basis: std must have {self.components.shape[2]} "
                f"entries, got {self.std.shape}."
            )
        if self.source not in SOURCES:
            raise PrepError(
                f"Invalid expression basis: source {self.source!r} is not one of {SOURCES}."
            )

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def n_components(self) -> int:
        return self.components.shape[2]


__all__ = ["COARSEDATA", "SOURCES", "TDDFA", "ExpressionBasis"]
