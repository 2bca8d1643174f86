"""Writing a scan's results directory: arrays, neuron sets, per-layer tables, figures and the report."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxneurons.pipeline.scan import ScanPlan, neuron_sets, per_layer_counts
from jaxneurons.report import Report, layer_profile, write_explorer
from jaxneurons.results import ResultsDir
from jaxneurons.stats.state import NeuronStats


def write_scan_results(
    res: ResultsDir, plan: ScanPlan, stats: NeuronStats, scored: dict[str, Any], extra_text: str = ""
) -> tuple[dict[str, Any], Report]:
    """Fill ``res`` (not yet committed); returns the summary and the report (the caller may add sections,
    then ``report.write(res.tmp)``)."""
    for key, value in stats.to_numpy().items():
        res.save_array(key.replace("/", "__"), value)
    for prop, result in scored.items():
        for name in ("scores",):
            if name in result:
                for group, arr in result[name].items():
                    res.save_array(f"{prop}__{group}__{name}", np.asarray(arr, np.float32))
    sets = neuron_sets(scored)
    res.save_json("neurons", sets)
    counts = per_layer_counts(scored)
    frames = {c.name: stats.to_numpy()[f"{c.name}/frames"].astype(int).tolist() for c in plan.stats_config.conditions}
    summary = {
        "per_layer_counts": counts,
        "totals": {p: {g: int(sum(v)) for g, v in gs.items()} for p, gs in counts.items()},
        "frames_per_condition": {k: int(sum(v)) for k, v in frames.items()},
        "pitch_edges_hz": list(plan.pitch_edges) if plan.pitch_edges else None,
        "aape_coverage": {p: r["coverage"] for p, r in scored.items() if "coverage" in r},
        "options": dataclasses.asdict(plan.options),
        "stats_config": plan.stats_config.to_json(),
        "phone_set": plan.inventory.vocab.to_json() if plan.inventory else None,
        "class_vocabularies": {k: st["vocab"].to_json() for k, st in plan.states.items()
                               if isinstance(st, dict) and "vocab" in st},
        "properties": {p.name: repr(p) for p in plan.properties},
    }
    res.save_json("summary", summary)

    report = Report("Neuron scan")
    if extra_text:
        report.text(extra_text)
    num_layers = plan.stats_config.num_layers
    report.heading("Neurons per layer")
    report.text(
        "Property neurons (top-1% |h| events above the k/D chance level in at least sigma of a group's cells, "
        "exclusive to one group) and AAPE class-specific neurons, per layer (1 = first Transformer layer)."
    )
    for prop, groups in counts.items():
        if not groups:
            continue
        rows = [[i + 1, *[groups[g][i] for g in groups]] for i in range(num_layers)]
        rows.append(["total", *[sum(groups[g]) for g in groups]])
        report.table(["layer", *groups], rows, caption=f"{prop}: neurons per layer")
        path = layer_profile(res.file(f"figures/{prop}.png"), groups,
                             f"{prop} neurons per layer", ylabel="neurons")
        report.figure(path, f"{prop}: neurons per layer")
    report.heading("Data")
    report.table(["condition set", "frames counted"], [[k, v] for k, v in summary["frames_per_condition"].items()])
    if plan.pitch_edges:
        report.text(f"Pitch bins: low < {plan.pitch_edges[0]:.1f} Hz <= mid < {plan.pitch_edges[1]:.1f} Hz <= high.")
    for prop, cov in summary["aape_coverage"].items():
        report.text(f"{prop}: class coverage {cov:.2f} (fraction of classes with at least one specific neuron).")
    clustering = {p: r["clustering"] for p, r in scored.items() if "clustering" in r}
    if clustering:
        summary["clustering"] = clustering
        for prop, c in clustering.items():
            pur = c.get("ivector_clusters_vs_gender")
            if pur is None:
                report.text(f"{prop}: i-vector clusters (no gender labels to compare); SSL clusters of layer "
                            f"{c['ssl_layer']}.")
                continue
            rows = [[f"i-vector cluster {k}", v["size"], v["majority"], f"{v['fraction']:.3f}"]
                    for k, v in sorted(pur["clusters"].items())]
            report.table(["cluster", "utterances", "majority gender", "majority share"], rows,
                         caption=f"{prop}: i-vector clusters vs gender (purity {pur['purity']:.3f}, chance about "
                                 f"0.5); SSL clusters from layer {c['ssl_layer']}")
    write_explorer(res.tmp, stats=stats, plan=plan, scored=scored, run=res.run, report=report)
    return summary, report
