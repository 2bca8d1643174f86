"""Study 3: class-specific neurons by activation-probability entropy (AAPE, arXiv 2602.15307, after LAPE).

    from jaxneurons.studies import aape
    result = aape.run(aape.AAPEStudyConfig(), "runs/aape")     # bundled model + synthetic corpora

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
3. **Ablation**: one :class:`~jaxneurons.probes.ProbeSuite` per task (the suite's one split policy and
   recipe: speaker-disjoint, or within-speaker for speaker ID; mean-pooled frames of ``probe.layer``) trained
   on the unablated model; then each class's neurons are zeroed (``h * 0`` after the activation, a
   :class:`~jaxneurons.interventions.NeuronSets` ablation) and the probe's per-class test accuracy is compared
   with zeroing ``random_controls`` random sets of the same size per layer (drawn outside the task's
   class-specific neurons, never overlapping them). A class absent from the test speakers is skipped.
4. **Trained vs random-init twin**: the paper contrasts a self-supervised with a supervised model; with one
   checkpoint the available contrast is a randomly initialised model of the same config (labelled as such
   everywhere): its coverage, layer profile and the overlap of its class sets with the trained model's.

Everything comes from ONE scan pass per model over corpus A + corpus B (each corpus's tasks are separate
condition sets, so A's and B's classes never mix). Corpora and scan checkpoints go to ``corpora.workdir``
(default ``OUT.work``); reruns reuse the corpora and resume interrupted scans.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxneurons.config_flags import field_help
from jaxneurons.pipeline.properties import AAPEConfig
from jaxneurons.probes import ProbeSuiteConfig
from jaxneurons.studies.corpora import (
    CorporaConfig,
    Task,
    bin_names,
    condition_key,
    fmt,
    label_corpora,
    load_models,
    make_corpora,
    safe_name,
    scan_models,
    usable_tasks,
    write_scan_dirs,
)
from jaxneurons.studies.property_neurons import StudyResult


@dataclasses.dataclass(frozen=True)
class AAPEStudyConfig:
    """Study 3 (arXiv 2602.15307). Defaults: AAPE's rule (``aape``: top_rate 1 %, filter_rate and
    activation_bar_ratio 0.95), the study's analyses (coverage, shared neurons across two corpora of a common
    attribute, per-class ablation against random sets, a contrast model); corpora scaled to a 2-core CPU."""

    corpora: CorporaConfig = CorporaConfig()
    tasks: tuple[str, ...] = field_help(("gender", "language", "pitch_setting/2", "speaker", "voice"),
                                        "Tasks on corpus A: gender, speaker, language, a manifest labels key, or KEY/N "
                                        "(numeric label in N quantile bins). Tasks a manifest lacks are skipped and "
                                        "reported.")
    shared_tasks: tuple[str, ...] = field_help(("gender", "pitch_setting/2"), "Tasks scored on corpus A and corpus "
                                               "B separately, for shared-neuron ratios.")
    aape: AAPEConfig = AAPEConfig()
    random_init_twin: bool = field_help(True, "Also scan a randomly initialised model of the same config.")
    twin_seed: int = field_help(0, "Seed of the random-init twin.")
    ablation: bool = field_help(True, "Run the per-class ablation with probes.")
    twin_ablation: bool = field_help(False, "Also run the ablation on the random-init twin (own probes).")
    ablation_tasks: tuple[str, ...] = field_help((), "Tasks to ablate (default: all corpus-A tasks).")
    probe: ProbeSuiteConfig = ProbeSuiteConfig()
    random_controls: int = field_help(3, "Random same-size neuron sets per class ablation (averaged).")
    null_draws: int = field_help(1000, "Shuffled-set null draws per overlap.")
    batch_size: int = field_help(8, "Utterances per batch of the scans.")


def coverage_rows(scored: Mapping[str, dict], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per task: classes, classes with >= 1 specific neuron, coverage, neurons selected, per-layer profile."""
    rows = []
    for key in keys:
        res = scored[f"aape_{key}"]
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


def class_ablation(model: Any, utts: Sequence[Any], label_key: str, sets: Any, prop: str, probe: ProbeSuiteConfig,
                   *, random_controls: int, seed: int, audio_of: Any = None) -> dict[str, Any]:
    """Per-class accuracy of a probe trained on the unablated model, with each class's neurons zeroed.

    ``utts[i].labels[label_key]`` is the class (None = not in the task); ``sets`` (NeuronSets) holds the classes'
    neurons as ``{prop}/{class}``. The probe is one :class:`~jaxneurons.probes.ProbeSuite` task: ``speaker``
    (within-speaker split) for a speaker task, the label key otherwise (speaker-disjoint split). Random controls
    have the class set's per-layer sizes and are drawn outside every class set of the task.
    """
    from jaxneurons.probes import ProbeSuite

    index = [i for i, u in enumerate(utts) if u.labels.get(label_key) is not None]
    task_utts = [utts[i] for i in index]
    task = "speaker" if label_key.rsplit(".", 1)[-1] == "speaker" else label_key
    audio = [audio_of(i) for i in index] if audio_of is not None else None
    suite = ProbeSuite(task_utts, dataclasses.replace(probe, tasks=(task,), seed=seed), audio=audio)
    clean = suite.fit(model)[task]
    if task == "speaker":  # per-class keys are the (corpus-prefixed) speakers; the sets use the label values
        of = {str(u.speaker): str(u.labels[label_key]) for u in task_utts}
        clean = dict(clean, per_class={of.get(k, k): v for k, v in clean["per_class"].items()})

    def per_class(result: dict) -> dict[str, float]:
        return {(of.get(k, k) if task == "speaker" else k): v for k, v in result["per_class"].items()}

    split, kind = suite.splits[task]
    names = [n for n in sets.names() if n.startswith(f"{prop}/")]
    out: dict[str, Any] = {"split": kind, "split_sizes": split.sizes(), "probe_task": task,
                           "clean": {"accuracy": clean["value"], "ci95": clean["ci95"],
                                     "per_class": clean["per_class"]},
                           "chance": {"accuracy": clean["chance"]}, "classes": {}}
    for k, name in enumerate(names):
        cls = name.split("/", 1)[1]
        size = sets.size(name)
        entry: dict[str, Any] = {"size": size, "per_layer": sets.per_layer_sizes(name)}
        out["classes"][cls] = entry
        if size == 0 or cls not in clean["per_class"]:
            entry["skipped"] = "no class-specific neurons" if size == 0 else "class absent from the test split"
            continue
        ablated = per_class(suite.evaluate(model, sets.to_ablation(model, name))[task])
        controls = [per_class(suite.evaluate(model, sets.selection_ablation(
            model, sets.random_control(name, seed + 1000 * (k + 1) + r, exclude=names)))[task])
            for r in range(random_controls)]
        base = clean["per_class"]
        rand = {c: float(np.mean([ctl.get(c, np.nan) for ctl in controls])) for c in base}
        others = [c for c in base if c != cls]
        entry.update(
            ablated=ablated, random_mean=rand, own_clean=base[cls], own_ablated=ablated[cls], own_random=rand[cls],
            own_drop=base[cls] - ablated[cls], own_drop_random=base[cls] - rand[cls],
            other_drop=float(np.mean([base[c] - ablated[c] for c in others])) if others else float("nan"),
            other_drop_random=float(np.mean([base[c] - rand[c] for c in others])) if others else float("nan"),
        )
    return out


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
                     f"{task}: split {ab['split']} {ab['split_sizes']}, clean accuracy {fmt(ab['clean']['accuracy'])}, "
                     f"chance {fmt(ab['chance'].get('accuracy'))}")
        if groups:
            fig = grouped_bars(res.file(f"figures/ablation_{safe_name(task)}.png"), groups,
                               {"own class (class neurons)": own, "own class (random set)": own_r,
                                "other classes (class neurons)": other},
                               f"{task}: accuracy drop when zeroing class-specific neurons", "accuracy drop")
            report.figure(fig, f"{task}: per-class accuracy drop, class-specific vs random neurons")


def run(config: AAPEStudyConfig, out_dir: str) -> StudyResult:
    """Corpora, one scan per model, coverage, shared neurons, ablation and report into ``out_dir``."""
    from jaxneurons.pipeline.scan import ScanOptions
    from jaxneurons.report import Report, heatmap
    from jaxneurons.results import ResultsDir
    from jaxneurons.scoring.overlap import overlap_matrix_null, overlap_null

    t0 = time.time()
    c = config.corpora
    work = os.path.abspath(c.workdir or out_dir.rstrip("/") + ".work")
    os.makedirs(work, exist_ok=True)
    print("[1/5] corpora", file=sys.stderr, flush=True)
    corpora = make_corpora(work, c.manifest or None, c.manifest_b or None, want_b=bool(config.shared_tasks),
                           num_speakers=c.num_speakers, minutes=c.minutes, languages=c.languages, seed=c.seed,
                           seed_b=c.seed_b, on_error=c.on_error)
    utts_by = {k: u for k, (_, u) in corpora.items()}
    specs = {"A": list(dict.fromkeys(config.tasks + config.shared_tasks))}
    if "B" in corpora:
        specs["B"] = list(config.shared_tasks)
    tasks, edges, skipped = usable_tasks(utts_by, specs, utts_by["A"])
    utts, n_classes = label_corpora(utts_by, tasks, edges)
    keys = {k: [condition_key(k, t) for t in ts] for k, ts in tasks.items()}
    if not keys["A"]:
        raise ValueError(f"no usable task on corpus A ({skipped})")
    options = ScanOptions(properties=tuple(f"aape_{k}" for ks in keys.values() for k in ks), aape=config.aape,
                          batch_size=config.batch_size)
    model_path, models = load_models(c.model, config.random_init_twin, config.twin_seed)
    print(f"[2/5] scans of {len(utts)} utterances ({', '.join(models)}); conditions {n_classes}", file=sys.stderr,
          flush=True)
    issues, decoded, scans = scan_models(models, utts, options, work)

    print("[3/5] coverage and shared neurons", file=sys.stderr, flush=True)
    own_tasks = [condition_key("A", Task.parse(s)) for s in config.tasks if Task.parse(s) in tasks["A"]]
    coverage = {name: coverage_rows(sc.scored, own_tasks) for name, sc in scans.items()}
    trained = scans["trained"].scored
    shared = {}
    for t in tasks.get("B", []):
        if t in tasks["A"]:
            shared[t.spec] = shared_ratios(trained[f"aape_{condition_key('A', t)}"]["groups"],
                                           trained[f"aape_{condition_key('B', t)}"]["groups"],
                                           n_draws=config.null_draws, seed=c.seed)
    all_sets = {f"{k.removeprefix('A.')}:{g}": m for k in own_tasks for g, m in trained[f"aape_{k}"]["groups"].items()}
    cross_names, cross = overlap_matrix_null(all_sets, "containment", n_draws=config.null_draws, seed=c.seed)
    twin_overlap = {}
    if "random-init" in scans:
        twin = scans["random-init"].scored
        for k in own_tasks:
            for g, m in trained[f"aape_{k}"]["groups"].items():
                r = overlap_null(m, twin[f"aape_{k}"]["groups"][g], n_draws=config.null_draws, seed=c.seed)
                twin_overlap[f"{k}:{g}"] = {m2: {s: float(r[f"pooled_{m2}"][s]) for s in
                                                 ("observed", "null_mean", "p_value")} for m2 in ("iou", "containment")}
    ablation: dict[str, dict] = {}
    if config.ablation:
        print("[4/5] ablation with probes", file=sys.stderr, flush=True)
        wanted = config.ablation_tasks or config.tasks
        for name in (list(models) if config.twin_ablation else ["trained"]):
            sets = scans[name].to_neuron_sets()
            for spec in wanted:
                k = condition_key("A", Task.parse(spec))
                if k not in own_tasks:
                    continue
                try:
                    ablation[f"{name}:{k}"] = class_ablation(models[name], utts, k, sets, f"aape_{k}", config.probe,
                                                             random_controls=config.random_controls, seed=c.seed,
                                                             audio_of=decoded.audio)
                except ValueError as e:  # a split that cannot be made (too few speakers / utterances)
                    ablation[f"{name}:{k}"] = {"error": str(e)}

    print("[5/5] report", file=sys.stderr, flush=True)
    with ResultsDir(out_dir, "aape", flags=dataclasses.asdict(config)) as res:
        res.run.update(model_path=model_path, manifests={k: p for k, (p, _) in corpora.items()},
                       data_decoding={k: u.decoding for k, (_, u) in corpora.items()},
                       data_issues=issues.as_dict(), seconds=round(time.time() - t0, 1))
        text = (f"Model: {model_path}. Corpora: " + "; ".join(f"{k}: {p} ({u.summary})"
                                                              for k, (p, u) in corpora.items()) + ".")
        write_scan_dirs(res, scans, text)
        res.save_json("tasks", {"tasks": {k: [t.spec for t in ts] for k, ts in tasks.items()}, "bin_edges": edges,
                                "bin_ranges": {s: bin_names(Task.parse(s), e) for s, e in edges.items() if e},
                                "classes_per_condition": n_classes, "skipped": skipped})
        for name, part in (("coverage", coverage), ("shared", shared), ("cross_task", {"names": cross_names, **cross}),
                           ("twin_overlap", twin_overlap), ("ablation", ablation)):
            res.save_json(name, part)
        for name, sc in scans.items():
            for k in own_tasks:
                masks = np.stack(list(sc.scored[f"aape_{k}"]["groups"].values()))
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
    parts = {"coverage": coverage, "shared": shared, "twin_overlap": twin_overlap, "ablation": ablation,
             "tasks": tasks, "skipped": skipped}
    return StudyResult(out_dir, scans["trained"], parts, time.time() - t0)
