"""``jaxneurons scan``: statistics + neuron scoring over a labelled manifest, into a results directory.

    jaxneurons scan --model default --manifest corpus/manifest.jsonl --out results/scan

A killed scan resumes from ``OUT.work/`` when rerun with the same flags. Every setting of the scan
(:class:`~jaxneurons.pipeline.scan.ScanOptions`: properties, property-neuron, speaker / i-vector / SSL-cluster
and AAPE parameters, batching, checkpoint cadence) is a flag generated from that config, with its defaults.
Multi-host: add ``--distributed`` on a TPU VM slice, or ``--coordinator_address --num_processes
--process_id`` elsewhere; each process reads its own shard of the manifest.

Several models in one launch: ``--model`` as a comma list, a glob or ``@file`` (one path or glob per line),
optionally ``--random_twin``:

    jaxneurons scan --model 'models/*,default' --random_twin --manifest corpus/manifest.jsonl --out results/many

The dataset is decoded once and reused; each model's results go to ``OUT/<name>/`` (the single-scan layout),
the comparison to ``OUT/summary.json`` and ``OUT/report.html``; finished models are skipped on rerun and an
interrupted one resumes from ``OUT/<name>.work/``.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import flags, logging

from jaxneurons.config_flags import config_from_flags, define_config_flags, field_help
from jaxneurons.errors import error_line


@dataclasses.dataclass(frozen=True)
class ScanCommand:
    """What ``jaxneurons scan`` runs on, besides the scan's own settings (ScanOptions)."""

    model: str = field_help("default", "jaxneurons model directory, or 'default' for the bundled model; several "
                            "models: a comma list, a glob, or @FILE (one path or glob per line).")
    manifest: str = field_help("", "Labelled manifest (JSONL).")
    out: str = field_help("", "Results directory (written atomically).")
    limit: int = field_help(0, "Scan at most this many utterances (0: all).")
    random_twin: bool = field_help(False, "Also scan a randomly initialised model of each model's config (named "
                                   "<model>-random); implies the multi-model layout.")
    twin_seed: int = field_help(0, "Seed of the random-init twins.")
    cache_audio: bool = field_help(True, "Multi-model scans: hold the decoded audio in memory for the next model "
                                   "(--nocache_audio for corpora too large; F0 and i-vector labels stay cached).")
    null_draws: int = field_help(1000, "Multi-model scans: random sets drawn for the overlap null.")
    distributed: bool = field_help(False, "Initialise jax.distributed from the environment (TPU VM slices).")
    coordinator_address: str = field_help("", "host:port of process 0 for multi-process runs.")
    num_processes: int = field_help(1, "Processes in a multi-process run.")
    process_id: int = field_help(0, "This process's id in a multi-process run.")


def _define_flags() -> None:
    from jaxneurons.data.decoded import DecodeOptions
    from jaxneurons.pipeline.multiscan import SeparationOptions
    from jaxneurons.pipeline.scan import ScanOptions

    define_config_flags(ScanCommand)
    define_config_flags(DecodeOptions)
    define_config_flags(ScanOptions)
    define_config_flags(SeparationOptions, prefix="separation_")


_define_flags()
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    del argv
    from jaxneurons.data.decoded import DecodeOptions
    from jaxneurons.pipeline.multiscan import SeparationOptions
    from jaxneurons.pipeline.scan import ScanOptions

    try:
        cmd = config_from_flags(ScanCommand)
        decode = config_from_flags(DecodeOptions)
        options = config_from_flags(ScanOptions)
        separation = config_from_flags(SeparationOptions, prefix="separation_")
    except ValueError as e:
        sys.exit(error_line(e))  # one line, also for OSErrors
    if not cmd.manifest or not cmd.out:
        sys.exit("error: --manifest and --out are required")
    run_scan_command(cmd, options, separation, decode)


def run_scan_command(cmd: ScanCommand, options, separation, decode=None) -> None:
    """The command's work, callable from Python (the demo uses the same functions)."""
    import jax

    from jaxneurons.assets import resolve_model_path
    from jaxneurons.data import DataIssues, read_manifest
    from jaxneurons.data.decoded import DecodedDataset, DecodeOptions
    from jaxneurons.parallel import init_distributed, make_mesh
    from jaxneurons.pipeline.multiscan import expand_model_list, is_multi_model_arg, model_specs
    from jaxneurons.pipeline.scan import scan

    if cmd.coordinator_address:
        init_distributed(cmd.coordinator_address, cmd.num_processes, cmd.process_id)
    elif cmd.distributed:
        jax.distributed.initialize()  # TPU VM slices and SLURM: the environment names the coordinator
    try:
        utts = read_manifest(cmd.manifest)
    except (OSError, ValueError) as e:
        sys.exit(error_line(e))  # one line, also for OSErrors
    if cmd.limit:
        utts = utts[: cmd.limit]
    issues = DataIssues()
    decode = decode or DecodeOptions()
    # 'record' decodes every file first and leaves the unusable ones out (named in run.json and the report);
    # 'raise' stops at the first one with a single line (jaxneurons.errors at the CLI)
    decoded = DecodedDataset(utts, keep_audio=cmd.cache_audio, issues=issues, on_error=decode.on_error)
    utts = decoded.utts
    mesh = make_mesh() if jax.device_count() > 1 else None
    run_flags = {**dataclasses.asdict(cmd), "manifest": os.path.abspath(cmd.manifest), "on_error": decode.on_error,
                 "data_decoding": decoded.record()}
    multi = cmd.random_twin or is_multi_model_arg(cmd.model)
    try:
        if multi:
            models = model_specs(expand_model_list(cmd.model, resolve_model_path), random_twin=cmd.random_twin,
                                 twin_seed=cmd.twin_seed)
            if jax.process_index() == 0:
                print(f"multi-model scan: {len(models)} models ({', '.join(s.name for s in models)}) x "
                      f"{len(utts)} utterances")
        else:
            models = resolve_model_path(cmd.model)
        result = scan(models, utts, options=options, out_dir=cmd.out, issues=issues, mesh=mesh,
                      separation=separation if multi else None, null_draws=cmd.null_draws, run_flags=run_flags,
                      cache_audio=cmd.cache_audio, decoded=decoded,
                      report_text="" if multi else (f"Model: {models}. Manifest: {cmd.manifest} ({len(utts)} "
                                                    f"utterances). {decoded.summary()}. Data: {issues.summary()}."))
    except (OSError, ValueError) as e:
        sys.exit(error_line(e))  # one line, also for OSErrors
    if jax.process_index() != 0:
        return
    issues.log_summary()  # one line per kind of data decision; per-file detail in run.json
    if decoded.left_out:
        print(decoded.summary())
    logging.info("results written to %s", cmd.out)
    if multi:
        print(f"multi-model scan finished: {len(models)} models x {len(utts)} utterances -> {cmd.out}")
        for name, m in result.summary["models"].items():
            totals = "; ".join(f"{p}: " + ", ".join(f"{g} {n}" for g, n in gs.items())
                               for p, gs in m["totals"].items())
            print(f"  {name}{' (skipped: finished earlier)' if m['skipped'] else ''}: {totals}")
    else:
        print(f"scan finished: {len(utts)} utterances -> {cmd.out}")
        for prop, groups in result.summary["totals"].items():
            print(f"  {prop}: " + ", ".join(f"{g} {n}" for g, n in groups.items()))
    print(f"report: {os.path.join(cmd.out, 'report.html')}")
