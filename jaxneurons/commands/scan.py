"""``jaxneurons scan``: statistics + neuron scoring over a labelled manifest, into a results directory.

    jaxneurons scan --model default --manifest corpus/manifest.jsonl --out results/scan

A killed scan resumes from ``OUT.work/stats.npz`` when rerun with the same flags.
Multi-host: add ``--distributed`` on a TPU VM slice, or ``--coordinator_address --num_processes
--process_id`` elsewhere; each process reads its own shard of the manifest.

Several models in one launch (:mod:`jaxneurons.pipeline.multiscan`): ``--model`` as a comma list, a glob or
``@file`` (one path or glob per line), optionally ``--random_twin``:

    jaxneurons scan --model 'models/*,default' --random_twin --manifest corpus/manifest.jsonl --out results/many

The dataset is decoded once and reused; each model's results go to ``OUT/<name>/`` (the single-scan layout),
the comparison to ``OUT/summary.json`` and ``OUT/report.html``; finished models are skipped on rerun and an
interrupted one resumes from ``OUT/<name>.work/stats.npz``. ``--nocache_audio`` decodes audio again for each
model instead of holding the corpus in memory.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags, logging

from jaxneurons.assets import resolve_model_path
from jaxneurons.data import DataIssues, read_manifest
from jaxneurons.pipeline.multiscan import (
    SeparationOptions,
    expand_model_list,
    is_multi_model_arg,
    model_specs,
    run_multiscan,
)
from jaxneurons.pipeline.scan import ScanOptions, plan_scan, scan_fingerprint, scan_statistics, score
from jaxneurons.pipeline.scan_report import write_scan_results
from jaxneurons.results import ResultsDir

flags.DEFINE_string("model", "default", "jaxneurons model directory, or 'default' for the bundled model; several "
                    "models: a comma list, a glob, or @FILE (one path or glob per line).")
flags.DEFINE_bool("random_twin", False, "Also scan a randomly initialised model of each model's config "
                  "(named <model>-random); implies the multi-model layout.")
flags.DEFINE_integer("twin_seed", 0, "Seed of the random-init twins.")
flags.DEFINE_bool("cache_audio", True, "Multi-model scans: hold the decoded audio in memory for the next model "
                  "(--nocache_audio for corpora too large; F0 and i-vector labels stay cached).")
flags.DEFINE_bool("separation", True, "Multi-model scans: silhouette of phone-middle frames by phone type and "
                  "gender, per layer, on a seeded subsample.")
flags.DEFINE_integer("null_draws", 1000, "Multi-model scans: random sets drawn for the overlap null.")
flags.DEFINE_string("manifest", None, "Labelled manifest (JSONL).")
flags.DEFINE_string("out", None, "Results directory (written atomically).")
flags.DEFINE_list("properties", list(ScanOptions.properties),
                  "phone_type, gender, pitch (arXiv 2409.05910), aape:LABEL (arXiv 2602.15307), selective:LABEL.")
flags.DEFINE_enum("frames", "mid", ["mid", "all"], "Phone frames counted: middle frame of each phone (paper) or all.")
flags.DEFINE_float("rho", 0.01, "Top-k fraction per frame (1 %).")
flags.DEFINE_float("sigma", 0.8, "Property-neuron threshold on the fraction of a group's cells (0.8).")
flags.DEFINE_list("pitch_edges", [], "Fixed pitch-bin edges in Hz (e.g. 129.03,179.78); default: 33/66th "
                  "percentiles of the scanned data.")
flags.DEFINE_integer("batch_size", 8, "Utterances per batch (per process).")
flags.DEFINE_integer("limit", 0, "Scan at most this many utterances (0: all).")
flags.DEFINE_bool("distributed", False, "Initialise jax.distributed from the environment (TPU VM slices).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process runs.")
flags.DEFINE_integer("num_processes", 1, "Processes in a multi-process run.")
flags.DEFINE_integer("process_id", 0, "This process's id in a multi-process run.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.manifest or not FLAGS.out:
        sys.exit("error: --manifest and --out are required")
    import jax

    from jaxneurons.parallel import init_distributed, make_mesh

    if FLAGS.coordinator_address:
        init_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    elif FLAGS.distributed:
        jax.distributed.initialize()  # TPU VM slices and SLURM: the environment names the coordinator

    from jaxneurons.models.checkpoint import load_model

    utts = read_manifest(FLAGS.manifest)
    if FLAGS.limit:
        utts = utts[: FLAGS.limit]
    options = ScanOptions(
        properties=tuple(FLAGS.properties), frames=FLAGS.frames, rho=FLAGS.rho, sigma=FLAGS.sigma,
        pitch_edges=tuple(float(x) for x in FLAGS.pitch_edges) if FLAGS.pitch_edges else None,
        batch_size=FLAGS.batch_size,
    )
    issues = DataIssues()
    if FLAGS.random_twin or is_multi_model_arg(FLAGS.model):
        _multi(utts, options, issues)
        return
    model_path = resolve_model_path(FLAGS.model)
    model = load_model(model_path)
    plan = plan_scan(model, utts, options, issues)
    work = FLAGS.out.rstrip("/") + ".work"
    os.makedirs(work, exist_ok=True)
    mesh = make_mesh() if jax.device_count() > 1 else None
    stats = scan_statistics(
        model, utts, plan, checkpoint_path=os.path.join(work, "stats.npz"),
        fingerprint=scan_fingerprint(os.path.abspath(model_path), utts, options), mesh=mesh,
        process_index=jax.process_index(), process_count=jax.process_count(), issues=issues,
    )
    scored = score(stats, plan)
    if jax.process_index() != 0:
        return
    with ResultsDir(FLAGS.out, "scan", flags={"model": model_path, "manifest": os.path.abspath(FLAGS.manifest),
                                              "options": dataclasses.asdict(options)}) as res:
        res.run["data_issues"] = issues.as_dict()
        text = f"Model: {model_path}. Manifest: {FLAGS.manifest} ({len(utts)} utterances). Data: {issues.summary()}."
        summary, report = write_scan_results(res, plan, stats, scored, extra_text=text)
        report.write(res.tmp)
    logging.info("results written to %s", FLAGS.out)
    totals = summary["totals"]
    print(f"scan finished: {len(utts)} utterances -> {FLAGS.out}")
    for prop, groups in totals.items():
        print(f"  {prop}: " + ", ".join(f"{g} {n}" for g, n in groups.items()))
    print(f"report: {os.path.join(FLAGS.out, 'report.html')}")


def _multi(utts: list, options: ScanOptions, issues: DataIssues) -> None:
    """Many models x one dataset: OUT/<name>/ per model, OUT/summary.json + report comparing them."""
    import jax

    from jaxneurons.parallel import make_mesh

    specs = model_specs(expand_model_list(FLAGS.model, resolve_model_path), random_twin=FLAGS.random_twin,
                        twin_seed=FLAGS.twin_seed)
    if jax.process_index() == 0:
        print(f"multi-model scan: {len(specs)} models ({', '.join(s.name for s in specs)}) x {len(utts)} utterances")
    mesh = make_mesh() if jax.device_count() > 1 else None
    run_flags = {"model": FLAGS.model, "manifest": os.path.abspath(FLAGS.manifest), "random_twin": FLAGS.random_twin,
                 "twin_seed": FLAGS.twin_seed, "cache_audio": FLAGS.cache_audio, "limit": FLAGS.limit}
    summary = run_multiscan(
        specs, utts, options, FLAGS.out, cache_audio=FLAGS.cache_audio,
        separation=SeparationOptions(enabled=FLAGS.separation), null_draws=FLAGS.null_draws, mesh=mesh,
        process_index=jax.process_index(), process_count=jax.process_count(), issues=issues, run_flags=run_flags,
    )
    if summary is None:
        return
    logging.info("results written to %s", FLAGS.out)
    print(f"multi-model scan finished: {len(specs)} models x {len(utts)} utterances -> {FLAGS.out}")
    for name, m in summary["models"].items():
        totals = "; ".join(f"{p}: " + ", ".join(f"{g} {n}" for g, n in gs.items()) for p, gs in m["totals"].items())
        state = " (skipped: finished earlier)" if m["skipped"] else ""
        print(f"  {name}{state}: {totals}")
    print(f"report: {os.path.join(FLAGS.out, 'report.html')}")
