"""Study 3: class-specific neurons by activation-probability entropy (AAPE, arXiv 2602.15307, after LAPE).

    python -m experiments.aape --out results/aape                      # bundled model + synthetic corpora
    python -m experiments.aape --out OUT --model DIR --manifest A.jsonl [--manifest_b B.jsonl] --tasks gender,speaker

What it computes (AAPE: ``h > 0`` counts per class, LAPE entropy selection, top_rate 1 %, filter_rate and
activation_bar_ratio 0.95; :func:`jaxneurons.scoring.entropy.lape_neurons` through the scan pipeline):

1. **Class coverage per task**: for every task (an utterance label: ``gender``, ``speaker``, ``language``, a
   manifest ``labels`` key such as ``voice`` / ``accent``, or ``KEY/N`` = a numeric label cut into N quantile
   bins, e.g. ``pitch_setting/2`` = low / high espeak pitch setting), the fraction of its classes with at least
   one class-specific neuron, the neurons selected and their layer profile.
2. **Shared-neuron ratios across two tasks with a common attribute** (the paper's gender in VoxCeleb1 vs
   CREMA-D, octave in two synthesisers): each ``--shared_tasks`` task is scored separately on corpus A and
   corpus B (by default two synthetic corpora with different seeds: other speakers, accents, variants and
   pitch settings; or ``--manifest_b``). Shared ratio of class c of A with class c' of B = ``|A_c ∩ B_c'| /
   |A_c|`` (and the IoU), against a shuffled-set null (random sets with the same per-layer sizes). Numeric
   bins use corpus A's edges for both corpora, so "low" means the same setting range. The report also gives
   the containment matrix between the classes of all tasks of corpus A (shared responses across tasks).
3. **Ablation**: a linear utterance classifier per task (mean-pooled frames of ``--probe_layer``) trained on
   the unablated model; then each class's neurons are zeroed (``h * 0`` after the activation) and the probe's
   per-class test accuracy is compared with zeroing ``--random_controls`` random sets of the same size per
   layer (drawn outside the task's class-specific neurons). Split: speaker-disjoint (stratified by class)
   when every class has >= 3 speakers, otherwise utterance-disjoint within speakers (speakers with < 3
   utterances left out; recorded per task).
4. **Trained vs random-init twin**: the paper contrasts a self-supervised with a supervised model; with one
   checkpoint the available contrast is a randomly initialised model of the same config (labelled as such
   everywhere): its coverage, layer profile and the overlap of its class sets with the trained model's.

Everything comes from ONE scan pass per model over corpus A + corpus B (each corpus's tasks are separate
condition sets, so A's and B's classes never mix). Corpora and scan checkpoints go to ``--workdir``
(default ``OUT.work``); reruns reuse the corpora and resume interrupted scans.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BUILTIN_KEYS = ("gender", "speaker", "language")
CORPUS_KEY = "corpus"  # pseudo-label: which corpus (A / B) an utterance comes from


def define_corpus_flags(corpus_b_role: str, seed_role: str) -> None:
    """Model, output and the two corpora (A, B): the flags aape.py and modularity.py share."""
    from absl import flags

    flags.DEFINE_string("out", None, "Results directory (written atomically).")
    flags.DEFINE_string("workdir", None, "Corpora and scan checkpoints (default: OUT.work).")
    flags.DEFINE_string("model", "default", "Model directory, or 'default' for the bundled model.")
    flags.DEFINE_string("manifest", None, "Corpus A manifest (default: synthesise one with espeak-ng).")
    flags.DEFINE_string("manifest_b", None, f"Corpus B manifest, {corpus_b_role} (default: synthesise one with "
                        "--seed_b when corpus A is synthetic; none when --manifest is given without it).")
    flags.DEFINE_integer("num_speakers", 16, "Pseudo-speakers per synthetic corpus (scaled to a 2-core CPU).")
    flags.DEFINE_float("minutes", 10.0, "Minutes of audio per synthetic corpus (scaled to a 2-core CPU).")
    flags.DEFINE_list("languages", ["en", "tr"], "Languages of the synthetic corpora (en, tr).")
    flags.DEFINE_integer("seed", 12345, f"Corpus A seed (the default model was trained on seed 1); {seed_role}.")
    flags.DEFINE_integer("seed_b", 54321, "Corpus B seed (other speakers, accents, variants, pitch settings).")


def define_flags() -> None:
    """Flags are defined only when run as a launcher, so the helpers can be imported next to other launchers."""
    from absl import flags

    define_corpus_flags("for the shared-neuron analysis", "also probe split, probe init and random controls")
    flags.DEFINE_list("tasks", ["gender", "language", "pitch_setting/2", "speaker", "voice"],
                      "Tasks on corpus A: gender, speaker, language, a manifest labels key, or KEY/N (numeric "
                      "label in N quantile bins). Tasks a manifest lacks are skipped and reported.")
    flags.DEFINE_list("shared_tasks", ["gender", "pitch_setting/2"],
                      "Tasks scored on corpus A and corpus B separately, for shared-neuron ratios.")
    flags.DEFINE_float("top_rate", 0.01, "AAPE/LAPE: fraction of all neurons kept (paper: 1 %).")
    flags.DEFINE_float("filter_rate", 0.95, "AAPE/LAPE: quantile of p below which a neuron is dismissed (0.95).")
    flags.DEFINE_float("activation_bar_ratio", 0.95, "AAPE/LAPE: quantile a class's p must exceed (0.95).")
    flags.DEFINE_bool("random_init_twin", True, "Also scan a randomly initialised model of the same config.")
    flags.DEFINE_integer("twin_seed", 0, "Seed of the random-init twin.")
    flags.DEFINE_bool("ablation", True, "Run the per-class ablation with probes.")
    flags.DEFINE_bool("twin_ablation", False, "Also run the ablation on the random-init twin (own probes).")
    flags.DEFINE_list("ablation_tasks", [], "Tasks to ablate (default: all corpus-A tasks).")
    flags.DEFINE_string("probe_layer", "-1", "hidden_states index the probes read, or 'all' (weighted sum).")
    flags.DEFINE_integer("random_controls", 3, "Random same-size neuron sets per class ablation (averaged).")
    flags.DEFINE_integer("probe_max_epochs", 200, "Probe epochs (early stopping on the dev loss).")
    flags.DEFINE_integer("probe_min_steps", 300, "Minimum probe updates.")
    flags.DEFINE_integer("null_draws", 1000, "Shuffled-set null draws per overlap.")
    flags.DEFINE_integer("batch_size", 8, "Utterances per batch (scan and feature extraction).")


# ------------------------------------------------------------------------------------------------ tasks and data


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
    """An utterance's value of ``key``: a manifest field or an entry of its ``labels``."""
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


def make_corpora(work: str, manifest: str | None, manifest_b: str | None, *, want_b: bool, num_speakers: int,
                 minutes: float, languages: Sequence[str], seed: int, seed_b: int) -> dict[str, tuple[str, list]]:
    """{'A': (manifest, utts)[, 'B': ...]}: given manifests, or synthetic espeak corpora made in ``work``."""
    from jaxneurons.data import generate_corpus, read_manifest

    paths = {}
    paths["A"] = manifest or generate_corpus(os.path.join(work, f"corpus-A-seed{seed}"), num_speakers, minutes,
                                             list(languages), seed=seed, progress=False)
    if manifest_b:
        paths["B"] = manifest_b
    elif want_b and not manifest:
        paths["B"] = generate_corpus(os.path.join(work, f"corpus-B-seed{seed_b}"), num_speakers, minutes,
                                     list(languages), seed=seed_b, progress=False)
    return {k: (os.path.abspath(p), read_manifest(p)) for k, p in paths.items()}


def load_models(model_arg: str, twin: bool, twin_seed: int) -> tuple[str, dict[str, Any]]:
    """(model path, {'trained': model[, 'random-init': twin]})."""
    from jaxneurons.assets import resolve_model_path
    from jaxneurons.models import build_model
    from jaxneurons.models.checkpoint import load_model

    path = resolve_model_path(model_arg)
    model = load_model(path)
    models = {"trained": model}
    if twin:
        models["random-init"] = build_model(model.config, seed=twin_seed)
    return path, models


def run_scans(models: Mapping[str, Any], utts: Sequence[Any], options: Any, work: str, model_path: str,
              twin_seed: int) -> tuple[Any, dict[str, tuple[Any, Any, dict]]]:
    """One resumable scan per model over the same decoded data: {name: (plan, stats, scored)}."""
    from jaxneurons.data import DataIssues
    from jaxneurons.pipeline.scan import DecodedDataset, plan_scan, scan_fingerprint, scan_statistics, score

    issues = DataIssues()
    decoded = DecodedDataset(utts, issues=issues)
    out = {}
    for name, model in models.items():
        model_id = model_path if name == "trained" else f"random-init(config of {model_path}, seed {twin_seed})"
        plan = plan_scan(model, utts, options, issues, decoded=decoded)
        fingerprint = scan_fingerprint(model_id, utts, options)
        # One checkpoint per (model, data, options): launchers sharing a workdir never resume each other's scans.
        tag = hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
        ckpt = os.path.join(work, f"scan-{name}-{tag}", "stats.npz")
        stats = scan_statistics(model, utts, plan, checkpoint_path=ckpt, fingerprint=fingerprint, issues=issues,
                                decoded=decoded, progress_label=f"scan ({name})")
        out[name] = (plan, stats, score(stats, plan))
    return (issues, decoded), out


def write_scan_dirs(res: Any, scans: Mapping[str, tuple], text: str) -> None:
    """A complete scan results directory (neurons.json, counts, its own report) per model inside ``res``."""
    from jaxneurons.pipeline.scan_report import write_scan_results
    from jaxneurons.results import ResultsDir

    for name, (plan, stats, scored) in scans.items():
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


# ------------------------------------------------------------------------------------------------ analyses


def coverage_rows(scored: Mapping[str, dict], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per task: classes, classes with >= 1 specific neuron, coverage, neurons selected, per-layer profile."""
    rows = []
    for key in keys:
        res = scored[f"aape:{key}"]
        masks = np.stack(list(res["groups"].values()))  # (C, L, D)
        per_class = masks.reshape(len(masks), -1).sum(1)
        union = masks.any(0)
        rows.append({"task": key, "classes": len(masks), "covered": int((per_class > 0).sum()),
                     "coverage": float(res["coverage"]), "selected": int(np.asarray(res["selected"]).sum()),
                     "class_specific_union": int(union.sum()), "per_layer": union.sum(1).astype(int).tolist(),
                     "neurons_per_class": dict(zip(res["groups"], per_class.astype(int).tolist(), strict=True)),
                     "multi_class_neurons": int((masks.sum(0) > 1).sum())})
    return rows


def shared_ratios(sets_a: Mapping[str, np.ndarray], sets_b: Mapping[str, np.ndarray], *, n_draws: int,
                  seed: int) -> dict[str, Any]:
    """Shared-neuron ratios between the classes of one task on two corpora, with a shuffled-set null.

    Rows = classes on corpus A, columns = classes on corpus B. ``containment[i, j] = |A_i ∩ B_j| / |A_i|``
    (the share of A's class-i neurons that are also class-j neurons on B) and IoU; each with null mean, z and
    one-sided p (B's set re-drawn with its per-layer sizes).
    """
    from jaxneurons.scoring.overlap import overlap_matrix_null

    names_a, names_b = list(sets_a), list(sets_b)
    combined = {f"A:{c}": m for c, m in sets_a.items()} | {f"B:{c}": m for c, m in sets_b.items()}
    out: dict[str, Any] = {"classes_a": names_a, "classes_b": names_b,
                           "sizes_a": [int(np.sum(sets_a[c])) for c in names_a],
                           "sizes_b": [int(np.sum(sets_b[c])) for c in names_b]}
    na = len(names_a)
    for metric in ("containment", "iou"):
        _, res = overlap_matrix_null(combined, metric, n_draws=n_draws, seed=seed)
        out[metric] = {k: np.asarray(v)[:na, na:] for k, v in res.items()}
    same = [c for c in names_a if c in sets_b]
    out["same_class"] = {c: {m: {k: float(out[m][k][names_a.index(c), names_b.index(c)])
                                 for k in ("observed", "null_mean", "z", "p_value")}
                             for m in ("containment", "iou")} for c in same}
    return out


def choose_split(speakers: Sequence[str], classes: Sequence[str], seed: int) -> tuple[Any, str, np.ndarray]:
    """(split, kind, kept indices): speaker-disjoint and stratified by class when every class has >= 3 speakers;
    otherwise utterance-disjoint within speakers, leaving out speakers with fewer than 3 utterances."""
    from jaxneurons.probes import SplitError, speaker_disjoint_split, within_speaker_split

    speakers, classes = np.asarray(speakers, dtype=object), np.asarray(classes, dtype=object)
    per_class = {c: set(speakers[classes == c]) for c in set(classes)}
    constant = all(len(set(classes[speakers == s])) == 1 for s in set(speakers))
    if constant and min(len(v) for v in per_class.values()) >= 3:
        try:
            split = speaker_disjoint_split(list(speakers), dev_fraction=0.15, test_fraction=0.25, seed=seed,
                                           stratify=list(classes))
            return split, "speaker-disjoint (stratified by class)", np.arange(len(speakers))
        except SplitError as e:
            log.warning("speaker-disjoint split failed (%s); splitting within speakers", e)
    counts = {s: int(np.sum(speakers == s)) for s in set(speakers)}
    kept = np.flatnonzero([counts[s] >= 3 for s in speakers])
    split = within_speaker_split(list(speakers[kept]), dev_fraction=0.15, test_fraction=0.25, seed=seed)
    return split, "utterance-disjoint within speakers", kept


def class_ablation(
    model: Any,
    utts: Sequence[Any],
    label_key: str,
    class_masks: Mapping[str, np.ndarray],
    *,
    probe_layer: int | str = -1,
    random_controls: int = 3,
    batch_size: int = 8,
    seed: int = 0,
    max_epochs: int = 200,
    min_steps: int = 300,
    load_fn: Any = None,
) -> dict[str, Any]:
    """Per-class accuracy of a probe trained on the unablated model, with each class's neurons zeroed.

    ``utts[i].labels[label_key]`` is the class (None = not in the task). For every class with neurons:
    per-class test accuracies with its neurons zeroed and with ``random_controls`` random sets of the same
    per-layer size drawn outside the task's class-specific neurons (mean over the sets).
    """
    from jaxneurons.data import BatchLoader
    from jaxneurons.pipeline.ablation import random_control
    from jaxneurons.probes import evaluate, extract_features, train_utterance_classifier

    names = list(class_masks)
    task_utts = [u for u in utts if u.labels.get(label_key) in class_masks]
    y = np.array([names.index(u.labels[label_key]) for u in task_utts], np.int64)
    speakers = [u.speaker or u.utt_id for u in task_utts]
    split, split_kind, kept = choose_split(speakers, [names[c] for c in y], seed)
    dropped = len(task_utts) - len(kept)
    task_utts, y = [task_utts[i] for i in kept], y[kept]

    def features(subset: np.ndarray, mask: np.ndarray | None) -> Any:
        sub = [task_utts[i] for i in subset]
        loader = BatchLoader(sub, batch_size, lambda n: int(model.num_frames(n)), load_fn=load_fn)
        feats = extract_features(model, loader, layers=[probe_layer] if probe_layer != "all" else "all",
                                 level="utterance", utt_label_values={"row": np.arange(len(sub))},
                                 neuron_mask=mask)
        feats = feats.subset(np.argsort(feats.labels["row"]))
        feats.labels["y"] = y[subset]
        return feats

    train = features(split.train, None)
    dev = features(split.dev, None)
    probe = train_utterance_classifier(train, dev, label_key="y", num_classes=len(names), class_names=names,
                                       seed=seed, max_epochs=max_epochs, min_steps=min_steps)

    def per_class(feats: Any, ev: dict | None = None) -> dict[str, Any]:
        ev = ev or evaluate(probe, feats)
        return {"accuracy": ev["accuracy"], "per_class": {c: v["accuracy"] for c, v in ev["per_class"].items()}}

    clean_ev = evaluate(probe, features(split.test, None))
    clean = per_class(None, clean_ev)
    union = np.any(np.stack([np.asarray(m, bool) for m in class_masks.values()]), axis=0)
    out: dict[str, Any] = {"split": split_kind, "split_sizes": split.sizes(), "dropped_utterances": dropped,
                           "clean": clean,
                           "chance": clean_ev["chance"], "classes": {}}
    for k, (name, mask) in enumerate(class_masks.items()):
        mask = np.asarray(mask, bool)
        entry: dict[str, Any] = {"size": int(mask.sum()), "per_layer": mask.sum(1).astype(int).tolist()}
        out["classes"][name] = entry
        if not mask.any() or name not in clean["per_class"]:
            entry["skipped"] = "no class-specific neurons" if not mask.any() else "class absent from the test split"
            continue
        ablated = per_class(features(split.test, (~mask).astype(np.float32)))
        controls = [per_class(features(split.test, (~random_control(mask, seed + 1000 * (k + 1) + r, exclude=union))
                                       .astype(np.float32))) for r in range(random_controls)]
        rand = {c: float(np.mean([ctl["per_class"][c] for ctl in controls])) for c in clean["per_class"]}
        others = [c for c in clean["per_class"] if c != name]
        entry.update(
            ablated=ablated, random_mean=rand,
            own_clean=clean["per_class"][name], own_ablated=ablated["per_class"][name], own_random=rand[name],
            own_drop=clean["per_class"][name] - ablated["per_class"][name],
            own_drop_random=clean["per_class"][name] - rand[name],
            other_drop=float(np.mean([clean["per_class"][c] - ablated["per_class"][c] for c in others]))
            if others else float("nan"),
            other_drop_random=float(np.mean([clean["per_class"][c] - rand[c] for c in others]))
            if others else float("nan"),
        )
    return out


# ------------------------------------------------------------------------------------------------ report


def _coverage_section(report: Any, res: Any, cov: Mapping[str, list[dict]], skipped: Mapping[str, str]) -> None:
    from jaxneurons.report import grouped_bars, layer_profile

    report.heading("Class coverage per task")
    report.text("Class-specific neurons: AAPE (h > 0 probability per class, entropy over classes, lowest-entropy "
                "top_rate of all neurons pooled over layers; a neuron serves every class whose probability exceeds "
                "the activation bar). Coverage = fraction of a task's classes with at least one such neuron. "
                "'random-init' is a randomly initialised model of the same config (the available contrast to a "
                "trained model, not a supervised model).")
    rows = []
    for model_name, tasks in cov.items():
        for r in tasks:
            sizes = list(r["neurons_per_class"].values())
            rows.append([model_name, r["task"], r["classes"], r["covered"], fmt(r["coverage"], 2), r["selected"],
                         r["multi_class_neurons"], f"{min(sizes)} / {int(np.median(sizes))} / {max(sizes)}"])
    report.table(["model", "task (corpus.label)", "classes", "covered", "coverage", "neurons selected",
                  "neurons of > 1 class", "neurons per class min / median / max"], rows)
    if skipped:
        report.text("Tasks skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ".")
    names = [r["task"] for r in next(iter(cov.values()))]
    fig = grouped_bars(res.file("figures/coverage.png"), names,
                       {m: [r["coverage"] for r in tasks] for m, tasks in cov.items()},
                       "AAPE class coverage per task", "fraction of classes with a specific neuron")
    report.figure(fig, "Class coverage per task, trained model vs random-init twin")
    for model_name, tasks in cov.items():
        fig = layer_profile(res.file(f"figures/layers_{model_name}.png"), {r["task"]: r["per_layer"] for r in tasks},
                            f"Class-specific neurons per layer ({model_name})", ylabel="neurons")
        report.figure(fig, f"Class-specific neurons (union over a task's classes) per layer, {model_name} model")


def _shared_section(report: Any, res: Any, shared: Mapping[str, dict], edges: Mapping[str, Any]) -> None:
    from jaxneurons.report import heatmap

    report.heading("Shared neurons across corpora")
    report.text("The same task scored on corpus A and on corpus B separately. Shared ratio = |A_c ∩ B_c'| / |A_c| "
                "(share of corpus A's class-c neurons that are class-c' neurons on corpus B); null = B's set "
                "re-drawn at random with its per-layer sizes; p one-sided (overlap larger than chance).")
    for spec, sh in shared.items():
        rows = [[c, sh["sizes_a"][sh["classes_a"].index(c)], sh["sizes_b"][sh["classes_b"].index(c)],
                 fmt(v["containment"]["observed"]), fmt(v["containment"]["null_mean"]), fmt(v["containment"]["z"], 1),
                 fmt(v["containment"]["p_value"]), fmt(v["iou"]["observed"]), fmt(v["iou"]["null_mean"])]
                for c, v in sh["same_class"].items()]
        bins = edges.get(spec)
        cap = f"{spec}: same class on both corpora" + (f" (bins {bins})" if bins else "")
        report.table(["class", "|A|", "|B|", "shared ratio", "null mean", "z", "p", "IoU", "IoU null"], rows, cap)
        fig = heatmap(res.file(f"figures/shared_{safe_name(spec)}.png"), sh["containment"]["observed"],
                      [f"A:{c}" for c in sh["classes_a"]], [f"B:{c}" for c in sh["classes_b"]],
                      f"{spec}: shared-neuron ratio |A∩B|/|A|", "shared ratio")
        report.figure(fig, f"{spec}: shared-neuron ratio between the classes on corpus A (rows) and B (columns)")


def _ablation_section(report: Any, res: Any, ablation: Mapping[str, dict]) -> None:
    from jaxneurons.report import grouped_bars

    report.heading("Ablation: per-class accuracy")
    report.text("Utterance probe trained on the unablated model; each class's neurons zeroed after the activation "
                "(test split only). 'own drop' = the class's own accuracy drop; 'random' = the same with random "
                "same-size sets (mean); 'other drop' = mean drop of the other classes (specificity).")
    for task, ab in ablation.items():
        if "error" in ab:
            report.text(f"{task}: ablation not run ({ab['error']}).")
            continue
        rows = []
        groups, own, own_r, other = [], [], [], []
        for c, e in ab["classes"].items():
            if "skipped" in e:
                rows.append([c, e["size"], fmt(ab["clean"]["per_class"].get(c)), e["skipped"], "", "", "", ""])
                continue
            rows.append([c, e["size"], fmt(e["own_clean"]), fmt(e["own_ablated"]), fmt(e["own_random"]),
                         fmt(e["own_drop"]), fmt(e["own_drop_random"]), fmt(e["other_drop"])])
            groups.append(c)
            own.append(e["own_drop"])
            own_r.append(e["own_drop_random"])
            other.append(e["other_drop"])
        report.table(["class", "neurons", "clean acc", "ablated acc", "random acc", "own drop", "own drop (random)",
                      "other drop"], rows,
                     f"{task}: split {ab['split']} {ab['split_sizes']} ({ab['dropped_utterances']} utterances of "
                     f"speakers with < 3 left out), clean accuracy {fmt(ab['clean']['accuracy'])}, "
                     f"chance {fmt(ab['chance'].get('accuracy'))}")
        if groups:
            fig = grouped_bars(res.file(f"figures/ablation_{safe_name(task)}.png"), groups,
                               {"own class (class neurons)": own, "own class (random set)": own_r,
                                "other classes (class neurons)": other},
                               f"{task}: accuracy drop when zeroing class-specific neurons", "accuracy drop")
            report.figure(fig, f"{task}: per-class accuracy drop, class-specific vs random neurons")


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str]) -> None:
    del argv
    from absl import flags

    FLAGS = flags.FLAGS
    if not FLAGS.out:
        sys.exit("error: --out is required")
    from jaxneurons.pipeline.scan import ScanOptions
    from jaxneurons.report import Report, heatmap
    from jaxneurons.results import ResultsDir
    from jaxneurons.scoring.overlap import overlap_matrix_null, overlap_null

    t0 = time.time()
    work = os.path.abspath(FLAGS.workdir or FLAGS.out.rstrip("/") + ".work")
    os.makedirs(work, exist_ok=True)
    print("[1/5] corpora", flush=True)
    corpora = make_corpora(work, FLAGS.manifest, FLAGS.manifest_b, want_b=bool(FLAGS.shared_tasks),
                           num_speakers=FLAGS.num_speakers, minutes=FLAGS.minutes, languages=FLAGS.languages,
                           seed=FLAGS.seed, seed_b=FLAGS.seed_b)
    utts_by = {k: u for k, (_, u) in corpora.items()}
    specs = {"A": list(dict.fromkeys(FLAGS.tasks + FLAGS.shared_tasks))}
    if "B" in corpora:
        specs["B"] = list(FLAGS.shared_tasks)
    tasks, edges, skipped = usable_tasks(utts_by, specs, utts_by["A"])
    utts, n_classes = label_corpora(utts_by, tasks, edges)
    keys = {c: [condition_key(c, t) for t in ts] for c, ts in tasks.items()}
    if not keys["A"]:
        sys.exit(f"error: no usable task on corpus A ({skipped})")
    options = ScanOptions(properties=tuple(f"aape:{k}" for ks in keys.values() for k in ks), frames="all",
                          aape_top_rate=FLAGS.top_rate, aape_filter_rate=FLAGS.filter_rate,
                          aape_activation_bar_ratio=FLAGS.activation_bar_ratio, batch_size=FLAGS.batch_size)
    model_path, models = load_models(FLAGS.model, FLAGS.random_init_twin, FLAGS.twin_seed)
    print(f"[2/5] scans of {len(utts)} utterances ({', '.join(models)}); conditions {n_classes}", flush=True)
    (issues, decoded), scans = run_scans(models, utts, options, work, model_path, FLAGS.twin_seed)

    print("[3/5] coverage and shared neurons", flush=True)
    own_tasks = [condition_key("A", Task.parse(s)) for s in FLAGS.tasks if Task.parse(s) in tasks["A"]]
    coverage = {name: coverage_rows(sc[2], own_tasks) for name, sc in scans.items()}
    trained = scans["trained"][2]
    shared = {}
    for t in tasks.get("B", []):
        if t in tasks["A"]:
            shared[t.spec] = shared_ratios(trained[f"aape:{condition_key('A', t)}"]["groups"],
                                           trained[f"aape:{condition_key('B', t)}"]["groups"],
                                           n_draws=FLAGS.null_draws, seed=FLAGS.seed)
    all_sets = {f"{k.removeprefix('A.')}:{c}": m for k in own_tasks for c, m in trained[f"aape:{k}"]["groups"].items()}
    cross_names, cross = overlap_matrix_null(all_sets, "containment", n_draws=FLAGS.null_draws, seed=FLAGS.seed)
    twin_overlap = {}
    if "random-init" in scans:
        twin = scans["random-init"][2]
        for k in own_tasks:
            for c, m in trained[f"aape:{k}"]["groups"].items():
                r = overlap_null(m, twin[f"aape:{k}"]["groups"][c], n_draws=FLAGS.null_draws, seed=FLAGS.seed)
                twin_overlap[f"{k}:{c}"] = {m2: {s: float(r[f"pooled_{m2}"][s]) for s in
                                                 ("observed", "null_mean", "p_value")} for m2 in ("iou", "containment")}

    ablation: dict[str, dict] = {}
    if FLAGS.ablation:
        print("[4/5] ablation with probes", flush=True)
        wanted = FLAGS.ablation_tasks or FLAGS.tasks
        abl_models = list(models) if FLAGS.twin_ablation else ["trained"]
        for name in abl_models:
            for spec in wanted:
                k = condition_key("A", Task.parse(spec))
                if k not in own_tasks:
                    continue
                try:
                    ablation[f"{name}:{k}"] = class_ablation(
                        models[name], utts, k, scans[name][2][f"aape:{k}"]["groups"],
                        probe_layer=parse_layer(FLAGS.probe_layer), random_controls=FLAGS.random_controls,
                        batch_size=FLAGS.batch_size, seed=FLAGS.seed, max_epochs=FLAGS.probe_max_epochs,
                        min_steps=FLAGS.probe_min_steps, load_fn=decoded.load_fn())
                except ValueError as e:  # a split that cannot be made (too few speakers / utterances)
                    ablation[f"{name}:{k}"] = {"error": str(e)}

    print("[5/5] report", flush=True)
    run_flags = {n: getattr(FLAGS, n) for n in (
        "model", "manifest", "manifest_b", "num_speakers", "minutes", "languages", "seed", "seed_b", "tasks",
        "shared_tasks", "top_rate", "filter_rate", "activation_bar_ratio", "random_init_twin", "twin_seed",
        "ablation", "twin_ablation", "ablation_tasks", "probe_layer", "random_controls", "probe_max_epochs",
        "probe_min_steps", "null_draws", "batch_size")}
    with ResultsDir(FLAGS.out, "aape", flags=run_flags) as res:
        res.run.update(model_path=model_path, manifests={k: p for k, (p, _) in corpora.items()},
                       data_issues=issues.as_dict(), seconds=round(time.time() - t0, 1))
        text = (f"Model: {model_path}. Corpora: " + "; ".join(f"{k}: {p} ({len(u)} utterances)"
                                                              for k, (p, u) in corpora.items()) + ".")
        write_scan_dirs(res, scans, text)
        res.save_json("tasks", {"tasks": {c: [t.spec for t in ts] for c, ts in tasks.items()}, "bin_edges": edges,
                                "bin_ranges": {s: bin_names(Task.parse(s), e) for s, e in edges.items() if e},
                                "classes_per_condition": n_classes, "skipped": skipped})
        res.save_json("coverage", coverage)
        res.save_json("shared", shared)
        res.save_json("cross_task", {"names": cross_names, **cross})
        res.save_json("twin_overlap", twin_overlap)
        res.save_json("ablation", ablation)
        for name, (_, _, scored) in scans.items():
            for k in own_tasks:
                masks = np.stack(list(scored[f"aape:{k}"]["groups"].values()))
                res.save_array(f"{safe_name(name)}__{safe_name(k)}__class_masks", masks)
        report = Report("AAPE: class-specific neurons (arXiv 2602.15307)")
        report.text(text + f" Data: {issues.summary()}. Scan results per model: scan-*/report.html.")
        _coverage_section(report, res, coverage, skipped)
        if shared:
            _shared_section(report, res, shared, edges)
        else:
            report.text("No second corpus: shared-neuron ratios across corpora were not computed.")
        report.heading("Shared responses across tasks (corpus A)")
        report.text("Containment |S_i ∩ S_j| / |S_i| between the class-specific neuron sets of all tasks (rows = the "
                    "contained set); arrays with null means, z and p values in cross_task.json.")
        fig = heatmap(res.file("figures/cross_task.png"), cross["observed"], cross_names, cross_names,
                      "Class-specific neurons shared across tasks", "|row ∩ column| / |row|",
                      annotate=len(cross_names) <= 20)
        report.figure(fig, "Shared class-specific neurons between the classes of all corpus-A tasks")
        if twin_overlap:
            report.heading("Trained vs random-init twin")
            report.text("Overlap of each class's neurons in the trained model with the same class's neurons in a "
                        "randomly initialised model of the same config (pooled IoU; null: random same-size sets).")
            report.table(["task:class", "IoU", "IoU null mean", "p"],
                         [[k, fmt(v["iou"]["observed"]), fmt(v["iou"]["null_mean"]), fmt(v["iou"]["p_value"])]
                          for k, v in twin_overlap.items()])
        if ablation:
            _ablation_section(report, res, ablation)
        report.write(res.tmp)
    print(f"done in {time.time() - t0:.0f} s; report: {os.path.join(os.path.abspath(FLAGS.out), 'report.html')}")


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(main)
