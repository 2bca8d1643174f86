"""``jaxneurons heads``: attention-head metrics, head types and head ablation over a manifest.

    jaxneurons heads --model default --manifest corpus/manifest.jsonl --out results/heads
    jaxneurons heads --model models/mine --manifest M --out R --probe_layer 4 --single_head_ablation
    jaxneurons heads ... --normalize zscore          # option: type heads relative to each other

Writes a results directory (run.json, arrays/, head_types.json, ablation.json, summary.json, figures/,
report.md / report.html). Definitions and sources: docs/heads.md.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags, logging

from jaxneurons.config_flags import config_from_flags, define_config_flags
from jaxneurons.data import DataIssues, read_manifest
from jaxneurons.data.decoded import DecodeOptions, screen_corpus
from jaxneurons.errors import error_line
from jaxneurons.pipeline.heads import HeadsConfig, run_heads, write_heads_results
from jaxneurons.results import ResultsDir

flags.DEFINE_string("model", "default", "jaxneurons model directory, or 'default' for the bundled model.")
flags.DEFINE_string("manifest", None, "Manifest (JSONL); phone segments are needed for the ablation probe.")
flags.DEFINE_string("out", None, "Results directory (written atomically).")
flags.DEFINE_integer("limit", 0, "Use at most this many utterances (0: all).")
# Every analysis setting comes from HeadsConfig (defaults and help there; probe settings as --probe_*).
define_config_flags(HeadsConfig)
define_config_flags(DecodeOptions)  # --on_error, as in jaxneurons scan
FLAGS = flags.FLAGS


def options_from_flags() -> HeadsConfig:
    return config_from_flags(HeadsConfig)


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

    # Cheap checks first: a bad manifest or option fails before the model is loaded.
    try:
        options = options_from_flags()
    except ValueError as e:
        sys.exit(error_line(e))
    decode = config_from_flags(DecodeOptions)
    utts = read_manifest(FLAGS.manifest)
    if FLAGS.limit:
        utts = utts[: FLAGS.limit]
    model_path = resolve_model_path(FLAGS.model)
    model = load_model(model_path)
    issues = DataIssues()
    # Every file decoded once before the model runs: a bad one stops here ('raise') or is left out ('record').
    decoded = screen_corpus(utts, FLAGS.manifest, on_error=decode.on_error, keep_audio=False, issues=issues)
    utts = decoded.utts
    analysis = run_heads(model, utts, options, issues=issues)  # progress bar over the batches on a terminal
    with ResultsDir(FLAGS.out, "heads", flags={"model": model_path, "manifest": os.path.abspath(FLAGS.manifest),
                                               "options": dataclasses.asdict(options),
                                               "on_error": decode.on_error}) as res:
        res.run["data_issues"] = issues.as_dict()
        res.run["data_decoding"] = decoded.record()
        text = (f"Model: {model_path}. Manifest: {FLAGS.manifest} ({decoded.summary()}). "
                f"Data: {issues.summary()}.")
        summary = write_heads_results(res, analysis, extra_text=text)
    logging.info("results written to %s", FLAGS.out)
    print(f"heads finished: {len(utts)} utterances -> {FLAGS.out}")
    print("  head types: " + ", ".join(f"{k} {v}" for k, v in summary["type_counts"].items()))
    if "ablation" in summary:
        ab = summary["ablation"]
        print(f"  phone probe frame accuracy (unablated): {ab['baseline_accuracy']:.4f} (95 % CI "
              f"{ab['baseline_ci95'][0]:.4f}-{ab['baseline_ci95'][1]:.4f}; chance {ab['chance']:.4f})")
        for name, r in ab["per_type"].items():
            print(f"  {name} ({r['num_heads']} heads): removed {_fmt(r['remove'])} (random same-size "
                  f"{_fmt(r['random_remove_mean'])}), kept only {_fmt(r['keep_only'])} "
                  f"(random {_fmt(r['random_keep_mean'])})")
    print(f"report: {os.path.join(FLAGS.out, 'report.html')}")
    print(f"explorer: {os.path.join(FLAGS.out, 'explorer', 'index.html')} (or: jaxneurons view {FLAGS.out})")
