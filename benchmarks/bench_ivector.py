"""i-vectors on the synthetic espeak-ng corpus: gender purity of k = 2 clusters and speaker EER.

The label-free speaker-neuron study clusters length-normalised i-vectors with k-means (k = 2) and reads
the clusters as genders (their purity vs gender: 97.23 % male, 89.82 % female). This script runs the
project's own path, ``jaxneurons.pipeline.labels.ivector_input`` + ``ivector_clusters_of_features``
(exactly what ``ivector_clusters`` and the scan run), on a corpus made by ``jaxneurons.data.synth`` for
several settings (features computed once per corpus) and reports per setting:

* purity: share of utterances in their cluster's majority gender (chance about 0.5), and per cluster;
* speaker EER of cosine scores over all pairs of the returned (length-normalised) vectors;
* wall time of the i-vector stage (features excluded; they are timed once).

Settings are ``pitch_weight/space/ivector_dim`` triples, e.g. ``0/ivector/100`` = the study's MFCC
i-vectors (MFCC 13 + deltas + per-utterance CMN, 64-component UBM, T by 10 EM iterations, posterior
means, length norm); ``4/supervector/100`` = the default of ``ivector_clusters``.

    python benchmarks/bench_ivector.py --seed 0 --languages en --out_json /tmp/iv_en0.json

RESULTS (see the table in ``ivector.md`` next to this script) were measured on the 2-core shared
machine with 40 pseudo-speakers, 16 minutes per corpus, corpus seeds 0 / 1 / 2 (English) and 0 (English +
Turkish).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import app, flags

from jaxneurons.data.audio import load_audio
from jaxneurons.data.manifest import read_manifest
from jaxneurons.features.ivector import pairwise_eer
from jaxneurons.pipeline.labels import ivector_clusters_of_features, ivector_input

FLAGS = flags.FLAGS
flags.DEFINE_string("manifest", None, "existing manifest.jsonl (skips corpus generation)")
flags.DEFINE_string("corpus_dir", None, "where to generate the corpus (default /tmp/bench_iv_<languages>_<seed>)")
flags.DEFINE_integer("num_speakers", 40, "pseudo-speakers to generate")
flags.DEFINE_float("minutes", 16.0, "minutes of audio to generate")
flags.DEFINE_string("languages", "en", "languages of the generated corpus")
flags.DEFINE_integer("seed", 0, "corpus seed (the i-vector seed is 0)")
flags.DEFINE_integer("num_components", 64, "UBM components")
flags.DEFINE_list("settings", ["0/ivector/100", "0/ivector/20", "0/supervector/100", "4/ivector/100",
                               "1/supervector/100", "4/supervector/100", "16/supervector/100",
                               "4/supervector/20"], "pitch_weight/space/ivector_dim triples")
flags.DEFINE_integer("n_init", 10, "k-means starts")
flags.DEFINE_string("out_json", None, "write the results as JSON here")


def main(argv: list[str]) -> None:
    del argv
    t = time.time()
    manifest = FLAGS.manifest
    if not manifest:
        from jaxneurons.data.synth import generate_corpus

        out = FLAGS.corpus_dir or f"/tmp/bench_iv_{FLAGS.languages.replace(',', '_')}_{FLAGS.seed}"
        manifest = generate_corpus(out, FLAGS.num_speakers, FLAGS.minutes, FLAGS.languages.split(","), FLAGS.seed,
                                   progress=False)
    utts = read_manifest(manifest)
    corpus_s = time.time() - t
    if any(u.speaker is None or u.gender not in ("m", "f") for u in utts):
        raise ValueError(f"{manifest}: every utterance needs a speaker and an m/f gender")
    speakers = np.array([u.speaker for u in utts])
    female = np.array([u.gender == "f" for u in utts])
    t = time.time()
    feats, align_dims = ivector_input([load_audio(u.path) for u in utts], pitch=True)
    features_s = time.time() - t
    rows = []
    for setting in FLAGS.settings:
        weight, space, dim = setting.split("/")
        t = time.time()
        groups, vecs = ivector_clusters_of_features(feats, align_dims, 2, num_components=FLAGS.num_components,
                                                    ivector_dim=int(dim), pitch_weight=float(weight), space=space,
                                                    n_init=FLAGS.n_init)
        per_cluster = {int(c): round(float(max(female[groups == c].mean(), 1 - female[groups == c].mean())), 3)
                       for c in np.unique(groups)}
        agree = float(np.mean(groups == female))
        row = {"setting": setting, "purity": round(max(agree, 1 - agree), 3), "cluster_purity": per_cluster,
               "speaker_eer": round(pairwise_eer(vecs, speakers), 4), "ivector_s": round(time.time() - t, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {"manifest": manifest, "utterances": len(utts), "speakers": int(len(set(speakers))),
              "audio_minutes": round(sum(u.duration for u in utts) / 60.0, 2), "corpus_s": round(corpus_s, 1),
              "features_s": round(features_s, 1), "pitch_stream": align_dims is not None, "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    if FLAGS.out_json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out_json)), exist_ok=True)
        with open(FLAGS.out_json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    app.run(main)
