"""The neuron scan: one pass over a labelled dataset gives every statistic, then every scorer runs on them.

Properties (``ScanOptions.properties``):

- ``phone_type``, ``gender``, ``pitch``: property neurons (arXiv 2409.05910). Cells are phones, gender x
  phone and pitch-bin x voiced phone; frames are the middle frame of each phone (``frames='mid'``, the
  paper's default; ``'all'`` uses every frame of the phone). Top-1 % |h| events, chance k/D, sigma 0.8,
  neurons exclusive to one group. (The original code also dropped each utterance's last phone; we do not
  copy that.) Pitch: YIN F0 (71-800 Hz, 20 ms) with bins at the 33rd/66th percentiles of voiced frames
  of voiced phones in the scanned data, or fixed edges (``pitch_edges``; the paper's LibriSpeech values
  were 129.03 / 179.78 Hz).
- ``speaker``: label-free speaker neurons (arXiv 2506.21712): cells (g, c) with g = k-means (k = 2) cluster
  of the utterance's i-vector and c = k-means (k = 3) cluster of the frame's features at layer
  ``ssl_layer`` (default: the layer at 3/4 of the depth, as layer 9 of 12 in the paper), every frame;
  speaker neurons are kept for one i-vector group in at least ``speaker_sigma`` (1.0: all) of the SSL
  clusters and exclusive to it; SSL-cluster neurons likewise per SSL cluster.
- ``aape:LABEL``: class-specific neurons by activation-probability entropy (arXiv 2602.15307, after LAPE):
  ``h > 0`` counts per class of an utterance label (``gender``, ``speaker``, ``language`` or a key of the
  manifest's ``labels``), every frame; top_rate 1 %, filter_rate 0.95, activation_bar_ratio 0.95.
- ``selective:LABEL``: per-class mean |h| (streaming, compensated) for selective-pruning scores
  (arXiv 2408.17324): each class against the rest.

Results go to a results directory (see :mod:`jaxneurons.results`): ``neurons.json``
({property: {group: {"layers.{i}.ffn": [indices]}}}), ``summary.json`` (per-layer counts), the raw counts
(``arrays/``), the run configuration, figures and ``report.md`` / ``report.html``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxneurons.data import BatchLoader, DataIssues, LabelVocab, Utterance, load_audio, manifest_fingerprint
from jaxneurons.data.decoded import DecodedDataset  # moved to the data layer (re-exported here)
from jaxneurons.models import forward_with_captures
from jaxneurons.pipeline.labels import (
    GENDERS,
    PhoneInventory,
    UtteranceLabels,
    attach_f0,
    frame_geometry,
    manifest_phone_set,
    pitch_bins,
    pitch_edges_from_data,
    utterance_labels,
)
from jaxneurons.scoring.common import mask_to_sets
from jaxneurons.scoring.entropy import class_coverage, lape_neurons
from jaxneurons.scoring.property import property_neurons
from jaxneurons.scoring.selective import selective_scores
from jaxneurons.scoring.speaker import speaker_neurons
from jaxneurons.stats.scan import run_scan
from jaxneurons.stats.spec import ConditionSpec, StatsConfig
from jaxneurons.stats.state import NeuronStats

log = logging.getLogger(__name__)

PHONE_PROPERTIES = ("phone_type", "gender", "pitch")
OTHER_PROPERTIES = ("speaker",)
PITCH_GROUPS = ("low", "mid", "high")


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    """What to scan for; defaults are the studies' values (see the module docstring)."""

    properties: tuple[str, ...] = ("phone_type", "gender", "pitch", "aape:gender")
    frames: str = "mid"
    rho: float = 0.01
    sigma: float = 0.8
    pitch_edges: tuple[float, float] | None = None
    speaker_sigma: float = 1.0
    ssl_layer: int | None = None
    num_ssl_clusters: int = 3
    num_speaker_clusters: int = 2
    ivector_components: int = 64
    ivector_dim: int = 100
    # Paper defaults (MFCC-only i-vectors); on the espeak corpus pass 4.0 / "supervector" so that the
    # i-vector groups follow gender (see jaxneurons.pipeline.labels.ivector_clusters).
    ivector_pitch_weight: float = 0.0
    ivector_space: str = "ivector"
    ssl_max_utterances: int = 200
    aape_top_rate: float = 0.01
    aape_filter_rate: float = 0.95
    aape_activation_bar_ratio: float = 0.95
    batch_size: int = 8
    pad_seconds: float = 1.0
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        if self.frames not in ("mid", "all"):
            raise ValueError(f"frames must be 'mid' or 'all', got {self.frames!r}")
        for p in self.properties:
            kind = p.split(":", 1)[0]
            if p not in PHONE_PROPERTIES + OTHER_PROPERTIES and kind not in ("aape", "selective"):
                raise ValueError(f"unknown property {p!r}; use {PHONE_PROPERTIES + OTHER_PROPERTIES}, 'aape:LABEL' "
                                 "or 'selective:LABEL'")
            if kind in ("aape", "selective") and ":" not in p:
                raise ValueError(f"property {p!r} needs a label, e.g. '{kind}:gender'")


def _utterance_value(u: Utterance, key: str) -> object:
    if key in ("gender", "speaker", "language", "utt_id"):
        return getattr(u, key)
    return u.labels.get(key.removeprefix("labels."))


@dataclasses.dataclass
class ScanPlan:
    """Conditions, vocabularies and per-utterance labels of one scan (everything but the model pass)."""

    options: ScanOptions
    stats_config: StatsConfig
    inventory: PhoneInventory | None
    class_vocabs: dict[str, LabelVocab]
    utt_labels: list[UtteranceLabels]
    utt_classes: dict[str, np.ndarray]  # condition name -> (num_utts,) class id, -1 unknown
    pitch_edges: tuple[float, float] | None
    ssl_layer: int | None = None
    ssl_centroids: np.ndarray | None = None
    speaker_groups: np.ndarray | None = None  # (num_utts,) i-vector cluster
    clustering: dict[str, Any] = dataclasses.field(default_factory=dict)  # purity reports

    def condition_names(self) -> list[str]:
        return [c.name for c in self.stats_config.conditions]


def plan_scan(
    model: nnx.Module, utts: Sequence[Utterance], options: ScanOptions, issues: DataIssues | None = None,
    *, decoded: DecodedDataset | None = None,
) -> ScanPlan:
    """Label every utterance for the requested properties (runs YIN when pitch is asked for).

    ``decoded``: reuse (and fill) a :class:`DecodedDataset` shared by the scans of several models.
    """
    config = model.config
    geometry = frame_geometry(config)
    num_frames = [int(model.num_frames(u.num_samples)) for u in utts]
    wants_phones = any(p in PHONE_PROPERTIES for p in options.properties)
    inventory = PhoneInventory.of(manifest_phone_set(utts)) if wants_phones else None
    if decoded is not None:
        decoded.check(utts)
    loaded: list[np.ndarray] = []

    def all_audio() -> list[np.ndarray]:
        if not loaded:
            loaded.extend(decoded.all_audio() if decoded is not None else
                          [load_audio(u.path, 16000, issues=issues) for u in utts])
        return loaded

    key = (geometry, inventory.name if inventory else None, "pitch" in options.properties)
    labels = decoded.frame_labels.get(key) if decoded is not None else None
    if labels is None or [len(lab.phone) for lab in labels] != num_frames:
        labels = utterance_labels(utts, geometry, inventory, num_frames)
        if "pitch" in options.properties:
            attach_f0(labels, all_audio())
            if decoded is not None:
                decoded.f0_runs += 1
        if decoded is not None:
            decoded.frame_labels[key] = labels
    n_ph = inventory.size if inventory else 0
    selection = "mid" if options.frames == "mid" else None
    conditions: list[ConditionSpec] = []
    edges = None
    if "phone_type" in options.properties:
        conditions.append(ConditionSpec("phone", n_ph, selection))
    if "gender" in options.properties:
        conditions.append(ConditionSpec("gender_phone", len(GENDERS) * n_ph, selection))
    if "pitch" in options.properties:
        edges = options.pitch_edges or pitch_edges_from_data(labels, inventory)
        conditions.append(ConditionSpec("pitch_phone", len(PITCH_GROUPS) * n_ph, selection))
    class_vocabs: dict[str, LabelVocab] = {}
    utt_classes: dict[str, np.ndarray] = {}
    for prop in options.properties:
        kind, _, key = prop.partition(":")
        if kind not in ("aape", "selective"):
            continue
        values = [_utterance_value(u, key) for u in utts]
        vocab = LabelVocab.from_values(values, name=key)
        if len(vocab) < 2:
            raise ValueError(f"property {prop!r}: label {key!r} has {len(vocab)} distinct value(s) in the manifest")
        name = f"{kind}_{key}"
        class_vocabs[name] = vocab
        utt_classes[name] = np.array([-1 if v is None else vocab.id(str(v)) for v in values], np.int32)
        stat = "positive" if kind == "aape" else "moments"
        conditions.append(ConditionSpec(name, len(vocab), None, (stat,)))
    speaker: dict[str, Any] = {}
    if "speaker" in options.properties:
        speaker = _plan_speaker(model, utts, all_audio, options, decoded)
        conditions.append(ConditionSpec("speaker_cell", options.num_speaker_clusters * options.num_ssl_clusters))
    widths = tuple(config.ffn_width(i) for i in range(config.num_hidden_layers))
    stats_config = StatsConfig(widths=widths, conditions=tuple(conditions), rho=options.rho)
    return ScanPlan(options, stats_config, inventory, class_vocabs, labels, utt_classes, edges, **speaker)


def default_ssl_layer(num_layers: int) -> int:
    """hidden_states index at 3/4 of the depth (layer 9 of 12 in arXiv 2506.21712)."""
    return max(1, int(0.75 * num_layers + 0.5))


def _plan_speaker(model: nnx.Module, utts: Sequence[Utterance], all_audio: Callable[[], list[np.ndarray]],
                  options: ScanOptions, decoded: DecodedDataset | None = None) -> dict:
    """i-vector groups per utterance and SSL k-means centroids of one layer (fit on a seeded subsample)."""
    from jaxneurons.pipeline.labels import ivector_clusters
    from jaxneurons.scoring.speaker import cluster_purity, kmeans
    from jaxneurons.train.targets import layer_features

    key = (options.num_speaker_clusters, options.ivector_components, options.ivector_dim,
           options.ivector_pitch_weight, options.ivector_space)
    if decoded is not None and key in decoded.speaker_groups:
        groups = decoded.speaker_groups[key]
    else:
        groups, _ = ivector_clusters(all_audio(), options.num_speaker_clusters,
                                     num_components=options.ivector_components, ivector_dim=options.ivector_dim,
                                     pitch_weight=options.ivector_pitch_weight, space=options.ivector_space)
        if decoded is not None:
            decoded.speaker_groups[key] = groups
            decoded.ivector_runs += 1
    layer = options.ssl_layer if options.ssl_layer is not None else default_ssl_layer(model.config.num_hidden_layers)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(utts), min(len(utts), options.ssl_max_utterances), replace=False)
    audio_of = decoded.audio if decoded is not None else (lambda i: all_audio()[i])
    feats = layer_features(model, [audio_of(int(i)) for i in pick], layer)
    centroids, _ = kmeans(np.concatenate(feats), options.num_ssl_clusters, seed=0, max_points=100_000)
    gender = np.array([GENDERS.index(u.gender) if u.gender in GENDERS else -1 for u in utts])
    clustering = {"ivector_clusters_vs_gender": cluster_purity(groups, gender) if (gender >= 0).any() else None,
                  "ssl_layer": layer}
    return {"ssl_layer": layer, "ssl_centroids": centroids, "speaker_groups": groups, "clustering": clustering}


def batch_labels(plan: ScanPlan, utt_indices: np.ndarray, num_frames: int) -> tuple[dict, dict]:
    """(labels, selections) arrays (B, T) for the rows of one batch; dummy rows (index -1) are all -1."""
    b = len(utt_indices)
    n_ph = plan.inventory.size if plan.inventory else 0
    phone = np.full((b, num_frames), -1, np.int32)
    middle = np.zeros((b, num_frames), bool)
    gender = np.full((b, 1), -1, np.int32)
    pitch = np.full((b, num_frames), -1, np.int32)
    voiced_phone = np.zeros(n_ph + 1, bool)
    if plan.inventory:
        voiced_phone[plan.inventory.voiced_ids] = True
    for row, i in enumerate(utt_indices):
        if i < 0:
            continue
        lab = plan.utt_labels[i]
        t = len(lab.phone)
        phone[row, :t], middle[row, :t], gender[row] = lab.phone, lab.middle, lab.gender
        if lab.f0 is not None:
            bins = pitch_bins(lab.f0, plan.pitch_edges)
            pitch[row, :t] = np.where(voiced_phone[lab.phone], bins, -1)
    labels: dict[str, np.ndarray] = {}
    names = plan.condition_names()
    if "phone" in names:
        labels["phone"] = phone
    if "gender_phone" in names:
        labels["gender_phone"] = np.where((phone >= 0) & (gender >= 0), gender * n_ph + phone, -1).astype(np.int32)
    if "pitch_phone" in names:
        labels["pitch_phone"] = np.where((phone >= 0) & (pitch >= 0), pitch * n_ph + phone, -1).astype(np.int32)
    for name, classes in plan.utt_classes.items():
        labels[name] = np.where(utt_indices >= 0, classes[np.maximum(utt_indices, 0)], -1).astype(np.int32)
    if "speaker_cell" in names:
        # The i-vector group per utterance; the forward pass turns it into g * num_ssl + SSL cluster per frame.
        groups = plan.speaker_groups[np.maximum(utt_indices, 0)]
        labels["speaker_cell"] = np.where(utt_indices >= 0, groups, -1).astype(np.int32)
    selections = {"mid": middle} if plan.options.frames == "mid" else {}
    return labels, selections


def make_forward(graphdef: nnx.GraphDef, plan: ScanPlan | None = None) -> Callable:
    """``forward_fn(state, batch) -> (h per layer, valid[, labels])`` for :func:`jaxneurons.stats.scan.run_scan`.

    With a speaker property the SSL cluster of every frame (nearest centroid of its layer features) is
    computed in the same pass and combined with the utterance's i-vector group.
    """
    ssl = plan is not None and plan.ssl_centroids is not None
    centroids = jnp.asarray(plan.ssl_centroids) if ssl else None

    def forward_fn(state, batch):
        model = nnx.merge(graphdef, state)
        out, ffn, _ = forward_with_captures(model, batch["audio"], batch["audio_lengths"])
        if not ssl:
            return tuple(ffn), out.frame_mask
        x = out.hidden_states[plan.ssl_layer]
        dist = (jnp.sum(x * x, -1, keepdims=True) - 2 * x @ centroids.T + jnp.sum(centroids * centroids, -1))
        cluster = jnp.argmin(dist, axis=-1).astype(jnp.int32)
        group = batch["labels"]["speaker_cell"][:, None]
        cell = jnp.where((group >= 0) & out.frame_mask, group * centroids.shape[0] + cluster, -1)
        return tuple(ffn), out.frame_mask, {"speaker_cell": cell}

    return forward_fn


class Progress:
    """A progress line on stderr: batches done, rate, ETA."""

    def __init__(self, total: int, start: int, label: str = "scan"):
        self.total, self.start, self.label = total, start, label
        self.t0 = time.perf_counter()

    def __call__(self, done: int, _stats: Any = None) -> None:
        elapsed = time.perf_counter() - self.t0
        rate = (done - self.start) / max(elapsed, 1e-9)
        eta = (self.total - done) / max(rate, 1e-9)
        end = "\n" if done >= self.total else ""
        print(f"\r{self.label}: {done}/{self.total} batches, {rate:.2f} batches/s, ETA {eta:.0f} s   ",
              end=end, file=sys.stderr, flush=True)


def scan_statistics(
    model: nnx.Module,
    utts: Sequence[Utterance],
    plan: ScanPlan,
    *,
    checkpoint_path: str | None = None,
    fingerprint: dict | None = None,
    mesh: jax.sharding.Mesh | None = None,
    process_index: int = 0,
    process_count: int = 1,
    issues: DataIssues | None = None,
    progress: bool = True,
    decoded: DecodedDataset | None = None,
    progress_label: str = "scan",
) -> NeuronStats:
    """The single pass: batches -> jitted forward + statistics -> accumulated :class:`NeuronStats`.

    ``decoded``: read audio from a :class:`DecodedDataset` shared with other models' scans.
    """
    options = plan.options
    num_devices = 1 if mesh is None else mesh.devices.size // process_count
    if decoded is not None:
        decoded.check(utts)
    loader = BatchLoader(
        utts, options.batch_size, lambda n: int(model.num_frames(n)), pad_multiple=int(options.pad_seconds * 16000),
        num_devices=num_devices, process_index=process_index, process_count=process_count, issues=issues,
        load_fn=decoded.load_fn() if decoded is not None else None,
    )

    def batches(start: int):
        for batch in loader.iterate(0, start):
            t = int(model.num_frames(batch.audio.shape[1]))
            labels, selections = batch_labels(plan, batch.utt_indices, t)
            yield {"audio": batch.audio, "audio_lengths": batch.audio_lengths, "labels": labels,
                   "selections": selections}

    graphdef, state = nnx.split(model)
    start = 0
    if checkpoint_path and os.path.exists(checkpoint_path):
        from jaxneurons.stats.scan import load_checkpoint

        start = load_checkpoint(checkpoint_path)[1]
    on_batch = Progress(len(loader), start, progress_label) if progress else None
    stats, cursor = run_scan(
        make_forward(graphdef, plan), state, batches, plan.stats_config, mesh=mesh, checkpoint_path=checkpoint_path,
        checkpoint_every=options.checkpoint_every, fingerprint=fingerprint, on_batch=on_batch,
    )
    if cursor != len(loader):
        raise RuntimeError(f"scan stopped after {cursor} of {len(loader)} batches")
    return stats


def score(stats: NeuronStats, plan: ScanPlan) -> dict[str, Any]:
    """Run every requested scorer. Returns {property: {"groups": {group: (L, D) bool}, ...extra}}."""
    options, inv = plan.options, plan.inventory
    widths = stats.config.widths
    out: dict[str, Any] = {}
    arr = stats.to_numpy()

    def counts(name):
        return arr[f"{name}/topk"], arr[f"{name}/frames"]

    kw = dict(rho=options.rho, sigma=options.sigma, widths=widths)
    if "phone_type" in options.properties:
        groups = {"vowel": inv.ids_of_type("vowel"), "voiced": inv.ids_of_type("voiced"),
                  "unvoiced": inv.ids_of_type("unvoiced")}
        res = property_neurons(*counts("phone"), groups, **kw)
        out["phone_type"] = {"groups": res["exclusive"], "scores": res["scores"], "empty_cells": res["empty_cells"]}
    if "gender" in options.properties:
        n = inv.size
        groups = {"male": list(range(n)), "female": [n + i for i in range(n)]}
        res = property_neurons(*counts("gender_phone"), groups, **kw)
        out["gender"] = {"groups": res["exclusive"], "scores": res["scores"], "empty_cells": res["empty_cells"]}
    if "pitch" in options.properties:
        n = inv.size
        groups = {g: [k * n + i for i in inv.voiced_ids] for k, g in enumerate(PITCH_GROUPS)}
        res = property_neurons(*counts("pitch_phone"), groups, **kw)
        out["pitch"] = {"groups": res["exclusive"], "scores": res["scores"], "empty_cells": res["empty_cells"],
                        "edges_hz": list(plan.pitch_edges)}
    if "speaker" in options.properties:
        res = speaker_neurons(*counts("speaker_cell"), options.num_speaker_clusters, options.num_ssl_clusters,
                              rho=options.rho, sigma=options.speaker_sigma, widths=widths)
        out["speaker"] = {"groups": {f"ivector_cluster{g}": res["speaker"]["exclusive"][f"group{g}"]
                                     for g in range(options.num_speaker_clusters)},
                          "scores": res["speaker"]["scores"], "clustering": plan.clustering}
        out["ssl_cluster"] = {"groups": {f"ssl_cluster{c}": res["ssl"]["exclusive"][f"ssl{c}"]
                                         for c in range(options.num_ssl_clusters)}}
    for prop in options.properties:
        kind, _, key = prop.partition(":")
        name = f"{kind}_{key}"
        if kind == "aape":
            vocab = plan.class_vocabs[name]
            res = lape_neurons(arr[f"{name}/positive"], arr[f"{name}/frames"], top_rate=options.aape_top_rate,
                               filter_rate=options.aape_filter_rate,
                               activation_bar_ratio=options.aape_activation_bar_ratio, widths=widths)
            out[prop] = {"groups": {vocab.label(c): res["class_masks"][c] for c in range(len(vocab))},
                         "selected": res["selected"], "coverage": class_coverage(res["class_masks"]),
                         "bar": res["bar"], "activation_bar": res["activation_bar"]}
        elif kind == "selective":
            vocab = plan.class_vocabs[name]
            mean_abs = np.asarray(stats.mean(name, absolute=True))  # (L, C, D)
            frames = arr[f"{name}/frames"].astype(np.float64)
            scores = {}
            for c in range(len(vocab)):
                rest = [k for k in range(len(vocab)) if k != c]
                w = frames[rest] / max(frames[rest].sum(), 1.0)
                retain = np.einsum("c,lcd->ld", w, mean_abs[:, rest])
                scores[vocab.label(c)] = selective_scores(mean_abs[:, c], retain)
            out[prop] = {"scores": scores, "groups": {}}
    return out


def per_layer_counts(scored: dict[str, Any]) -> dict[str, dict[str, list[int]]]:
    return {prop: {g: np.asarray(m).sum(axis=1).astype(int).tolist() for g, m in res["groups"].items()}
            for prop, res in scored.items()}


def neuron_sets(scored: dict[str, Any]) -> dict[str, dict[str, dict[str, list[int]]]]:
    """JSON-able {property: {group: {"layers.{i}.ffn": [indices]}}}."""
    return {prop: {g: mask_to_sets(m) for g, m in res["groups"].items()} for prop, res in scored.items()}


def scan_fingerprint(model_id: str, utts: Sequence[Utterance], options: ScanOptions) -> dict[str, str]:
    opts = json.dumps(dataclasses.asdict(options), sort_keys=True)
    return {"model": model_id, "manifest": manifest_fingerprint(utts),
            "options": hashlib.sha1(opts.encode()).hexdigest()[:16]}
