"""``jaxneurons scan``: statistics + neuron scoring over a labelled manifest, into a results directory.

    jaxneurons scan --model default --manifest corpus/manifest.jsonl --out results/scan

A killed scan resumes from ``OUT.work/stats.npz`` when rerun with the same flags.
Multi-host: add ``--distributed`` on a TPU VM slice, or ``--coordinator_address --num_processes
--process_id`` elsewhere; each process reads its own shard of the manifest.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags, logging

from jaxneurons.assets import resolve_model_path
from jaxneurons.data import DataIssues, read_manifest
from jaxneurons.pipeline.scan import ScanOptions, plan_scan, scan_fingerprint, scan_statistics, score
from jaxneurons.pipeline.scan_report import write_scan_results
from jaxneurons.results import ResultsDir

flags.DEFINE_string("model", "default", "jaxneurons model directory, or 'default' for the bundled model.")
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

    model_path = resolve_model_path(FLAGS.model)
    model = load_model(model_path)
    utts = read_manifest(FLAGS.manifest)
    if FLAGS.limit:
        utts = utts[: FLAGS.limit]
    options = ScanOptions(
        properties=tuple(FLAGS.properties), frames=FLAGS.frames, rho=FLAGS.rho, sigma=FLAGS.sigma,
        pitch_edges=tuple(float(x) for x in FLAGS.pitch_edges) if FLAGS.pitch_edges else None,
        batch_size=FLAGS.batch_size,
    )
    issues = DataIssues()
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
