#!/usr/bin/env bash
# Trains the bundled default model (jaxneurons/assets/default_model) from scratch on the synthetic corpus.
# Usage: bash experiments/train_default_model.sh [WORKDIR]   (rerun to resume after a kill)
set -euo pipefail
WORK=${1:-runs/default_model}
PY=${PYTHON:-python}
"$PY" -m jaxneurons.data.synth --num_speakers 64 --minutes 64 --languages en --seed 1 --out "$WORK/corpus"
"$PY" -m jaxneurons.cli train --manifest "$WORK/corpus/manifest.jsonl" --out "$WORK/model" --workdir "$WORK/train" \
  --preset small --num_clusters 100 --steps 1500 --batch_size 8 --crop_seconds 2 --learning_rate 7e-4 \
  --warmup_steps 100 --mask_prob 0.7 --mask_length 5 --seed 0 --checkpoint_every 100
