"""i-vector k = 2 clusters vs gender, and speaker EER, on real speech and on the synthetic espeak-ng corpus.

The label-free speaker-neuron study (arXiv 2506.21712) clusters length-normalised MFCC i-vectors with
k-means (k = 2) and reads the clusters as genders: 97.23 % male / 89.82 % female on LibriSpeech. This
script runs the project's own calls (``jaxneurons.pipeline.labels.ivector_input`` for the features, then
``ivector_pipeline`` / ``fit_ivector_extractor`` + ``utterance_ivectors`` and ``scoring.speaker.kmeans``
with the config's seed and restarts: what ``ivector_clusters_of_features`` runs) for named settings:

* ``default``: ``IVectorConfig()``, the study's front end (64 components, R = 100 as upper bounds,
  ``dims="auto"`` lowers them to what the corpus supports);
* ``fixed``: the study's sizes as given (``dims="fixed"``, 64 / 100): the old behaviour;
* ``fixed<C>x<R>`` (e.g. ``fixed32x20``): ``dims="fixed"`` with C components and R dimensions;
* ``pitch``: default + log-F0 stream at weight 4; ``supervector``: default + ``space="supervector"``;
  ``pitch+supervector``: both (the options tuned on the espeak-ng corpus);
* ``background``: default config, extractor fitted once on the utterances *not* in the subset (saved and
  reloaded through the ``ivector_extractor`` directory format) and applied to the subset.

Per corpus, features are computed once; subsets of ``--subsets`` utterances are drawn ``--draws`` times
(draw d: subset seed d, i-vector seed d). Each row: gender purity of the k = 2 clusters (share of
utterances in their cluster's majority gender), the majority share of the male-majority and of the
female-majority cluster (the study's two figures), and the speaker EER of cosine scores. A corpus with one
utterance per speaker (librispeech-251) has no same-speaker pairs, so there each utterance is split into
its first and second half, both halves go through the same extractor, and the EER is over all half pairs.
The log-F0 stream is z-scored over the whole corpus, not per subset; a diagonal GMM and the stream's
precision weight are invariant to an affine change of one dimension, so this does not change the result.

    python benchmarks/bench_ivector.py --realspeech /work/shared/realspeech/librispeech-251 \\
        --out_json /tmp/iv_real.json
    python benchmarks/bench_ivector.py --seed 0 --languages en --subsets 0 --draws 2 --out_json /tmp/iv_en0.json
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import tempfile
import time

import numpy as np
from absl import app, flags

from jaxneurons.data.audio import load_audio
from jaxneurons.features.ivector import (
    IVectorConfig,
    fit_ivector_extractor,
    ivector_pipeline,
    load_ivector_extractor,
    pairwise_eer,
    save_ivector_extractor,
    utterance_ivectors,
)
from jaxneurons.pipeline.labels import IVectorInput, ivector_input
from jaxneurons.scoring.speaker import kmeans

STUDY = {"male_cluster": 0.9723, "female_cluster": 0.8982}  # arXiv 2506.21712, LibriSpeech
SETTINGS = {
    "default": {},
    "fixed": {"dims": "fixed"},
    "pitch": {"pitch_weight": 4.0},
    "supervector": {"space": "supervector"},
    "pitch+supervector": {"pitch_weight": 4.0, "space": "supervector"},
    "background": {},
}

FLAGS = flags.FLAGS
flags.DEFINE_string("realspeech", None, "a real-speech folder with utterances.tsv (path, speaker, gender columns), "
                    "e.g. /work/shared/realspeech/librispeech-251; without it a synthetic corpus is used")
flags.DEFINE_string("manifest", None, "existing manifest.jsonl (skips corpus generation)")
flags.DEFINE_string("corpus_dir", None, "where to generate the corpus (default /tmp/bench_iv_<languages>_<seed>)")
flags.DEFINE_integer("num_speakers", 40, "pseudo-speakers to generate")
flags.DEFINE_float("minutes", 16.0, "minutes of audio to generate")
flags.DEFINE_string("languages", "en", "languages of the generated corpus")
flags.DEFINE_integer("seed", 0, "corpus seed of the generated corpus")
flags.DEFINE_list("subsets", ["100", "160", "0"], "subset sizes (0 = the whole corpus)")
flags.DEFINE_integer("draws", 3, "random subsets (and i-vector seeds) per size; the whole corpus uses --full_draws")
flags.DEFINE_integer("full_draws", 2, "i-vector seeds on the whole corpus")
flags.DEFINE_list("settings", list(SETTINGS), f"settings to run: {list(SETTINGS)} or fixed<C>x<R>")
flags.DEFINE_string("out_json", None, "write the results as JSON here")
flags.DEFINE_string("features_cache", None, "npz to reuse the corpus's i-vector features from (written if absent)")


def setting_overrides(name: str) -> dict:
    """IVectorConfig overrides of a named setting (``SETTINGS`` or ``fixed<C>x<R>``)."""
    if name in SETTINGS:
        return SETTINGS[name]
    match = re.fullmatch(r"fixed(\d+)x(\d+)", name)
    if not match:
        raise app.UsageError(f"unknown setting {name!r}; choose from {list(SETTINGS)} or fixed<C>x<R>")
    return {"dims": "fixed", "num_components": int(match[1]), "ivector_dim": int(match[2])}


def read_corpus() -> tuple[list[np.ndarray], np.ndarray, np.ndarray, str]:
    """(waveforms, speaker ids, female mask, description)."""
    if FLAGS.realspeech:
        tsv = os.path.join(FLAGS.realspeech, "utterances.tsv")
        with open(tsv, encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows or any(r.get("gender") not in ("m", "f") for r in rows):
            raise ValueError(f"{tsv}: every row needs path, speaker and gender m/f")
        audio = [load_audio(os.path.join(FLAGS.realspeech, r["path"])) for r in rows]
        return audio, np.array([r["speaker"] for r in rows]), np.array([r["gender"] == "f" for r in rows]), tsv
    from jaxneurons.data.manifest import read_manifest

    manifest = FLAGS.manifest
    if not manifest:
        from jaxneurons.data.synth import generate_corpus

        out = FLAGS.corpus_dir or f"/tmp/bench_iv_{FLAGS.languages.replace(',', '_')}_{FLAGS.seed}"
        manifest = generate_corpus(out, FLAGS.num_speakers, FLAGS.minutes, FLAGS.languages.split(","), FLAGS.seed,
                                   progress=False)
    utts = read_manifest(manifest)
    if any(u.speaker is None or u.gender not in ("m", "f") for u in utts):
        raise ValueError(f"{manifest}: every utterance needs a speaker and an m/f gender")
    return ([load_audio(u.path) for u in utts], np.array([str(u.speaker) for u in utts]),
            np.array([u.gender == "f" for u in utts]), manifest)


def cached_features(audio: list[np.ndarray]) -> IVectorInput:
    """``ivector_input`` with the log-F0 stream, from / to ``--features_cache`` (an npz, no pickle)."""
    path = FLAGS.features_cache
    if path and os.path.isfile(path):
        with np.load(path, allow_pickle=False) as z:
            feats = [z[f"u{i}"] for i in range(int(z["count"]))]
            align = int(z["align_dims"]) if int(z["align_dims"]) > 0 else None
            norm = tuple(float(v) for v in z["stream_norm"]) if align else None
        if len(feats) != len(audio):
            raise ValueError(f"{path}: {len(feats)} utterances cached, the corpus has {len(audio)}")
        return IVectorInput(feats, align, norm)
    inp = ivector_input(audio, pitch=True)
    if path:
        np.savez(path, count=len(inp.features), align_dims=inp.align_dims or 0,
                 stream_norm=np.asarray(inp.stream_norm or (0.0, 1.0)),
                 **{f"u{i}": f for i, f in enumerate(inp.features)})
    return inp


def purities(groups: np.ndarray, female: np.ndarray) -> dict:
    agree = float(np.mean(groups == female))
    out = {"purity": round(max(agree, 1 - agree), 3)}
    for c in np.unique(groups):
        share_f = float(female[groups == c].mean())
        key = "female_cluster" if share_f > 0.5 else "male_cluster"
        out[key] = round(max(share_f, 1 - share_f), 3)
    return out


def run_setting(name: str, config: IVectorConfig, feats: list, halves: list | None, align: int | None,
                idx: np.ndarray, rest: np.ndarray, speakers: np.ndarray, female: np.ndarray, norm) -> dict:
    sub = [feats[i] for i in idx]
    if name == "background":
        bg = fit_ivector_extractor([feats[i] for i in rest], config, align_dims=align, stream_norm=norm)
        with tempfile.TemporaryDirectory() as tmp:
            extractor = load_ivector_extractor(save_ivector_extractor(bg, tmp, config=config))
        vecs = utterance_ivectors(extractor, sub, config)
    else:
        vecs, extractor = ivector_pipeline(sub, config, align_dims=align)
    _, groups = kmeans(np.asarray(vecs), 2, seed=config.seed, n_init=config.n_init)
    row = purities(groups, female[idx])
    row["components"], row["ivector_dim"] = extractor.num_components, extractor.ivector_dim
    if halves is None:
        row["speaker_eer"] = round(pairwise_eer(vecs, speakers[idx]), 4)
    else:
        half_vecs = utterance_ivectors(extractor, [h for i in idx for h in halves[i]], config)
        row["speaker_eer"] = round(pairwise_eer(half_vecs, np.repeat(speakers[idx], 2)), 4)
    return row


def main(argv: list[str]) -> None:
    del argv
    overrides = {name: setting_overrides(name) for name in FLAGS.settings}
    t = time.time()
    audio, speakers, female, source = read_corpus()
    corpus_s = time.time() - t
    t = time.time()
    inp = cached_features(audio)
    features_s = time.time() - t
    mfcc_dim = inp.align_dims
    one_per_speaker = len(set(speakers)) == len(speakers)
    rows = []
    for size in (int(s) for s in FLAGS.subsets):
        n = size or len(audio)
        if n > len(audio):
            raise app.UsageError(f"subset size {n} > {len(audio)} utterances")
        for draw in range(FLAGS.full_draws if n == len(audio) else FLAGS.draws):
            idx = np.sort(np.random.default_rng(draw).permutation(len(audio))[:n])
            rest = np.setdiff1d(np.arange(len(audio)), idx)
            for name in FLAGS.settings:
                if name == "background" and len(rest) < 2:
                    continue
                config = dataclasses.replace(IVectorConfig(seed=draw), **overrides[name])
                with_pitch = config.pitch_weight > 0 and mfcc_dim is not None
                feats = inp.features if with_pitch or mfcc_dim is None else [f[:, :mfcc_dim] for f in inp.features]
                halves = None
                if one_per_speaker:
                    halves = {i: (feats[i][: len(feats[i]) // 2], feats[i][len(feats[i]) // 2:]) for i in idx}
                t = time.time()
                row = run_setting(name, config, feats, halves, mfcc_dim if with_pitch else None, idx, rest,
                                  speakers, female, inp.stream_norm if with_pitch else None)
                row.update(setting=name, utterances=n, draw=draw, seconds=round(time.time() - t, 1))
                print(json.dumps(row), flush=True)
                rows.append(row)
    summary = {}
    for row in rows:
        summary.setdefault(f"{row['setting']}@{row['utterances']}", []).append(row["purity"])
    result = {"source": source, "utterances": len(audio), "speakers": int(len(set(speakers))),
              "female": int(female.sum()), "audio_minutes": round(sum(len(a) for a in audio) / 16000 / 60, 2),
              "corpus_s": round(corpus_s, 1), "features_s": round(features_s, 1), "study": STUDY,
              "eer_on": "half-utterance pairs" if one_per_speaker else "utterance pairs",
              "purity_min_max": {k: [min(v), max(v)] for k, v in summary.items()}, "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    if FLAGS.out_json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out_json)), exist_ok=True)
        with open(FLAGS.out_json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main)
