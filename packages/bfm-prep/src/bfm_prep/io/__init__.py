"""Readers of external files, one module per format family, each converting once to the
canonical in-memory form.

| module: reader | file | result |
| --- | --- | --- |
| bfm2009: load_bfm2009 | BFM 2009 ``01_MorphableModel.mat`` (v5/v7.3) | MorphableModel |
| bfm2017: load_bfm2017 | BFM 2017/2019 ``.h5`` | MorphableModel (with expression) |
| sfm: load_sfm | Surrey Face Model ``.npz`` | MorphableModel (identity, blendshapes) |
| expression: load_expression | 3DDFA ``Model_Expression.mat``, CoarseData ``Exp_Pca.bin`` | |
| | | ExpressionBasis (expression_basis) |
| tddfa: load_mapping | ``map_tddfa_to_basel.mat`` | (V,) int64, 0-based Basel index |
| landmarks: load_landmarks | ``.anl``, index lists, eos ``ibug_to_*.txt`` | (L,) int64, 0-based |
| mesh: load_mesh | ``.ply`` / ``.obj`` | (V (N, 3) float64, F (M, 3) int64) |
| bfm_uv: load_bfm_uv | the original's ``BFM_UV.mat`` | (N, 2) float64 UV |
| matfile: load_mat | any MATLAB v5 / v7.3 file | ``{name: ndarray}`` (MATLAB orientation) |

Import each reader from its module (``from bfm_prep.io.bfm2009 import load_bfm2009``): this
package imports none of them, so that reading one format does not import the libraries of
all the others (trimesh alone, for PLY files, takes most of a second to import).

Every failure a user can cause is a :class:`bfm_prep.PrepError` of one sentence naming the
file and what is wrong. Units out of here: millimetres, colour in [0, 1], indices 0-based.
"""
