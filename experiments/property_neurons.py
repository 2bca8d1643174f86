"""Study 1: property neurons (arXiv 2409.05910): per-layer counts, model editing, protected pruning.

    python -m experiments.property_neurons --out results/property_neurons             # bundled model, synthetic
    python -m experiments.property_neurons --model DIR --manifest M.jsonl --out R \\
        --neurons_per_step 128 --updates_per_step 25000 --num_clusters 512           # a real checkpoint

1. Scan (:mod:`jaxneurons.pipeline.scan`, middle frame of each phone, top-1 % |h| events, sigma 0.8): phone-type
   (vowel / voiced / unvoiced consonant), gender (male / female) and pitch (low / mid / high) neurons per layer,
   with the paper's MelHuBERT profile on a common depth axis for comparison.
2. Editing: probes trained on the unedited model (phone frames, utterance gender and pitch bins on disjoint
   speakers; speaker ID on disjoint utterances), then each group's neurons are zeroed (``h_i = 0``, i.e. column
   ``W2[:, i]``) and, as a control, random same-size sets per layer avoiding all property neurons. The table is
   group removed x group measured: phone accuracy per phone type, gender accuracy and speaker-ID accuracy per
   gender (the paper measured speaker-ID error per gender), pitch-bin accuracy per bin.
3. Pruning: L1 vs protected (property neurons never pruned), one-shot at ``--densities`` and iterative with
   short continued pre-training between steps; phone accuracy / PER and speaker ID of probes retrained on each
   pruned model, plus the unpruned reference.

Everything goes to one results directory (``--out``): the scan's arrays and neuron sets, ``editing.json``,
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
flags.DEFINE_list("properties", ["phone_type", "gender", "pitch"], "Scanned properties (arXiv 2409.05910).")
flags.DEFINE_list("protect", ["phone_type", "gender", "pitch"], "Properties whose neurons pruning protects.")
flags.DEFINE_enum("frames", "mid", ["mid", "all"], "Frames counted: middle frame of each phone (paper) or all.")
flags.DEFINE_float("sigma", 0.8, "Keep a neuron for a group if meaningful for >= sigma of its phones (paper: 0.8).")
flags.DEFINE_float("rho", 0.01, "Top-k fraction of |h| per frame and layer (paper: 1 %).")
flags.DEFINE_list("pitch_edges", [], "Fixed pitch-bin edges in Hz (paper, LibriSpeech dev-clean: 129.03,179.78); "
                  "default: 33rd/66th percentiles of the scanned data.")
flags.DEFINE_integer("random_controls", 3, "Random same-size neuron sets per edited group.")
flags.DEFINE_bool("editing", True, "Run the editing table.")
flags.DEFINE_bool("pruning", True, "Run the pruning curves.")
FLAGS = flags.FLAGS

# Paper's MelHuBERT per-layer counts (layers 1-12, D = 3072), from its data files (METHODS.md section 1).
PAPER_COUNTS = {
    "phone_type": [375, 310, 298, 242, 194, 210, 234, 242, 269, 265, 250, 115],
    "gender": [278, 135, 49, 23, 22, 25, 30, 12, 11, 37, 99, 151],
    "pitch": [190, 109, 34, 27, 18, 25, 27, 11, 12, 20, 53, 97],
}
PAPER_WIDTH = 3072
GENDER_GROUPS = {"male": "m", "female": "f"}


def pitch_frame_labels(plan: Any) -> list[np.ndarray]:
    """Pitch bin (0 low / 1 mid / 2 high) of every voiced frame of a voiced phone, -1 elsewhere (scan's rule)."""
    from jaxneurons.pipeline.labels import pitch_bins

    voiced = np.zeros(plan.inventory.size + 1, bool)
    voiced[plan.inventory.voiced_ids] = True
    return [np.where(voiced[lab.phone], pitch_bins(lab.f0, plan.pitch_edges), -1).astype(np.int32)
            for lab in plan.utt_labels]


def measured_columns(kit: common.ProbeKit, probes: dict, feats: Any, inventory: Any) -> dict[str, float]:
    """Accuracy per measured group: phone types, gender (probe), speaker ID per gender, pitch bins."""
    cols: dict[str, float] = {}
    ev = kit.eval_frames(probes["phone"], feats)
    types = {t: [inventory.vocab.label(i) for i in inventory.ids_of_type(t)] for t in ("vowel", "voiced", "unvoiced")}
    cols.update({f"phone {t}": v for t, v in common.per_class_group_accuracy(ev, types).items()})
    if "gender" in probes:
        ev = kit.eval_gender(probes["gender"], feats)
        cols.update({f"gender {g}": v for g, v in common.per_class_group_accuracy(
            ev, {g: [c] for g, c in GENDER_GROUPS.items()}).items()})
    if "speaker" in probes:
        ev = kit.eval_speaker(probes["speaker"], feats)
        of = {str(u.speaker): u.gender for u in kit.utts}
        groups = {g: [s for s in kit.speaker_names if of[s] == c] for g, c in GENDER_GROUPS.items()}
        cols.update({f"speaker-ID {g}": v for g, v in common.per_class_group_accuracy(ev, groups).items()})
    if "pitch" in probes:
        ev = kit.eval_frames(probes["pitch"], feats)
        cols.update({f"pitch {g}": v for g, v in common.per_class_group_accuracy(
            ev, {g: [g] for g in ("low", "mid", "high")}).items()})
    return cols


def editing_table(model: Any, kit: common.ProbeKit, scored: dict, inventory: Any, controls: int,
                  seed: int) -> dict[str, Any]:
    """Zero each group's neurons vs random same-size sets; accuracy drop of every measured group."""
    from jaxneurons.pipeline.ablation import random_control
    from jaxneurons.pipeline.scan import PITCH_GROUPS

    clean = kit.features(model)
    probes = {"phone": kit.train_phone(clean)}
    if kit.has_gender:
        probes["gender"] = kit.train_gender(clean)
    if kit.within is not None:
        probes["speaker"] = kit.train_speaker(clean)
    if "pitch" in scored:
        probes["pitch"] = kit.train_frame(clean, "pitch_bin", PITCH_GROUPS)
    base = measured_columns(kit, probes, clean, inventory)
    sets = {f"{prop}: {g}": np.asarray(m, bool) for prop in ("phone_type", "gender", "pitch") if prop in scored
            for g, m in scored[prop]["groups"].items()}
    union = np.any(np.stack(list(sets.values())), axis=0) | ~common.real_neuron_mask(model)
    out: dict[str, Any] = {"clean": base, "columns": list(base), "rows": list(sets), "sizes": {}, "ablated": {},
                           "random": {}, "drop": {}, "random_drop": {}, "specific_drop": {},
                           "random_controls": controls}
    for k, (name, mask) in enumerate(sets.items()):
        out["sizes"][name] = int(mask.sum())
        if not mask.any():  # nothing to zero: the model is unchanged
            ablated, randoms = dict(base), [dict(base)]
        else:
            ablated = measured_columns(kit, probes, kit.features(model, common.zero_mask(model, mask)), inventory)
            randoms = []
            for c in range(controls):
                ctrl = random_control(mask, seed + 1000 + 100 * k + c, exclude=union)
                randoms.append(measured_columns(kit, probes, kit.features(model, common.zero_mask(model, ctrl)),
                                                inventory))
        rand = {col: float(np.mean([r[col] for r in randoms])) for col in base}
        out["ablated"][name], out["random"][name] = ablated, rand
        out["drop"][name] = {c: base[c] - ablated[c] for c in base}
        out["random_drop"][name] = {c: base[c] - rand[c] for c in base}
        out["specific_drop"][name] = {c: out["drop"][name][c] - out["random_drop"][name][c] for c in base}
        logging.info("edited %s (%d neurons)", name, out["sizes"][name])
    out["specificity"] = specificity(out)
    return out


def specificity(editing: dict) -> dict[str, dict[str, float]]:
    """Per property: mean specific drop on the removed group's own column(s) vs the property's other groups."""
    pairs = {"phone_type": ("phone ", ("vowel", "voiced", "unvoiced")),
             "gender": ("gender ", ("male", "female")), "gender (speaker-ID)": ("speaker-ID ", ("male", "female")),
             "pitch": ("pitch ", ("low", "mid", "high"))}
    out = {}
    for prop, (prefix, groups) in pairs.items():
        row_prop = prop.split(" ")[0]
        own, other = [], []
        for g in groups:
            row = editing["specific_drop"].get(f"{row_prop}: {g}")
            if row is None or f"{prefix}{g}" not in row:
                continue
            own.append(row[f"{prefix}{g}"])
            other += [row[f"{prefix}{h}"] for h in groups if h != g and f"{prefix}{h}" in row]
        if own:
            out[prop] = {"own_group": float(np.nanmean(own)), "other_groups": float(np.nanmean(other))
                         if other else float("nan")}
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
    edges = tuple(float(x) for x in FLAGS.pitch_edges) if FLAGS.pitch_edges else None
    if edges is not None and len(edges) != 2:
        sys.exit("error: --pitch_edges takes two values (low/mid, mid/high) in Hz")
    options = ScanOptions(properties=tuple(FLAGS.properties), frames=FLAGS.frames, rho=FLAGS.rho, sigma=FLAGS.sigma,
                          pitch_edges=edges, batch_size=FLAGS.batch_size)
    issues = DataIssues()
    decoded = DecodedDataset(utts, issues=issues)
    print(f"[1/3] scan of {len(utts)} utterances ({', '.join(options.properties)})", file=sys.stderr, flush=True)
    plan = plan_scan(model, utts, options, issues, decoded=decoded)
    checkpoint = os.path.join(setup.workdir, "scan-property", "stats.npz")
    stats = scan_statistics(model, utts, plan, checkpoint_path=checkpoint,
                            fingerprint=scan_fingerprint(setup.model_path, utts, options), issues=issues,
                            decoded=decoded)
    scored = score(stats, plan)
    extra = {"pitch_bin": pitch_frame_labels(plan)} if "pitch" in scored else {}
    kit = common.ProbeKit(model, utts, inventory=plan.inventory,
                          layer=common.probe_layer_index(model, FLAGS.probe_layer), batch_size=FLAGS.batch_size,
                          seed=FLAGS.seed, max_epochs=FLAGS.probe_max_epochs, min_steps=FLAGS.probe_min_steps,
                          extra_frame_labels=extra)
    editing = None
    if FLAGS.editing:
        print("[2/3] editing: zero each group's neurons vs random same-size sets", file=sys.stderr, flush=True)
        editing = editing_table(model, kit, scored, plan.inventory, FLAGS.random_controls, FLAGS.seed)
    curves = None
    if FLAGS.pruning:
        print("[3/3] pruning: L1 vs protected, one-shot and iterative", file=sys.stderr, flush=True)
        protect = [p for p in FLAGS.protect if p in scored]
        curves = common.protected_pruning_run(model, utts, options, protect, scored, kit, setup.workdir,
                                              decoded=decoded)
    with ResultsDir(FLAGS.out, "property_neurons", flags=common.launcher_flags()) as res:
        res.run["data_issues"] = issues.as_dict()
        res.run["options"] = dataclasses.asdict(options)
        summary, report = write_scan_results(res, plan, stats, scored, extra_text=setup.description)
        report.title = "Property neurons (arXiv 2409.05910)"
        paper_comparison(report, res, summary, model)
        if kit.notes:
            report.text("Probes: " + "; ".join(kit.notes))
        if editing is not None:
            res.save_json("editing", editing)
            editing_section(report, res, editing)
        if curves is not None:
            common.save_pruning(res, curves)
            common.pruning_section(report, res, curves, f"the {', '.join(FLAGS.protect)} neurons")
        report.heading("Run")
        report.text(f"Probe splits: speaker-disjoint {kit.disjoint.sizes()}, within-speaker "
                    f"{kit.within.sizes() if kit.within else 'n/a'}; probes read hidden_states[{kit.layer}]. "
                    f"Data: {issues.summary()}. Took {time.time() - t0:.0f} s.")
        report.write(res.tmp)
    print(f"property neurons -> {FLAGS.out} (report: {os.path.join(FLAGS.out, 'report.html')})")
    for prop, groups in summary["totals"].items():
        print(f"  {prop}: " + ", ".join(f"{g} {n}" for g, n in groups.items()))


def paper_comparison(report: Any, res: Any, summary: dict, model: Any) -> None:
    """Our per-layer counts next to the paper's MelHuBERT profile (fraction of the layer, relative depth)."""
    from jaxneurons.report import layer_profile

    widths = [model.config.ffn_width(i) for i in range(model.config.num_hidden_layers)]
    series = {}
    for prop, paper in PAPER_COUNTS.items():
        groups = summary["per_layer_counts"].get(prop)
        if not groups:
            continue
        ours = np.sum([groups[g] for g in groups], axis=0) / np.asarray(widths)
        series[f"{prop} (this model)"] = ours
        series[f"{prop} (paper, MelHuBERT)"] = np.asarray(paper) / PAPER_WIDTH
    if not series:
        return
    report.heading("Layer profile vs the paper")
    path = layer_profile(res.file("figures/profile_vs_paper.png"), series,
                         "Property neurons per layer (all groups)", ylabel="fraction of the layer's FFN neurons",
                         normalise_depth=True)
    report.figure(path, "Property neurons as a fraction of each layer's neurons, on a relative depth axis; the "
                  "paper's MelHuBERT (12 layers, 3072 neurons) for the expected shape, not the numbers")


def editing_section(report: Any, res: Any, editing: dict) -> None:
    from jaxneurons.report import heatmap

    rows, cols = editing["rows"], editing["columns"]
    report.heading("Editing: removing one group's neurons")
    report.text(
        "Probes trained on the unedited model; each group's neurons are zeroed (h_i = 0) and the test accuracy of "
        f"every measured group is compared with the unedited model and with {editing['random_controls']} random "
        "same-size sets per layer (avoiding all property neurons). Drops are in accuracy points (x100); "
        "'specific' = drop of the group's neurons minus the mean drop of the random sets. A specific property "
        "shows large values on its own group's column (speaker-ID per gender is the paper's measure)."
    )
    report.table(["measured", "unedited accuracy"], [[c, editing["clean"][c]] for c in cols])
    for key, title in (("specific_drop", "specific drop (group - random), points"),
                       ("drop", "drop after zeroing the group, points")):
        m = np.array([[100 * editing[key][r][c] for c in cols] for r in rows])
        res.save_array(f"editing_{key}", m)
        path = heatmap(res.file(f"figures/editing_{key}.png"), m,
                       [f"{r} ({editing['sizes'][r]})" for r in rows], cols,
                       f"Editing: {title}", "accuracy drop (points)", fmt="{:.1f}", cmap="magma")
        report.figure(path, f"Rows: group whose neurons are zeroed (neurons in all layers); columns: measured group. "
                      f"{title}.")
    report.table(["zeroed", "neurons", *cols],
                 [[r, editing["sizes"][r], *[f"{100 * editing['drop'][r][c]:.1f} "
                                             f"({100 * editing['random_drop'][r][c]:.1f})" for c in cols]]
                  for r in rows],
                 caption="Accuracy drop in points after zeroing the group's neurons (random same-size set)")
    spec = editing["specificity"]
    if spec:
        report.table(["property", "own group (points)", "other groups (points)"],
                     [[p, 100 * v["own_group"], 100 * v["other_groups"]] for p, v in spec.items()],
                     caption="Mean specific drop on the removed group vs on the other groups of the property")


if __name__ == "__main__":
    app.run(main)
