"""Expression models, recognised by content and read into one in-memory form
(:class:`~bfm_prep.io.expression_basis.ExpressionBasis`) whatever file they came from.

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

from bfm_prep.errors import PrepError
from bfm_prep.io._checks import fail, require_file
from bfm_prep.io.coarsedata import load_coarsedata_expression
from bfm_prep.io.expression_basis import COARSEDATA, TDDFA, ExpressionBasis
from bfm_prep.io.matfile import sniff
from bfm_prep.io.tddfa import load_tddfa_expression

_MAX_PLAUSIBLE_D = 100_000


def detect_expression_format(path: str | os.PathLike) -> str:
    """``"3ddfa"`` (a MAT-file) or ``"coarsedata"`` (a raw Exp_Pca.bin), by content.

    A file with a MATLAB v5/v7.3 header, or an HDF5 signature, is taken for a 3DDFA .mat;
    otherwise a file whose first 4 bytes are a plausible little-endian int32 component count
    (1..100000) is taken for a CoarseData .bin (its size is checked by the reader).
    """
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
    raise PrepError.naming(
        "{path}: is neither a 3DDFA Model_Expression.mat (no MATLAB header) nor a CoarseData "
        "Exp_Pca.bin (no plausible int32 component count in its first 4 bytes); pass one of "
        "those two files to {expression_path}.",
        path=path,
    )


def load_expression(
    path: str | os.PathLike, std_path: str | os.PathLike | None = None, n_exp: int | None = None
) -> ExpressionBasis:
    """Read either expression format, recognised by content.

    Args:
        path: ``Model_Expression.mat`` (3DDFA) or ``Exp_Pca.bin`` (CoarseData).
        std_path: ``std_exp.txt``, required for CoarseData; ignored with a warning for 3DDFA.
        n_exp: keep the first n components (None: all).
    """
    fmt = detect_expression_format(path)
    if fmt == TDDFA:
        if std_path is not None:
            warnings.warn(
                f"{std_path}: standard deviations are only used with a CoarseData "
                f"Exp_Pca.bin; {path} is a 3DDFA .mat, so the file is ignored",
                stacklevel=2,
            )
        return load_tddfa_expression(path, n_exp=n_exp)
    if std_path is None:
        raise PrepError.naming(
            "{path}: is a CoarseData Exp_Pca.bin, which needs its standard deviations; pass "
            "std_exp.txt with {std_path}.",
            path=path,
        )
    return load_coarsedata_expression(path, std_path, n_exp=n_exp)


__all__ = ["load_expression", "detect_expression_format"]
