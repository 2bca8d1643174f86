"""How well a model's unchanged head fits candidate continued-pre-training targets (masked accuracy at lr 0).

Fresh k-means of MFCC under the old head indices (what continued pre-training did before target recipes)
against the model's stored recipe. The default model, on the first N files (sorted) of a speech folder:

    PYTHONPATH=. python benchmarks/bench_cpt_targets.py --audio_dir /work/shared/realspeech/librispeech-251/audio \\
        --num_files 64 --batches 20

Numbers and reading in docs/default_model.md ("Targets for continued pre-training").
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import numpy as np

from jaxneurons.assets import default_model_path
from jaxneurons.data import load_audio
from jaxneurons.models.checkpoint import load_model
from jaxneurons.train.pretrain import TrainConfig, TrainData, Trainer
from jaxneurons.train.targets import continued_pretraining_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=default_model_path())
    parser.add_argument("--audio_dir", required=True)
    parser.add_argument("--num_files", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    model = load_model(args.model)
    files = sorted(glob.glob(os.path.join(args.audio_dir, "**", "*.flac"), recursive=True))[: args.num_files]
    if not files:
        raise SystemExit(f"error: {args.audio_dir}: no .flac files")
    audio = [load_audio(f, 16000) for f in files]
    print(f"{len(audio)} utterances, {sum(len(a) for a in audio) / 16000 / 60:.1f} min")
    config = TrainConfig(steps=args.batches, batch_size=8, crop_seconds=2.0, learning_rate=0.0, warmup_steps=1,
                         weight_decay=0.0, checkpoint_every=10**9, log_every=10**9)
    candidates = {
        "fresh MFCC k-means": lambda: continued_pretraining_data(model, audio, targets="fresh_mfcc_kmeans"),
        "stored recipe": lambda: continued_pretraining_data(model, audio, recipe=args.model),
    }
    for name, make in candidates.items():
        t0 = time.time()
        data = make()
        data = TrainData(data.audio, data.targets, data.num_clusters)  # score the model's own, unchanged head
        with tempfile.TemporaryDirectory() as work:
            history = Trainer(model, data, config, work).train()
        print(f"{name}: masked accuracy {np.mean([h['masked_accuracy'] for h in history]):.3f}, "
              f"masked loss {np.mean([h['loss'] for h in history]):.2f} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
