"""Probe table of a model vs its random-init twin (the bundled default model's quality check).

    python experiments/default_model_probes.py --model default --out docs/default_model_probes.json

On a held-out synthetic corpus (speakers the model never heard): frame phone accuracy and PER (frame-merge)
with a SUPERB-style learned weighted sum of all layers, utterance-level gender (speaker-disjoint split) and
speaker identification (utterance-disjoint within each speaker), each with its chance level. The same
architecture with random weights (same seed scheme as ``build_model``) is probed identically.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags, logging

flags.DEFINE_string("model", "default", "Model directory or 'default'.")
flags.DEFINE_string("workdir", "runs/default_model_probes", "Corpus location.")
flags.DEFINE_string("out", None, "JSON file for the table (also printed as Markdown).")
flags.DEFINE_integer("num_speakers", 32, "Held-out speakers (32: about 90 test utterances for speaker ID).")
flags.DEFINE_float("minutes", 24.0, "Minutes of held-out audio.")
flags.DEFINE_integer("seed", 777, "Corpus seed (the default model was trained on seed 1).")
flags.DEFINE_integer("max_epochs", 40, "Probe training epochs.")
flags.DEFINE_string("curve", None, "PNG file for the model's training curve (from its metrics.jsonl), if any.")
flags.DEFINE_integer("curve_window", 50, "Steps of the running mean drawn in the training curve.")
FLAGS = flags.FLAGS


def probe_model(model, utts, inventory, max_epochs: int, seed: int = 0) -> dict:
    from jaxneurons.data import BatchLoader, FrameLabelSpec
    from jaxneurons.pipeline.labels import GENDERS, frame_geometry
    from jaxneurons.probes import (
        evaluate,
        extract_features,
        speaker_disjoint_split,
        train_gender_probe,
        train_phone_probe,
        train_speaker_probe,
        within_speaker_split,
    )

    loader = BatchLoader(utts, 8, frame_geometry(model.config),
                         labels={"phone": FrameLabelSpec("phones", inventory.vocab, frames="all", ignore=("sil",))})
    speakers_all = sorted({u.speaker for u in utts})
    values = {"utt": np.arange(len(utts)),
              "gender": np.array([GENDERS.index(u.gender) for u in utts]),
              "speaker": np.array([speakers_all.index(u.speaker) for u in utts])}
    feats = extract_features(model, loader, layers="all", frame_label_keys=("phone",), utt_label_values=values)
    order = np.asarray(feats.utt_labels["utt"])
    speakers = [utts[i].speaker for i in order]
    gender = np.asarray(feats.utt_labels["gender"])
    split = speaker_disjoint_split(speakers, dev_fraction=0.15, test_fraction=0.25, seed=seed, stratify=gender)
    phone = train_phone_probe(feats.subset(split.train), feats.subset(split.dev), num_classes=inventory.size,
                              class_names=inventory.vocab.labels, max_epochs=max_epochs, seed=seed)
    phone_eval = evaluate(phone, feats.subset(split.test))
    pooled = feats.pooled()
    sex = train_gender_probe(pooled.subset(split.train), pooled.subset(split.dev), num_classes=2,
                             class_names=list(GENDERS), seed=seed)
    sex_eval = evaluate(sex, pooled.subset(split.test))
    within = within_speaker_split(speakers, dev_fraction=0.2, test_fraction=0.2, seed=seed)
    spk = train_speaker_probe(pooled.subset(within.train), pooled.subset(within.dev),
                              num_classes=len(speakers_all), seed=seed)
    spk_eval = evaluate(spk, pooled.subset(within.test))
    return {
        "phone_accuracy": phone_eval["accuracy"], "phone_chance": phone_eval["chance"]["accuracy"],
        "phone_per": phone_eval.get("per"), "phone_per_chance": phone_eval["chance"].get("per"),
        "gender_accuracy": sex_eval["accuracy"], "gender_chance": sex_eval["chance"]["accuracy"],
        "speaker_accuracy": spk_eval["accuracy"], "speaker_chance": spk_eval["chance"]["accuracy"],
        "phone_layer_weights": np.asarray(phone.layer_weights).round(3).tolist(),
        "split": split.sizes(), "speaker_split": within.sizes(),
    }


def plot_training_curve(model_dir: str, path: str, window: int) -> str:
    """Running means of loss and masked accuracy over the model's metrics.jsonl, one line per iteration."""
    import json

    from jaxneurons.report import training_curve

    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    panels: dict[str, dict] = {"masked-frame cross-entropy (nats)": {}, "masked-frame accuracy": {}}
    offset = 0
    for it in sorted({r.get("iteration", 1) for r in rows}):
        part = [r for r in rows if r.get("iteration", 1) == it]
        steps = np.array([r["step"] for r in part]) + offset
        for panel, key in zip(panels.values(), ("loss", "masked_accuracy"), strict=True):
            v = np.convolve([r[key] for r in part], np.ones(window) / window, mode="valid")
            panel[f"iteration {it}"] = (steps[window - 1:], v)
        offset = int(steps[-1])
    return training_curve(path, panels, f"training curve ({window}-step running mean)",
                          xlabel="optimizer step (both iterations)")


def main(_: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    from jaxneurons.assets import resolve_model_path
    from jaxneurons.data import generate_corpus, read_manifest
    from jaxneurons.models import build_model
    from jaxneurons.models.checkpoint import load_model
    from jaxneurons.pipeline.labels import PhoneInventory, manifest_phone_set
    from jaxneurons.results import write_json

    t0 = time.time()
    manifest = generate_corpus(os.path.join(FLAGS.workdir, "corpus"), FLAGS.num_speakers, FLAGS.minutes, ["en"],
                               seed=FLAGS.seed, progress=False)
    utts = read_manifest(manifest)
    inventory = PhoneInventory.of(manifest_phone_set(utts))
    path = resolve_model_path(FLAGS.model)
    trained = load_model(path)
    rows = {"trained": probe_model(trained, utts, inventory, FLAGS.max_epochs),
            "random init": probe_model(build_model(trained.config, seed=0), utts, inventory, FLAGS.max_epochs)}
    table = {"model": FLAGS.model if FLAGS.model == "default" else path,
             "corpus": {"manifest": manifest, "utterances": len(utts), "speakers": FLAGS.num_speakers,
                        "minutes": FLAGS.minutes, "seed": FLAGS.seed},
             "command": "python experiments/default_model_probes.py " + " ".join(sys.argv[1:]),
             "wall_seconds": round(time.time() - t0), "results": rows}
    lines = ["| model | phone acc. (chance) | PER (chance) | gender acc. (chance) | speaker ID acc. (chance) |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        per = f"{r['phone_per']:.3f} ({r['phone_per_chance']:.3f})" if r["phone_per"] is not None else "n/a"
        lines.append(f"| {name} | {r['phone_accuracy']:.3f} ({r['phone_chance']:.3f}) | {per} | "
                     f"{r['gender_accuracy']:.3f} ({r['gender_chance']:.3f}) | "
                     f"{r['speaker_accuracy']:.3f} ({r['speaker_chance']:.3f}) |")
    table["markdown"] = "\n".join(lines)
    print(table["markdown"])
    if FLAGS.curve:
        table["curve"] = plot_training_curve(path, FLAGS.curve, FLAGS.curve_window)
    if FLAGS.out:
        write_json(FLAGS.out, table)


if __name__ == "__main__":
    app.run(main)
