"""``jaxneurons heads``: attention-head metrics, head types and head ablation over a manifest.

    jaxneurons heads --model default --manifest corpus/manifest.jsonl --out results/heads
    jaxneurons heads --model models/mine --manifest M --out R --probe_layer 4 --single_head_ablation

Writes a results directory (run.json, arrays/, head_types.json, ablation.json, summary.json, figures/,
report.md / report.html). Definitions and sources: docs/heads.md.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags, logging

from jaxneurons.data import DataIssues, read_manifest
from jaxneurons.heads import DIAGONALITY_KINDS, GLOBALNESS_KINDS, METRIC_NAMES, VERTICALITY_KINDS
from jaxneurons.pipeline.heads import HeadsOptions, run_heads, write_heads_results
from jaxneurons.results import ResultsDir

flags.DEFINE_string("model", "default", "jaxneurons model directory, or 'default' for the bundled model.")
flags.DEFINE_string("manifest", None, "Manifest (JSONL); phone segments are needed for the ablation probe.")
flags.DEFINE_string("out", None, "Results directory (written atomically).")
flags.DEFINE_integer("limit", 0, "Use at most this many utterances (0: all).")
flags.DEFINE_integer("batch_size", 8, "Utterances per batch.")
flags.DEFINE_enum("diagonality_kind", "normalized", list(DIAGONALITY_KINDS), "Diagonality definition.")
flags.DEFINE_enum("verticality_kind", "normalized", list(VERTICALITY_KINDS), "Verticality definition.")
flags.DEFINE_enum("globalness_kind", "normalized", list(GLOBALNESS_KINDS), "Globalness definition.")
flags.DEFINE_bool("renormalize", True, "Renormalise each valid row over valid keys (models without key masks).")
flags.DEFINE_enum("normalize", "zscore", ["zscore", "minmax", "none"],
                  "How metrics are normalised across heads before a head takes its largest one as its type.")
flags.DEFINE_list("thresholds", [], "metric=min raw value a head needs to take that type, e.g. diagonality=0.8.")
flags.DEFINE_integer("example_utterance", 0, "Manifest index whose attention maps go into the figures.")
flags.DEFINE_bool("ablation", True, "Train a phone probe and run the head-ablation sweep.")
flags.DEFINE_string("probe_layer", "-1", "hidden_states index for the phone probe (0 = input of layer 1, "
                    "-1 = last layer), or 'all' for a learned weighted sum of all layers.")
flags.DEFINE_integer("probe_hidden", 0, "0: linear probe; > 0: one ReLU hidden layer of that width.")
flags.DEFINE_integer("probe_max_epochs", 50, "Probe training epochs (early stopping on the dev loss).")
flags.DEFINE_integer("probe_min_steps", 300, "Minimum probe updates.")
flags.DEFINE_integer("random_controls", 5, "Random same-size head sets per type ablation.")
flags.DEFINE_bool("single_head_ablation", False, "Also remove each head alone (one probe evaluation per head).")
flags.DEFINE_list("single_head_layers", [], "Layers (0-based) for single-head ablation (default: all).")
flags.DEFINE_integer("max_single_heads", 0, "At most this many single-head ablations (0: no limit).")
flags.DEFINE_integer("mask_chunk", 4, "Head masks evaluated together (vmap) per call; memory grows with it.")
flags.DEFINE_integer("seed", 0, "Seed of the split, the probe and the random controls.")
FLAGS = flags.FLAGS


def parse_thresholds(items: list[str]) -> tuple[tuple[str, float], ...]:
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in METRIC_NAMES:
            raise ValueError(f"--thresholds entries are METRIC=VALUE with METRIC in {METRIC_NAMES}, got {item!r}")
        out.append((name, float(value)))
    return tuple(out)


def options_from_flags() -> HeadsOptions:
    layer = FLAGS.probe_layer if FLAGS.probe_layer == "all" else int(FLAGS.probe_layer)
    return HeadsOptions(
        diagonality_kind=FLAGS.diagonality_kind, verticality_kind=FLAGS.verticality_kind,
        globalness_kind=FLAGS.globalness_kind, renormalize=FLAGS.renormalize, normalize=FLAGS.normalize,
        thresholds=parse_thresholds(FLAGS.thresholds), batch_size=FLAGS.batch_size,
        example_utterance=FLAGS.example_utterance, ablation=FLAGS.ablation, probe_layer=layer,
        probe_hidden=FLAGS.probe_hidden, probe_max_epochs=FLAGS.probe_max_epochs,
        probe_min_steps=FLAGS.probe_min_steps, random_controls=FLAGS.random_controls,
        single_head_ablation=FLAGS.single_head_ablation,
        single_head_layers=tuple(int(x) for x in FLAGS.single_head_layers),
        max_single_heads=FLAGS.max_single_heads, mask_chunk=FLAGS.mask_chunk, seed=FLAGS.seed,
    )


def resolve_model_path(name: str) -> str:
    """'default' -> the bundled model (commands.scan has the same helper, but importing it would define its flags)."""
    if name == "default":
        from jaxneurons.assets import default_model_path

        return default_model_path()
    return name


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.manifest or not FLAGS.out:
        sys.exit("error: --manifest and --out are required")
    from jaxneurons.models.checkpoint import load_model
    from jaxneurons.pipeline.scan import Progress

    model_path = resolve_model_path(FLAGS.model)
    model = load_model(model_path)
    utts = read_manifest(FLAGS.manifest)
    if FLAGS.limit:
        utts = utts[: FLAGS.limit]
    options = options_from_flags()
    issues = DataIssues()
    state = {"progress": None}

    def progress(done: int, total: int) -> None:
        if state["progress"] is None:
            state["progress"] = Progress(total, 0, label="head metrics")
        state["progress"](done)

    analysis = run_heads(model, utts, options, issues=issues, progress=progress)
    with ResultsDir(FLAGS.out, "heads", flags={"model": model_path, "manifest": os.path.abspath(FLAGS.manifest),
                                               "options": dataclasses.asdict(options)}) as res:
        res.run["data_issues"] = issues.as_dict()
        text = f"Model: {model_path}. Manifest: {FLAGS.manifest} ({len(utts)} utterances). Data: {issues.summary()}."
        summary = write_heads_results(res, analysis, extra_text=text)
    logging.info("results written to %s", FLAGS.out)
    print(f"heads finished: {len(utts)} utterances -> {FLAGS.out}")
    print("  head types: " + ", ".join(f"{k} {v}" for k, v in summary["type_counts"].items()))
    if "ablation" in summary:
        ab = summary["ablation"]
        print(f"  phone probe frame accuracy (unablated): {ab['baseline_accuracy']:.4f}")
        for name, r in ab["per_type"].items():
            print(f"  {name} ({r['num_heads']} heads): removed {_fmt(r['remove'])} (random same-size "
                  f"{_fmt(r['random_remove_mean'])}), kept only {_fmt(r['keep_only'])} "
                  f"(random {_fmt(r['random_keep_mean'])})")
    print(f"report: {os.path.join(FLAGS.out, 'report.html')}")
