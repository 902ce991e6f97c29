"""Expression bases on the 3DDFA vertices, in one in-memory form whatever file they came from.

Two sources, recognised by content (never by extension) in :func:`load_expression`:

- the 3DDFA ``Model_Expression.mat`` (a MATLAB v5 or v7.3 file: the MAT header decides),
  read by :func:`bfm_prep.io.tddfa.load_tddfa_expression`;
- Guo et al.'s CoarseData ``Exp_Pca.bin`` (raw little-endian: int32 D, then float32 values
  whose count fits D), read by :func:`bfm_prep.io.coarsedata.load_coarsedata_expression`,
  which needs the standard deviations ``std_exp.txt``.
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np

from bfm_prep.errors import PrepError
from bfm_prep.io._checks import fail, require_file

TDDFA = "3ddfa"
COARSEDATA = "coarsedata"
SOURCES = (TDDFA, COARSEDATA)
_MAX_PLAUSIBLE_D = 100_000


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


def detect_expression_format(path: str | os.PathLike) -> str:
    """``"3ddfa"`` (a MAT-file) or ``"coarsedata"`` (a raw Exp_Pca.bin), by content.

    A file with a MATLAB v5/v7.3 header, or an HDF5 signature, is taken for a 3DDFA .mat;
    otherwise a file whose first 4 bytes are a plausible little-endian int32 component count
    (1..100000) is taken for a CoarseData .bin (its size is checked by the reader).
    """
    from bfm_prep.io.matfile import sniff

    require_file(path)
    kind = sniff(path)
    if kind is not None:
        return TDDFA
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) == 4 and 1 <= struct.unpack("<i", head)[0] <= _MAX_PLAUSIBLE_D:
        return COARSEDATA
    if head.startswith(b"MA"):
        raise fail(
            path,
            "is truncated: it starts like a MATLAB file but is shorter than its header",
            "copy the file again",
        )
    raise fail(
        path,
        "is neither a 3DDFA Model_Expression.mat (no MATLAB header) nor a CoarseData "
        "Exp_Pca.bin (no plausible int32 component count in its first 4 bytes)",
        "pass one of those two files to --expression",
    )


def load_expression(
    path: str | os.PathLike, std_path: str | os.PathLike | None = None, n_exp: int | None = None
) -> ExpressionBasis:
    """Read either expression format, recognised by content.

    Args:
        path: ``Model_Expression.mat`` (3DDFA) or ``Exp_Pca.bin`` (CoarseData).
        std_path: ``std_exp.txt``, required for CoarseData (the CLI's ``--expression-std``);
            ignored with a warning for 3DDFA.
        n_exp: keep the first n components (None: all).
    """
    fmt = detect_expression_format(path)
    if fmt == TDDFA:
        from bfm_prep.io.tddfa import load_tddfa_expression

        if std_path is not None:
            warnings.warn(
                f"{std_path}: standard deviations are only used with a CoarseData "
                f"Exp_Pca.bin; {path} is a 3DDFA .mat, so the file is ignored",
                stacklevel=2,
            )
        return load_tddfa_expression(path, n_exp=n_exp)
    from bfm_prep.io.coarsedata import load_coarsedata_expression

    if std_path is None:
        raise fail(
            path,
            "is a CoarseData Exp_Pca.bin, which needs its standard deviations",
            "pass std_exp.txt with --expression-std",
        )
    return load_coarsedata_expression(path, std_path, n_exp=n_exp)


__all__ = ["ExpressionBasis", "load_expression", "detect_expression_format", "TDDFA", "COARSEDATA"]
