"""Study 5: modularity of FFN neurons (arXiv 2408.17324): selective-pruning sets, overlaps, MoEfication, random init.

    python -m experiments.modularity --out results/modularity              # bundled model + synthetic corpora
    python -m experiments.modularity --out OUT --model DIR --manifest A.jsonl [--manifest_b B.jsonl] \\
        --tasks language,gender,corpus --moe_split 96

What it computes (one scan pass per model over corpus A + corpus B, ``selective:LABEL`` conditions of
:mod:`jaxneurons.pipeline.scan`: per-class streaming mean |h|):

1. **Selective-pruning neuron sets** per class of every task (``--tasks``: utterance labels, ``KEY/N`` quantile
   bins of a numeric label, and ``corpus`` = which of the two corpora, our "datasets"): score = mean|h| on the
   class (the data to forget) / (mean|h| on the other classes of the task, frame-weighted + 1e-3) ('abs'
   taker), the top ``--fractions`` (1, 2, 5, 10, 20 %) of all FFN neurons taken globally over layers.
2. **Overlap matrices** between the sets of all classes / datasets at every fraction: IoU ``|A∩B|/|A∪B|`` and
   ``|A∩B|/|A|``, each against a shuffled-set null (random sets with the same per-layer sizes).
3. **MoEfication cluster correspondence**: per layer, balanced k-means of the L2-normalised W1 rows into
   ``D / --moe_split`` experts (paper: 96 neurons per expert; must divide D); how each set distributes over
   the experts, and its concentration (share in its top expert) against random same-size sets.
4. **Trained vs random-init**: the same scores on a randomly initialised model of the same config; overlap of
   its sets with the trained model's (null: shuffled sets) and its own overlap matrices and concentration.

Corpora and scan checkpoints go to ``--workdir`` (default ``OUT.work``); reruns reuse them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common import define_corpus_flags
from jaxneurons.studies.corpora import (
    CORPUS_KEY,
    class_of,
    fmt,
    label_corpora,
    load_models,
    make_corpora,
    run_scans,
    safe_name,
    usable_tasks,
    write_scan_dirs,
)

SCOPE = "all"  # modularity tasks span both corpora


def define_flags() -> None:
    """Flags are defined only when run as a launcher (helpers stay importable next to other launchers)."""
    from absl import flags

    from jaxneurons.scoring.selective import DEFAULT_FRACTIONS

    define_corpus_flags("the second 'dataset'", "also nulls")
    flags.DEFINE_list("tasks", ["language", "gender", "pitch_setting/2", CORPUS_KEY],
                      "Tasks over both corpora: gender, speaker, language, a manifest labels key, KEY/N (numeric "
                      "label in N quantile bins) or 'corpus' (corpus A vs B). Each class is scored against the "
                      "task's other classes. Tasks with < 2 classes are skipped and reported.")
    flags.DEFINE_list("fractions", [str(f) for f in DEFAULT_FRACTIONS],
                      "Prune fractions of all FFN neurons, taken globally (paper: 0.01, 0.02, 0.05, 0.1, 0.2).")
    flags.DEFINE_float("report_fraction", 0.05, "Fraction whose matrices and MoE distributions the report shows "
                       "(all fractions are in the JSON).")
    flags.DEFINE_integer("moe_split", 96, "Neurons per MoEfication expert (paper: 96); must divide the FFN width.")
    flags.DEFINE_integer("moe_top", 1, "Concentration = share of a set in its this many most-populated experts.")
    flags.DEFINE_integer("moe_seed", 0, "Seed of the balanced k-means.")
    flags.DEFINE_bool("random_init_twin", True, "Also score a randomly initialised model of the same config.")
    flags.DEFINE_integer("twin_seed", 0, "Seed of the random-init twin.")
    flags.DEFINE_integer("null_draws", 1000, "Shuffled-set null draws (overlaps and MoE concentration).")
    flags.DEFINE_integer("batch_size", 8, "Utterances per scan batch.")


def stacked_w1(model: Any) -> np.ndarray:
    """(L, D, d_model) W1 of every layer (one row per neuron); equal widths required."""
    from jaxneurons.pruning.scores import ffn_weights

    rows = [ffn_weights(model, i)[0].T for i in range(model.config.num_hidden_layers)]
    if len({r.shape for r in rows}) != 1:
        raise ValueError(f"MoEfication needs equal FFN widths, got {[r.shape[0] for r in rows]}")
    return np.stack(rows)


def selective_sets(scored: Mapping[str, dict], keys: Sequence[str], fractions: Sequence[float],
                   widths: Sequence[int]) -> tuple[dict[float, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """({fraction: {'task:class': (L, D) bool}}, {'task:class': (L, D) score}) for every class of every task."""
    from jaxneurons.scoring.selective import selective_prune_masks

    sets: dict[float, dict[str, np.ndarray]] = {float(f): {} for f in fractions}
    scores = {}
    for key in keys:
        for cls, sc in scored[f"selective_{key}"]["scores"].items():
            name = f"{key.removeprefix(SCOPE + '.')}:{cls}"
            scores[name] = np.asarray(sc)
            for f, m in selective_prune_masks(sc, fractions, widths=widths).items():
                sets[f][name] = m
    return sets, scores


def overlap_block(sets: Mapping[str, np.ndarray], n_draws: int, seed: int) -> dict[str, Any]:
    """IoU and containment matrices with shuffled nulls, plus off-diagonal summaries (within / across tasks)."""
    from jaxneurons.scoring.overlap import overlap_matrix_null

    out: dict[str, Any] = {}
    names = list(sets)
    task = np.array([n.split(":", 1)[0] for n in names])
    off = ~np.eye(len(names), dtype=bool)
    same_task = (task[:, None] == task[None, :]) & off
    for metric in ("iou", "containment"):
        names, res = overlap_matrix_null(sets, metric, n_draws=n_draws, seed=seed)
        summary = {}
        for what, sel in (("within_task", same_task), ("across_tasks", off & ~same_task)):
            with np.errstate(invalid="ignore"):
                summary[what] = {"pairs": int(sel.sum()),
                                 "observed_mean": float(np.nanmean(res["observed"][sel])) if sel.any() else None,
                                 "null_mean": float(np.nanmean(res["null_mean"][sel])) if sel.any() else None,
                                 "share_p_below_0.05": float(np.nanmean(res["p_value"][sel] < 0.05))
                                 if sel.any() else None}
        out[metric] = {**res, "summary": summary}
    out["names"] = names
    return out


def twin_overlaps(trained: Mapping[float, dict], twin: Mapping[float, dict], n_draws: int,
                  seed: int) -> dict[str, dict[str, dict]]:
    """{fraction: {set: pooled IoU / containment of trained vs random-init set, null mean, p}}."""
    from jaxneurons.scoring.overlap import overlap_null

    out: dict[str, dict[str, dict]] = {}
    for f, sets in trained.items():
        out[str(f)] = {}
        for name, m in sets.items():
            r = overlap_null(m, twin[f][name], n_draws=n_draws, seed=seed)
            out[str(f)][name] = {k: {s: float(r[f"pooled_{k}"][s]) for s in ("observed", "null_mean", "p_value")}
                                 for k in ("iou", "containment")}
    return out


def moe_analysis(model: Any, sets: Mapping[float, Mapping[str, np.ndarray]], *, split: int, top: int,
                 n_null: int, seed: int) -> dict[str, Any]:
    """Expert ids of every layer, each set's distribution over experts and concentration vs a shuffled null."""
    from jaxneurons.scoring.moefication import cluster_distribution, concentration, moefy

    ids = moefy(stacked_w1(model), split, seed=seed)
    k = int(ids.max()) + 1
    flat = {f"{name}@{f:g}": m for f, s in sets.items() for name, m in s.items()}
    dist = cluster_distribution(ids, flat, k)
    conc = concentration(ids, flat, top=top, n_null=n_null, seed=seed, n_clusters=k)
    return {"cluster_ids": ids, "n_experts": k, "split": split, "distribution": dist, "concentration": conc}


def _mean(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def main(argv: list[str]) -> None:
    del argv
    from absl import flags

    from jaxneurons.pipeline.scan import ScanOptions
    from jaxneurons.report import Report, curves, heatmap, layer_profile
    from jaxneurons.results import ResultsDir

    FLAGS = flags.FLAGS
    if not FLAGS.out:
        sys.exit("error: --out is required")
    fractions = sorted(float(f) for f in FLAGS.fractions)
    if FLAGS.report_fraction not in fractions:
        sys.exit(f"error: --report_fraction {FLAGS.report_fraction} is not one of --fractions {fractions}")
    rf = float(FLAGS.report_fraction)
    t0 = time.time()
    work = os.path.abspath(FLAGS.workdir or FLAGS.out.rstrip("/") + ".work")
    os.makedirs(work, exist_ok=True)
    print("[1/5] corpora", flush=True)
    corpora = make_corpora(work, FLAGS.manifest, FLAGS.manifest_b, want_b=True, num_speakers=FLAGS.num_speakers,
                           minutes=FLAGS.minutes, languages=FLAGS.languages, seed=FLAGS.seed, seed_b=FLAGS.seed_b)
    union, _ = label_corpora({k: u for k, (_, u) in corpora.items()}, {}, {})
    tasks, edges, skipped = usable_tasks({SCOPE: union}, {SCOPE: FLAGS.tasks}, union)
    for u in union:
        for t in tasks[SCOPE]:
            u.labels[f"{SCOPE}.{t.slug}"] = class_of(u, t, edges.get(t.spec))
    keys = [f"{SCOPE}.{t.slug}" for t in tasks[SCOPE]]
    if not keys:
        sys.exit(f"error: no usable task ({skipped})")
    options = ScanOptions(properties=tuple(f"selective_{k}" for k in keys), batch_size=FLAGS.batch_size)
    model_path, models = load_models(FLAGS.model, FLAGS.random_init_twin, FLAGS.twin_seed)
    cfg = models["trained"].config
    widths = [cfg.ffn_width(i) for i in range(cfg.num_hidden_layers)]
    print(f"[2/5] scans of {len(union)} utterances ({', '.join(models)}); tasks {[t.spec for t in tasks[SCOPE]]}",
          flush=True)
    (issues, _), scans = run_scans(models, union, options, work, model_path, FLAGS.twin_seed)

    print("[3/5] selective-pruning sets and overlaps", flush=True)
    sets, scores, overlaps = {}, {}, {}
    for name, (_, _, scored) in scans.items():
        sets[name], scores[name] = selective_sets(scored, keys, fractions, widths)
        overlaps[name] = {str(f): overlap_block(sets[name][f], FLAGS.null_draws, FLAGS.seed) for f in fractions}
    twin = twin_overlaps(sets["trained"], sets["random-init"], FLAGS.null_draws, FLAGS.seed) \
        if "random-init" in sets else {}

    print("[4/5] MoEfication", flush=True)
    moe: dict[str, Any] = {}
    for name, model in models.items():
        try:
            moe[name] = moe_analysis(model, sets[name], split=FLAGS.moe_split, top=FLAGS.moe_top,
                                     n_null=FLAGS.null_draws, seed=FLAGS.moe_seed)
        except ValueError as e:  # split does not divide D, or unequal widths of a pruned model
            moe[name] = {"error": str(e)}

    print("[5/5] report", flush=True)
    run_flags = {n: getattr(FLAGS, n) for n in (
        "model", "manifest", "manifest_b", "num_speakers", "minutes", "languages", "seed", "seed_b", "tasks",
        "fractions", "report_fraction", "moe_split", "moe_top", "moe_seed", "random_init_twin", "twin_seed",
        "null_draws", "batch_size")}
    with ResultsDir(FLAGS.out, "modularity", flags=run_flags) as res:
        res.run.update(model_path=model_path, manifests={k: p for k, (p, _) in corpora.items()},
                       data_issues=issues.as_dict(), seconds=round(time.time() - t0, 1))
        text = (f"Model: {model_path}. Corpora (datasets): " + "; ".join(
            f"{k}: {p} ({len(u)} utterances)" for k, (p, u) in corpora.items()) + f". Data: {issues.summary()}.")
        write_scan_dirs(res, scans, text)
        res.save_json("tasks", {"tasks": [t.spec for t in tasks[SCOPE]], "bin_edges": edges, "skipped": skipped})
        set_json: dict[str, Any] = {}
        for name in sets:
            for sname, sc in scores[name].items():
                res.save_array(f"{safe_name(name)}__scores__{safe_name(sname)}", sc.astype(np.float32))
            for f, ss in sets[name].items():
                set_json.setdefault(name, {})[str(f)] = {s: {"size": int(m.sum()),
                                                             "per_layer": m.sum(1).astype(int).tolist()}
                                                         for s, m in ss.items()}
                res.save_array(f"{safe_name(name)}__sets__{f:g}", np.stack(list(ss.values())))
        res.save_json("sets", {"names": list(sets["trained"][rf]), "fractions": fractions, "sizes": set_json})
        res.save_json("overlaps", overlaps)
        res.save_json("twin_overlap", twin)
        moe_json = {}
        for name, m in moe.items():
            if "error" in m:
                moe_json[name] = m
                continue
            res.save_array(f"{safe_name(name)}__moe_cluster_ids", m["cluster_ids"])
            moe_json[name] = {"n_experts": m["n_experts"], "split": m["split"], "distribution": m["distribution"],
                              "concentration": m["concentration"]}
        res.save_json("moefication", moe_json)

        report = Report("Modularity: selective pruning, overlaps, MoEfication (arXiv 2408.17324)")
        report.text(text + " Scan results per model: scan-*/report.html. 'random-init' = a randomly initialised "
                    "model of the same config.")
        if skipped:
            report.text("Tasks skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ".")
        if any(edges.values()):
            report.text("Quantile bins (q1 lowest): " + "; ".join(f"{s}: edges {e}" for s, e in edges.items() if e))
        report.heading("Selective-pruning sets")
        report.text("score = mean|h| on the class / (frame-weighted mean|h| on the task's other classes + 1e-3); the "
                    f"top fraction of all {sum(widths)} FFN neurons, globally over layers. Sets at "
                    f"{rf:g} per layer:")
        layer_series = {s: m.sum(1) for s, m in sets["trained"][rf].items()}
        report.table(["set", *[f"layer {i + 1}" for i in range(len(widths))], "total"],
                     [[s, *v.astype(int).tolist(), int(v.sum())] for s, v in layer_series.items()])
        fig = layer_profile(res.file("figures/sets_per_layer.png"), layer_series,
                            f"Selective-pruning sets per layer (top {rf:g}, trained)", ylabel="neurons")
        report.figure(fig, "Where each class's / dataset's selective-pruning neurons are (trained model)")

        report.heading("Overlap between sets")
        rows = []
        for name in overlaps:
            for f in fractions:
                for metric in ("iou", "containment"):
                    sm = overlaps[name][str(f)][metric]["summary"]
                    for what in ("within_task", "across_tasks"):
                        s = sm[what]
                        if s["pairs"]:
                            rows.append([name, f"{f:g}", metric, what, s["pairs"], fmt(s["observed_mean"]),
                                         fmt(s["null_mean"]), fmt(s["share_p_below_0.05"], 2)])
        report.table(["model", "fraction", "metric", "pairs of sets", "n", "mean observed", "mean null",
                      "share of pairs p < 0.05"], rows,
                     "Off-diagonal overlaps: pairs within one task (e.g. en vs tr) and across tasks")
        report.text("Within a two-class task the two sets come from reciprocal scores (each class against the "
                    "other), so they rarely share neurons; the across-task pairs are the modularity question.")
        for name in overlaps:
            ov = overlaps[name][str(rf)]
            for metric, label in (("iou", "IoU |A∩B|/|A∪B|"), ("containment", "|row ∩ column| / |row|")):
                fig = heatmap(res.file(f"figures/overlap_{safe_name(name)}_{metric}.png"), ov[metric]["observed"],
                              ov["names"], ov["names"], f"{name}: {metric} of selective sets (top {rf:g})", label)
                report.figure(fig, f"{name} model: {metric} between the sets of all classes / datasets at {rf:g}")
                fig = heatmap(res.file(f"figures/overlap_{safe_name(name)}_{metric}_z.png"), ov[metric]["z"],
                              ov["names"], ov["names"], f"{name}: {metric} z vs shuffled null (top {rf:g})",
                              "z = (observed - null mean) / null std", cmap="coolwarm")
                report.figure(fig, f"{name} model: {metric} relative to the shuffled-set null (z)")
        def series(model: str, what: str, key: str) -> list[float]:
            vals = [overlaps[model][str(f)]["iou"]["summary"][what][key] for f in fractions]
            return [np.nan if v is None else v for v in vals]

        iou_curves = {f"{n}: {w}": series(n, w, "observed_mean") for n in overlaps
                      for w in ("within_task", "across_tasks")}
        iou_curves.update({f"null: {w}": series("trained", w, "null_mean") for w in ("within_task", "across_tasks")})
        fig = curves(res.file("figures/overlap_vs_fraction.png"), fractions, iou_curves,
                     "Mean off-diagonal IoU vs prune fraction", "prune fraction", "mean IoU")
        report.figure(fig, "Mean IoU between different sets as the fraction grows, with the trained model's null")

        report.heading("MoEfication cluster correspondence")
        for name, m in moe.items():
            if "error" in m:
                report.text(f"{name}: MoEfication not run ({m['error']}).")
                continue
            report.text(f"{name}: {m['n_experts']} experts of {m['split']} neurons per layer (balanced k-means of the "
                        f"L2-normalised W1 rows). Concentration = share of a set in its top {FLAGS.moe_top} "
                        f"expert(s) per layer; null = random same-size sets ({FLAGS.null_draws} draws).")
            rows = []
            ratio_series = {}
            for sname in sets[name][rf]:
                c = m["concentration"][f"{sname}@{rf:g}"]
                ratio_series[sname] = c["ratio"]
                rows.append([sname, int(c["size"].sum()), fmt(_mean(c["top_fraction"])), fmt(_mean(c["null_mean"])),
                             fmt(_mean(c["ratio"]), 2), int(np.sum(np.asarray(c["p_value"]) < 0.05)),
                             int(np.sum(c["size"] > 0))])
            report.table(["set", "neurons", "top-expert share (mean over layers)", "null", "ratio",
                          "layers p < 0.05", "layers with neurons"], rows, f"{name}: sets at {rf:g}")
            fig = layer_profile(res.file(f"figures/moe_ratio_{safe_name(name)}.png"), ratio_series,
                                f"{name}: concentration in the top expert / null (top {rf:g})",
                                ylabel="observed / null top-expert share")
            report.figure(fig, f"{name}: how much more concentrated each set is in one expert than chance, per layer")
            first = next(iter(sets[name][rf]))
            dist = m["distribution"][f"{first}@{rf:g}"]
            fig = heatmap(res.file(f"figures/moe_distribution_{safe_name(name)}.png"), dist,
                          [f"layer {i + 1}" for i in range(dist.shape[0])], [str(j) for j in range(dist.shape[1])],
                          f"{name}: neurons of {first} per expert (top {rf:g})", "neurons", fmt="{:.0f}")
            report.figure(fig, f"{name}: distribution of the {first} set over the experts of each layer "
                          "(all sets in moefication.json)")

        if twin:
            report.heading("Trained vs random-init")
            report.text("Overlap of each trained-model set with the same class's set on the random-init model "
                        "(pooled over layers); null = random sets with the random-init set's per-layer sizes.")
            report.table(["set", "IoU", "IoU null", "p", "|T∩R|/|T|", "null", "p"],
                         [[s, fmt(v["iou"]["observed"]), fmt(v["iou"]["null_mean"]), fmt(v["iou"]["p_value"]),
                           fmt(v["containment"]["observed"]), fmt(v["containment"]["null_mean"]),
                           fmt(v["containment"]["p_value"])] for s, v in twin[str(rf)].items()],
                         f"Sets at {rf:g} (all fractions in twin_overlap.json)")
        report.write(res.tmp)
    print(f"done in {time.time() - t0:.0f} s; report: {os.path.join(os.path.abspath(FLAGS.out), 'report.html')}")


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
