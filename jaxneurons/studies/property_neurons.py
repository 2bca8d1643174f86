"""Study 1: property neurons (arXiv 2409.05910): per-layer counts, model editing, protected pruning.

    from jaxneurons.studies import property_neurons
    result = property_neurons.run(property_neurons.PropertyNeuronsConfig(), "runs/property")

1. Scan (:func:`jaxneurons.scan`, middle frame of each phone, top-1 % |h| events, sigma 0.8): phone-type
   (vowel / voiced / unvoiced consonant), gender (male / female) and pitch (low / mid / high) neurons per layer,
   with the paper's MelHuBERT profile on a common depth axis for comparison.
2. Editing: one :class:`~jaxneurons.probes.ProbeSuite` (phone type per frame, gender, speaker ID, log-F0),
   trained on the unedited model; each group's neurons are zeroed (``h_i = 0``, i.e. column ``W2[:, i]``) and,
   as a control, random same-size sets per layer drawn outside all property neurons. The table is group
   removed x group measured (the paper measured speaker-ID error per gender).
3. Pruning: L1 vs protected (property neurons never pruned), one-shot and iterative
   (:mod:`jaxneurons.studies.pruning`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import numpy as np

from jaxneurons.config_flags import field_help
from jaxneurons.pipeline.labels import GENDER_NAMES
from jaxneurons.pipeline.properties import PropertyNeuronConfig
from jaxneurons.probes import ProbeSuiteConfig
from jaxneurons.studies.common import DataConfig, editing_table, scan_study
from jaxneurons.studies.pruning import (
    PruningConfig,
    protected_pruning_run,
    pruning_section,
    save_pruning,
)

# The paper's MelHuBERT per-layer counts (layers 1-12, D = 3072), from its data files (METHODS.md section 1).
PAPER_COUNTS = {
    "phone_type": [375, 310, 298, 242, 194, 210, 234, 242, 269, 265, 250, 115],
    "gender": [278, 135, 49, 23, 22, 25, 30, 12, 11, 37, 99, 151],
    "pitch": [190, 109, 34, 27, 18, 25, 27, 11, 12, 20, 53, 97],
}
PAPER_WIDTH = 3072


@dataclasses.dataclass(frozen=True)
class PropertyNeuronsConfig:
    """Study 1 (arXiv 2409.05910). Defaults: the paper's rule (``neurons``: middle frames, top-1 %, sigma 0.8),
    the paper's three properties, its editing (zero one group, compare with random sets) and protected pruning
    of the property neurons; corpus and schedule scaled to the bundled model on a 2-core CPU."""

    data: DataConfig = DataConfig()
    properties: tuple[str, ...] = field_help(("phone_type", "gender", "pitch"), "Scanned properties.")
    neurons: PropertyNeuronConfig = PropertyNeuronConfig()
    probe: ProbeSuiteConfig = ProbeSuiteConfig(tasks=("phone_type", "gender", "speaker", "pitch"))
    pruning_tasks: tuple[str, ...] = field_help(("phone", "speaker"), "Probe tasks measured after pruning (the "
                                                "paper: PER and speaker ID).")
    editing: bool = field_help(True, "Run the editing table.")
    random_controls: int = field_help(3, "Random same-size neuron sets per edited group.")
    pruning: PruningConfig = PruningConfig(protect=("phone_type", "gender", "pitch"))
    run_pruning: bool = field_help(True, "Run the pruning curves.")
    batch_size: int = field_help(8, "Utterances per batch of the scan.")
    seed: int = field_help(0, "Seed of the random controls.")


@dataclasses.dataclass
class StudyResult:
    """What a study's ``run`` returns: its results directory, the scan and the study's parts (as saved)."""

    out_dir: str
    scan: Any
    parts: dict[str, Any]
    seconds: float


def _columns(utts: list) -> Any:
    """ProbeSuite result -> editing columns: phone type, gender, speaker-ID per gender, pitch R²."""
    gender_of = {str(u.speaker): GENDER_NAMES.get(u.gender) for u in utts}

    def columns(results: dict) -> dict[str, float]:
        out: dict[str, float] = {}
        if "phone_type" in results:
            out.update({f"phone {c}": results["phone_type"]["per_class"].get(c, np.nan)
                        for c in ("vowel", "voiced", "unvoiced")})
        if "gender" in results:
            out.update({f"gender {GENDER_NAMES[c]}": results["gender"]["per_class"].get(c, np.nan) for c in ("m", "f")})
        if "speaker" in results:
            per = results["speaker"]["per_class"]
            for g in ("male", "female"):
                vals = [v for s, v in per.items() if gender_of.get(s) == g]
                out[f"speaker-ID {g}"] = float(np.mean(vals)) if vals else np.nan
        if "pitch" in results:
            out["pitch R2 (log F0)"] = results["pitch"]["value"]
        return out

    return columns


def specificity(editing: dict) -> dict[str, dict[str, float]]:
    """Per property: mean specific drop on the removed group's own column(s) vs the property's other groups."""
    pairs = {"phone_type": ("phone_type", "phone ", ("vowel", "voiced", "unvoiced")),
             "gender": ("gender", "gender ", ("male", "female")),
             "gender (speaker-ID)": ("gender", "speaker-ID ", ("male", "female"))}
    out = {}
    for prop, (row_prop, prefix, groups) in pairs.items():
        own, other = [], []
        for g in groups:
            row = editing["specific_drop"].get(f"{row_prop}/{g}")
            if row is None or f"{prefix}{g}" not in row:
                continue
            own.append(row[f"{prefix}{g}"])
            other += [row[f"{prefix}{h}"] for h in groups if h != g and f"{prefix}{h}" in row]
        if own:
            out[prop] = {"own_group": float(np.nanmean(own)),
                         "other_groups": float(np.nanmean(other)) if other else float("nan")}
    return out


def run(config: PropertyNeuronsConfig, out_dir: str) -> StudyResult:
    """Scan, edit and prune; everything into the results directory ``out_dir`` (report.html)."""
    from jaxneurons.interventions import NeuronSets
    from jaxneurons.pipeline.scan import ScanOptions
    from jaxneurons.probes import ProbeSuite
    from jaxneurons.results import ResultsDir

    t0 = time.time()
    options = ScanOptions(properties=config.properties, property=config.neurons, batch_size=config.batch_size)
    first = scan_study(config.data, out_dir, options, name="property",
                       banner=f"[1/3] scan of {{utterances}} utterances ({', '.join(options.properties)})",
                       pruning=config.pruning if config.run_pruning else None)
    setup, decoded, issues, result = first.setup, first.decoded, first.issues, first.result
    model, utts = setup.model, setup.utts
    parts: dict[str, Any] = {}
    if config.editing:
        print("[2/3] editing: zero each group's neurons vs random same-size sets", file=sys.stderr, flush=True)
        sets: NeuronSets = result.to_neuron_sets()
        suite = ProbeSuite(utts, config.probe, audio=decoded.all_audio())
        suite.fit(model)
        rows = {name: [name] for name in sets.names()}
        editing = editing_table(model, suite, sets, rows, random_controls=config.random_controls, seed=config.seed,
                                columns=_columns(utts))
        editing["specificity"] = specificity(editing)
        editing["split"] = {t: {"kind": kind, **split.sizes()} for t, (split, kind) in suite.splits.items()}
        parts["editing"] = editing
    if config.run_pruning:
        print("[3/3] pruning: L1 vs protected, one-shot and iterative", file=sys.stderr, flush=True)
        probes = dataclasses.replace(config.probe, tasks=config.pruning_tasks)
        parts["pruning"] = protected_pruning_run(model, utts, result.plan.properties, options, result.scored, probes,
                                                 config.pruning, setup.workdir, decoded=decoded,
                                                 recipe_dir=setup.model_path)
    with ResultsDir(out_dir, "property_neurons", flags=dataclasses.asdict(config)) as res:
        res.run["data_issues"] = issues.as_dict()
        summary, report = result.write(res, extra_text=setup.description)
        report.title = "Property neurons (arXiv 2409.05910)"
        paper_comparison(report, res, summary, model)
        if "editing" in parts:
            res.save_json("editing", parts["editing"])
            editing_section(report, res, parts["editing"])
        if "pruning" in parts:
            save_pruning(res, parts["pruning"])
            pruning_section(report, res, parts["pruning"], f"the {', '.join(config.pruning.protect)} neurons")
        report.heading("Run")
        report.text(f"Probes: {config.probe}. Data: {issues.summary()}. Took {time.time() - t0:.0f} s.")
        report.write(res.tmp)
    return StudyResult(out_dir, result, parts, time.time() - t0)


def paper_comparison(report: Any, res: Any, summary: dict, model: Any) -> None:
    """Our per-layer counts next to the paper's MelHuBERT profile (fraction of the layer, relative depth)."""
    from jaxneurons.report import layer_profile

    widths = [model.config.ffn_width(i) for i in range(model.config.num_hidden_layers)]
    series = {}
    for prop, paper in PAPER_COUNTS.items():
        groups = summary["per_layer_counts"].get(prop)
        if not groups:
            continue
        series[f"{prop} (this model)"] = np.sum([groups[g] for g in groups], axis=0) / np.asarray(widths)
        series[f"{prop} (paper, MelHuBERT)"] = np.asarray(paper) / PAPER_WIDTH
    if not series:
        return
    report.heading("Layer profile vs the paper")
    path = layer_profile(res.file("figures/profile_vs_paper.png"), series, "Property neurons per layer (all groups)",
                         ylabel="fraction of the layer's FFN neurons", normalise_depth=True)
    report.figure(path, "Property neurons as a fraction of each layer's neurons, on a relative depth axis; the "
                  "paper's MelHuBERT (12 layers, 3072 neurons) for the expected shape, not the numbers")


def editing_section(report: Any, res: Any, editing: dict) -> None:
    from jaxneurons.report import heatmap

    rows, cols = editing["rows"], editing["columns"]
    report.heading("Editing: removing one group's neurons")
    report.text(
        "Probes (one ProbeSuite: speaker-disjoint split, speaker ID within speakers) trained on the unedited model; "
        "each group's neurons are zeroed (h_i = 0) and every measured column is compared with the unedited model "
        f"and with {editing['random_controls']} random same-size sets per layer (drawn outside all property "
        "neurons). Drops are in points (x100); 'specific' = drop of the group's neurons minus the mean drop of the "
        "random sets. Groups without neurons (not ablated): " + (", ".join(editing["empty"]) or "none") + ".")
    report.table(["measured", "unedited"], [[c, editing["clean"][c]] for c in cols])
    if not rows:
        return
    for key, title in (("specific_drop", "specific drop (group - random), points"),
                       ("drop", "drop after zeroing the group, points")):
        m = np.array([[100 * editing[key][r][c] for c in cols] for r in rows])
        res.save_array(f"editing_{key}", m)
        path = heatmap(res.file(f"figures/editing_{key}.png"), m, [f"{r} ({editing['sizes'][r]})" for r in rows],
                       cols, f"Editing: {title}", "drop (points)", fmt="{:.1f}", cmap="magma")
        report.figure(path, f"Rows: group whose neurons are zeroed; columns: measured group. {title}.")
    report.table(["zeroed", "neurons", *cols],
                 [[r, editing["sizes"][r], *[f"{100 * editing['drop'][r][c]:.1f} "
                                             f"({100 * editing['random_drop'][r][c]:.1f})" for c in cols]]
                  for r in rows],
                 caption="Drop in points after zeroing the group's neurons (random same-size set)")
    if editing["specificity"]:
        report.table(["property", "own group (points)", "other groups (points)"],
                     [[p, 100 * v["own_group"], 100 * v["other_groups"]] for p, v in editing["specificity"].items()],
                     caption="Mean specific drop on the removed group vs on the other groups of the property")
