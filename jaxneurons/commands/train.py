"""``jaxneurons train``: masked-prediction pre-training from scratch, or continued pre-training.

From scratch (MelHuBERT-style, the bundled default model's recipe)::

    jaxneurons train --manifest corpus/manifest.jsonl --out models/melhubert-small --preset small

Continued pre-training of an existing model (for example after pruning, with its neuron mask)::

    jaxneurons train --manifest M --init models/pruned --neuron_mask masks.npy --out models/pruned-cpt

Targets are k-means clusters of MFCC features (``--target_source=mfcc``) or of a layer of a model
(``--target_source=layer --target_model=DIR --target_layer=N``). The work directory keeps checkpoints and
the cached targets: rerunning the same command resumes where a killed run stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np
from absl import flags, logging

from jaxneurons.data import load_audio, read_manifest
from jaxneurons.models import SpeechConfig, build_model
from jaxneurons.models.checkpoint import load_model, save_model
from jaxneurons.train.pretrain import TrainConfig, TrainData, Trainer
from jaxneurons.train.targets import kmeans_targets, layer_features, mfcc_frame_features

PRESETS = {
    # The bundled default: small MelHuBERT trained from scratch on the synthetic corpus.
    "small": dict(family="melhubert", hidden_size=192, num_hidden_layers=6, num_attention_heads=4,
                  intermediate_size=768, num_mel_bins=40, frame_stacking=2, num_conv_pos_embeddings=32,
                  num_conv_pos_embedding_groups=16, layer_norm_eps=1e-5),
    "tiny": dict(family="melhubert", hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128, num_mel_bins=40, frame_stacking=2, num_conv_pos_embeddings=8,
                 num_conv_pos_embedding_groups=4),
}

flags.DEFINE_string("manifest", None, "Training manifest (JSONL).")
flags.DEFINE_string("out", None, "Output model directory.")
flags.DEFINE_string("workdir", None, "Checkpoints and cached targets (default: OUT.work).")
flags.DEFINE_enum("preset", "small", list(PRESETS), "Architecture for training from scratch.")
flags.DEFINE_string("init", None, "Continue pre-training this jaxneurons model directory instead.")
flags.DEFINE_string("neuron_mask", None, ".npy (L, D) mask kept fixed during training (pruned neurons).")
flags.DEFINE_integer("num_clusters", 100, "k-means target clusters (MelHuBERT used 512 on LibriSpeech).")
flags.DEFINE_enum("target_source", "mfcc", ["mfcc", "layer"], "Features clustered into targets.")
flags.DEFINE_string("target_model", None, "Model whose layer gives the targets (target_source=layer).")
flags.DEFINE_integer("target_layer", 4, "hidden_states index of --target_model used for targets.")
flags.DEFINE_integer("steps", 2000, "Optimizer steps.")
flags.DEFINE_integer("batch_size", 8, "Utterances per step.")
flags.DEFINE_float("crop_seconds", 4.0, "Random crop length per utterance.")
flags.DEFINE_float("learning_rate", 5e-4, "Peak learning rate (the property-neuron study's CPT used 1e-5).")
flags.DEFINE_integer("warmup_steps", 200, "Linear warm-up steps.")
flags.DEFINE_float("mask_prob", 0.7, "Span-mask probability (MelHuBERT: 0.7).")
flags.DEFINE_integer("mask_length", 5, "Span length in frames (MelHuBERT: 5).")
flags.DEFINE_integer("seed", 0, "Seed of initialisation, data order, crops and masks.")
flags.DEFINE_integer("checkpoint_every", 200, "Steps between checkpoints.")
flags.DEFINE_integer("max_utterances", 0, "Use at most this many utterances (0: all).")
FLAGS = flags.FLAGS


def _load_corpus(manifest: str, limit: int) -> tuple[list, list[np.ndarray]]:
    utts = read_manifest(manifest)
    if limit:
        utts = utts[:limit]
    if not utts:
        sys.exit(f"error: {manifest}: no utterances")
    audio = [load_audio(u.path, 16000) for u in utts]
    return utts, audio


def _targets(encoder, audio, utts, workdir: str) -> list[np.ndarray]:
    """k-means targets, cached in the work directory under a key of everything that determines them."""
    key = json.dumps([FLAGS.target_source, FLAGS.target_model, FLAGS.target_layer, FLAGS.num_clusters, FLAGS.seed,
                      [u.utt_id for u in utts]])
    cache = os.path.join(workdir, f"targets-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz")
    if os.path.exists(cache):
        with np.load(cache) as z:
            return [z[str(i)] for i in range(len(utts))]
    t0 = time.time()
    if FLAGS.target_source == "mfcc":
        feats = mfcc_frame_features(audio, lambda n: int(encoder.num_frames(n)))
    else:
        if not FLAGS.target_model:
            sys.exit("error: --target_source=layer needs --target_model")
        feats = layer_features(load_model(FLAGS.target_model), audio, FLAGS.target_layer)
    targets, _ = kmeans_targets(feats, FLAGS.num_clusters, seed=FLAGS.seed)
    logging.info("k-means targets (%s, %d clusters) in %.1f s", FLAGS.target_source, FLAGS.num_clusters,
                 time.time() - t0)
    tmp = cache + ".tmp.npz"
    np.savez(tmp, **{str(i): t for i, t in enumerate(targets)})
    os.replace(tmp, cache)
    return targets


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.manifest or not FLAGS.out:
        sys.exit("error: --manifest and --out are required")
    workdir = FLAGS.workdir or FLAGS.out.rstrip("/") + ".work"
    os.makedirs(workdir, exist_ok=True)
    if FLAGS.init:
        encoder = load_model(FLAGS.init)
    else:
        config = SpeechConfig(**PRESETS[FLAGS.preset], num_clusters=FLAGS.num_clusters)
        encoder = build_model(config, seed=FLAGS.seed)
    utts, audio = _load_corpus(FLAGS.manifest, FLAGS.max_utterances)
    targets = _targets(encoder, audio, utts, workdir)
    config = TrainConfig(
        steps=FLAGS.steps, batch_size=FLAGS.batch_size, crop_seconds=FLAGS.crop_seconds,
        learning_rate=FLAGS.learning_rate, warmup_steps=FLAGS.warmup_steps, mask_prob=FLAGS.mask_prob,
        mask_length=FLAGS.mask_length, seed=FLAGS.seed, checkpoint_every=FLAGS.checkpoint_every,
    )
    mask = np.load(FLAGS.neuron_mask) if FLAGS.neuron_mask else None
    trainer = Trainer(encoder, TrainData(audio, targets, FLAGS.num_clusters), config, workdir, neuron_mask=mask)
    trainer.restore_latest()
    t0 = time.time()
    trainer.train()
    logging.info("trained to step %d in %.0f s", trainer.step, time.time() - t0)
    with open(trainer.metrics_path) as f:
        metrics = [json.loads(line) for line in f if line.strip()]
    provenance = {
        "command": "jaxneurons " + " ".join(sys.argv[1:]),
        "train_config": config.__dict__,
        "manifest": os.path.abspath(FLAGS.manifest),
        "num_utterances": len(utts),
        "hours_of_audio": sum(len(a) for a in audio) / 16000 / 3600,
        "init": FLAGS.init,
        "final_loss": float(np.mean([m["loss"] for m in metrics[-50:]])),
        "final_masked_accuracy": float(np.mean([m["masked_accuracy"] for m in metrics[-50:]])),
    }
    save_model(trainer.encoder(), FLAGS.out, provenance=provenance)
    with open(os.path.join(FLAGS.out, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in metrics)
    print(f"saved {FLAGS.out} (step {trainer.step}, loss {provenance['final_loss']:.3f}, "
          f"masked accuracy {provenance['final_masked_accuracy']:.3f})")
