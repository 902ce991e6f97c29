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
echo "== stn-train run: a short CPU training run of the small CNN on faces rendered from the grid model"
# About 1.5 minutes on 2 idle CPU cores (88 s measured). A fresh run each time (stn-train never overwrites a run
# folder; --resume continues one). lr 1e-3 with a 60-step warm-up and the gradient norm clipped
# at 100 (it starts near 3000), and the landmark teacher (each training face's own landmark fit,
# computed once, with its shape term at the default factor 3): pose error about 6 degrees and
# shape 4.7 to 5.0 mm (mean guess 5.9) on held-out faces after these 400 steps (fresh clone,
# 2026-12-03: training 87 s, eval pose 6.35 deg, shape 4.73 mm, NME 0.0329; with --flip-test
# 5.97 deg, 4.67 mm, 0.0314), where lr 3e-4
# without them reached 18 degrees and 6.8 mm (docs/training.md, docs/benchmarks.md).
rm -rf "$OUT/train"
"$BIN/stn-train" run --model "$OUT/grid112.h5" --synthetic 20000 --val-synthetic 64 \
    --out "$OUT/train" --backbone small --image-size 112 --batch-size 32 --steps 400 \
    --lr 1e-3 --warmup-steps 60 --clip-grad 100 --teacher lm \
    --val-every 100 --checkpoint-every 100 --device cpu --workers 1 --seed 0
echo "== stn-train eval: held-out rendered faces (another seed), with pose and shape errors"
"$BIN/stn-train" eval --checkpoint "$OUT/train/checkpoints/best.pt" --model "$OUT/grid112.h5" \
    --synthetic 200 --seed 99 --out "$OUT/train/eval" --device cpu
echo "== the same with the flip test: each face and its mirror image, the two estimates averaged"
"$BIN/stn-train" eval --checkpoint "$OUT/train/checkpoints/best.pt" --model "$OUT/grid112.h5" \
    --synthetic 200 --seed 99 --out "$OUT/train/eval_flip_test" --device cpu --flip-test
echo "== stn-train predict: six new faces of two people (folders = subjects), averaged per subject"
rm -rf "$OUT/faces" "$OUT/predict"
"$BIN/python" - "$OUT/grid112.h5" "$OUT/faces" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from stn_core import UVGridModel
from stn_train.data.synthetic import SyntheticFaces
faces = SyntheticFaces(UVGridModel.load(sys.argv[1]), 6, 112, seed=2024, images_per_subject=3)
batch = faces.render_batch(range(6))
for i in range(6):
    folder = Path(sys.argv[2]) / f"person{i // 3}"
    folder.mkdir(parents=True, exist_ok=True)
    a = (batch["image"][i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(a).save(folder / f"view{i % 3}.png")
PY
"$BIN/stn-train" predict "$OUT/faces/person0" "$OUT/faces/person1" \
    --checkpoint "$OUT/train/checkpoints/best.pt" --model "$OUT/grid112.h5" \
    --out "$OUT/predict" --average-by-subject --device cpu
echo
echo "Demo outputs are in $OUT:"
echo "  $OUT/synth/        synthetic input files (BFM 2009 .mat, 3DDFA expression .mat, mapping, landmarks)"
echo "  $OUT/model.h5      the model artifact (see docs/artifact-format.md)"
echo "  $OUT/uv.h5, uv.png the symmetric UV embedding and its layout"
echo "  $OUT/grid112.h5    the UV-grid model read by stn-core"
echo "  $OUT/pictures/     geometry image, colour in UV, model samples, meshes (PLY/OBJ)"
echo "  $OUT/train/        the training run: checkpoints/ (best.pt, last.pt), metrics.jsonl, config.toml"
echo "  $OUT/train/pictures/  curves.png (loss curves) and start/step_*.png (input / flattened / mask)"
echo "  $OUT/train/tensorboard/  TensorBoard logs (tensorboard --logdir $OUT/train/tensorboard)"
echo "  $OUT/train/eval/   eval.json (NME, pose and shape errors), per_landmark.csv, ced.png"
echo "  $OUT/train/eval_flip_test/  the same with --flip-test"
echo "  $OUT/predict/      per face: theta JSON, flattened face, mask, textured OBJ; subjects/ means"
