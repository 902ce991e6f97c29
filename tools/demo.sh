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
"$BIN/bfm-prep" inspect "$OUT/model.h5"
echo
echo "Demo outputs are in $OUT:"
echo "  $OUT/synth/      synthetic input files (BFM 2009 .mat, 3DDFA expression .mat, mapping, landmarks)"
echo "  $OUT/model.h5    the model artifact (see docs/artifact-format.md)"
