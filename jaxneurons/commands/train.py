"""``jaxneurons train``: masked-prediction pre-training from scratch, or continued pre-training.

From scratch (MelHuBERT-style, the bundled default model's recipe)::

    jaxneurons train --manifest corpus/manifest.jsonl --out models/melhubert-small --preset small

Continued pre-training of an existing model (for example after pruning, with its neuron mask) on the targets it
was trained on (its stored recipe, ``--targets=recipe``, the default with ``--init``)::

    jaxneurons train --manifest M --init models/pruned --neuron_mask masks.npy --out models/pruned-cpt

New targets (``--targets=new``, the only choice from scratch) are k-means clusters of MFCC features
(``--target_source=mfcc``) or of a layer of a model (``--target_source=layer --target_model=DIR
--target_layer=N``); with ``--init`` the model's head is then re-initialised (its outputs meant other clusters).
A model without a stored recipe (an HF conversion) must be given ``--targets=new`` explicitly.

The trained model stores how its targets were made in ``OUT/targets/`` (see :mod:`jaxneurons.train.targets`).
The work directory keeps checkpoints and the cached targets: rerunning the same command resumes where a killed
run stopped; a checkpoint of another run (other model, flags, mask or data) is refused unless
``--restart_on_mismatch`` is given.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import flags, logging

from jaxneurons.config_flags import config_from_flags, define_config_flags
from jaxneurons.data import manifest_fingerprint, read_manifest
from jaxneurons.data.decoded import DecodeOptions, screen_corpus
from jaxneurons.errors import error_line
from jaxneurons.models import SpeechConfig, build_model
from jaxneurons.models.checkpoint import load_model, save_model
from jaxneurons.models.config import ConfigError
from jaxneurons.results import atomic_directory
from jaxneurons.train.pretrain import CheckpointMismatchError, TrainConfig, TrainData, Trainer
from jaxneurons.train.targets import (
    TargetError,
    TargetRecipe,
    continued_pretraining_data,
    fit_target_recipe,
    load_recipe,
    save_recipe,
    targets_cache_key,
)

PRESETS = {
    # The bundled default: small MelHuBERT trained from scratch on the synthetic corpus.
    "small": dict(family="melhubert", hidden_size=192, num_hidden_layers=6, num_attention_heads=4,
                  intermediate_size=768, num_mel_bins=40, frame_stacking=2, num_conv_pos_embeddings=32,
                  num_conv_pos_embedding_groups=16, layer_norm_eps=1e-5),
    "tiny": dict(family="melhubert", hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128, num_mel_bins=40, frame_stacking=2, num_conv_pos_embeddings=8,
                 num_conv_pos_embedding_groups=4),
}
_SKIP = ("keep_checkpoints", "log_every")

flags.DEFINE_string("manifest", None, "Training manifest (JSONL).")
flags.DEFINE_string("out", None, "Output model directory.")
flags.DEFINE_string("workdir", None, "Checkpoints and cached targets (default: OUT.work).")
flags.DEFINE_enum("preset", "small", list(PRESETS), "Architecture for training from scratch.")
flags.DEFINE_string("init", None, "Continue pre-training this jaxneurons model directory instead.")
flags.DEFINE_string("neuron_mask", None, ".npy (L, D) mask kept fixed during training (pruned neurons).")
flags.DEFINE_enum("targets", None, ["recipe", "new"],
                  "recipe: the --init model's stored targets (default with --init); new: fit new k-means "
                  "(default from scratch; re-initialises an --init model's head).")
flags.DEFINE_string("recipe_from", None,
                    "Model directory whose stored target recipe --targets=recipe uses (default: --init; give the "
                    "unpruned model when --init is a pruned copy without one).")
flags.DEFINE_integer("num_clusters", 100, "k-means target clusters for --targets=new (MelHuBERT: 512).")
flags.DEFINE_enum("target_source", "mfcc", ["mfcc", "layer"], "Features clustered into new targets.")
flags.DEFINE_string("target_model", None, "Model whose layer gives new targets (target_source=layer).")
flags.DEFINE_integer("target_layer", 4, "hidden_states index of --target_model used for new targets.")
flags.DEFINE_integer("max_utterances", 0, "Use at most this many utterances (0: all).")
flags.DEFINE_bool("restart_on_mismatch", False,
                  "If the work directory holds checkpoints of another run, delete them and start fresh "
                  "(default: refuse with an error).")
define_config_flags(TrainConfig, skip=_SKIP)
define_config_flags(DecodeOptions)  # --on_error, as in jaxneurons scan
FLAGS = flags.FLAGS


def _load_corpus(manifest: str, limit: int, decode: DecodeOptions) -> tuple[list, list[np.ndarray], dict]:
    """(usable utterances, their audio, the decoding record for the provenance): unusable files stop the run
    (``on_error='raise'``) or are left out, counted and listed (``'record'``)."""
    utts = read_manifest(manifest)
    if limit:
        utts = utts[:limit]
    if not utts:
        sys.exit(f"error: {manifest}: no utterances")
    decoded = screen_corpus(utts, manifest, on_error=decode.on_error)  # every file checked before any training
    return decoded.utts, decoded.all_audio(), decoded.record()


def _recipe_dir() -> str:
    return FLAGS.recipe_from or FLAGS.init


def _cache_key(encoder, utts, audio, choice: str) -> str:
    target_model = None
    if choice == "new" and FLAGS.target_source == "layer" and FLAGS.target_model:
        target_model = load_model(FLAGS.target_model)
    recipe = load_recipe(_recipe_dir()) if choice == "recipe" else None
    return targets_cache_key(encoder, audio, choice=choice, source=FLAGS.target_source, feature_model=target_model,
                             layer=FLAGS.target_layer, num_clusters=FLAGS.num_clusters, seed=FLAGS.seed,
                             recipe=recipe, manifest=manifest_fingerprint(utts))


def _make_targets(encoder, audio: list[np.ndarray], choice: str) -> tuple[TrainData, object | None]:
    """(the training data, the feature model to store with a layer recipe)."""
    if choice == "recipe":
        data = continued_pretraining_data(encoder, audio, recipe=_recipe_dir())
        return data, None
    feature_model = None
    if FLAGS.target_source == "layer":
        if not FLAGS.target_model:
            raise TargetError("--target_source=layer needs --target_model")
        feature_model = load_model(FLAGS.target_model)
    recipe, labels = fit_target_recipe(
        encoder, audio, FLAGS.num_clusters, source=FLAGS.target_source, feature_model=feature_model,
        feature_model_path=os.path.abspath(FLAGS.target_model) if feature_model is not None else None,
        layer=FLAGS.target_layer if feature_model is not None else None, seed=FLAGS.seed)
    reinit = FLAGS.init is not None and getattr(encoder, "final_proj", None) is not None
    return TrainData(audio, labels, recipe.num_clusters, recipe=recipe, reinit_head=reinit), feature_model


def _cached_targets(encoder, utts, audio, workdir: str, choice: str) -> TrainData:
    """Targets cached in ``workdir/targets-KEY/`` (labels + recipe), made once per key."""
    cache = os.path.join(workdir, f"targets-{_cache_key(encoder, utts, audio, choice)}")
    labels_path = os.path.join(cache, "labels.npz")
    reinit = choice == "new" and FLAGS.init is not None and getattr(encoder, "final_proj", None) is not None
    if os.path.exists(labels_path):
        recipe = load_recipe(cache)
        with np.load(labels_path, allow_pickle=False) as z:
            labels = [z[str(i)] for i in range(len(utts))]
        return TrainData(audio, labels, recipe.num_clusters, recipe=recipe, reinit_head=reinit)
    t0 = time.time()
    data, feature_model = _make_targets(encoder, audio, choice)
    logging.info("targets (%s) for %d utterances in %.1f s", choice, len(audio), time.time() - t0)
    with atomic_directory(cache) as tmp:
        save_recipe(data.recipe, tmp, feature_model=feature_model)
        np.savez(os.path.join(tmp, "labels.npz"), **{str(i): t for i, t in enumerate(data.targets)})
    return TrainData(audio, data.targets, data.num_clusters, recipe=load_recipe(cache), reinit_head=reinit)


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.manifest or not FLAGS.out:
        sys.exit("error: --manifest and --out are required")
    choice = FLAGS.targets or ("recipe" if FLAGS.init else "new")
    if choice == "recipe" and not FLAGS.init:
        sys.exit("error: --targets=recipe continues a model's own targets and needs --init")
    try:  # first: a wrong --init path is "not a model", not "a model without a recipe"
        if FLAGS.init:
            encoder = load_model(FLAGS.init)
        else:
            encoder = build_model(SpeechConfig(**PRESETS[FLAGS.preset], num_clusters=FLAGS.num_clusters),
                                  seed=FLAGS.seed)
    except (ConfigError, ValueError) as e:
        sys.exit(error_line(e))
    if choice == "recipe" and load_recipe(_recipe_dir()) is None:
        sys.exit(f"error: {_recipe_dir()}: the model stores no target recipe (targets/recipe.json); pass "
                 "--targets=new to train it on new k-means targets (its head is re-initialised)")
    workdir = FLAGS.workdir or FLAGS.out.rstrip("/") + ".work"
    os.makedirs(workdir, exist_ok=True)
    try:
        utts, audio, decoding = _load_corpus(FLAGS.manifest, FLAGS.max_utterances, config_from_flags(DecodeOptions))
        data = _cached_targets(encoder, utts, audio, workdir, choice)
        config = config_from_flags(TrainConfig, skip=_SKIP)
        mask = np.load(FLAGS.neuron_mask, allow_pickle=False) if FLAGS.neuron_mask else None
        trainer = Trainer(encoder, data, config, workdir, neuron_mask=mask)
        trainer.restore_latest("fresh" if FLAGS.restart_on_mismatch else "error")
    except (TargetError, ConfigError, CheckpointMismatchError, ValueError) as e:
        sys.exit(error_line(e))  # one line, also for OSErrors
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
        "data_decoding": decoding,
        "hours_of_audio": sum(len(a) for a in audio) / 16000 / 3600,
        "init": FLAGS.init,
        "targets": {"choice": choice, **data.recipe.to_json(), "head_reinitialised": data.reinit_head},
        "final_loss": float(np.mean([m["loss"] for m in metrics[-50:]])),
        "final_masked_accuracy": float(np.mean([m["masked_accuracy"] for m in metrics[-50:]])),
    }
    save_model(trainer.encoder(), FLAGS.out, provenance=provenance)
    recipe: TargetRecipe = data.recipe
    save_recipe(recipe, FLAGS.out)  # a layer recipe copies its feature model from the cache
    with open(os.path.join(FLAGS.out, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in metrics)
    print(f"saved {FLAGS.out} (step {trainer.step}, loss {provenance['final_loss']:.3f}, "
          f"masked accuracy {provenance['final_masked_accuracy']:.3f})")
