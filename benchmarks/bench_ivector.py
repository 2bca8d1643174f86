"""i-vectors on the synthetic espeak-ng corpus: gender purity of k = 2 clusters and speaker EER.

The label-free speaker-neuron study clusters length-normalised i-vectors with k-means (k = 2) and reads
the clusters as genders (their purity vs gender: 97.23 % male, 89.82 % female). This script runs the
same pipeline of ``jaxneurons.features`` on a corpus made by ``jaxneurons.data.synth`` and reports:

* per-cluster purity (share of the majority gender in each cluster) and per-gender recall (share of a
  gender's utterances that land in that gender's cluster; the cluster -> gender map is the majority one);
* speaker EER of cosine scores over all utterance pairs (same vs different pseudo-speaker);
* the range of per-speaker median F0 (YIN) per gender;
* the wall time of each stage.

Pipeline: 16 kHz audio -> MFCC (20 ceps from 40 mel bins, Kaldi convention) + deltas + delta-deltas
-> energy VAD (frames within 30 dB of the utterance peak) -> CMN over the speech frames -> GMM-UBM
(64 diagonal components, 20 EM iterations) -> Baum-Welch statistics -> T (20 dims by default, 10 EM
iterations) -> i-vectors -> length normalisation -> k-means (scikit-learn, k = 2, 10 inits).

Measured (2-core AMD EPYC shared with other jobs, JAX 0.10.2 CPU), corpus made by the script itself
(``jaxneurons.data.synth.generate_corpus``, seed 0, languages ``en``):

    python benchmarks/bench_ivector.py --corpus_dir /tmp/bench_iv_corpus --num_speakers 40 --minutes 20
    (the same with --whiten, and with --ivector_dim 100)

Corpus: 40 English pseudo-speakers (20 m / 20 f), 399 utterances, 21.35 min, 115 935 speech frames.
Chance is 0.5 for purity/recall and for the EER.

    ============================  =========  ==========  ==========  ========  ========  ===========
    run                           purity m   purity f    recall m    recall f  spk EER   tv+extract
    ============================  =========  ==========  ==========  ========  ========  ===========
    defaults (C 64, R 20)         0.524      0.562       0.770       0.296     0.035     12.5 s
    --whiten                      0.629      1.000       1.000       0.407     0.036      3.8 s
    --ivector_dim 100             0.529      0.529       0.550       0.508     0.161     21.6 s
    ============================  =========  ==========  ==========  ========  ========  ===========

(mean-MFCC baseline speaker EER 0.504; UBM average log-likelihood per frame -194.5 -> -190.5 over the
20 EM iterations; times are wall seconds at a load average of 10-14 on the 2 cores, so they vary by
several x between runs: the whole script took 1-2 min.)

Reading: the i-vectors identify the pseudo-speakers well (EER 3.5 % at R = 20; R = 100 overfits 399
utterances, EER 16 %), but k = 2 clusters do not follow gender on this corpus: espeak-ng's male/female
variants differ mostly in F0 (``speaker_median_f0_range_hz`` in the output: per-speaker median YIN
F0 76.6-124.8 Hz for every male and 150.9-288.3 Hz for every female pseudo-speaker), which MFCCs
largely discard, while the dominant i-vector directions follow other voice properties. The study's
97 % / 90 % purities were on real LibriSpeech voices; on the synthetic corpus, expect the gender split of
the i-vector clusters to be weak.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

from jaxneurons.data.audio import load_audio
from jaxneurons.data.manifest import read_manifest
from jaxneurons.features import ivector as iv
from jaxneurons.features.mfcc import add_deltas, energy_vad, frame_log_energy, mfcc
from jaxneurons.features.pitch import yin

FLAGS = flags.FLAGS
flags.DEFINE_string("manifest", None, "existing manifest.jsonl (skips corpus generation)")
flags.DEFINE_string("corpus_dir", "/tmp/bench_iv_corpus", "where to generate the corpus when no --manifest")
flags.DEFINE_integer("num_speakers", 40, "pseudo-speakers to generate")
flags.DEFINE_float("minutes", 20.0, "minutes of audio to generate")
flags.DEFINE_string("languages", "en", "languages of the generated corpus")
flags.DEFINE_integer("seed", 0, "corpus and model seed")
flags.DEFINE_integer("num_components", 64, "UBM components")
flags.DEFINE_integer("ivector_dim", 20, "i-vector dimension (100 overfits a corpus of a few hundred utterances)")
flags.DEFINE_integer("ubm_iters", 20, "UBM EM iterations")
flags.DEFINE_integer("tv_iters", 10, "T-matrix EM iterations")
flags.DEFINE_integer("num_ceps", 20, "MFCC coefficients")
flags.DEFINE_bool("whiten", False, "whiten i-vectors before the unit-length step")
flags.DEFINE_string("out_json", None, "write the results as JSON here")
flags.DEFINE_string("out_npz", None, "write the length-normalised i-vectors, speakers and genders here")


def _features(utts: list, batch: int = 16) -> tuple[list[np.ndarray], np.ndarray]:
    """MFCC + deltas, VAD frames, CMN over them; batched by length (a loop over batches, not utterances)."""
    order = sorted(range(len(utts)), key=lambda i: utts[i].num_samples)
    out: list[np.ndarray | None] = [None] * len(utts)
    f0_median = np.full(len(utts), np.nan)
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        wavs = [load_audio(utts[i].path) for i in idx]
        lens = np.array([len(w) for w in wavs])
        pad = int(-(-lens.max() // 16000) * 16000)  # pad to whole seconds: few distinct shapes to compile
        x = np.zeros((batch, pad), np.float32)
        ln = np.full(batch, 400, np.int32)  # dummy rows: one frame, ignored
        for j, w in enumerate(wavs):
            x[j, : len(w)] = w
            ln[j] = len(w)
        feats, n = mfcc(x, ln, num_ceps=FLAGS.num_ceps, num_mel_bins=40)
        feats = np.asarray(add_deltas(feats, n))
        speech = np.asarray(energy_vad(frame_log_energy(x, ln), n))
        f0, voiced, _ = yin(x, ln)
        f0, voiced = np.asarray(f0), np.asarray(voiced)
        for j, i in enumerate(idx):
            keep = speech[j, : int(n[j])]
            if keep.sum() < 10:
                raise ValueError(f"{utts[i].path}: fewer than 10 speech frames after VAD")
            sel = feats[j, : int(n[j])][keep]
            out[i] = sel - sel.mean(0)  # CMN over the speech frames
            if voiced[j].any():
                f0_median[i] = np.median(f0[j][voiced[j]])
    return out, f0_median  # type: ignore[return-value]


def main(argv: list[str]) -> None:
    del argv
    timings: dict[str, float] = {}
    t = time.time()
    if FLAGS.manifest:
        manifest = FLAGS.manifest
    else:
        from jaxneurons.data.synth import generate_corpus

        manifest = generate_corpus(
            FLAGS.corpus_dir, FLAGS.num_speakers, FLAGS.minutes, FLAGS.languages.split(","), FLAGS.seed,
            progress=False,
        )
    utts = read_manifest(manifest)
    timings["corpus_s"] = time.time() - t
    for u in utts:
        if u.speaker is None or u.gender not in ("m", "f"):
            raise ValueError(f"{manifest}: utterance {u.utt_id} lacks a speaker or an m/f gender")
    speakers = np.array([u.speaker for u in utts])
    gender = np.array([u.gender for u in utts])

    t = time.time()
    feats, f0_median = _features(utts)
    timings["features_s"] = time.time() - t
    frames = np.concatenate(feats)
    t = time.time()
    ubm, hist = iv.train_ubm(frames, FLAGS.num_components, num_iters=FLAGS.ubm_iters, seed=FLAGS.seed)
    timings["ubm_s"] = time.time() - t
    t = time.time()
    N, F = iv.collect_stats(ubm, feats)
    timings["stats_s"] = time.time() - t
    t = time.time()
    ext = iv.train_ivector_extractor(ubm, N, F, FLAGS.ivector_dim, num_iters=FLAGS.tv_iters, seed=FLAGS.seed + 1)
    ivecs = iv.extract_ivectors(ext, N, F)
    timings["tv_and_extract_s"] = time.time() - t
    ivecs = iv.length_normalize(ivecs, whiten=FLAGS.whiten)

    from sklearn.cluster import KMeans

    clusters = KMeans(2, n_init=10, random_state=FLAGS.seed).fit_predict(ivecs)
    male_cluster = int(np.argmax([np.mean(gender[clusters == c] == "m") for c in (0, 1)]))
    pred = np.where(clusters == male_cluster, "m", "f")
    results = {
        "manifest": manifest,
        "utterances": len(utts),
        "speakers": int(len(set(speakers))),
        "speech_frames": int(frames.shape[0]),
        "audio_minutes": round(sum(u.duration for u in utts) / 60.0, 2),
        "ubm_loglik_first_last": [round(hist[0], 3), round(hist[-1], 3)],
        "purity_male_cluster": float(np.mean(gender[pred == "m"] == "m")),
        "purity_female_cluster": float(np.mean(gender[pred == "f"] == "f")),
        "recall_male": float(np.mean(pred[gender == "m"] == "m")),
        "recall_female": float(np.mean(pred[gender == "f"] == "f")),
        "speaker_eer": iv.pairwise_eer(ivecs, speakers),
        "speaker_eer_mean_mfcc_baseline": iv.pairwise_eer(
            np.stack([f.mean(0) for f in feats]) - np.concatenate(feats).mean(0), speakers
        ),
        # Range over speakers of the per-speaker median of per-utterance median YIN F0, per gender.
        "speaker_median_f0_range_hz": {
            gd: [round(float(min(v)), 1), round(float(max(v)), 1)]
            for gd in ("m", "f")
            for v in [[np.nanmedian(f0_median[speakers == sp]) for sp in sorted(set(speakers[gender == gd]))]]
        },
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "config": {k: FLAGS[k].value for k in ("num_components", "ivector_dim", "ubm_iters", "tv_iters",
                                                "num_ceps", "whiten", "seed")},
    }
    if FLAGS.out_npz:
        np.savez(FLAGS.out_npz, ivectors=ivecs, speakers=speakers, genders=gender,
                 utt_ids=np.array([u.utt_id for u in utts]))
    text = json.dumps(results, indent=1)
    print(text)
    if FLAGS.out_json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out_json)), exist_ok=True)
        with open(FLAGS.out_json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
