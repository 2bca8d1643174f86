#!/usr/bin/env bash
# Trains the bundled default model (jaxneurons/assets/default_model) from scratch on the synthetic corpus,
# in two HuBERT-style iterations: (1) targets = k-means of MFCCs, from random weights; (2) targets = k-means
# of iteration 1's layer-3 features, continuing from iteration 1's weights.
# Usage: bash experiments/train_default_model.sh [WORKDIR]   (rerun to resume after a kill)
# The model directory to bundle is WORKDIR/model (copy it with jaxneurons.models.checkpoint.save_model(...,
# storage_dtype="float16"), as jaxneurons/assets/default_model was).
set -euo pipefail
WORK=${1:-runs/default_model}
PY=${PYTHON:-python}
COMMON=(--num_clusters 100 --batch_size 8 --crop_seconds 2 --mask_prob 0.7 --mask_length 5 --seed 0
        --checkpoint_every 100)
"$PY" -m jaxneurons.data.synth --num_speakers 64 --minutes 64 --languages en --seed 1 --out "$WORK/corpus"
"$PY" -m jaxneurons.cli train --manifest "$WORK/corpus/manifest.jsonl" --out "$WORK/iter1" \
  --workdir "$WORK/iter1.work" --preset small --steps 1500 --learning_rate 7e-4 --warmup_steps 100 "${COMMON[@]}"
# Iteration 2 fits NEW targets (--targets new; the default with --init is the model's own stored recipe), so
# iteration 1's head is re-initialised. WORK/model then stores a "layer" recipe with iteration 1 inside
# (WORK/model/targets/feature_model), and continued pre-training regenerates exactly its targets.
"$PY" -m jaxneurons.cli train --manifest "$WORK/corpus/manifest.jsonl" --out "$WORK/model" \
  --workdir "$WORK/iter2.work" --init "$WORK/iter1" --targets new --target_source layer \
  --target_model "$WORK/iter1" --target_layer 3 --steps 2500 --learning_rate 5e-4 --warmup_steps 100 "${COMMON[@]}"
