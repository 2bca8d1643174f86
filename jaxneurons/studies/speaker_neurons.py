"""Study 2: label-free speaker neurons (arXiv 2506.21712): clusters, per-layer counts, protected pruning.

    from jaxneurons.studies import speaker_neurons
    result = speaker_neurons.run(speaker_neurons.SpeakerNeuronsConfig(), "runs/speaker")

1. Clusters: SSL clusters (k-means, k = 3, of the frame features of one layer, default 3/4 of the depth as
   layer 9 of 12) and i-vector clusters (k-means, k = 2, of length-normalised per-utterance i-vectors), with
   their purity against phone type (frames with a phone label) and gender (the paper: i-vector clusters
   97.23 % male, 89.82 % female).
2. Scan (:class:`~jaxneurons.pipeline.properties.SpeakerNeurons`, every frame): cells (i-vector cluster g, SSL
   cluster c); a neuron is kept for g when its top-1 % |h| probability exceeds k/D in at least sigma of the SSL
   clusters (1.0: all, the paper's description; 0.8 its code default) and it is exclusive to g. Speaker
   neurons (P_ive) and SSL-cluster neurons (P_ssl) per layer, at both sigmas.
3. Pruning: L1 vs protected, protecting P_ssl ∪ P_ive (the study's rule; ``pruning.protect``), one-shot and
   iterative; speaker-ID accuracy of probes retrained on each pruned model and of the unpruned model's probe.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import numpy as np

from jaxneurons.config_flags import field_help
from jaxneurons.pipeline.properties import PHONE_TYPE_GROUPS, SpeakerNeuronConfig
from jaxneurons.probes import ProbeSuiteConfig
from jaxneurons.studies.common import DataConfig, scan_study
from jaxneurons.studies.property_neurons import StudyResult
from jaxneurons.studies.pruning import (
    PruningConfig,
    protected_pruning_run,
    pruning_section,
    save_pruning,
)

# The study protects the SSL-cluster neurons and the i-vector-group (speaker) neurons: P_ssl ∪ P_ive.
PROTECT_P_SSL_P_IVE = ("speaker", "ssl_cluster")


@dataclasses.dataclass(frozen=True)
class SpeakerNeuronsConfig:
    """Study 2 (arXiv 2506.21712). Defaults: the paper's rule and clusters (``speaker``: k = 2 i-vector groups,
    k = 3 SSL clusters at 3/4 depth, sigma 1.0, MFCC-only i-vectors), protection of P_ssl ∪ P_ive, speaker ID as
    the downstream check; corpus and schedule scaled to the bundled model on a 2-core CPU."""

    data: DataConfig = DataConfig()
    speaker: SpeakerNeuronConfig = SpeakerNeuronConfig()
    probe: ProbeSuiteConfig = ProbeSuiteConfig(tasks=("speaker",))
    pruning: PruningConfig = PruningConfig(protect=PROTECT_P_SSL_P_IVE)
    run_pruning: bool = field_help(True, "Run the pruning curves.")
    batch_size: int = field_help(8, "Utterances per batch of the scan.")


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

    state = plan.state("speaker")
    feats = layer_features(model, decoded.all_audio(), state["ssl_layer"])
    ssl = [kmeans_assign(f, state["ssl_centroids"]) for f in feats]
    frames = [len(f) for f in feats]
    gender_utt = np.array([GENDERS.index(u.gender) if u.gender in GENDERS else -1 for u in utts])
    groups = np.asarray(state["speaker_groups"])
    k_ssl, k_spk = len(state["ssl_centroids"]), int(plan.get_property("speaker").config.num_speaker_clusters)
    ssl_all = np.concatenate(ssl)
    out: dict[str, Any] = {"ssl_layer": state["ssl_layer"], "frames": int(len(ssl_all)),
                           "ssl_cluster_sizes": np.bincount(ssl_all, minlength=k_ssl).tolist(),
                           "ivector_cluster_sizes": np.bincount(groups, minlength=k_spk).tolist()}
    names_g = ["male", "female"]  # GENDERS order
    out["ssl_vs_gender"] = contingency(ssl_all, np.repeat(gender_utt, frames), names_g, k_ssl)
    out["ivector_vs_gender"] = contingency(groups, gender_utt, names_g, k_spk)
    try:
        inventory = PhoneInventory.of(manifest_phone_set(utts))
    except ValueError as e:  # manifests without phone segments (e.g. VoxCeleb)
        out["phone_type_note"] = str(e)
        return out
    labels = utterance_labels(utts, frame_geometry(model.config), inventory, frames)
    type_of = np.array([PHONE_TYPE_GROUPS.index(t) if t in PHONE_TYPE_GROUPS else -1 for t in inventory.types] + [-1])
    ptype = np.concatenate([type_of[lab.phone] for lab in labels])  # phone -1 (silence) -> index -1 -> -1
    out["ssl_vs_phone_type"] = contingency(ssl_all, ptype, list(PHONE_TYPE_GROUPS), k_ssl)
    out["ivector_vs_phone_type"] = contingency(np.repeat(groups, frames), ptype, list(PHONE_TYPE_GROUPS), k_spk)
    return out


def run(config: SpeakerNeuronsConfig, out_dir: str) -> StudyResult:
    """Clusters, scan at both sigmas and protected pruning, into the results directory ``out_dir``."""
    from jaxneurons.pipeline.properties import SpeakerNeurons
    from jaxneurons.pipeline.scan import ScanOptions, score
    from jaxneurons.results import ResultsDir

    t0 = time.time()
    options = ScanOptions(properties=("speaker",), speaker=config.speaker, batch_size=config.batch_size)
    first = scan_study(config.data, out_dir, options, name="speaker",
                       banner="[1/3] i-vector and SSL clusters, scan of {utterances} utterances",
                       pruning=config.pruning if config.run_pruning else None,
                       probes=config.probe if config.run_pruning else None)
    setup, decoded, issues, result = first.setup, first.decoded, first.issues, first.result
    model, utts = setup.model, setup.utts
    other_sigma = 0.8 if config.speaker.sigma != 0.8 else 1.0
    other_plan = dataclasses.replace(result.plan, properties=[
        SpeakerNeurons(dataclasses.replace(config.speaker, sigma=other_sigma))])
    other = score(result.stats, other_plan)
    print("[2/3] cluster purity", file=sys.stderr, flush=True)
    parts: dict[str, Any] = {"clusters": cluster_analysis(model, utts, result.plan, decoded)}
    if config.run_pruning:
        print(f"[3/3] pruning: L1 vs protected ({' ∪ '.join(config.pruning.protect)}), one-shot and iterative",
              file=sys.stderr, flush=True)
        parts["pruning"] = protected_pruning_run(model, utts, result.plan.properties, options, result.scored,
                                                 config.probe, config.pruning, setup.workdir, decoded=decoded,
                                                 recipe_dir=setup.model_path)
    with ResultsDir(out_dir, "speaker_neurons", flags=dataclasses.asdict(config)) as res:
        res.run["data_issues"] = issues.as_dict()
        _, report = result.write(res, extra_text=setup.description)
        report.title = "Label-free speaker neurons (arXiv 2506.21712)"
        res.save_json("clusters", parts["clusters"])
        clusters_section(report, parts["clusters"])
        parts["counts_by_sigma"] = sigma_section(report, res, result.scored, other, config.speaker.sigma,
                                                 other_sigma)
        if "pruning" in parts:
            save_pruning(res, parts["pruning"])
            pruning_section(report, res, parts["pruning"], "the " + " ∪ ".join(
                {"speaker": "speaker (i-vector group) neurons P_ive", "ssl_cluster": "SSL-cluster neurons P_ssl"}
                .get(p, p) for p in config.pruning.protect))
        report.heading("Run")
        report.text(f"Probes: {config.probe}. Data: {issues.summary()}. Took {time.time() - t0:.0f} s.")
        report.write(res.tmp)
    return StudyResult(out_dir, result, parts, time.time() - t0)


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


def sigma_section(report: Any, res: Any, scored: dict, other: dict, sigma: float, other_sigma: float) -> dict:
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
    by_sigma = {str(s): c for s, c in counts.items()}
    res.save_json("counts_by_sigma", by_sigma)
    return by_sigma
