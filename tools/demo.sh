#!/usr/bin/env bash
# The main job on the embedded synthetic default: each step writes under $OUT.
set -euo pipefail
OUT=${OUT:-out/demo}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
echo "== bfm-prep synth: a synthetic face model in the BFM 2009 / 3DDFA file formats"
"$BIN/bfm-prep" synth "$OUT/synth" --seed 0
echo "== bfm-prep build-expression: identity + transferred expression components"
"$BIN/bfm-prep" build-expression --bfm "$OUT/synth/01_MorphableModel.mat" \
    --expression "$OUT/synth/Model_Expression.mat" --mapping "$OUT/synth/map_tddfa_to_basel.mat" \
    --landmarks aflw21="$OUT/synth/Landmarks21_BFM.anl" --landmarks ibug68="$OUT/synth/Landmarks68_BFM.anl" \
    --n-shape 10 --n-exp 10 --out "$OUT/model.h5"
echo "== bfm-prep uv-embed: the symmetric Tutte embedding"
"$BIN/bfm-prep" uv-embed --model "$OUT/model.h5" --out "$OUT/uv.h5" --plot "$OUT/uv.png"
echo "== bfm-prep uv-resample: the 112 x 112 UV-grid model"
"$BIN/bfm-prep" uv-resample --model "$OUT/model.h5" --uv "$OUT/uv.h5" --res 112 --out "$OUT/grid112.h5"
"$BIN/bfm-prep" inspect "$OUT/grid112.h5"
echo "== bfm-prep plot: pictures of the grid model"
"$BIN/bfm-prep" plot "$OUT/grid112.h5" --out "$OUT/pictures" --export-mesh
echo
echo "Demo outputs are in $OUT:"
echo "  $OUT/synth/        synthetic input files (BFM 2009 .mat, 3DDFA expression .mat, mapping, landmarks)"
echo "  $OUT/model.h5      the model artifact (see docs/artifact-format.md)"
echo "  $OUT/uv.h5, uv.png the symmetric UV embedding and its layout"
echo "  $OUT/grid112.h5    the UV-grid model read by stn-core"
echo "  $OUT/pictures/     geometry image, colour in UV, model samples, meshes (PLY/OBJ)"
