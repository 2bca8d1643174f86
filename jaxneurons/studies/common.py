"""What every study starts from: the model and corpus (:class:`DataConfig`), and the editing table (zero a set
of neurons vs random same-size sets, measured by one :class:`~jaxneurons.probes.ProbeSuite`)."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxneurons.config_flags import field_help
from jaxneurons.data.decoded import ON_ERROR, ON_ERROR_HELP


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Model and evaluation corpus of a study: a model directory (or the bundled ``default``) and a manifest,
    or a fresh synthetic espeak-ng corpus (held-out speakers: the default model was trained on seed 1)."""

    model: str = field_help("default", "Model directory (jaxneurons format), or 'default' for the bundled one.")
    manifest: str = field_help("", "Manifest JSONL of the evaluation corpus (any reader's output). Default: "
                               "synthesise an espeak corpus into the work directory.")
    workdir: str = field_help("", "Corpus, scan checkpoints and training work (default: OUT.work).")
    num_speakers: int = field_help(16, "Speakers of the synthetic corpus (without --manifest).")
    minutes: float = field_help(10.0, "Minutes of audio of the synthetic corpus (without --manifest).")
    corpus_seed: int = field_help(12345, "Synthetic corpus seed (the default model was trained on seed 1, so the "
                                  "default evaluates on unheard speakers).")
    languages: tuple[str, ...] = field_help(("en",), "Languages of the synthetic corpus (en, tr).")
    max_utterances: int = field_help(0, "Use at most this many utterances of the manifest (0: all).")
    on_error: str = field_help("raise", ON_ERROR_HELP, choices=ON_ERROR)


@dataclasses.dataclass
class Setup:
    """A study's model, corpus and work directory, and a sentence describing them for the report."""

    model: Any
    model_path: str
    manifest: str
    utts: list
    workdir: str
    description: str
    decoded: Any = None  # DecodedDataset of ``utts`` (screened: every file decoded once), reused by the scan
    issues: Any = None  # DataIssues of the whole run


def corpus_summary(utts: Sequence) -> dict[str, Any]:
    genders: dict[str, int] = {}
    for u in {u.speaker: u for u in utts}.values():
        genders[str(u.gender)] = genders.get(str(u.gender), 0) + 1
    return {"utterances": len(utts), "speakers": len({u.speaker for u in utts}),
            "minutes": round(sum(u.duration for u in utts) / 60, 2), "speakers_per_gender": genders}


def work_dir(config: DataConfig, out_dir: str) -> str:
    path = os.path.abspath(config.workdir or out_dir.rstrip("/") + ".work")
    os.makedirs(path, exist_ok=True)
    return path


def load_setup(config: DataConfig, out_dir: str) -> Setup:
    """Model and corpus of ``config`` (synthesising the corpus unless a manifest is given)."""
    from jaxneurons.assets import resolve_model_path
    from jaxneurons.data import DataIssues, generate_corpus, read_manifest
    from jaxneurons.data.decoded import screen_corpus
    from jaxneurons.models.checkpoint import load_model

    workdir = work_dir(config, out_dir)
    manifest = config.manifest or generate_corpus(os.path.join(workdir, "corpus"), config.num_speakers,
                                                  config.minutes, list(config.languages), seed=config.corpus_seed,
                                                  progress=False)
    utts = read_manifest(manifest)
    if config.max_utterances:
        utts = utts[: config.max_utterances]
    if not utts:
        raise ValueError(f"{manifest}: no utterances")
    # Every file decoded once before any model runs: a bad one stops here ('raise') or is left out ('record').
    issues = DataIssues()
    decoded = screen_corpus(utts, manifest, on_error=config.on_error, issues=issues)
    utts = decoded.utts
    model_path = resolve_model_path(config.model)
    model = load_model(model_path)
    cfg = model.config
    info = corpus_summary(utts)
    source = "manifest" if config.manifest else "synthetic espeak corpus"
    description = (f"Model: {model_path} ({cfg.family}, {cfg.num_hidden_layers} layers, {cfg.intermediate_size} "
                   f"FFN neurons per layer). Data: {source} {manifest} ({info['utterances']} utterances, "
                   f"{info['speakers']} speakers, {info['minutes']} min; {decoded.summary()}).")
    return Setup(model, model_path, manifest, utts, workdir, description, decoded, issues)


@dataclasses.dataclass
class StudyScan:
    """A study's first step: its set-up and one scan of its corpus, with the decoded corpus the later steps reuse
    (audio, i-vector groups, labels) and the data decisions of the whole run (:class:`~jaxneurons.data.DataIssues`).
    """

    setup: Setup
    options: Any  # ScanOptions
    decoded: Any  # DecodedDataset
    issues: Any  # DataIssues
    result: Any  # ScanResult


def scan_study(data: DataConfig, out_dir: str, options: Any, *, name: str, banner: str,
               pruning: Any = None, probes: Any = None) -> StudyScan:
    """Load the study's model and corpus (:func:`load_setup`) and scan them with ``options`` (resumable, in
    ``WORKDIR/scan-<name>``). What would fail later fails first, before the scan: ``pruning`` (a PruningConfig:
    continued pre-training needs the model's target recipe) and ``probes`` (a ProbeSuiteConfig: its splits must
    exist on this corpus). ``banner`` is the step's progress line (``{utterances}``: the corpus size)."""
    from jaxneurons.pipeline.scan import scan

    setup = load_setup(data, out_dir)
    if pruning is not None:
        from jaxneurons.studies.pruning import check_cpt_targets

        check_cpt_targets(pruning, setup.model_path)
    if probes is not None:
        from jaxneurons.probes import ProbeSuite

        ProbeSuite(setup.utts, probes)
    decoded, issues = setup.decoded, setup.issues
    print(banner.format(utterances=len(setup.utts)), file=sys.stderr, flush=True)
    result = scan(setup.model, setup.utts, options=options, work_dir=os.path.join(setup.workdir, f"scan-{name}"),
                  model_id=setup.model_path, decoded=decoded, issues=issues)
    return StudyScan(setup, options, decoded, issues, result)


def flat_metrics(results: Mapping[str, dict], rename: Mapping[str, str] | None = None) -> dict[str, float]:
    """ProbeSuite results -> ``{"task": value, "task class": per-class value}`` (class names renamed)."""
    rename = rename or {}
    out: dict[str, float] = {}
    for task, r in results.items():
        out[task] = r["value"]
        for c, v in r.get("per_class", {}).items():
            out[f"{task} {rename.get(c, c)}"] = v
    return out


def editing_table(model: Any, suite: Any, sets: Any, rows: Mapping[str, Sequence[str]], *, random_controls: int,
                  seed: int, exclude: Any = None,
                  columns: Callable[[Mapping[str, dict]], dict[str, float]] = flat_metrics) -> dict[str, Any]:
    """Zero each row's neurons (``rows``: label -> set names of ``sets``, a NeuronSets) vs ``random_controls``
    random same-size sets drawn outside ``exclude`` (default: every set); the suite's probes (fit on the clean
    model) measure each column (``columns`` flattens a ProbeSuite result). Rows without neurons are not run
    (zeroing nothing measures nothing) and are listed in ``empty``."""
    clean = columns(suite.evaluate(model))
    exclude = sets.selection() if exclude is None else exclude
    out: dict[str, Any] = {"clean": clean, "columns": list(clean), "rows": [], "empty": [], "sizes": {},
                           "ablated": {}, "random": {}, "drop": {}, "random_drop": {}, "specific_drop": {},
                           "random_controls": random_controls}
    for k, (label, names) in enumerate(rows.items()):
        size = sets.size(list(names))
        out["sizes"][label] = size
        if size == 0:
            out["empty"].append(label)
            continue
        out["rows"].append(label)
        ablated = columns(suite.evaluate(model, sets.to_ablation(model, list(names), label=label)))
        randoms = []
        for c in range(random_controls):
            ctrl = sets.random_control(list(names), seed + 1000 + 100 * k + c, exclude=exclude)
            control = sets.selection_ablation(model, ctrl, label=f"{label} (random)")
            randoms.append(columns(suite.evaluate(model, control)))
        rand = {col: float(np.mean([r.get(col, np.nan) for r in randoms])) for col in clean}
        out["ablated"][label], out["random"][label] = ablated, rand
        out["drop"][label] = {c: clean[c] - ablated.get(c, np.nan) for c in clean}
        out["random_drop"][label] = {c: clean[c] - rand[c] for c in clean}
        out["specific_drop"][label] = {c: out["drop"][label][c] - out["random_drop"][label][c] for c in clean}
    return out
