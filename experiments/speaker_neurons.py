"""Study 2: label-free speaker neurons (arXiv 2506.21712): clusters, per-layer counts, protected pruning.

    python -m experiments.speaker_neurons --out results/speaker_neurons               # bundled model, synthetic
    python -m experiments.speaker_neurons --model DIR --manifest M.jsonl --out R --speaker_sigma 0.8

1. Clusters: SSL clusters (k-means, k = 3, of the frame features of one layer, default 3/4 of the depth as
   layer 9 of 12) and i-vector clusters (k-means, k = 2, of length-normalised per-utterance i-vectors), with
   their purity against phone type (vowel / voiced / unvoiced consonant; frames with a phone label) and gender
   (the paper: i-vector clusters 97.23 % male, 89.82 % female).
2. Scan (:mod:`jaxneurons.pipeline.scan`, property ``speaker``, every frame): cells (i-vector cluster g, SSL
   cluster c); a neuron is kept for g when its top-1 % |h| probability exceeds k/D in at least sigma of the SSL
   clusters (1.0: all, the paper's description; 0.8 was its code default) and it is exclusive to g. Speaker
   neurons and SSL-cluster neurons per layer, at both sigmas.
3. Pruning: L1 vs protected (speaker neurons never pruned), one-shot at ``--densities`` and iterative with
   short continued pre-training between steps; speaker-ID accuracy of a probe retrained on each pruned model.

Everything goes to one results directory (``--out``): scan arrays and neuron sets, ``clusters.json``,
``pruning.json``, figures and report.md / report.html.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any

import numpy as np
from absl import app, flags, logging

from experiments import common

common.define_data_flags()
common.define_probe_flags()
common.define_pruning_flags()
flags.DEFINE_float("speaker_sigma", 1.0, "Fraction of SSL clusters a speaker neuron must count in (1.0: all, the "
                   "paper's text; 0.8: its code default).")
flags.DEFINE_integer("ssl_layer", None, "hidden_states index whose frames are clustered (default: 3/4 of the "
                     "depth, layer 9 of 12 in the paper).")
flags.DEFINE_integer("num_ssl_clusters", 3, "SSL k-means clusters (paper: 3).")
flags.DEFINE_integer("num_speaker_clusters", 2, "i-vector k-means clusters (paper: 2).")
flags.DEFINE_integer("ivector_components", 32, "GMM-UBM components (scaled to a 10-minute corpus; Kaldi recipes "
                     "use 2048 on hundreds of hours).")
flags.DEFINE_integer("ivector_dim", 40, "i-vector dimension (scaled to a 10-minute corpus; typically 400).")
flags.DEFINE_float("ivector_pitch_weight", 0.0, "Weight of a corpus-normalised log-F0 stream in the i-vector "
                   "statistics (0: the paper's MFCC-only i-vectors; 4 makes k = 2 follow gender on espeak voices).")
flags.DEFINE_enum("ivector_space", "ivector", ["ivector", "supervector"], "Space of the i-vector k-means: plain "
                  "(the paper) or GMM-supervector metric (see jaxneurons.pipeline.labels.ivector_clusters).")
flags.DEFINE_integer("ssl_max_utterances", 200, "Utterances whose frames fit the SSL k-means.")
flags.DEFINE_float("rho", 0.01, "Top-k fraction of |h| per frame and layer (paper: 1 %).")
flags.DEFINE_bool("pruning", True, "Run the pruning curves.")
FLAGS = flags.FLAGS

PHONE_TYPES = ("vowel", "voiced", "unvoiced")


def contingency(clusters: np.ndarray, labels: np.ndarray, names: list[str], k: int) -> dict[str, Any]:
    """Rows: clusters; columns: label classes (-1 rows ignored). Counts, row fractions and purity."""
    from jaxneurons.scoring.speaker import cluster_purity

    keep = labels >= 0
    counts = np.zeros((k, len(names)), np.int64)
    np.add.at(counts, (clusters[keep], labels[keep]), 1)
    fractions = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    out = {"classes": names, "counts": counts.tolist(), "row_fractions": fractions.round(4).tolist()}
    if keep.any():
        pur = cluster_purity(clusters[keep], labels[keep])
        out["purity"] = pur["purity"]
        out["majority"] = {str(c): {"class": names[v["majority"]], "fraction": v["fraction"], "size": v["size"]}
                           for c, v in pur["clusters"].items()}
        # baseline: purity of a single cluster = share of the largest class
        out["largest_class_share"] = float(counts.sum(0).max() / counts.sum())
    return out


def cluster_analysis(model: Any, utts: list, plan: Any, decoded: Any) -> dict[str, Any]:
    """Purity of SSL clusters (frames) and i-vector clusters (utterances; broadcast to frames) vs phone type and
    gender."""
    from jaxneurons.pipeline.labels import GENDERS, PhoneInventory, frame_geometry, manifest_phone_set, utterance_labels
    from jaxneurons.scoring.speaker import kmeans_assign
    from jaxneurons.train.targets import layer_features

    feats = layer_features(model, decoded.all_audio(), plan.ssl_layer)
    ssl = [kmeans_assign(f, plan.ssl_centroids) for f in feats]
    frames = [len(f) for f in feats]
    gender_utt = np.array([GENDERS.index(u.gender) if u.gender in GENDERS else -1 for u in utts])
    groups = np.asarray(plan.speaker_groups)
    k_ssl, k_spk = len(plan.ssl_centroids), int(plan.options.num_speaker_clusters)
    ssl_all = np.concatenate(ssl)
    gender_frames = np.repeat(gender_utt, frames)
    out: dict[str, Any] = {"ssl_layer": plan.ssl_layer, "frames": int(len(ssl_all)),
                           "ssl_cluster_sizes": np.bincount(ssl_all, minlength=k_ssl).tolist(),
                           "ivector_cluster_sizes": np.bincount(groups, minlength=k_spk).tolist()}
    names_g = ["male", "female"]
    out["ssl_vs_gender"] = contingency(ssl_all, gender_frames, names_g, k_ssl)
    out["ivector_vs_gender"] = contingency(groups, gender_utt, names_g, k_spk)
    try:
        inventory = PhoneInventory.of(manifest_phone_set(utts))
    except ValueError as e:  # manifests without phone segments (e.g. VoxCeleb)
        out["phone_type_note"] = str(e)
        return out
    labels = utterance_labels(utts, frame_geometry(model.config), inventory, frames)
    type_of = np.array([PHONE_TYPES.index(t) if t in PHONE_TYPES else -1 for t in inventory.types] + [-1])
    ptype = np.concatenate([type_of[lab.phone] for lab in labels])  # phone -1 (silence) -> index -1 -> -1
    out["ssl_vs_phone_type"] = contingency(ssl_all, ptype, list(PHONE_TYPES), k_ssl)
    out["ivector_vs_phone_type"] = contingency(np.repeat(groups, frames), ptype, list(PHONE_TYPES), k_spk)
    return out


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    from jaxneurons.data import DataIssues
    from jaxneurons.pipeline.scan import (
        DecodedDataset,
        ScanOptions,
        plan_scan,
        scan_fingerprint,
        scan_statistics,
        score,
    )
    from jaxneurons.pipeline.scan_report import write_scan_results
    from jaxneurons.results import ResultsDir

    t0 = time.time()
    setup = common.load_setup()
    model, utts = setup.model, setup.utts
    options = ScanOptions(properties=("speaker",), frames="all", rho=FLAGS.rho, speaker_sigma=FLAGS.speaker_sigma,
                          ssl_layer=FLAGS.ssl_layer, num_ssl_clusters=FLAGS.num_ssl_clusters,
                          num_speaker_clusters=FLAGS.num_speaker_clusters, ivector_components=FLAGS.ivector_components,
                          ivector_dim=FLAGS.ivector_dim, ivector_pitch_weight=FLAGS.ivector_pitch_weight,
                          ivector_space=FLAGS.ivector_space, ssl_max_utterances=FLAGS.ssl_max_utterances,
                          batch_size=FLAGS.batch_size)
    kit = common.ProbeKit(model, utts, layer=common.probe_layer_index(model, FLAGS.probe_layer),
                          batch_size=FLAGS.batch_size, seed=FLAGS.seed, max_epochs=FLAGS.probe_max_epochs,
                          min_steps=FLAGS.probe_min_steps)
    if FLAGS.pruning and kit.within is None:
        sys.exit(f"error: speaker identification needs >= 3 utterances per speaker ({'; '.join(kit.notes)})")
    issues = DataIssues()
    decoded = DecodedDataset(utts, issues=issues)
    print(f"[1/3] i-vector and SSL clusters, scan of {len(utts)} utterances", file=sys.stderr, flush=True)
    plan = plan_scan(model, utts, options, issues, decoded=decoded)
    checkpoint = os.path.join(setup.workdir, "scan-speaker", "stats.npz")
    stats = scan_statistics(model, utts, plan, checkpoint_path=checkpoint,
                            fingerprint=scan_fingerprint(setup.model_path, utts, options), issues=issues,
                            decoded=decoded)
    scored = score(stats, plan)
    other_sigma = 0.8 if FLAGS.speaker_sigma != 0.8 else 1.0
    other = score(stats, dataclasses.replace(plan, options=dataclasses.replace(options, speaker_sigma=other_sigma)))
    print("[2/3] cluster purity", file=sys.stderr, flush=True)
    clusters = cluster_analysis(model, utts, plan, decoded)
    curves = None
    if FLAGS.pruning:
        print("[3/3] pruning: L1 vs protected speaker neurons, one-shot and iterative", file=sys.stderr, flush=True)
        curves = common.protected_pruning_run(model, utts, options, ["speaker"], scored, kit, setup.workdir,
                                              decoded=decoded, phones=False)
    with ResultsDir(FLAGS.out, "speaker_neurons", flags=common.launcher_flags()) as res:
        res.run["data_issues"] = issues.as_dict()
        res.run["options"] = dataclasses.asdict(options)
        summary, report = write_scan_results(res, plan, stats, scored, extra_text=setup.description)
        report.title = "Label-free speaker neurons (arXiv 2506.21712)"
        res.save_json("clusters", clusters)
        clusters_section(report, clusters)
        sigma_section(report, res, scored, other, FLAGS.speaker_sigma, other_sigma)
        if curves is not None:
            common.save_pruning(res, curves)
            common.pruning_section(report, res, curves, "the speaker neurons (both i-vector groups)")
        report.heading("Run")
        report.text(f"Speaker-ID split (utterance-disjoint within speakers): "
                    f"{kit.within.sizes() if kit.within else 'n/a'}; the probe reads hidden_states[{kit.layer}]. "
                    f"Data: {issues.summary()}. Took {time.time() - t0:.0f} s.")
        report.write(res.tmp)
    print(f"speaker neurons -> {FLAGS.out} (report: {os.path.join(FLAGS.out, 'report.html')})")
    for prop, groups in summary["totals"].items():
        print(f"  {prop}: " + ", ".join(f"{g} {n}" for g, n in groups.items()))


def clusters_section(report: Any, clusters: dict) -> None:
    report.heading("Clusters and their purity")
    report.text(f"SSL clusters: k-means of hidden_states[{clusters['ssl_layer']}] frames (sizes "
                f"{clusters['ssl_cluster_sizes']}); i-vector clusters: k-means of length-normalised i-vectors "
                f"(utterances per cluster {clusters['ivector_cluster_sizes']}). Each row: a cluster's share of each "
                "class; purity = share of frames (utterances) in their cluster's majority class; the largest "
                "class's share is the purity of one cluster holding everything. The paper's i-vector clusters "
                "were 97.23 % male and 89.82 % female.")
    rows = []
    for key, what in (("ivector_vs_gender", "i-vector clusters vs gender (utterances)"),
                      ("ssl_vs_gender", "SSL clusters vs gender (frames)"),
                      ("ssl_vs_phone_type", "SSL clusters vs phone type (phone frames)"),
                      ("ivector_vs_phone_type", "i-vector clusters vs phone type (phone frames)")):
        c = clusters.get(key)
        if c is None or "purity" not in c:
            continue
        rows.append([what, c["purity"], c["largest_class_share"]])
        report.table(["cluster", *c["classes"], "count"],
                     [[i, *[f"{100 * f:.1f} %" for f in frac], sum(cnt)]
                      for i, (frac, cnt) in enumerate(zip(c["row_fractions"], c["counts"], strict=True))],
                     caption=what)
    report.table(["clustering", "purity", "largest class share"], rows, caption="Purity summary")
    if "phone_type_note" in clusters:
        report.text(f"No phone-type purity: {clusters['phone_type_note']}")


def sigma_section(report: Any, res: Any, scored: dict, other: dict, sigma: float, other_sigma: float) -> None:
    """Speaker and SSL-cluster neurons per layer at both sigmas (rescored from the same statistics)."""
    from jaxneurons.pipeline.scan import per_layer_counts
    from jaxneurons.report import layer_profile

    report.heading("Speaker neurons at both thresholds")
    counts = {sigma: per_layer_counts(scored), other_sigma: per_layer_counts(other)}
    series = {}
    for s, c in counts.items():
        series[f"speaker neurons, sigma {s:g}"] = np.sum(list(c["speaker"].values()), axis=0)
        series[f"SSL-cluster neurons, sigma {s:g}"] = np.sum(list(c["ssl_cluster"].values()), axis=0)
    num_layers = len(next(iter(series.values())))
    report.table(["layer", *series], [[i + 1, *[int(v[i]) for v in series.values()]] for i in range(num_layers)],
                 caption="Neurons per layer (all groups of each kind)")
    path = layer_profile(res.file("figures/speaker_vs_sigma.png"), series,
                         "Speaker and SSL-cluster neurons per layer", ylabel="neurons")
    report.figure(path, f"Speaker neurons (exclusive to one i-vector cluster) and SSL-cluster neurons per layer at "
                  f"sigma {sigma:g} (this run's) and {other_sigma:g}")
    k = len(scored["ssl_cluster"]["groups"])
    need = {s: int(np.ceil(s * k - 1e-9)) for s in counts}
    report.text(f"With {k} SSL clusters a neuron must count in {need[sigma]} (sigma {sigma:g}) or {need[other_sigma]} "
                f"(sigma {other_sigma:g}) of them; thresholds needing the same number give the same neurons.")
    res.save_json("counts_by_sigma", {str(s): c for s, c in counts.items()})


if __name__ == "__main__":
    app.run(main)
