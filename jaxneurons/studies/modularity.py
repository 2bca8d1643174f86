"""Study 5: modularity of FFN neurons (arXiv 2408.17324): selective pruning, set overlaps, MoEfication, random init.

    from jaxneurons.studies import modularity
    result = modularity.run(modularity.ModularityConfig(), "results/modularity")

One scan per model over corpus A + corpus B (``selective_LABEL`` conditions: per-class streaming mean |h|), then:

1. **Selective-pruning sets** per class of every task: score = mean|h| on the class (the data to forget) /
   (frame-weighted mean|h| on the task's other classes + 1e-3) (Pochinkov & Schoots' 'abs' taker), the top
   ``fractions`` of all FFN neurons taken globally over layers.
2. **Selective pruning** (the experiment itself, METHODS section 5): each set is removed (``h * mask``, optional
   mean offset) and the task's probe (:class:`jaxneurons.probes.ProbeSuite`, trained once on the unablated
   model) is evaluated: accuracy drop on the forgotten class vs on the retained classes, each against
   ``random_sets`` random sets with the same per-layer sizes drawn outside the set, per fraction.
3. **Overlaps** between the sets of all classes at every fraction: IoU and ``|A∩B|/|A|`` with a shuffled null.
4. **MoEfication**: per layer, balanced k-means of the L2-normalised W1 rows into experts of ``moe_expert_size``
   neurons (MoEfication: 96 experts of 32 for D = 3072) or ``moe_n_experts`` experts; how each set spreads over
   experts and its concentration against random same-size sets.
5. **Trained vs random-init**: the same scores on a randomly initialised model of the same config.

Tasks are utterance labels (``gender``, ``speaker``, ``language``, a key of ``Utterance.labels``), ``KEY/N`` (a
numeric label in N quantile bins) or ``corpus`` (which of the two corpora: the study's "datasets").
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxneurons.config_flags import field_help
from jaxneurons.data.decoded import ON_ERROR, ON_ERROR_HELP
from jaxneurons.interventions import InterventionError, NeuronSets
from jaxneurons.probes import ProbeSuite, ProbeSuiteConfig
from jaxneurons.scoring.selective import DEFAULT_FRACTIONS, selective_prune_masks

CORPUS_KEY = "corpus"
_BUILTIN = ("gender", "speaker", "language")


@dataclasses.dataclass(frozen=True)
class ModularityConfig:
    """Settings of the modularity study. Paper values (arXiv 2408.17324): prune fractions 1, 2, 5, 10, 20 % of
    all FFN neurons globally, 'abs' scores with eps 1e-3, removal ``h * mask`` with offset 0 (mean offset an
    option), random same-size sets as the control; MoEfication (Zhang et al. 2022) experts of 32 neurons.
    Corpus sizes are scaled to a 2-core CPU. The probe is the one ProbeSuite recipe; its ``tasks`` are set
    from ``tasks`` (``--probe_tasks`` is not used)."""

    model: str = field_help("default", "Model directory, or 'default' for the bundled model.")
    manifest: str = field_help("", "Corpus A manifest (empty: synthesise one with espeak-ng).")
    manifest_b: str = field_help("", "Corpus B manifest (empty: synthesise one with seed_b when A is synthetic).")
    workdir: str = field_help("", "Corpora and scan checkpoints (empty: OUT.work).")
    num_speakers: int = field_help(16, "Pseudo-speakers per synthetic corpus.")
    minutes: float = field_help(10.0, "Minutes of audio per synthetic corpus.")
    languages: tuple[str, ...] = field_help(("en", "tr"), "Languages of the synthetic corpora.")
    seed: int = field_help(12345, "Corpus A seed (the default model was trained on seed 1); also nulls.")
    seed_b: int = field_help(54321, "Corpus B seed.")
    on_error: str = field_help("raise", ON_ERROR_HELP, choices=ON_ERROR)
    tasks: tuple[str, ...] = field_help(("language", "gender", "pitch_setting/2", CORPUS_KEY),
                                        "Tasks over both corpora: gender, speaker, language, a label key, KEY/N "
                                        "(quantile bins) or 'corpus'. Tasks with < 2 classes are skipped.")
    fractions: tuple[float, ...] = field_help(DEFAULT_FRACTIONS, "Prune fractions of all FFN neurons (global).")
    report_fraction: float = field_help(0.05, "Fraction whose matrices the report shows (all are in the JSON).")
    eps: float = field_help(1e-3, "Denominator offset of the selective score (taker 'abs').")
    mean_offset: bool = field_help(False, "Replace removed neurons by their mean activation instead of 0.")
    prune: bool = field_help(True, "Run the selective-pruning experiment (probe drops).")
    random_sets: int = field_help(3, "Random same-size sets per pruned set (the control).")
    moe_expert_size: int = field_help(32, "Neurons per MoEfication expert (used when moe_n_experts is 0).")
    moe_n_experts: int = field_help(0, "Number of MoEfication experts per layer (0: D / moe_expert_size).")
    moe_top: int = field_help(1, "Concentration = share of a set in its this many most-populated experts.")
    moe_seed: int = field_help(0, "Seed of the balanced k-means.")
    random_init_twin: bool = field_help(True, "Also score a randomly initialised model of the same config.")
    twin_seed: int = field_help(0, "Seed of the random-init twin.")
    null_draws: int = field_help(1000, "Shuffled-set null draws (overlaps and MoE concentration).")
    batch_size: int = field_help(8, "Utterances per scan batch.")
    probe: ProbeSuiteConfig = ProbeSuiteConfig(tasks=(CORPUS_KEY,))

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("ModularityConfig.tasks is empty")
        fr = tuple(float(f) for f in self.fractions)
        if not fr or any(not 0 < f <= 1 for f in fr):
            raise ValueError(f"fractions must lie in (0, 1], got {self.fractions}")
        if float(self.report_fraction) not in fr:
            raise ValueError(f"report_fraction {self.report_fraction} is not one of fractions {fr}")
        if self.random_sets < 0 or self.moe_expert_size < 1 or self.moe_n_experts < 0:
            raise ValueError("random_sets >= 0, moe_expert_size >= 1 and moe_n_experts >= 0 are required")
        for spec in self.tasks:
            _parse_task(spec)


@dataclasses.dataclass
class ModularityResult:
    """What :func:`run` computed (the same is in ``out_dir``'s JSON files)."""

    out_dir: str
    tasks: list[str]
    sets: dict[str, dict[float, dict[str, np.ndarray]]]  # model -> fraction -> 'task:class' -> (L, D) bool
    pruning: dict[str, Any]
    overlaps: dict[str, Any]
    moefication: dict[str, Any]
    twin_overlap: dict[str, Any]
    seconds: float


# ------------------------------------------------------------------------------------------------ tasks


def _parse_task(spec: str) -> tuple[str, int]:
    key, _, n = spec.strip().partition("/")
    if not key or (n and (not n.isdigit() or int(n) < 2)):
        raise ValueError(f"task {spec!r}: use KEY or KEY/N with N >= 2")
    return key, int(n) if n else 0


def _slug(spec: str) -> str:
    key, bins = _parse_task(spec)
    return f"{key}_q{bins}" if bins else key


def _raw(u: Any, key: str) -> Any:
    return getattr(u, key) if key in _BUILTIN else u.labels.get(key)


def task_classes(utts: Sequence[Any], specs: Sequence[str]) -> tuple[dict[str, list], dict[str, list[float]],
                                                                     dict[str, str]]:
    """Per usable task the class of every utterance (None = unknown), quantile edges, and skipped tasks."""
    classes, edges, skipped = {}, {}, {}
    for spec in specs:
        key, bins = _parse_task(spec)
        values = [_raw(u, key) for u in utts]
        if bins:
            nums = np.array([float(v) for v in values if v is not None and v != ""], np.float64)
            if nums.size == 0:
                skipped[spec] = f"no utterance has a value for {key!r}"
                continue
            edges[spec] = np.quantile(nums, np.arange(1, bins) / bins).tolist()
            labels = [None if v is None or v == "" else f"q{int(np.digitize(float(v), edges[spec], right=True)) + 1}"
                      for v in values]
        else:
            labels = [None if v is None or v == "" else str(v) for v in values]
        n = len(set(labels) - {None})
        if n < 2:
            skipped[spec] = f"{n} class(es)"
            continue
        classes[spec] = labels
    return classes, edges, skipped


def corpora(config: ModularityConfig, work: str) -> dict[str, tuple[str, list]]:
    """{'A': (manifest, utts), 'B': ...}: given manifests, or synthetic espeak corpora made in ``work``
    (:func:`~jaxneurons.studies.corpora.make_corpora`, always with a corpus B)."""
    from jaxneurons.studies.corpora import make_corpora

    if config.manifest and not config.manifest_b:
        raise ValueError("the modularity study compares two corpora: give manifest_b with manifest")
    return make_corpora(work, config.manifest or None, config.manifest_b or None, want_b=True,
                        num_speakers=config.num_speakers, minutes=config.minutes, languages=config.languages,
                        seed=config.seed, seed_b=config.seed_b, on_error=config.on_error)


def merged_corpus(parts: Mapping[str, Sequence[Any]], specs: Sequence[str]) -> tuple[list, list[str], dict, dict]:
    """One utterance list with ids / speakers prefixed by corpus and a label ``all.{task}`` per usable task."""
    utts = []
    for name, us in parts.items():
        for u in us:
            labels = {**u.labels, CORPUS_KEY: name}
            utts.append(dataclasses.replace(u, utt_id=f"{name}/{u.utt_id}", labels=labels,
                                            speaker=None if u.speaker is None else f"{name}/{u.speaker}"))
    classes, edges, skipped = task_classes(utts, specs)
    keys = []
    for spec, labels in classes.items():
        key = f"all.{_slug(spec)}"
        keys.append(key)
        for u, value in zip(utts, labels, strict=True):
            u.labels[key] = value
    return utts, keys, edges, skipped


# ------------------------------------------------------------------------------------------------ scan


def scan_models(models: Mapping[str, Any], utts: Sequence[Any], keys: Sequence[str], batch_size: int,
                work: str) -> tuple[Any, dict[str, tuple]]:
    """The ONE place this study scans: ``selective_KEY`` statistics per model through :func:`jaxneurons.scan`
    (resumable from ``work``)."""
    from jaxneurons.pipeline.scan import ScanOptions
    from jaxneurons.studies.corpora import run_scans

    options = ScanOptions(properties=tuple(f"selective_{k}" for k in keys), batch_size=batch_size)
    (issues, _), scans = run_scans(models, utts, options, work)
    return issues, scans


# ------------------------------------------------------------------------------------------------ analyses


def selective_sets(scored: Mapping[str, dict], keys: Sequence[str], fractions: Sequence[float],
                   widths: Sequence[int]) -> tuple[dict[float, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """({fraction: {'task:class': (L, D) bool}}, {'task:class': (L, D) score}) for every class of every task."""
    sets: dict[float, dict[str, np.ndarray]] = {float(f): {} for f in fractions}
    scores = {}
    for key in keys:
        for cls, sc in scored[f"selective_{key}"]["scores"].items():
            name = f"{key.removeprefix('all.')}:{cls}"
            scores[name] = np.asarray(sc)
            for f, m in selective_prune_masks(sc, fractions, widths=widths).items():
                sets[f][name] = m
    return sets, scores


def mean_activation(stats: Any, key: str) -> np.ndarray:
    """(L, D) frame-weighted mean of h over every class of a ``selective_KEY`` condition (the mean offset)."""
    name = f"selective_{key}"
    mean = np.asarray(stats.mean(name), np.float64)  # (L, C, D)
    frames = np.asarray(stats.frames(name), np.float64)
    return np.einsum("c,lcd->ld", frames / max(frames.sum(), 1.0), mean).astype(np.float32)


def selective_pruning(model: Any, utts: Sequence[Any], sets: Mapping[float, Mapping[str, np.ndarray]],
                      keys: Sequence[str], config: ModularityConfig,
                      means: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Remove each selective set and measure the forget-class vs retained-class probe accuracy drop, against
    ``config.random_sets`` random sets of the same per-layer sizes drawn outside the set (METHODS section 5).

    Returns ``{"clean": ProbeSuite results, "sets": {fraction: {'task:class': row}}}``; a row holds the set
    size, ``forget_drop`` / ``retained_drop`` (clean minus ablated accuracy on the class's / the other classes'
    test examples), ``targeted`` (forget minus retained drop) and the same three for the random sets (mean over
    draws, with the draws), or ``random_impossible`` when a layer has too few other neurons for a control.
    """
    cfg = model.config
    widths = tuple(cfg.ffn_width(i) for i in range(cfg.num_hidden_layers))
    probe_cfg = dataclasses.replace(config.probe, tasks=tuple(keys), batch_size=config.batch_size,
                                    seed=config.probe.seed)
    suite = ProbeSuite(utts, probe_cfg)
    clean = suite.fit(model)
    kind = "mean" if config.mean_offset else "zero"
    ablations, controls, impossible = {}, {}, {}
    for f, named in sets.items():
        ns = NeuronSets.from_selections({n.replace(":", "/", 1): m for n, m in named.items()}, widths)
        for name in named:
            tag, set_name, key = f"{f:g}|{name}", name.replace(":", "/", 1), "all." + name.split(":", 1)[0]
            mean = means.get(key) if means is not None else None
            ablations[tag] = ns.to_ablation(model, set_name, kind=kind, mean=mean, label=tag)
            for r in range(config.random_sets):
                try:
                    sel = ns.random_control(set_name, config.seed + 7 * r + 1)
                except InterventionError as e:
                    impossible[tag] = str(e)
                    break
                controls.setdefault(tag, []).append(f"{tag}#random{r}")
                ablations[f"{tag}#random{r}"] = NeuronSets.selection_ablation(model, sel, kind=kind, mean=mean,
                                                                              label=f"{tag}#random{r}")
    drops = suite.drops(model, ablations)  # one clean pass, every set and control with the same probes
    out: dict[str, Any] = {"clean": clean, "kind": kind, "sets": {}}
    for f, named in sets.items():
        rows = {}
        for name in named:
            tag, key, cls = f"{f:g}|{name}", "all." + name.split(":", 1)[0], name.split(":", 1)[1]
            row = {"size": int(named[name].sum()), **_class_drops(drops["clean"][key], drops[tag][key], cls)}
            draws = [_class_drops(drops["clean"][key], drops[c][key], cls) for c in controls.get(tag, [])]
            if draws:
                for m in ("forget_drop", "retained_drop", "targeted"):
                    row[f"random_{m}"] = float(np.mean([d[m] for d in draws]))
                row["random_draws"] = draws
            if tag in impossible:
                row["random_impossible"] = impossible[tag]
            rows[name] = row
        out["sets"][str(f)] = rows
    out["split"] = {t: {"kind": k, **s.sizes()} for t, (s, k) in suite.splits.items()}
    return out


def _class_drops(clean: Mapping[str, Any], ablated: Mapping[str, Any], forget: str) -> dict[str, float]:
    """Accuracy drop on the forget class and on the retained classes (pooled over their test examples)."""
    def retained(r: Mapping[str, Any]) -> float:
        n = {c: k for c, k in r["per_class_n"].items() if c != forget}
        total = sum(n.values())
        return sum(r["per_class"][c] * k for c, k in n.items()) / total if total else float("nan")

    if forget not in clean["per_class"]:
        return {"forget_drop": float("nan"), "retained_drop": float("nan"), "targeted": float("nan")}
    f = clean["per_class"][forget] - ablated["per_class"].get(forget, float("nan"))
    r = retained(clean) - retained(ablated)
    return {"forget_drop": float(f), "retained_drop": float(r), "targeted": float(f - r)}


def overlap_block(sets: Mapping[str, np.ndarray], n_draws: int, seed: int) -> dict[str, Any]:
    """IoU and containment matrices with shuffled nulls, plus off-diagonal summaries (within / across tasks)."""
    from jaxneurons.scoring.overlap import overlap_matrix_null

    out: dict[str, Any] = {}
    names = list(sets)
    task = np.array([n.split(":", 1)[0] for n in names])
    off = ~np.eye(len(names), dtype=bool)
    same_task = (task[:, None] == task[None, :]) & off
    for metric in ("iou", "containment"):
        names, res = overlap_matrix_null(sets, metric, n_draws=n_draws, seed=seed)
        summary = {}
        for what, sel in (("within_task", same_task), ("across_tasks", off & ~same_task)):
            with np.errstate(invalid="ignore"):
                summary[what] = {"pairs": int(sel.sum()),
                                 "observed_mean": float(np.nanmean(res["observed"][sel])) if sel.any() else None,
                                 "null_mean": float(np.nanmean(res["null_mean"][sel])) if sel.any() else None}
        out[metric] = {**res, "summary": summary}
    out["names"] = names
    return out


def twin_overlaps(trained: Mapping[float, dict], twin: Mapping[float, dict], n_draws: int,
                  seed: int) -> dict[str, dict[str, dict]]:
    """{fraction: {set: pooled IoU / containment of trained vs random-init set, null mean, p}}."""
    from jaxneurons.scoring.overlap import overlap_null

    out: dict[str, dict[str, dict]] = {}
    for f, sets in trained.items():
        out[str(f)] = {}
        for name, m in sets.items():
            r = overlap_null(m, twin[f][name], n_draws=n_draws, seed=seed)
            out[str(f)][name] = {k: {s: float(r[f"pooled_{k}"][s]) for s in ("observed", "null_mean", "p_value")}
                                 for k in ("iou", "containment")}
    return out


def stacked_w1(model: Any) -> np.ndarray:
    """(L, D, d_model) W1 of every layer (one row per neuron); equal widths required."""
    from jaxneurons.pruning.scores import ffn_weights

    rows = [ffn_weights(model, i)[0].T for i in range(model.config.num_hidden_layers)]
    if len({r.shape for r in rows}) != 1:
        raise ValueError(f"MoEfication needs equal FFN widths, got {[r.shape[0] for r in rows]}")
    return np.stack(rows)


def moe_analysis(model: Any, sets: Mapping[float, Mapping[str, np.ndarray]], config: ModularityConfig) -> dict:
    """Expert ids of every layer, each set's distribution over experts and concentration vs a shuffled null."""
    from jaxneurons.scoring.moefication import cluster_distribution, concentration, moefy

    ids = moefy(stacked_w1(model), config.moe_n_experts or None,
                expert_size=None if config.moe_n_experts else config.moe_expert_size, seed=config.moe_seed)
    k = int(ids.max()) + 1
    flat = {f"{name}@{f:g}": m for f, s in sets.items() for name, m in s.items()}
    return {"cluster_ids": ids, "n_experts": k, "expert_size": ids.shape[1] // k,
            "distribution": cluster_distribution(ids, flat, k),
            "concentration": concentration(ids, flat, top=config.moe_top, n_null=config.null_draws,
                                           seed=config.moe_seed, n_clusters=k)}


# ------------------------------------------------------------------------------------------------ run


def run(config: ModularityConfig, out_dir: str, *, progress: bool = True) -> ModularityResult:
    """The whole study into the results directory ``out_dir`` (written atomically); see the module docstring."""
    from jaxneurons.assets import resolve_model_path
    from jaxneurons.models import build_model
    from jaxneurons.models.checkpoint import load_model
    from jaxneurons.results import ResultsDir

    def say(msg: str) -> None:
        if progress:
            print(msg, flush=True)

    t0 = time.time()
    work = os.path.abspath(config.workdir or out_dir.rstrip("/") + ".work")
    os.makedirs(work, exist_ok=True)
    say("[1/6] corpora")
    parts = corpora(config, work)
    utts, keys, edges, skipped = merged_corpus({k: u for k, (_, u) in parts.items()}, config.tasks)
    if not keys:
        raise ValueError(f"no usable task: {skipped}")
    model_path = resolve_model_path(config.model)
    models = {"trained": load_model(model_path)}
    if config.random_init_twin:
        models["random-init"] = build_model(models["trained"].config, seed=config.twin_seed)
    cfg = models["trained"].config
    widths = [cfg.ffn_width(i) for i in range(cfg.num_hidden_layers)]
    say(f"[2/6] scans of {len(utts)} utterances ({', '.join(models)}); tasks {keys}")
    issues, scans = scan_models(models, utts, keys, config.batch_size, work)
    say("[3/6] selective-pruning sets and overlaps")
    fractions = sorted(float(f) for f in config.fractions)
    sets, scores, overlaps = {}, {}, {}
    for name, (_, _, scored) in scans.items():
        sets[name], scores[name] = selective_sets(scored, keys, fractions, widths)
        overlaps[name] = {str(f): overlap_block(sets[name][f], config.null_draws, config.seed) for f in fractions}
    twin = twin_overlaps(sets["trained"], sets["random-init"], config.null_draws, config.seed) \
        if "random-init" in sets else {}
    say("[4/6] selective pruning: probe drops (forget vs retained classes, vs random same-size sets)")
    pruning: dict[str, Any] = {}
    if config.prune:
        stats = scans["trained"][1]
        means = {k: mean_activation(stats, k) for k in keys} if config.mean_offset else None
        pruning = selective_pruning(models["trained"], utts, sets["trained"], keys, config, means)
    say("[5/6] MoEfication")
    moe = {name: moe_analysis(model, sets[name], config) for name, model in models.items()}
    say("[6/6] report")
    with ResultsDir(out_dir, "modularity", flags={"config": dataclasses.asdict(config)}) as res:
        res.run.update(model_path=model_path, manifests={k: p for k, (p, _) in parts.items()},
                       data_decoding={k: u.decoding for k, (_, u) in parts.items()},
                       data_issues=issues.as_dict(), seconds=round(time.time() - t0, 1))
        text = (f"Model: {model_path}. Corpora (datasets): " + "; ".join(
            f"{k}: {p} ({u.summary})" for k, (p, u) in parts.items()) + f". Data: {issues.summary()}.")
        _write_scan_dirs(res, scans, text)
        res.save_json("tasks", {"tasks": keys, "bin_edges": edges, "skipped": skipped})
        set_json: dict[str, Any] = {}
        for name in sets:
            for sname, sc in scores[name].items():
                res.save_array(f"{_safe(name)}__scores__{_safe(sname)}", sc.astype(np.float32))
            for f, ss in sets[name].items():
                set_json.setdefault(name, {})[str(f)] = {s: {"size": int(m.sum()),
                                                             "per_layer": m.sum(1).astype(int).tolist()}
                                                         for s, m in ss.items()}
                res.save_array(f"{_safe(name)}__sets__{f:g}", np.stack(list(ss.values())))
        res.save_json("sets", {"names": list(sets["trained"][fractions[0]]), "fractions": fractions,
                               "sizes": set_json})
        res.save_json("pruning", pruning)
        res.save_json("overlaps", overlaps)
        res.save_json("twin_overlap", twin)
        moe_json = {}
        for name, m in moe.items():
            res.save_array(f"{_safe(name)}__moe_cluster_ids", m["cluster_ids"])
            moe_json[name] = {k: v for k, v in m.items() if k != "cluster_ids"}
        res.save_json("moefication", moe_json)
        _report(res, config, text, sets, pruning, overlaps, moe, fractions, skipped)
    say(f"done in {time.time() - t0:.0f} s; report: {os.path.join(os.path.abspath(out_dir), 'report.html')}")
    return ModularityResult(os.path.abspath(out_dir), keys, sets, pruning, overlaps, moe_json, twin,
                            time.time() - t0)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    x = float(x)
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def _write_scan_dirs(res: Any, scans: Mapping[str, tuple], text: str) -> None:
    from jaxneurons.pipeline.scan_report import write_scan_results
    from jaxneurons.results import ResultsDir

    for name, (plan, stats, scored) in scans.items():
        with ResultsDir(os.path.join(res.tmp, f"scan-{name}"), "scan") as sub:
            _, report = write_scan_results(sub, plan, stats, scored, extra_text=f"{name} model. {text}")
            report.write(sub.tmp)


def _report(res: Any, config: ModularityConfig, text: str, sets: Mapping, pruning: Mapping, overlaps: Mapping,
            moe: Mapping, fractions: Sequence[float], skipped: Mapping[str, str]) -> None:
    from jaxneurons.report import Report, curves, layer_profile

    rf = float(config.report_fraction)
    report = Report("Modularity: selective pruning, overlaps, MoEfication (arXiv 2408.17324)")
    report.text(text + " Scan results per model: scan-*/report.html. 'random-init' = a randomly initialised model "
                "of the same config.")
    if skipped:
        report.text("Tasks skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ".")
    report.heading("Selective-pruning sets")
    layer_series = {s: m.sum(1) for s, m in sets["trained"][rf].items()}
    report.table(["set", *[f"layer {i + 1}" for i in range(len(next(iter(layer_series.values()))))], "total"],
                 [[s, *v.astype(int).tolist(), int(v.sum())] for s, v in layer_series.items()],
                 f"Neurons per layer of each set at fraction {rf:g} (trained model)")
    fig = layer_profile(res.file("figures/sets_per_layer.png"), layer_series,
                        f"Selective-pruning sets per layer (top {rf:g}, trained)", ylabel="neurons")
    report.figure(fig, "Where each class's selective-pruning neurons are (trained model)")
    if pruning:
        report.heading("Selective pruning: targeted accuracy drop")
        report.text(f"Each set removed ({pruning['kind']} ablation: h * mask"
                    + (" + mean offset" if pruning["kind"] == "mean" else "") + "); the task's probe (ProbeSuite, "
                    "trained once on the unablated model, speaker-disjoint split) evaluated on test speakers. "
                    "forget = accuracy drop on the class the set was scored for; retained = drop on the task's "
                    f"other classes; random = mean over {config.random_sets} random sets of the same per-layer "
                    "sizes drawn outside the set.")
        rows, series = [], {}
        for f in fractions:
            for name, r in pruning["sets"][str(f)].items():
                rows.append([name, f"{f:g}", r["size"], _fmt(r["forget_drop"]), _fmt(r["retained_drop"]),
                             _fmt(r.get("random_forget_drop")), _fmt(r.get("random_retained_drop")),
                             r.get("random_impossible", "")])
                series.setdefault(f"{name} forget", []).append(r["targeted"])
        report.table(["set", "fraction", "neurons", "forget drop", "retained drop", "random forget drop",
                      "random retained drop", "note"], rows, "Probe accuracy drops (clean minus pruned)")
        fig = curves(res.file("figures/targeted_drop.png"), list(fractions), series,
                     "Targeted drop (forget minus retained) vs prune fraction", "prune fraction",
                     "forget drop - retained drop")
        report.figure(fig, "Targeted effect of removing each set, per fraction")
    report.heading("Overlap between sets")
    rows = []
    for name in overlaps:
        for f in fractions:
            for metric in ("iou", "containment"):
                for what, s in overlaps[name][str(f)][metric]["summary"].items():
                    if s["pairs"]:
                        rows.append([name, f"{f:g}", metric, what, s["pairs"], _fmt(s["observed_mean"]),
                                     _fmt(s["null_mean"])])
    report.table(["model", "fraction", "metric", "pairs", "n", "mean observed", "mean null"], rows,
                 "Off-diagonal overlaps: within one task and across tasks")
    report.heading("MoEfication cluster correspondence")
    for name, m in moe.items():
        rows = []
        for sname in sets[name][rf]:
            c = m["concentration"][f"{sname}@{rf:g}"]
            rows.append([sname, int(np.sum(c["size"])), _fmt(np.nanmean(c["top_fraction"])),
                         _fmt(np.nanmean(c["null_mean"]))])
        report.table(["set", "neurons", "top-expert share (mean over layers)", "null"], rows,
                     f"{name}: {m['n_experts']} experts of {m['expert_size']} neurons per layer, sets at {rf:g}")
    report.write(res.tmp)
