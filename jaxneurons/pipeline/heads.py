"""Attention-head analysis (study 4, arXiv 2409.03115): streaming head metrics, head typing, head ablation.

1. Metrics: one jitted function per batch runs the model with ``capture_attention=True`` and turns the
   attention probabilities (L, B, H, T, T) into per-utterance metrics (L, B, H, 3)
   (:func:`jaxneurons.heads.head_metrics`, valid frames only); the host folds them into
   :class:`jaxneurons.heads.HeadStats` (mean and histogram over utterances per head). Attention maps of
   the corpus are never stored: only those of one example utterance, recomputed alone for figures.
2. Typing: :func:`jaxneurons.heads.head_types` on the per-head means (diagonal / vertical / global): by
   default the largest RAW metric (the study's rule; z-scoring across heads is an option); the
   representative head of a type is the head of that type with the largest metric of the type.
3. Ablation: the frame phone probe of :class:`jaxneurons.probes.ProbeSuite` (the one split policy and
   training recipe of every study) is trained on the *unablated* model, then frame phone accuracy on the
   test speakers is measured for every head mask (L, H): each type removed, each type kept alone, random
   same-size controls drawn from the other heads, and optionally each head removed alone. Masks are data
   to the forward, so the sweep reuses the compiled forward of the clean run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxneurons.config_flags import field_help
from jaxneurons.data import BatchLoader, DataIssues, Utterance, load_audio
from jaxneurons.heads import (
    DIAGONALITY_KINDS,
    GLOBALNESS_KINDS,
    HEAD_TYPES,
    METRIC_NAMES,
    UNTYPED,
    VERTICALITY_KINDS,
    HeadTopUtterances,
    finalize_head_stats,
    head_metrics,
    head_types,
    init_head_stats,
    init_head_top,
    normalize_metrics,
    type_head_mask,
    update_head_stats,
    update_head_top,
)
from jaxneurons.heads.classify import NORMALIZATIONS
from jaxneurons.interventions import Ablation, random_controls
from jaxneurons.models import forward_with_captures
from jaxneurons.probes import ProbeSuite, ProbeSuiteConfig

log = logging.getLogger(__name__)

NONE_MASK = "none"


@dataclasses.dataclass(frozen=True)
class HeadsConfig:
    """Everything that determines a heads analysis (study 4, arXiv 2409.03115; METHODS section 4).

    Metrics: the normalised [0, 1] kinds of diagonality, verticality and globalness (after Yang, Liu & Lee
    2020, arXiv 2006.03265). Typing: a head takes its largest *raw* metric (the study's rule), with optional
    per-type minimum raw values (``min_*``, 0 = no minimum); ``normalize="zscore"`` / ``"minmax"`` (compare
    heads relative to each other) is an option only, since it gives every model all three types by
    construction. Ablation: multiply a head's attention probabilities by 0 after the softmax, remove each type
    / keep only each type, against random same-size head sets drawn from the heads *not* of that type; the
    frame phone probe is the :class:`jaxneurons.probes.ProbeSuite` (``probe``), the same split and recipe as
    every other study.
    """

    diagonality_kind: str = field_help("normalized", "Diagonality definition.", choices=DIAGONALITY_KINDS)
    verticality_kind: str = field_help("normalized", "Verticality definition.", choices=VERTICALITY_KINDS)
    globalness_kind: str = field_help("normalized", "Globalness definition.", choices=GLOBALNESS_KINDS)
    renormalize: bool = field_help(True, "Renormalise each valid row over valid keys (models without key masks).")
    normalize: str = field_help("none", "Compare metrics raw (none: the study's rule) or normalised across heads "
                                "first (zscore / minmax: options only).", choices=NORMALIZATIONS)
    min_diagonality: float = field_help(0.0, "Minimum raw diagonality for a head to be typed diagonal.")
    min_verticality: float = field_help(0.0, "Minimum raw verticality for a head to be typed vertical.")
    min_globalness: float = field_help(0.0, "Minimum raw globalness for a head to be typed global.")
    n_bins: int = field_help(50, "Histogram bins per metric.")
    batch_size: int = field_help(8, "Utterances per batch of the metrics pass.")
    pad_seconds: float = field_help(1.0, "Audio padded to multiples of this (few shapes to compile).")
    example_utterance: int = field_help(0, "Manifest index whose attention maps go into the figures.")
    keep_utterance_metrics: bool = field_help(True, "Keep the (N, L, H, 3) per-utterance metrics.")
    top_utterances: int = field_help(5, "Utterances with the highest value of each metric kept per head, for the "
                                     "explorer (0: none; not a setting of the study, which reports means).")
    ablation: bool = field_help(True, "Train the phone probe and run the head-ablation sweep.")
    random_controls: int = field_help(5, "Random same-size head sets (outside the type) per type ablation.")
    single_head_ablation: bool = field_help(False, "Also remove each head alone.")
    single_head_layers: tuple[int, ...] = field_help((), "Layers (0-based) for single-head ablation (empty: all).")
    max_single_heads: int = field_help(0, "At most this many single-head ablations (0: no limit).")
    probe: ProbeSuiteConfig = ProbeSuiteConfig(tasks=("phone",))
    seed: int = field_help(0, "Seed of the random head controls.")

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.batch_size < 1 or self.random_controls < 0 or self.top_utterances < 0:
            raise ValueError("batch_size must be >= 1, random_controls >= 0, top_utterances >= 0")
        if self.ablation and "phone" not in self.probe.tasks:
            raise ValueError(f"the head ablation measures the phone probe; probe.tasks {self.probe.tasks} "
                             "lacks 'phone'")

    @property
    def thresholds(self) -> dict[str, float]:
        """Metric name -> minimum raw value (only the non-zero ones)."""
        mins = (self.min_diagonality, self.min_verticality, self.min_globalness)
        return {name: v for name, v in zip(METRIC_NAMES, mins, strict=True) if v > 0}

    @property
    def kinds(self) -> dict[str, Any]:
        return dict(diagonality_kind=self.diagonality_kind, verticality_kind=self.verticality_kind,
                    globalness_kind=self.globalness_kind, renormalize=self.renormalize)

    def hist_ranges(self) -> tuple[tuple[float, float], ...]:
        """Histogram ranges: (0, 1) for the normalised kinds; raw kinds get ranges wide enough to hold them."""
        return (
            (0.0, 1.0) if self.diagonality_kind == "normalized" else (-500.0, 0.0),
            (0.0, 1.0) if self.verticality_kind == "normalized" else (-10.0, 0.0),
            (0.0, 1.0) if self.globalness_kind == "normalized" else (0.0, 10.0),
        )


# --------------------------------------------------------------------------------------------------------------
# 1. Streaming metrics


@dataclasses.dataclass
class HeadMetrics:
    """Per-head statistics over a corpus (``stats`` from :func:`finalize_head_stats`) and per-utterance values."""

    stats: dict[str, np.ndarray]
    utterance_metrics: np.ndarray | None  # (N, L, H, 3) in manifest order, NaN where undefined
    frame_lengths: np.ndarray  # (N,)
    num_traces: int
    seconds: float
    top: HeadTopUtterances | None = None  # per head and metric, the utterances with the largest values

    @property
    def mean(self) -> np.ndarray:
        return self.stats["mean"]


def make_metrics_fn(graphdef: nnx.GraphDef, kinds: dict[str, Any], counter: list[int] | None = None) -> Callable:
    """Jitted ``f(state, audio, lengths) -> (metrics (L, B, H, 3), frame_lengths (B,))``; rows with length 0
    (batch padding) get frame length 0, so their metrics are NaN and they are not counted."""

    @jax.jit
    def f(state, audio, lengths):
        if counter is not None:
            counter[0] += 1
        model = nnx.merge(graphdef, state)
        out, _, attn = forward_with_captures(model, audio, lengths, capture_ffn=False, capture_attention=True)
        frame_lengths = jnp.where(lengths > 0, out.frame_lengths, 0).astype(jnp.int32)
        return head_metrics(jnp.stack(attn), frame_lengths, **kinds), frame_lengths

    return f


def stream_head_metrics(
    model: nnx.Module, utts: Sequence[Utterance], options: HeadsConfig, *, issues: DataIssues | None = None,
    progress: Callable[[int, int], None] | None = None, show_progress: bool = True,
) -> HeadMetrics:
    """One pass over ``utts``: per-utterance metrics per batch, accumulated per head (means, histograms and,
    with ``options.top_utterances``, each head's top utterances per metric; nothing else kept).

    ``progress(done, total)`` is called after every batch; ``show_progress``: a progress bar over the batches
    (:mod:`jaxneurons.progress`: shown on a terminal only, ``JAXNEURONS_PROGRESS`` overrides).
    """
    from jaxneurons.progress import ProgressBar

    t0 = time.perf_counter()
    config = model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    loader = BatchLoader(utts, options.batch_size, lambda n: int(model.num_frames(n)),
                         pad_multiple=int(options.pad_seconds * 16000), issues=issues)
    graphdef, state = nnx.split(model)
    counter = [0]
    fn = make_metrics_fn(graphdef, options.kinds, counter)
    stats = init_head_stats(n_layers, n_heads, n_bins=options.n_bins, ranges=options.hist_ranges())
    per_utt = np.full((len(utts), n_layers, n_heads, 3), np.nan, np.float32) if options.keep_utterance_metrics \
        else None
    top = init_head_top(n_layers, n_heads, options.top_utterances) if options.top_utterances else None
    frame_lengths = np.zeros(len(utts), np.int64)
    bar = ProgressBar(len(loader), 0, desc="head metrics", unit="batch") if show_progress else None
    for k, batch in enumerate(loader):
        metrics, lengths = fn(state, batch.audio, batch.audio_lengths)
        stats = update_head_stats(stats, metrics, lengths=lengths)
        rows = np.flatnonzero(batch.valid)
        idx = batch.utt_indices[rows]
        frame_lengths[idx] = np.asarray(lengths)[rows]
        if per_utt is not None:
            per_utt[idx] = np.moveaxis(np.asarray(metrics), 1, 0)[rows]
        if top is not None:
            top = update_head_top(top, np.asarray(metrics)[:, rows], idx)
        if bar is not None:
            bar(k + 1)
        if progress is not None:
            progress(k + 1, len(loader))
    if bar is not None:
        bar.close()
    return HeadMetrics(finalize_head_stats(stats), per_utt, frame_lengths, counter[0], time.perf_counter() - t0,
                       top)


def utterance_attention(model: nnx.Module, utt: Utterance, issues: DataIssues | None = None) -> np.ndarray:
    """Attention probabilities (L, H, T, T) of one utterance, run alone (no padding), for figures."""
    audio = load_audio(utt.path, 16000, issues=issues)[None]
    _, _, attn = forward_with_captures(model, audio, np.array([audio.shape[1]], np.int32), capture_ffn=False,
                                       capture_attention=True)
    return np.stack([np.asarray(a[0]) for a in attn])


# --------------------------------------------------------------------------------------------------------------
# 2. Typing


@dataclasses.dataclass
class HeadTyping:
    """Types (L, H) (index into HEAD_TYPES, -1 untyped), normalised metrics and one representative per type."""

    types: np.ndarray
    normalized: np.ndarray  # (L, H, 3)
    representative: dict[str, tuple[int, int] | None]

    def counts_per_layer(self) -> dict[str, list[int]]:
        out = {name: (self.types == i).sum(axis=1).astype(int).tolist() for i, name in enumerate(HEAD_TYPES)}
        if (self.types == UNTYPED).any():
            out["untyped"] = (self.types == UNTYPED).sum(axis=1).astype(int).tolist()
        return out

    def counts(self) -> dict[str, int]:
        return {k: int(sum(v)) for k, v in self.counts_per_layer().items()}

    def winning_score(self) -> np.ndarray:
        """(L, H) normalised metric of each head's own type (NaN if untyped)."""
        t = self.types.astype(np.int64)
        score = np.take_along_axis(self.normalized, np.maximum(t, 0)[..., None], axis=-1)[..., 0]
        return np.where(t >= 0, score, np.nan)

    def to_json(self) -> dict[str, Any]:
        names = [*HEAD_TYPES]
        return {
            "types": [[names[v] if v >= 0 else "untyped" for v in row] for row in self.types.tolist()],
            "type_ids": self.types.tolist(),
            "type_names": names,
            "counts": self.counts(),
            "counts_per_layer": self.counts_per_layer(),
            "representative": {k: None if v is None else {"layer": v[0], "head": v[1]}
                               for k, v in self.representative.items()},
        }


def type_heads(mean_metrics: np.ndarray, options: HeadsConfig) -> HeadTyping:
    """Type every head and pick, per type, its most typical head (largest normalised metric of the type)."""
    types = head_types(mean_metrics, normalize=options.normalize, thresholds=options.thresholds or None)
    z = normalize_metrics(mean_metrics, options.normalize)
    rep: dict[str, tuple[int, int] | None] = {}
    for i, name in enumerate(HEAD_TYPES):
        score = np.where(types == i, z[..., i], -np.inf)
        rep[name] = tuple(int(v) for v in np.unravel_index(np.argmax(score), score.shape)) if (types == i).any() \
            else None
    return HeadTyping(types, z, rep)


# --------------------------------------------------------------------------------------------------------------
# 3. Ablation


def ablation_masks(types: np.ndarray, options: HeadsConfig) -> tuple[list[str], np.ndarray, list[dict]]:
    """Names, stacked (M, L, H) float32 multipliers and descriptions of every ablation of the sweep.

    ``none``; ``remove:T`` / ``keep_only:T`` per head type T present; ``random_remove:T:r`` /
    ``random_keep:T:r`` (r < ``random_controls``): as many heads as type T has, drawn uniformly from the heads
    NOT of type T (a control must not contain the set it controls for), removed / kept alone; when fewer
    heads lie outside T than T has, no control can be drawn and the type's entry says so
    (``controls_impossible`` in its ``remove:T`` description). ``head:L.H``: single-head ablation.
    """
    n_layers, n_heads = types.shape
    names, masks, info = [NONE_MASK], [np.ones(types.shape, np.float32)], [{"kind": "none", "heads_removed": 0}]

    def add(name: str, mask: np.ndarray, **meta: Any) -> None:
        names.append(name)
        masks.append(mask.astype(np.float32))
        info.append({**meta, "heads_removed": int((mask == 0).sum())})

    for t, name in enumerate(HEAD_TYPES):
        of_type = types == t
        k = int(of_type.sum())
        if k == 0:
            continue
        impossible = None
        if options.random_controls and k > int((~of_type).sum()):
            impossible = f"{k} heads of type {name} but only {int((~of_type).sum())} others to draw a control from"
        add(f"remove:{name}", type_head_mask(types, name), kind="remove", type=name,
            **({"controls_impossible": impossible} if impossible else {}))
        add(f"keep_only:{name}", type_head_mask(types, name, keep_only=True), kind="keep_only", type=name)
        if impossible or not options.random_controls:
            continue
        flat = of_type.reshape(1, -1)
        drawn = random_controls(flat, options.random_controls, seed=options.seed + 101 * t)
        for r in range(options.random_controls):
            picked = drawn[r, 0].reshape(types.shape)
            add(f"random_remove:{name}:{r}", ~picked, kind="random_remove", type=name, draw=r)
            add(f"random_keep:{name}:{r}", picked, kind="random_keep", type=name, draw=r)
    if options.single_head_ablation:
        layers = options.single_head_layers or tuple(range(n_layers))
        count = 0
        for layer in layers:
            if not 0 <= layer < n_layers:
                raise ValueError(f"single_head_layers: layer {layer} out of range 0..{n_layers - 1}")
            for head in range(n_heads):
                if options.max_single_heads and count >= options.max_single_heads:
                    break
                m = np.ones(types.shape, np.float32)
                m[layer, head] = 0.0
                add(f"head:{layer}.{head}", m, kind="single", layer=layer, head=head,
                    type=HEAD_TYPES[types[layer, head]] if types[layer, head] >= 0 else "untyped")
                count += 1
    return names, np.stack(masks), info


def run_ablation(
    model: nnx.Module, utts: Sequence[Utterance], types: np.ndarray, options: HeadsConfig,
    issues: DataIssues | None = None,
) -> dict[str, Any]:
    """Train the phone probe of the :class:`ProbeSuite` on the unablated model, then evaluate every mask of
    :func:`ablation_masks` with the same probe (frame accuracy, 95 % CI over test utterances, paired CI of the
    change). Masks are data to the forward, so every mask reuses the same compiled forward."""
    del issues  # the suite loads audio itself; unreadable files raise
    t0 = time.perf_counter()
    labelled = [u for u in utts if u.phones is not None]
    if len(labelled) < 3:
        raise ValueError(f"head ablation needs phone-labelled utterances (have {len(labelled)}, need >= 3)")
    suite = ProbeSuite(labelled, options.probe)
    suite.fit(model)
    probe = suite.probes["phone"]
    log.info("phone probe trained in %.1f s (%d steps)", probe.info["train_seconds"], probe.info["steps"])
    names, masks, info = ablation_masks(types, options)
    t1 = time.perf_counter()
    drops = suite.drops(model, {name: Ablation(head_mask=m, label=name)
                                for name, m in zip(names[1:], masks[1:], strict=True)})
    log.info("ablation sweep: %d masks in %.1f s", len(masks), time.perf_counter() - t1)
    clean = drops["clean"]["phone"]
    results = {NONE_MASK: {**info[0], "accuracy": clean["value"], "ci95": clean["ci95"], "delta_accuracy": 0.0,
                           "delta_ci95": [0.0, 0.0], "per_class": clean["per_class"]}}
    for k, name in enumerate(names[1:], start=1):
        r = drops[name]["phone"]
        results[name] = {**info[k], "accuracy": r["value"], "ci95": r["ci95"], "delta_accuracy": -r["drop"],
                         "delta_ci95": [-r["drop_ci95"][1], -r["drop_ci95"][0]], "per_class": r["per_class"]}
    split, kind = suite.splits["phone"]
    return {
        "results": results, "summary": _ablation_summary(results), "masks": masks, "names": names,
        "probe": {"layers": list(probe.config.layers), "probe_layer": options.probe.layer,
                  "info": {k: v for k, v in probe.info.items() if k != "history"},
                  "num_classes": probe.config.num_outputs, "config": dataclasses.asdict(options.probe)},
        "test_reference": {"accuracy": clean["value"], "ci95": clean["ci95"], "chance": clean["chance"],
                           "chance_what": clean["chance_what"], "num_examples": clean["n"],
                           "num_utterances": clean["n_utterances"]},
        "split": {"kind": kind, **split.sizes()}, "phone_set": suite._inventory.name,
        "num_test_frames": clean["n"], "num_masks": len(names),
        "seconds": round(time.perf_counter() - t0, 2), "_probe": probe,
    }


def _ablation_summary(results: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Per type: accuracy with the type removed / kept alone, and the random controls' mean and std."""
    out: dict[str, dict[str, Any]] = {}
    for name in HEAD_TYPES:
        if f"remove:{name}" not in results:
            continue
        row: dict[str, Any] = {"num_heads": results[f"remove:{name}"]["heads_removed"]}
        for kind in ("remove", "keep_only"):
            row[kind] = results[f"{kind}:{name}"]["accuracy"]
            row[f"{kind}_ci95"] = results[f"{kind}:{name}"]["ci95"]
        if "controls_impossible" in results[f"remove:{name}"]:
            row["controls_impossible"] = results[f"remove:{name}"]["controls_impossible"]
        for kind in ("random_remove", "random_keep"):
            vals = [r["accuracy"] for r in results.values() if r.get("kind") == kind and r.get("type") == name]
            row[f"{kind}_mean"] = float(np.mean(vals)) if vals else None
            row[f"{kind}_std"] = float(np.std(vals)) if vals else None
        out[name] = row
    return out


def single_head_matrix(ablation: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """(L, H) accuracy change when each head alone is removed (NaN where not evaluated)."""
    out = np.full(shape, np.nan)
    for r in ablation["results"].values():
        if r.get("kind") == "single":
            out[r["layer"], r["head"]] = r["delta_accuracy"]
    return out


# --------------------------------------------------------------------------------------------------------------
# Everything together


@dataclasses.dataclass
class HeadsAnalysis:
    metrics: HeadMetrics
    typing: HeadTyping
    example: np.ndarray | None  # (L, H, T, T) attention of the example utterance
    example_id: str | None
    ablation: dict[str, Any] | None
    options: HeadsConfig
    utterances: Sequence[Utterance] | None = None  # the analysed corpus (ids and audio for the explorer)


def run_heads(
    model: nnx.Module, utts: Sequence[Utterance], options: HeadsConfig, *, issues: DataIssues | None = None,
    progress: Callable[[int, int], None] | None = None, show_progress: bool = True,
) -> HeadsAnalysis:
    """Metrics, typing, example maps and (if ``options.ablation``) the ablation sweep."""
    if not utts:
        raise ValueError("no utterances")
    metrics = stream_head_metrics(model, utts, options, issues=issues, progress=progress,
                                  show_progress=show_progress)
    log.info("head metrics of %d utterances in %.1f s", len(utts), metrics.seconds)
    typing = type_heads(metrics.mean, options)
    ex = options.example_utterance
    example = utterance_attention(model, utts[ex], issues) if 0 <= ex < len(utts) else None
    ablation = run_ablation(model, utts, typing.types, options, issues) if options.ablation else None
    return HeadsAnalysis(metrics, typing, example, utts[ex].utt_id if example is not None else None, ablation,
                         options, list(utts))


def layer_type_fractions(types: np.ndarray) -> dict[str, float]:
    """Fraction of all heads of each type (for comparing models of any size)."""
    n = types.size
    out = {name: float((types == i).sum() / n) for i, name in enumerate(HEAD_TYPES)}
    out["untyped"] = float((types == UNTYPED).sum() / n)
    return out


def write_heads_results(res, analysis: HeadsAnalysis, extra_text: str = "") -> dict[str, Any]:
    """Fill a (not yet committed) :class:`jaxneurons.results.ResultsDir`; returns the summary dict."""
    from jaxneurons.heads.plots import plot_attention_examples, plot_head_types
    from jaxneurons.report import Report, grouped_bars, heatmap

    m, typing, opts = analysis.metrics, analysis.typing, analysis.options
    n_layers, n_heads = typing.types.shape
    for key in ("mean", "std", "count", "n_nan", "n_out_of_range", "hist", "bin_edges"):
        res.save_array(f"metrics_{key}", m.stats[key])
    if m.utterance_metrics is not None:
        res.save_array("utterance_metrics", m.utterance_metrics)
    res.save_array("frame_lengths", m.frame_lengths)
    res.save_array("head_types", typing.types)
    res.save_array("normalized_metrics", typing.normalized)
    if analysis.example is not None:
        res.save_array("example_attention", analysis.example)
    if m.top is not None:
        res.save_array("top_utterance_values", m.top.value)
        res.save_array("top_utterance_indices", m.top.utt)
        ids = [u.utt_id for u in analysis.utterances] if analysis.utterances else None
        res.save_json("top_utterances", {
            "metric_names": list(METRIC_NAMES), "n": int(m.top.value.shape[-1]),
            "tie_rule": "larger value first, then the earlier utterance (manifest index)",
            "heads": [{"layer": layer, "head": head, **{
                name: [{"index": int(u), "utt_id": ids[u] if ids else None, "value": float(v)}
                       for u, v in zip(m.top.utt[layer, head, k], m.top.value[layer, head, k], strict=True) if u >= 0]
                for k, name in enumerate(METRIC_NAMES)}} for layer in range(n_layers) for head in range(n_heads)]})
    res.save_json("head_types", {**typing.to_json(), "normalize": opts.normalize,
                                 "thresholds": opts.thresholds, "metric_names": list(METRIC_NAMES),
                                 "kinds": opts.kinds})
    summary: dict[str, Any] = {
        "num_utterances": int(len(m.frame_lengths)), "num_frames": int(m.frame_lengths.sum()),
        "type_counts": typing.counts(), "type_fractions": layer_type_fractions(typing.types),
        "mean_metrics_per_layer": {name: np.nanmean(m.mean[..., i], axis=1).tolist()
                                   for i, name in enumerate(METRIC_NAMES)},
        "undefined_utterance_metrics": int(m.stats["n_nan"].max()),
        "metrics_seconds": round(m.seconds, 2), "metrics_traces": m.num_traces,
        "options": dataclasses.asdict(opts),
    }

    report = Report("Attention heads")
    if extra_text:
        report.text(extra_text)
    report.heading("Head metrics")
    report.text(
        "Per head, averaged over utterances (valid frames only): diagonality, verticality and globalness "
        f"({', '.join(f'{k}={v}' for k, v in opts.kinds.items())}). Definitions: docs/heads.md; "
        f"{summary['num_utterances']} utterances, {summary['num_frames']} frames."
    )
    rows = [f"layer {i + 1}" for i in range(n_layers)]
    cols = [f"h{j}" for j in range(n_heads)]
    for i, name in enumerate(METRIC_NAMES):
        path = heatmap(res.file(f"figures/{name}.png"), m.mean[..., i], rows, cols, f"mean {name} per head",
                       name)
        report.figure(path, f"Mean {name} per head (layer x head)")
    report.heading("Head types")
    report.text(("Type = largest raw metric of the head" if opts.normalize == "none" else
                 f"Type = largest {opts.normalize}-normalised metric across all heads (an option; the study types "
                 "by raw metrics)")
                + (f", minimum raw values {opts.thresholds}" if opts.thresholds else "") + ".")
    path = plot_head_types(typing.types, res.file("figures/head_types.png"), scores=typing.winning_score())
    report.figure(path, "Head types (cell: normalised metric of the head's type)")
    per_layer = typing.counts_per_layer()
    report.table(["layer", *per_layer], [[i + 1, *[per_layer[k][i] for k in per_layer]] for i in range(n_layers)]
                 + [["total", *[sum(v) for v in per_layer.values()]]], caption="Heads of each type per layer")
    if analysis.example is not None:
        maps, titles = [], []
        for name, lh in typing.representative.items():
            if lh is not None:
                maps.append(analysis.example[lh[0], lh[1]])
                titles.append(f"{name}: layer {lh[0] + 1} head {lh[1]}")
        if maps:
            path = plot_attention_examples(maps, res.file("figures/representative_heads.png"), titles=titles)
            report.figure(path, f"Most typical head of each type, utterance {analysis.example_id}")
        if n_layers * n_heads <= 64:
            titles = [f"L{i + 1} h{j} ({HEAD_TYPES[t] if t >= 0 else 'untyped'})"
                      for i in range(n_layers) for j, t in enumerate(typing.types[i])]
            path = plot_attention_examples(list(analysis.example.reshape(-1, *analysis.example.shape[2:])),
                                           res.file("figures/all_heads.png"), titles=titles, ncols=n_heads)
            report.figure(path, f"Every head, utterance {analysis.example_id}")

    ab = analysis.ablation
    if ab is not None:
        public = {k: v for k, v in ab.items() if k not in ("masks", "_probe")}
        res.save_json("ablation", public)
        res.save_array("ablation_masks", ab["masks"])
        summary["ablation"] = {"baseline_accuracy": ab["results"][NONE_MASK]["accuracy"],
                               "baseline_ci95": ab["results"][NONE_MASK]["ci95"],
                               "chance": ab["test_reference"]["chance"],
                               "per_type": ab["summary"], "num_masks": ab["num_masks"], "split": ab["split"]}
        report.heading("Head ablation")
        report.text(
            f"Linear frame phone probe ({ab['phone_set']}, {ab['probe']['num_classes']} phones, hidden states "
            f"{ab['probe']['layers']}) trained on the unablated model; {ab['split']['kind']} split "
            f"(train {ab['split']['train']}, dev {ab['split']['dev']}, test {ab['split']['test']} utterances). "
            f"Frame accuracy on {ab['num_test_frames']} test frames (silence excluded) with heads' attention "
            f"probabilities multiplied by 0. Unablated: {ab['results'][NONE_MASK]['accuracy']:.4f} "
            f"(95 % CI {ab['results'][NONE_MASK]['ci95'][0]:.4f}-{ab['results'][NONE_MASK]['ci95'][1]:.4f}, "
            f"bootstrap over test utterances; chance, majority phone: {ab['test_reference']['chance']:.4f}). "
            f"Random controls: {opts.random_controls} draws of the same number of heads from the heads not of "
            f"the type. {ab['num_masks']} masks."
            + "".join(f" {t}: no random control ({r['controls_impossible']})."
                      for t, r in ab["summary"].items() if "controls_impossible" in r)
        )
        table = []
        for name, r in ab["summary"].items():
            table.append([name, r["num_heads"], r["remove"], r["random_remove_mean"] if r["random_remove_mean"]
                          is not None else "n/a", r["keep_only"],
                          r["random_keep_mean"] if r["random_keep_mean"] is not None else "n/a"])
        report.table(["type", "heads", "removed", "random removed (mean)", "kept only", "random kept (mean)"],
                     table, caption="Frame phone accuracy")
        if ab["summary"]:
            groups = list(ab["summary"])
            series = {k: [ab["summary"][g][k] if ab["summary"][g][k] is not None else np.nan for g in groups]
                      for k in ("remove", "random_remove_mean", "keep_only", "random_keep_mean")}
            path = grouped_bars(res.file("figures/ablation.png"), groups, series,
                                "Frame phone accuracy under head ablation", "frame accuracy")
            report.figure(path, "Ablation by head type vs random same-size controls")
        if opts.single_head_ablation:
            mat = single_head_matrix(ab, (n_layers, n_heads))
            res.save_array("single_head_delta_accuracy", mat)
            path = heatmap(res.file("figures/single_head.png"), mat, rows, cols,
                           "accuracy change, one head removed", "delta frame accuracy", fmt="{:+.3f}",
                           cmap="RdBu")
            report.figure(path, "Frame phone accuracy change when each head alone is removed")
    from jaxneurons.report.explorer import EXPLORER_DIR, write_heads_explorer

    write_heads_explorer(res.tmp, analysis)
    report.text(f"Heads explorer (types, top utterances per head with audio): {EXPLORER_DIR}/index.html (or "
                "`jaxneurons view RESULTS_DIR`).")
    res.save_json("summary", summary)
    report.write(res.tmp)
    return summary
