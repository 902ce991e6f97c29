"""Readers of external files, each converting once to the canonical in-memory form.

| reader | file | result |
| --- | --- | --- |
| :func:`load_bfm2009` | BFM 2009 ``01_MorphableModel.mat`` (v5/v7.3) | MorphableModel |
| :func:`load_bfm2017` | BFM 2017/2019 ``.h5`` | MorphableModel (with expression) |
| :func:`load_sfm` | Surrey Face Model ``.npz`` | MorphableModel (identity, blendshapes) |
| :func:`load_expression` | 3DDFA ``Model_Expression.mat``, CoarseData ``Exp_Pca.bin`` | basis |
| :func:`load_mapping` | ``map_tddfa_to_basel.mat`` | (V,) int64, 0-based Basel index |
| :func:`load_landmarks` | ``.anl``, index lists, eos ``ibug_to_*.txt`` | (L,) int64, 0-based |
| :func:`load_mesh` | ``.ply`` / ``.obj`` | (V (N, 3) float64, F (M, 3) int64) |
| :func:`load_mat` | any MATLAB v5 / v7.3 file | ``{name: ndarray}`` (MATLAB orientation) |

Every failure a user can cause is a :class:`bfm_prep.PrepError` of one sentence naming the
file and what is wrong. Units out of here: millimetres, colour in [0, 1], indices 0-based.
"""

from bfm_prep.io.bfm2009 import load_bfm2009
from bfm_prep.io.bfm2017 import load_bfm2017
from bfm_prep.io.coarsedata import load_coarsedata_expression
from bfm_prep.io.expression import detect_expression_format, load_expression
from bfm_prep.io.expression_basis import ExpressionBasis
from bfm_prep.io.landmarks import default_landmark_name, load_landmark_mapping, load_landmarks
from bfm_prep.io.matfile import load_mat, mat_variables, require
from bfm_prep.io.mesh import load_mesh
from bfm_prep.io.sfm import load_sfm, load_sfm_uv
from bfm_prep.io.tddfa import load_mapping, load_tddfa_expression

__all__ = [
    "ExpressionBasis",
    "default_landmark_name",
    "detect_expression_format",
    "load_bfm2009",
    "load_bfm2017",
    "load_coarsedata_expression",
    "load_expression",
    "load_landmark_mapping",
    "load_landmarks",
    "load_mapping",
    "load_mat",
    "load_mesh",
    "load_sfm",
    "load_sfm_uv",
    "load_tddfa_expression",
    "mat_variables",
    "require",
]
