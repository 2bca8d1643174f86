"""Attention-head analysis (study 4, arXiv 2409.03115): streaming head metrics, head typing, head ablation.

1. Metrics: one jitted function per batch runs the model with ``capture_attention=True`` and turns the
   attention probabilities (L, B, H, T, T) into per-utterance metrics (L, B, H, 3)
   (:func:`jaxneurons.heads.head_metrics`, valid frames only); the host folds them into
   :class:`jaxneurons.heads.HeadStats` (mean and histogram over utterances per head). Attention maps of
   the corpus are never stored: only those of one example utterance, recomputed alone for figures.
2. Typing: :func:`jaxneurons.heads.head_types` on the per-head means (diagonal / vertical / global); the
   representative head of a type is the head of that type with the largest normalised metric of the type.
3. Ablation: a frame-level phone probe is trained on the *unablated* model's features (speaker-disjoint
   split where the corpus has enough speakers, else utterance-disjoint), then frame phone accuracy on the
   test split is measured for stacked head masks (M, L, H): none, each type removed, each type kept alone,
   random same-size controls, and optionally each head removed alone. Masks are data: a single jitted
   function (vmap over a fixed-size chunk of masks, then the probe's own forward) serves every mask, and
   the test batches are all padded to one length, so the whole sweep compiles once
   (:attr:`AblationEvaluator.num_traces`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxneurons.data import BatchLoader, DataIssues, FrameLabelSpec, Utterance, load_audio
from jaxneurons.heads import (
    HEAD_TYPES,
    METRIC_NAMES,
    UNTYPED,
    finalize_head_stats,
    head_metrics,
    head_types,
    init_head_stats,
    normalize_metrics,
    type_head_mask,
    update_head_stats,
)
from jaxneurons.models import forward_with_captures
from jaxneurons.pipeline.labels import SILENCE, PhoneInventory, frame_geometry, manifest_phone_set
from jaxneurons.probes import (
    Probe,
    Split,
    SplitError,
    evaluate,
    extract_features,
    speaker_disjoint_split,
    train_phone_probe,
    within_speaker_split,
)
from jaxneurons.probes.probe import _outputs as probe_outputs  # the probe's own forward, reused inside jit

log = logging.getLogger(__name__)

NONE_MASK = "none"


@dataclasses.dataclass(frozen=True)
class HeadsOptions:
    """Everything that determines a heads analysis; defaults follow METHODS section 4."""

    # metrics and typing
    diagonality_kind: str = "normalized"
    verticality_kind: str = "normalized"
    globalness_kind: str = "normalized"
    renormalize: bool = True
    normalize: str = "zscore"
    thresholds: tuple[tuple[str, float], ...] = ()  # metric name -> minimum raw value to take its type
    n_bins: int = 50
    batch_size: int = 8
    pad_seconds: float = 1.0
    example_utterance: int = 0  # manifest index whose attention maps are kept for figures
    keep_utterance_metrics: bool = True  # (N, L, H, 3) per-utterance metrics in the results
    # ablation
    ablation: bool = True
    probe_layer: int | str = -1  # hidden_states index, or "all" (learned weighted sum of all L + 1)
    probe_hidden: int = 0
    probe_max_epochs: int = 50
    probe_min_steps: int = 300
    probe_patience: int = 5
    dev_fraction: float = 0.15
    test_fraction: float = 0.25
    random_controls: int = 5  # random same-size head sets per type ablation
    single_head_ablation: bool = False
    single_head_layers: tuple[int, ...] = ()  # () = every layer
    max_single_heads: int = 0  # 0 = no limit
    mask_chunk: int = 4  # masks evaluated together (vmap) per call of the one compiled function
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.probe_layer, str) and self.probe_layer != "all":
            raise ValueError(f"probe_layer must be an int or 'all', got {self.probe_layer!r}")
        for name, _ in self.thresholds:
            if name not in METRIC_NAMES:
                raise ValueError(f"unknown metric {name!r} in thresholds; expected one of {METRIC_NAMES}")
        if self.mask_chunk < 1 or self.batch_size < 1 or self.random_controls < 0:
            raise ValueError("mask_chunk and batch_size must be >= 1, random_controls >= 0")

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
    model: nnx.Module, utts: Sequence[Utterance], options: HeadsOptions, *, issues: DataIssues | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> HeadMetrics:
    """One pass over ``utts``: per-utterance metrics per batch, accumulated per head (nothing else kept)."""
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
    frame_lengths = np.zeros(len(utts), np.int64)
    for k, batch in enumerate(loader):
        metrics, lengths = fn(state, batch.audio, batch.audio_lengths)
        stats = update_head_stats(stats, metrics, lengths=lengths)
        rows = np.flatnonzero(batch.valid)
        idx = batch.utt_indices[rows]
        frame_lengths[idx] = np.asarray(lengths)[rows]
        if per_utt is not None:
            per_utt[idx] = np.moveaxis(np.asarray(metrics), 1, 0)[rows]
        if progress is not None:
            progress(k + 1, len(loader))
    return HeadMetrics(finalize_head_stats(stats), per_utt, frame_lengths, counter[0], time.perf_counter() - t0)


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


def type_heads(mean_metrics: np.ndarray, options: HeadsOptions) -> HeadTyping:
    """Type every head and pick, per type, its most typical head (largest normalised metric of the type)."""
    types = head_types(mean_metrics, normalize=options.normalize, thresholds=dict(options.thresholds) or None)
    z = normalize_metrics(mean_metrics, options.normalize)
    rep: dict[str, tuple[int, int] | None] = {}
    for i, name in enumerate(HEAD_TYPES):
        score = np.where(types == i, z[..., i], -np.inf)
        rep[name] = tuple(int(v) for v in np.unravel_index(np.argmax(score), score.shape)) if (types == i).any() \
            else None
    return HeadTyping(types, z, rep)


# --------------------------------------------------------------------------------------------------------------
# 3. Ablation


def ablation_masks(types: np.ndarray, options: HeadsOptions) -> tuple[list[str], np.ndarray, list[dict]]:
    """Names, stacked (M, L, H) float32 multipliers and descriptions of every ablation of the sweep.

    ``none``; ``remove:T`` / ``keep_only:T`` per head type T present; ``random_remove:T:r`` /
    ``random_keep:T:r`` (r < ``random_controls``): the same number of heads as type T, drawn uniformly from
    all heads; ``head:L.H`` (single-head ablation, when asked for).
    """
    n_layers, n_heads = types.shape
    rng = np.random.default_rng(options.seed)
    names, masks, info = [NONE_MASK], [np.ones(types.shape, np.float32)], [{"kind": "none", "heads_removed": 0}]

    def add(name: str, mask: np.ndarray, **meta: Any) -> None:
        names.append(name)
        masks.append(mask.astype(np.float32))
        info.append({**meta, "heads_removed": int((mask == 0).sum())})

    for name in HEAD_TYPES:
        k = int((types == HEAD_TYPES.index(name)).sum())
        if k == 0:
            continue
        add(f"remove:{name}", type_head_mask(types, name), kind="remove", type=name)
        add(f"keep_only:{name}", type_head_mask(types, name, keep_only=True), kind="keep_only", type=name)
        for r in range(options.random_controls):
            chosen = rng.choice(types.size, size=k, replace=False)
            picked = np.zeros(types.size, bool)
            picked[chosen] = True
            picked = picked.reshape(types.shape)
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


class AblationEvaluator:
    """Frame phone accuracy of a probe on a model's features under many head masks, with one compilation.

    ``__call__(batches, masks (M, L, H))`` returns per-mask correct counts, per-class correct counts and
    the per-class frame counts. Masks go through in chunks of ``chunk`` (padded with all-ones masks), each
    chunk vmapped through the same jitted function, so the number of traces is the number of distinct batch
    shapes (one when every batch is padded to the same length), whatever the number of masks.
    """

    def __init__(self, model: nnx.Module, probe: Probe, chunk: int = 4):
        self.graphdef, self.state = nnx.split(model)
        self.num_frames = model.num_frames
        self.probe = probe
        self.chunk = chunk
        self.layers = tuple(probe.config.layers)
        self.num_classes = probe.config.num_outputs
        self.shape = (model.config.num_hidden_layers, model.config.num_attention_heads)
        self._traces = [0]
        self._fn = self._build()

    @property
    def num_traces(self) -> int:
        return self._traces[0]

    def _build(self) -> Callable:
        graphdef, layers, c = self.graphdef, self.layers, self.num_classes
        hidden = bool(self.probe.config.hidden)
        counter = self._traces

        def one(state, params, mean, std, audio, lengths, labels, head_mask):
            model = nnx.merge(graphdef, state)
            out = model(audio, lengths, head_mask=head_mask)
            hs = jnp.stack([out.hidden_states[i] for i in layers], axis=2).astype(jnp.float32)  # (B, T, K, C)
            pred = jnp.argmax(probe_outputs(params, mean, std, hs, hidden), axis=-1)
            ok = (labels >= 0) & out.frame_mask & (lengths > 0)[:, None]
            hit = (pred == labels) & ok
            onehot = jax.nn.one_hot(jnp.where(ok, labels, 0), c, dtype=jnp.int32)
            return jnp.sum(onehot * hit[..., None], axis=(0, 1)), jnp.sum(onehot * ok[..., None], axis=(0, 1))

        @jax.jit
        def run(state, params, mean, std, audio, lengths, labels, masks):
            counter[0] += 1
            return jax.vmap(one, in_axes=(None,) * 7 + (0,))(state, params, mean, std, audio, lengths, labels, masks)

        return run

    def __call__(self, batches, masks: np.ndarray) -> dict[str, np.ndarray]:
        masks = np.asarray(masks, np.float32)
        if masks.ndim != 3 or masks.shape[1:] != self.shape:
            raise ValueError(f"masks must be (M, L, H) with (L, H) = {self.shape}, got {masks.shape}")
        m = len(masks)
        n_chunks = -(-m // self.chunk)
        padded = np.ones((n_chunks * self.chunk, *self.shape), np.float32)
        padded[:m] = masks
        params = jax.tree.map(jnp.asarray, self.probe.params)
        mean, std = jnp.asarray(self.probe.mean), jnp.asarray(self.probe.std)
        class_correct = np.zeros((m, self.num_classes), np.int64)
        class_total = np.zeros(self.num_classes, np.int64)
        for batch in batches:
            t = int(self.num_frames(batch.audio.shape[1]))
            labels = np.full((batch.audio.shape[0], t), -1, np.int32)
            w = min(t, batch.labels["phone"].shape[1])
            labels[:, :w] = batch.labels["phone"][:, :w]
            for k in range(n_chunks):
                hit, tot = self._fn(self.state, params, mean, std, batch.audio, batch.audio_lengths, labels,
                                    padded[k * self.chunk:(k + 1) * self.chunk])
                hit = np.asarray(hit)
                lo, hi = k * self.chunk, min(m, (k + 1) * self.chunk)
                class_correct[lo:hi] += hit[: hi - lo]
                if k == 0:
                    class_total += np.asarray(tot)[0]
        return {"class_correct": class_correct, "class_total": class_total,
                "correct": class_correct.sum(1), "total": int(class_total.sum())}


def phone_batches(
    model: nnx.Module, utts: Sequence[Utterance], inventory: PhoneInventory, batch_size: int, pad_multiple: int,
    issues: DataIssues | None = None,
) -> BatchLoader:
    """Batches with per-frame phone ids (``labels['phone']``, silence and padding -1) on the model's frames."""
    spec = FrameLabelSpec("phones", inventory.vocab, ignore=(SILENCE,))
    return BatchLoader(utts, batch_size, frame_geometry(model.config), labels={"phone": spec},
                       pad_multiple=pad_multiple, issues=issues)


def split_utterances(utts: Sequence[Utterance], options: HeadsOptions) -> tuple[Split, str]:
    """Speaker-disjoint train / dev / test where the speakers allow it, else utterance-disjoint."""
    speakers = [u.speaker for u in utts]
    kw = dict(dev_fraction=options.dev_fraction, test_fraction=options.test_fraction, seed=options.seed)
    try:
        return speaker_disjoint_split(speakers, **kw), "speaker_disjoint"
    except SplitError as exc:
        log.warning("speaker-disjoint split impossible (%s); using an utterance-disjoint split", exc)
    try:
        return within_speaker_split(speakers, **kw), "within_speaker"
    except SplitError as exc:
        log.warning("within-speaker split impossible (%s); using a random utterance split", exc)
    n = len(utts)
    order = np.random.default_rng(options.seed).permutation(n)
    n_test = max(1, round(options.test_fraction * n))
    n_dev = max(1, round(options.dev_fraction * n))
    if n - n_test - n_dev < 1:
        raise SplitError(f"{n} utterances cannot fill train, dev and test")
    return Split(np.sort(order[n_test + n_dev:]), np.sort(order[n_test:n_test + n_dev]),
                 np.sort(order[:n_test])), "random_utterances"


def run_ablation(
    model: nnx.Module, utts: Sequence[Utterance], types: np.ndarray, options: HeadsOptions,
    issues: DataIssues | None = None,
) -> dict[str, Any]:
    """Train the phone probe on the unablated model, then evaluate every mask of :func:`ablation_masks`."""
    t0 = time.perf_counter()
    inventory = PhoneInventory.of(manifest_phone_set(utts))
    labelled = [i for i, u in enumerate(utts) if u.phones is not None]
    if len(labelled) < 3:
        raise ValueError(f"head ablation needs phone-labelled utterances (have {len(labelled)}, need >= 3)")
    sub = [utts[i] for i in labelled]
    split, split_kind = split_utterances(sub, options)
    pad = int(options.pad_seconds * 16000)
    layers = "all" if options.probe_layer == "all" else [int(options.probe_layer)]

    def feats(idx):
        loader = phone_batches(model, [sub[i] for i in idx], inventory, options.batch_size, pad, issues)
        return extract_features(model, loader, layers=layers, frame_label_keys=("phone",))

    train, dev = feats(split.train), feats(split.dev)
    log.info("probe features: %d train / %d dev frames (%s split) in %.1f s", len(train.x), len(dev.x), split_kind,
             time.perf_counter() - t0)
    probe = train_phone_probe(train, dev, num_classes=inventory.size, class_names=inventory.vocab.labels,
                              hidden=options.probe_hidden, max_epochs=options.probe_max_epochs,
                              min_steps=options.probe_min_steps, patience=options.probe_patience, seed=options.seed)
    log.info("phone probe trained in %.1f s (%d steps)", probe.info["train_seconds"], probe.info["steps"])
    test_utts = [sub[i] for i in split.test]
    # Every test batch padded to one length: one shape, one compilation for the whole sweep.
    one_shape = max(pad, math.ceil(max(u.num_samples for u in test_utts) / pad) * pad)
    test_loader = phone_batches(model, test_utts, inventory, options.batch_size, one_shape, issues)
    reference = evaluate(probe, extract_features(model, test_loader, layers=layers, frame_label_keys=("phone",)))
    names, masks, info = ablation_masks(types, options)
    evaluator = AblationEvaluator(model, probe, options.mask_chunk)
    t1 = time.perf_counter()
    counts = evaluator(test_loader, masks)
    log.info("ablation sweep: %d masks on %d test utterances in %.1f s (%d compilation(s))", len(masks),
             len(test_utts), time.perf_counter() - t1, evaluator.num_traces)
    total = max(counts["total"], 1)
    acc = counts["correct"] / total
    present = counts["class_total"] > 0
    bal = (counts["class_correct"][:, present] / counts["class_total"][present]).mean(1)
    results = {}
    for k, name in enumerate(names):
        results[name] = {**info[k], "accuracy": float(acc[k]), "balanced_accuracy": float(bal[k]),
                         "delta_accuracy": float(acc[k] - acc[0])}
    summary = _ablation_summary(results)
    return {
        "results": results, "summary": summary, "masks": masks, "names": names,
        "probe": {"layers": list(probe.config.layers), "probe_layer": options.probe_layer,
                  "hidden": options.probe_hidden, "info": {k: v for k, v in probe.info.items() if k != "history"},
                  "layer_weights": probe.layer_weights.tolist(), "num_classes": inventory.size},
        "test_reference": {k: reference[k] for k in ("accuracy", "balanced_accuracy", "per", "num_examples",
                                                     "num_utterances", "chance") if k in reference},
        "split": {"kind": split_kind, **split.sizes()}, "phone_set": inventory.name,
        "num_test_frames": counts["total"], "num_traces": evaluator.num_traces, "num_masks": len(names),
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
    options: HeadsOptions


def run_heads(
    model: nnx.Module, utts: Sequence[Utterance], options: HeadsOptions, *, issues: DataIssues | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> HeadsAnalysis:
    """Metrics, typing, example maps and (if ``options.ablation``) the ablation sweep."""
    if not utts:
        raise ValueError("no utterances")
    metrics = stream_head_metrics(model, utts, options, issues=issues, progress=progress)
    log.info("head metrics of %d utterances in %.1f s", len(utts), metrics.seconds)
    typing = type_heads(metrics.mean, options)
    ex = options.example_utterance
    example = utterance_attention(model, utts[ex], issues) if 0 <= ex < len(utts) else None
    ablation = run_ablation(model, utts, typing.types, options, issues) if options.ablation else None
    return HeadsAnalysis(metrics, typing, example, utts[ex].utt_id if example is not None else None, ablation,
                         options)


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
    res.save_json("head_types", {**typing.to_json(), "normalize": opts.normalize,
                                 "thresholds": dict(opts.thresholds), "metric_names": list(METRIC_NAMES),
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
    report.text(f"Type = largest {opts.normalize}-normalised metric across all heads"
                + (f", thresholds {dict(opts.thresholds)}" if opts.thresholds else "") + ".")
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
                               "per_type": ab["summary"], "num_masks": ab["num_masks"],
                               "num_traces": ab["num_traces"], "split": ab["split"]}
        report.heading("Head ablation")
        report.text(
            f"Linear frame phone probe ({ab['phone_set']}, {ab['probe']['num_classes']} phones, hidden states "
            f"{ab['probe']['layers']}) trained on the unablated model; {ab['split']['kind']} split "
            f"(train {ab['split']['train']}, dev {ab['split']['dev']}, test {ab['split']['test']} utterances). "
            f"Frame accuracy on {ab['num_test_frames']} test frames (silence excluded) with heads' attention "
            f"probabilities multiplied by 0. Unablated: {ab['results'][NONE_MASK]['accuracy']:.4f} "
            f"(chance, majority phone: {ab['test_reference']['chance']['accuracy']:.4f}). Random controls: "
            f"{opts.random_controls} draws of the same number of heads, uniformly from all heads. "
            f"{ab['num_masks']} masks, {ab['num_traces']} compilation(s)."
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
    res.save_json("summary", summary)
    report.write(res.tmp)
    return summary
