"""Protected pruning (arXiv 2409.05910, 2506.21712): L1 vs protected, one-shot and iterative with continued
pre-training between steps; probes of one :class:`~jaxneurons.probes.ProbeSuite` measure every pruned model.

- :class:`PruningConfig`: densities, protection strategy, the iterative schedule and its continued
  pre-training (the paper's values in the docstring; scaled defaults for the bundled model on a 2-core CPU).
- :class:`ScanIdentify`: the ``identify(model, keep, layer)`` callback of :mod:`jaxneurons.pruning` that finds
  the protected neurons by a fresh :func:`jaxneurons.scan` of the partly pruned model.
- :func:`continued_pretraining_data`: the ONE place the continued pre-training targets are made.
- :func:`pruning_curves` / :func:`protected_pruning_run`, :func:`save_pruning` and :func:`pruning_section`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxneurons.config_flags import field_help

Metrics = dict[str, float]
EvaluateFn = Callable[[Any], Metrics]  # (model with pruned neurons zeroed) -> metrics


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """Structured FFN pruning by ‖W1[i,:]‖₁ + |b1[i]| + ‖W2[:,i]‖₁ (arXiv 2409.05910).

    The paper's schedule (MelHuBERT, D = 3072): 128 neurons per layer per step, 20 steps, 25k continued
    pre-training updates per step, lr 1e-5, batch 4, mask_prob 0.7, mask_length 5, 512 k-means targets; the
    defaults below scale the step to the default model's 768 neurons (32) and the updates to a 2-core CPU.
    ``protect``: which scan results are never pruned (a study sets its own: property neurons; for speaker
    neurons P_ssl ∪ P_ive, arXiv 2506.21712).
    """

    protect: tuple[str, ...] = field_help(("phone_type", "gender", "pitch"),
                                          "Scan results whose neurons pruning protects.")
    densities: tuple[float, ...] = field_help((0.75, 0.5, 0.3, 0.2), "One-shot pruning densities (fraction of FFN "
                                              "neurons kept per layer). The paper's main point: 577/3072 = 0.19.")
    strategy: str = field_help("all", "Protection: identify once per step ('all') or again before each layer "
                               "('each': one scan per layer, slow).", choices=("all", "each"))
    clamp: bool = field_help(True, "Keep every protected neuron when they exceed a layer's target (that layer then "
                             "ends above the density; achieved densities are reported). False: error.")
    iterative: bool = field_help(True, "Also run iterative pruning with continued pre-training between steps.")
    iterative_protect: str = field_help(
        "reidentify", "Iterative: protect the neurons re-identified on each step's pruned and trained model "
        "('reidentify', one scan per step; the set drifts with the model) or the unpruned model's set at every "
        "step ('original', no scan). The studies leave it open (METHODS.md's 'all' / 'each' say when to identify "
        "within one pruning step).", choices=("reidentify", "original"))
    neurons_per_step: int = field_help(32, "Iterative: neurons removed per layer per step (paper: 128 of 3072; "
                                       "scaled to the default model's 768 -> 32).")
    num_steps: int = field_help(20, "Iterative: pruning steps (paper: 20).")
    updates_per_step: int = field_help(50, "Iterative: continued pre-training updates after each step (paper: "
                                       "25000; scaled to the 2-core CPU default; 0: no training).")
    cpt_learning_rate: float = field_help(1e-5, "Continued pre-training peak learning rate (paper: 1e-5).")
    cpt_batch_size: int = field_help(4, "Continued pre-training utterances per update (paper: 4).")
    cpt_mask_prob: float = field_help(0.7, "Span-mask probability (paper, MelHuBERT: 0.7).")
    cpt_mask_length: int = field_help(5, "Span-mask length in frames (paper: 5).")
    cpt_crop_seconds: float = field_help(4.0, "Random crop per utterance for continued pre-training.")
    cpt_warmup_steps: int = field_help(0, "Warm-up updates of each continued pre-training run.")
    cpt_targets: str = field_help(
        "recipe", "Continued pre-training targets: 'recipe' regenerates the targets the model was trained on (its "
        "stored TargetRecipe; the rule); 'fresh_mfcc_kmeans' is the explicit choice for a model without one (new "
        "MFCC clusters, prediction head re-initialised).", choices=("recipe", "fresh_mfcc_kmeans"))
    cpt_recipe: str = field_help("", "Model directory holding the target recipe (default: the model's own).")
    num_clusters: int = field_help(512, "fresh_mfcc_kmeans on a model without a prediction head: k-means clusters "
                                   "(paper: 512); a model with a head keeps its own number.")
    cpt_seed: int = field_help(0, "Seed of continued pre-training.")

    def __post_init__(self) -> None:
        if not self.protect:
            raise ValueError("PruningConfig.protect is empty: protected pruning needs a set to protect")
        if not all(0.0 < d <= 1.0 for d in self.densities):
            raise ValueError(f"densities must lie in (0, 1], got {self.densities}")


def union_mask(scored: Mapping[str, Any], results: Sequence[str]) -> np.ndarray:
    """(L, D) bool union of every group of ``results`` in a scan's scored dict."""
    missing = [r for r in results if r not in scored]
    if missing:
        raise ValueError(f"cannot protect {missing}: the scan has {list(scored)}")
    masks = [np.asarray(m, bool) for r in results for m in scored[r]["groups"].values()]
    return np.any(np.stack(masks), axis=0)


class ScanIdentify:
    """``identify(model, keep, layer)`` for :mod:`jaxneurons.pruning`: the union of ``protect``'s neurons.

    The partly pruned model (``slim_model(model, keep)``: only its live neurons, so the top-1 % event size follows
    the shrinking width) is scanned afresh with ``properties``; the result is mapped back to ``model``'s
    neurons. The unpruned ``base_model`` reuses ``base_mask`` (the study's own scan). ``calls`` counts scans.
    """

    def __init__(self, utts: Sequence, properties: Sequence[Any], options: Any, protect: Sequence[str], *,
                 decoded: Any = None, base_model: Any = None, base_mask: np.ndarray | None = None):
        self.utts, self.properties, self.options = list(utts), list(properties), options
        self.protect = tuple(protect)
        self.decoded, self.base_model, self.base_mask = decoded, base_model, base_mask
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, model: Any, keep: Any, layer: int | None) -> list[np.ndarray]:
        from jaxneurons.pipeline.scan import scan
        from jaxneurons.pruning import slim_model
        from jaxneurons.pruning.scores import as_bool_rows, ffn_widths

        widths = ffn_widths(model)
        rows = as_bool_rows(keep, widths, "keep")
        if model is self.base_model and self.base_mask is not None and all(r.all() for r in rows):
            return [np.asarray(m, bool)[:w] for m, w in zip(self.base_mask, widths, strict=True)]
        t0 = time.time()
        sub = model if all(r.all() for r in rows) else slim_model(model, rows)
        found = union_mask(scan(sub, self.utts, self.properties, options=self.options, decoded=self.decoded,
                                progress=False).scored, self.protect)
        out = []
        for r, f in zip(rows, found, strict=True):
            full = np.zeros(len(r), bool)
            full[np.flatnonzero(r)] = f[: int(r.sum())]
            out.append(full)
        self.calls += 1
        self.seconds += time.time() - t0
        return out


def continued_pretraining_data(model: Any, utts: Sequence, config: PruningConfig, decoded: Any = None, *,
                               recipe_dir: str | None = None) -> Any:
    """Audio and frame targets for continued pre-training after pruning (the only place a study makes them).

    The rule (METHODS.md): continued pre-training uses the targets the model was trained on (same feature
    source, layer and k-means centroids); new clusters under old head indices are a different objective. So
    by default (``cpt_targets="recipe"``) the targets are regenerated from the model's stored
    :class:`~jaxneurons.train.targets.TargetRecipe` (in ``cpt_recipe``, default ``recipe_dir``: the model's own
    directory); a model without one is an error unless ``cpt_targets="fresh_mfcc_kmeans"`` is chosen
    explicitly (new MFCC clusters and a re-initialised prediction head).
    """
    from jaxneurons.train.targets import continued_pretraining_data as regenerate

    audio = decoded.all_audio() if decoded is not None else utts
    if config.cpt_targets == "fresh_mfcc_kmeans":
        k = config.num_clusters if getattr(model, "final_proj", None) is None else None
        return regenerate(model, audio, targets="fresh_mfcc_kmeans", num_clusters=k, seed=config.cpt_seed)
    return regenerate(model, audio, recipe=config.cpt_recipe or recipe_dir, seed=config.cpt_seed)


def check_cpt_targets(config: PruningConfig, recipe_dir: str | None) -> None:
    """Fail before any work when iterative pruning would need a target recipe the model does not have."""
    from jaxneurons.train.targets import RECIPE_DIR, load_recipe

    if not (config.iterative and config.updates_per_step > 0 and config.cpt_targets == "recipe"):
        return
    where = config.cpt_recipe or recipe_dir
    if not where or load_recipe(where) is None:
        raise ValueError(f"{where or 'the model'}: no stored target recipe ({RECIPE_DIR}/) for continued "
                         "pre-training; give --cpt_recipe DIR (the model's training recipe), or choose "
                         "--cpt_targets fresh_mfcc_kmeans explicitly (new clusters, re-initialised head), or "
                         "--updates_per_step 0")


def _rotated(data: Any, offset: int) -> Any:
    """The same utterances starting at ``offset``: each pruning step's CPT sees new batches while the train
    config (and so the compiled step) stays the same."""
    k = offset % len(data.audio)
    return dataclasses.replace(data, audio=list(data.audio[k:]) + list(data.audio[:k]),
                               targets=list(data.targets[k:]) + list(data.targets[:k]))


def _densities(keep: Any) -> tuple[float, list[float]]:
    from jaxneurons.pruning.scores import as_bool_rows

    rows = as_bool_rows(keep, None, "keep")
    per = [float(r.mean()) for r in rows]
    return float(sum(r.sum() for r in rows) / sum(len(r) for r in rows)), per


def _fmt(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())


def pruning_curves(model: Any, utts: Sequence, evaluate: EvaluateFn, identify: Callable, config: PruningConfig,
                   workdir: str, *, decoded: Any = None, log: Callable[[str], None] = print,
                   recipe_dir: str | None = None) -> dict[str, Any]:
    """L1 vs protected pruning, one-shot at each density and (optionally) iterative with CPT between steps.

    ``evaluate(model)`` measures a model whose pruned neurons are zeroed. Returns ``unpruned`` metrics,
    ``one_shot``/``iterative`` {method: [{density, achieved_density, per_layer_density, metrics, ...}]}, the
    config, notes and ``keep`` {name: keep mask over the original neurons} (save with :func:`save_pruning`).
    """
    from jaxneurons.pruning import PruningError, iterative_prune, protected_prune, zero_pruned
    from jaxneurons.pruning.scores import ffn_widths
    from jaxneurons.train.pretrain import TrainConfig, Trainer

    out: dict[str, Any] = {"settings": dataclasses.asdict(config), "notes": [], "one_shot": {}, "iterative": {},
                           "keep": {}}
    out["unpruned"] = evaluate(model)
    methods = {"L1": None, "protected": identify}
    for name, ident in methods.items():
        rows = []
        for d in config.densities:
            try:
                keep = protected_prune(model, d, identify=ident, strategy=config.strategy, clamp=config.clamp)
            except PruningError as e:
                out["notes"].append(f"one-shot {name} at density {d}: {e}")
                continue
            total, per = _densities(keep)
            metrics = evaluate(zero_pruned(model, keep))
            rows.append({"density": d, "achieved_density": total, "per_layer_density": per, "metrics": metrics})
            out["keep"][f"one_shot_{name}_{d:g}"] = keep
            log(f"one-shot {name} density {d:g} (achieved {total:.3f}): {_fmt(metrics)}")
        out["one_shot"][name] = rows
    if not config.iterative:
        return out
    width = min(ffn_widths(model))
    steps = min(config.num_steps, (width - 1) // config.neurons_per_step)
    if steps < config.num_steps:
        out["notes"].append(f"iterative: {config.num_steps} steps of {config.neurons_per_step} would empty a "
                            f"layer of {width}; ran {steps}")
    if steps < 1:
        return out
    step_density = [1 - (s + 1) * config.neurons_per_step / width for s in range(steps)]
    eval_steps = {int(np.argmin([abs(x - d) for x in step_density])) for d in config.densities} | {steps - 1}
    out["iterative_eval_steps"] = sorted(eval_steps)
    data = (continued_pretraining_data(model, utts, config, decoded, recipe_dir=recipe_dir)
            if config.updates_per_step > 0 else None)
    if data is not None:
        out["cpt_targets"] = {"choice": config.cpt_targets, "recipe": data.recipe.note if data.recipe else None,
                              "source": data.recipe.source if data.recipe else None,
                              "num_clusters": data.num_clusters, "head_reinitialised": bool(data.reinit_head)}
    updates = max(config.updates_per_step, 1)
    train_config = TrainConfig(steps=updates, batch_size=config.cpt_batch_size, crop_seconds=config.cpt_crop_seconds,
                               learning_rate=config.cpt_learning_rate, warmup_steps=config.cpt_warmup_steps,
                               mask_prob=config.cpt_mask_prob, mask_length=config.cpt_mask_length, seed=config.cpt_seed,
                               checkpoint_every=updates, keep_checkpoints=1, log_every=updates)
    if config.iterative_protect == "original":
        original = identify(model, [np.ones(w, bool) for w in ffn_widths(model)], None)  # the unpruned model's set
        methods["protected"] = lambda m, keep, layer: original
    for name, ident in methods.items():
        rows: list[dict] = []
        losses: list[dict] = []
        current: dict[str, Any] = {}

        def on_step(record, _model, current=current):
            current["record"] = record

        def train_fn(m, step, name=name, rows=rows, losses=losses, current=current):
            if data is not None:
                run_dir = os.path.join(workdir, f"cpt-{name}", f"step{step:03d}")
                shutil.rmtree(run_dir, ignore_errors=True)  # each step trains from the pruned weights
                trainer = Trainer(m, _rotated(data, step * train_config.steps * train_config.batch_size),
                                  train_config, run_dir)
                hist = trainer.train()
                m = trainer.encoder()
                losses.append({"step": step, "loss": float(np.mean([h["loss"] for h in hist])),
                               "masked_accuracy": float(np.mean([h["masked_accuracy"] for h in hist]))})
            if step in eval_steps:
                kept = current["record"].kept
                total = sum(len(k) for k in kept) / sum(ffn_widths(model))
                metrics = evaluate(m)
                rows.append({"step": step + 1, "density": step_density[step], "achieved_density": total,
                             "per_layer_density": [len(k) / w for k, w in zip(kept, ffn_widths(model), strict=True)],
                             "metrics": metrics})
                log(f"iterative {name} step {step + 1}/{steps} (density {total:.3f}): {_fmt(metrics)}")
            return m

        try:
            _, keep, _ = iterative_prune(
                model, neurons_per_step=config.neurons_per_step, num_steps=steps, train_fn=train_fn,
                identify=ident, strategy=config.strategy, physical=False, clamp=config.clamp, on_step=on_step)
            out["keep"][f"iterative_{name}_final"] = keep
        except PruningError as e:
            out["notes"].append(f"iterative {name}: {e}")
        out["iterative"][name] = rows
        out.setdefault("cpt", {})[name] = losses
    return out


def protected_pruning_run(model: Any, utts: Sequence, properties: Sequence[Any], options: Any, scored: Mapping,
                          probes: Any, config: PruningConfig, workdir: str, *, decoded: Any = None,
                          recipe_dir: str | None = None) -> dict[str, Any]:
    """:func:`pruning_curves` with ``config.protect``'s neurons re-identified by :class:`ScanIdentify`; every
    model is measured twice with the same split and recipe: probes retrained on it (``TASK_accuracy``) and the
    unpruned model's probes applied unchanged (``TASK_accuracy_frozen_probe``, how far pruning moved the
    representation itself). ``probes``: a :class:`~jaxneurons.probes.ProbeSuiteConfig`."""
    from jaxneurons.probes import ProbeSuite

    identify = ScanIdentify(utts, properties, options, config.protect, decoded=decoded, base_model=model,
                            base_mask=union_mask(scored, config.protect))
    audio = decoded.all_audio() if decoded is not None else None
    reference = ProbeSuite(utts, probes, audio=audio)
    reference.fit(model)

    def evaluate(m: Any) -> Metrics:
        retrained = ProbeSuite(utts, probes, audio=audio)
        fresh = retrained.fit(m)
        frozen = reference.evaluate(m)
        out = {f"{t}_accuracy": r["value"] for t, r in fresh.items()}
        out.update({f"{t}_accuracy_frozen_probe": r["value"] for t, r in frozen.items()})
        return out

    curves = pruning_curves(model, utts, evaluate, identify, config, workdir, decoded=decoded,
                            log=lambda s: print(s, file=sys.stderr, flush=True), recipe_dir=recipe_dir)
    curves["protected_results"] = list(config.protect)
    curves["protected_neurons"] = int(identify.base_mask.sum())
    curves["identify_scans"] = {"count": identify.calls, "seconds": round(identify.seconds, 1)}
    return curves


def save_pruning(res: Any, curves: dict[str, Any]) -> None:
    """``pruning.json`` plus each keep mask as ``arrays/keep__NAME.npy`` (padded to (L, D_max), bool)."""
    from jaxneurons.pruning.scores import as_bool_rows

    for name, keep in curves.get("keep", {}).items():
        rows = as_bool_rows(keep, None, "keep")
        padded = np.zeros((len(rows), max(len(r) for r in rows)), bool)
        for i, r in enumerate(rows):
            padded[i, : len(r)] = r
        res.save_array(f"keep__{name}", padded)
    res.save_json("pruning", {k: v for k, v in curves.items() if k != "keep"})


def _label(metric: str) -> str:
    task, _, rest = metric.partition("_accuracy")
    what = {"phone": "frame phone accuracy", "speaker": "speaker-ID accuracy"}.get(task, f"{task} accuracy")
    return what + (", probe of the unpruned model" if rest == "_frozen_probe" else "")


def pruning_section(report: Any, res: Any, curves: Mapping[str, Any], protected_what: str) -> None:
    """Tables and one figure per metric: accuracy vs density, L1 vs protected, one-shot and iterative."""
    s = curves["settings"]
    report.heading("Pruning")
    report.text(
        f"Structured FFN pruning by the L1 score ‖W1[i,:]‖₁ + |b1[i]| + ‖W2[:,i]‖₁ (lowest removed, per layer). "
        f"'protected': {protected_what} ({curves.get('protected_neurons', '?')} neurons) are removed from the "
        f"candidates (strategy '{s['strategy']}', re-identified on the partly pruned model by a fresh scan). "
        "One-shot: one step to each density. "
        + (f"Iterative: {s['neurons_per_step']} neurons per layer per step, "
           f"{s['updates_per_step']} updates of masked-prediction continued pre-training after each step (lr "
           f"{s['cpt_learning_rate']:g}, batch {s['cpt_batch_size']}, mask_prob {s['cpt_mask_prob']}, mask_length "
           f"{s['cpt_mask_length']}; targets: {s['cpt_targets']}; the paper: 128 of 3072 per step, 20 steps, 25k "
           "updates). " if s["iterative"] else "Iterative pruning: not run (iterative=False). ")
        + "Probes (one ProbeSuite "
        "split and recipe) are retrained on each pruned model; the '... probe of the unpruned model' metrics apply "
        "the unpruned model's probes unchanged, which shows how far pruning moved the representation itself."
    )
    base = curves["unpruned"]
    metrics = list(base)
    rows = [["unpruned", "", 1.0, *[base[m] for m in metrics]]]
    for kind in ("one_shot", "iterative"):
        for method, entries in curves[kind].items():
            for e in entries:
                rows.append([f"{kind.replace('_', '-')} {method}", e["density"], e["achieved_density"],
                             *[e["metrics"].get(m, float("nan")) for m in metrics]])
    report.table(["pruning", "target density", "achieved density", *[_label(m) for m in metrics]], rows,
                 caption="Probe metrics on the test split after pruning")
    for m in metrics:
        series: dict[str, tuple[list, list]] = {}
        for kind in ("one_shot", "iterative"):
            for method, entries in curves[kind].items():
                if entries:
                    series[f"{kind.replace('_', '-')} {method}"] = (
                        [e["achieved_density"] for e in entries], [e["metrics"].get(m, np.nan) for e in entries])
        if series:
            path = _xy_curves(res.file(f"figures/pruning_{m}.png"), series, f"{_label(m)} after pruning",
                              "fraction of FFN neurons kept", _label(m), base[m])
            report.figure(path, f"{_label(m)} vs density (dashed: unpruned)")
    for note in curves["notes"]:
        report.text(f"Note: {note}")


def _xy_curves(path: str, series: Mapping[str, tuple[list, list]], title: str, xlabel: str, ylabel: str,
               baseline: float) -> str:
    """Curves with their own x values (achieved densities differ between methods)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", label=name, linestyle="-" if "one-shot" in name else "--")
    ax.axhline(baseline, color="gray", linestyle=":", label="unpruned")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
