"""Tasks over one or two corpora, shared by the AAPE and modularity studies (arXiv 2602.15307, 2408.17324).

A *task* is an utterance label (``gender``, ``speaker``, ``language``, a manifest ``labels`` key, or ``KEY/N``: a
numeric label cut into N quantile bins). :func:`label_corpora` joins corpora A and B into one list of utterances
with derived labels ``{corpus}.{task}`` (so one scan pass scores each corpus's classes separately), and
:func:`scan_models` scans a model and its random-init twin over it through :func:`jaxneurons.scan`.
Gender classes are ``male`` / ``female`` (the one spelling of every result).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxneurons.config_flags import field_help
from jaxneurons.data.decoded import ON_ERROR, ON_ERROR_HELP

BUILTIN_KEYS = ("gender", "speaker", "language")
CORPUS_KEY = "corpus"  # pseudo-label: which corpus (A / B) an utterance comes from


@dataclasses.dataclass(frozen=True)
class CorporaConfig:
    """The model and two corpora (A, B) of a study: manifests, or synthetic espeak-ng corpora (16 speakers and 10
    minutes each, English + Turkish, scaled to a 2-core CPU; seeds other than the default model's training seed)."""

    model: str = field_help("default", "Model directory, or 'default' for the bundled model.")
    workdir: str = field_help("", "Corpora and scan checkpoints (default: OUT.work).")
    manifest: str = field_help("", "Corpus A manifest (default: synthesise one with espeak-ng).")
    manifest_b: str = field_help("", "Corpus B manifest (default: synthesise one with --seed_b when corpus A is "
                                 "synthetic; none when --manifest is given without it).")
    num_speakers: int = field_help(16, "Pseudo-speakers per synthetic corpus.")
    minutes: float = field_help(10.0, "Minutes of audio per synthetic corpus.")
    languages: tuple[str, ...] = field_help(("en", "tr"), "Languages of the synthetic corpora (en, tr).")
    seed: int = field_help(12345, "Corpus A seed (the default model was trained on seed 1); also probe split, "
                           "probe init and random controls.")
    seed_b: int = field_help(54321, "Corpus B seed (other speakers, accents, variants, pitch settings).")
    on_error: str = field_help("raise", ON_ERROR_HELP, choices=ON_ERROR)


@dataclasses.dataclass(frozen=True)
class Task:
    """One utterance-level classification task: a label key, optionally cut into quantile bins."""

    key: str
    bins: int = 0  # 0: categorical; N: numeric label in N quantile bins

    @classmethod
    def parse(cls, spec: str) -> Task:
        key, _, n = spec.strip().partition("/")
        if not key or (n and (not n.isdigit() or int(n) < 2)):
            raise ValueError(f"task {spec!r}: use KEY or KEY/N with N >= 2")
        return cls(key, int(n) if n else 0)

    @property
    def spec(self) -> str:
        return f"{self.key}/{self.bins}" if self.bins else self.key

    @property
    def slug(self) -> str:
        """Name safe for condition names and files."""
        return f"{self.key}_q{self.bins}" if self.bins else self.key


def raw_value(u: Any, key: str) -> object:
    """An utterance's value of ``key``: a manifest field or an entry of its ``labels``; gender as male / female."""
    if key == "gender":
        from jaxneurons.pipeline.labels import GENDER_NAMES

        return GENDER_NAMES.get(u.gender) if u.gender else None
    if key in BUILTIN_KEYS + ("utt_id",):
        return getattr(u, key)
    return u.labels.get(key)


def bin_edges(utts: Sequence[Any], task: Task) -> list[float] | None:
    """Interior quantile edges of a numeric label (over utterances), or None for a categorical task."""
    if not task.bins:
        return None
    vals = np.array([float(v) for u in utts if (v := raw_value(u, task.key)) is not None], np.float64)
    if vals.size == 0:
        raise ValueError(f"task {task.spec!r}: no utterance has a value for {task.key!r}")
    return np.quantile(vals, np.arange(1, task.bins) / task.bins).tolist()


def class_of(u: Any, task: Task, edges: Sequence[float] | None) -> str | None:
    """The class name of an utterance for a task (``q1`` .. ``qN`` for binned tasks), None if unknown."""
    v = raw_value(u, task.key)
    if v is None or v == "":
        return None
    if not task.bins:
        return str(v)
    return f"q{int(np.digitize(float(v), edges, right=True)) + 1}"


def bin_names(task: Task, edges: Sequence[float] | None) -> dict[str, str]:
    """Readable ranges of quantile bins: {'q1': '<= 50', 'q2': '> 50'}."""
    if not task.bins:
        return {}
    out = {}
    for k in range(task.bins):
        lo = f"> {edges[k - 1]:g}" if k > 0 else ""
        hi = f"<= {edges[k]:g}" if k < len(edges) else ""
        out[f"q{k + 1}"] = " and ".join(s for s in (lo, hi) if s)
    return out


def condition_key(corpus: str, task: Task) -> str:
    return f"{corpus}.{task.slug}"


def label_corpora(corpora: Mapping[str, Sequence[Any]], tasks: Mapping[str, Sequence[Task]],
                  edges: Mapping[str, list[float] | None]) -> tuple[list[Any], dict[str, Any]]:
    """One list of utterances from several corpora, with derived labels ``{corpus}.{task}``.

    Utterance and speaker ids get a ``{corpus}/`` prefix (two synthetic corpora reuse ids such as
    ``syn-en-000``); a task of corpus A is None on corpus B's utterances, so its classes never mix corpora.
    Returns (utterances, {condition key: number of classes found}).
    """
    out = []
    classes: dict[str, set] = {condition_key(c, t): set() for c, ts in tasks.items() for t in ts}
    for name, utts in corpora.items():
        for u in utts:
            labels = dict(u.labels) | dict.fromkeys(classes)  # other corpora's tasks: None (not counted)
            labels[CORPUS_KEY] = name
            for t in tasks.get(name, ()):
                value = class_of(u, t, edges.get(t.spec))
                labels[condition_key(name, t)] = value
                if value is not None:
                    classes[condition_key(name, t)].add(value)
            out.append(dataclasses.replace(u, utt_id=f"{name}/{u.utt_id}", labels=labels,
                                           speaker=None if u.speaker is None else f"{name}/{u.speaker}"))
    return out, {k: len(v) for k, v in classes.items()}


def usable_tasks(corpora: Mapping[str, Sequence[Any]], specs: Mapping[str, Sequence[str]],
                 edges_from: Sequence[Any]) -> tuple[dict[str, list[Task]], dict[str, list[float] | None],
                                                     dict[str, str]]:
    """Parse task specs per corpus; drop (with a reason) tasks a corpus cannot support (< 2 classes).

    Bin edges come from ``edges_from`` (corpus A), so binned classes mean the same range in every corpus.
    """
    tasks: dict[str, list[Task]] = {}
    edges: dict[str, list[float] | None] = {}
    skipped: dict[str, str] = {}
    for corpus, names in specs.items():
        tasks[corpus] = []
        for spec in names:
            task = Task.parse(spec)
            try:
                if task.spec not in edges:
                    edges[task.spec] = bin_edges(edges_from, task)
                values = {class_of(u, task, edges[task.spec]) for u in corpora[corpus]} - {None}
            except (ValueError, TypeError) as e:
                skipped[f"{corpus}.{task.spec}"] = str(e)
                continue
            if len(values) < 2:
                skipped[f"{corpus}.{task.spec}"] = f"{len(values)} class(es) in corpus {corpus}"
                continue
            tasks[corpus].append(task)
    return tasks, edges, skipped


class ScreenedUtterances(list):
    """The usable utterances of a manifest (a list), with how they were screened: ``decoding`` (the JSON of
    :meth:`~jaxneurons.data.decoded.DecodedDataset.record`, for run.json) and ``summary`` (its report line)."""

    def __init__(self, utts: Sequence[Any], decoding: dict[str, Any], summary: str):
        super().__init__(utts)
        self.decoding, self.summary = decoding, summary


def screened_corpus(manifest: str, on_error: str = "raise") -> tuple[str, ScreenedUtterances]:
    """(absolute manifest path, its usable utterances): every file decoded once before any model runs; an
    unusable one stops the study (``on_error='raise'``) or is left out, named on stderr and recorded in the
    utterances' ``decoding`` (``'record'``)."""
    from jaxneurons.data import read_manifest
    from jaxneurons.data.decoded import screen_corpus

    decoded = screen_corpus(read_manifest(manifest), manifest, on_error=on_error, keep_audio=False)
    return os.path.abspath(manifest), ScreenedUtterances(decoded.utts, decoded.record(), decoded.summary())


def make_corpora(work: str, manifest: str | None, manifest_b: str | None, *, want_b: bool, num_speakers: int,
                 minutes: float, languages: Sequence[str], seed: int, seed_b: int,
                 on_error: str = "raise") -> dict[str, tuple[str, list]]:
    """{'A': (manifest, utts)[, 'B': ...]}: given manifests, or synthetic espeak corpora made in ``work``; each
    screened with ``on_error`` (:func:`screened_corpus`)."""
    from jaxneurons.data import generate_corpus

    paths = {}
    paths["A"] = manifest or generate_corpus(os.path.join(work, f"corpus-A-seed{seed}"), num_speakers, minutes,
                                             list(languages), seed=seed, progress=False)
    if manifest_b:
        paths["B"] = manifest_b
    elif want_b and not manifest:
        paths["B"] = generate_corpus(os.path.join(work, f"corpus-B-seed{seed_b}"), num_speakers, minutes,
                                     list(languages), seed=seed_b, progress=False)
    return {k: screened_corpus(p, on_error) for k, p in paths.items()}


def load_models(model_arg: str, twin: bool, twin_seed: int) -> tuple[str, dict[str, Any]]:
    """(model path, {'trained': model[, 'random-init': a randomly initialised model of its config]})."""
    from jaxneurons.assets import resolve_model_path
    from jaxneurons.models import build_model
    from jaxneurons.models.checkpoint import load_model

    path = resolve_model_path(model_arg)
    model = load_model(path)
    models = {"trained": model}
    if twin:
        models["random-init"] = build_model(model.config, seed=twin_seed)
    return path, models


def scan_models(models: Mapping[str, Any], utts: Sequence[Any], options: Any, work: str) -> tuple[Any, Any, dict]:
    """One resumable :func:`jaxneurons.scan` per model over the same decoded data: (issues, decoded,
    {name: ScanResult}); checkpoints in ``work/scans/<name>/``."""
    from jaxneurons.data import DataIssues
    from jaxneurons.pipeline.scan import DecodedDataset, scan

    issues = DataIssues()
    decoded = DecodedDataset(utts, issues=issues)
    multi = scan(dict(models), utts, options=options, work_dir=os.path.join(work, "scans"), decoded=decoded,
                 issues=issues)
    return issues, decoded, multi.results


def run_scans(models: Mapping[str, Any], utts: Sequence[Any], options: Any, work: str, model_path: str = "",
              twin_seed: int = 0) -> tuple[Any, dict[str, tuple[Any, Any, dict]]]:
    """:func:`scan_models` as ((issues, decoded), {name: (plan, stats, scored)})."""
    del model_path, twin_seed  # in-memory models are identified by a hash of their weights
    issues, decoded, results = scan_models(models, utts, options, work)
    return (issues, decoded), {n: (r.plan, r.stats, r.scored) for n, r in results.items()}


def write_scan_dirs(res: Any, scans: Mapping[str, Any], text: str) -> None:
    """A complete scan results directory (neurons.json, counts, its own report) per model inside ``res``
    (``scans``: {name: ScanResult} or {name: (plan, stats, scored)})."""
    from jaxneurons.pipeline.scan_report import write_scan_results
    from jaxneurons.results import ResultsDir

    for name, scanned in scans.items():
        plan, stats, scored = (scanned.plan, scanned.stats, scanned.scored) if hasattr(scanned, "plan") else scanned
        with ResultsDir(os.path.join(res.tmp, f"scan-{name}"), "scan") as sub:
            _, report = write_scan_results(sub, plan, stats, scored, extra_text=f"{name} model. {text}")
            report.write(sub.tmp)


def fmt(x: Any, digits: int = 3) -> str:
    """Numbers for tables; NaN (0/0: an empty set) as n/a."""
    if x is None:
        return "n/a"
    x = float(x)
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def safe_name(name: str) -> str:
    """A file-name-safe version of a task / set name."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def parse_layer(arg: str) -> int | str:
    return arg if arg == "all" else int(arg)
