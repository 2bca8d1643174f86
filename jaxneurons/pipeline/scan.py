"""The neuron scan: one pass over a labelled dataset gives every statistic, then every scorer runs on them.

One entry point for every path, one model or many: :func:`scan` (``jaxneurons.scan``)::

    result = jaxneurons.scan(model, utts, ["phone_type", "gender", "aape_gender"], out_dir="runs/scan")
    result.neuron_sets            # {property: {group: {"layers.{i}.ffn": [indices]}}} (neurons.json)

Properties are objects (:mod:`jaxneurons.pipeline.properties`: ``PhoneType``, ``Gender``, ``Pitch``,
``SpeakerNeurons``, ``AAPE(label)``, ``Selective(label)``), or their names, built with the parameters of a
:class:`ScanOptions`:

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
  speaker neurons are kept for one i-vector group in at least ``sigma`` (1.0: all) of the SSL
  clusters and exclusive to it; SSL-cluster neurons (result ``ssl_cluster``) likewise per SSL cluster.
- ``aape_LABEL``: class-specific neurons by activation-probability entropy (arXiv 2602.15307, after LAPE):
  ``h > 0`` counts per class of an utterance label (``gender``, ``speaker``, ``language`` or a key of the
  manifest's ``labels``), every frame; top_rate 1 %, filter_rate 0.95, activation_bar_ratio 0.95.
- ``selective_LABEL``: per-class mean |h| (streaming, compensated) for selective-pruning scores
  (arXiv 2408.17324): each class against the rest.

Several models (a list of paths / :class:`~jaxneurons.pipeline.multiscan.ModelSpec` / a ``{name: model}``
mapping) decode the dataset once and scan one model at a time into ``OUT/<name>/`` plus a comparison
(:mod:`jaxneurons.pipeline.multiscan`). Results go to a results directory (see :mod:`jaxneurons.results`):
``neurons.json`` ({property: {group: {"layers.{i}.ffn": [indices]}}}), ``summary.json`` (per-layer counts),
the raw counts (``arrays/``), the run configuration, figures and ``report.md`` / ``report.html``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxneurons.config_flags import field_help
from jaxneurons.data import BatchLoader, DataIssues, Utterance, load_audio, manifest_fingerprint
from jaxneurons.data.decoded import DecodedDataset  # moved to the data layer (re-exported here)
from jaxneurons.errors import SettingError
from jaxneurons.models import forward_with_captures
from jaxneurons.pipeline.labels import (
    PhoneInventory,
    UtteranceLabels,
    attach_f0,
    frame_geometry,
    manifest_phone_set,
    utterance_labels,
)
from jaxneurons.pipeline.properties import (
    PITCH_GROUPS,
    AAPEConfig,
    BatchRows,
    Property,
    PropertyNeuronConfig,
    ScanContext,
    SpeakerNeuronConfig,
    default_ssl_layer,
    make_property,
    property_names_help,
)
from jaxneurons.progress import ProgressBar
from jaxneurons.scoring.common import mask_to_sets
from jaxneurons.stats.scan import run_scan
from jaxneurons.stats.spec import DEFAULT_EXAMPLES, StatsConfig
from jaxneurons.stats.state import NeuronStats

log = logging.getLogger(__name__)

__all__ = ["PITCH_GROUPS", "DecodedDataset", "ScanOptions", "ScanPlan", "ScanResult", "default_ssl_layer", "scan"]


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    """What to scan for and how: the property names and each method's parameters (defaults: the studies'
    values, see :mod:`jaxneurons.pipeline.properties`), and the pass itself (batching, checkpoints)."""

    properties: tuple[str, ...] = field_help(("phone_type", "gender", "pitch", "aape_gender"),
                                             f"Properties to scan: {property_names_help()}.")
    property: PropertyNeuronConfig = PropertyNeuronConfig()
    speaker: SpeakerNeuronConfig = SpeakerNeuronConfig()
    aape: AAPEConfig = AAPEConfig()
    batch_size: int = field_help(8, "Utterances per batch (per process).")
    pad_seconds: float = field_help(1.0, "Batches are padded to a multiple of this many seconds (few shapes to "
                                    "compile).")
    checkpoint_every: int = field_help(50, "Batches between statistics checkpoints (resume after a kill).")
    examples: int = field_help(DEFAULT_EXAMPLES, "Max-activating frames kept per neuron in the same pass, for the "
                               "explorer (0: none; exact top-N, see jaxneurons.stats.examples).")

    def __post_init__(self) -> None:
        object.__setattr__(self, "properties", tuple(self.properties))
        # Checked here, not by the loader: that runs after planning (F0, i-vectors), minutes into a large scan.
        for name, ok, need in (("batch_size", self.batch_size >= 1, ">= 1"),
                               ("pad_seconds", self.pad_seconds * 16000 >= 1, "> 0 (at least one sample)"),
                               ("examples", self.examples >= 0, ">= 0")):
            if not ok:
                raise SettingError(f"{name} must be {need}, got {getattr(self, name)}")
        self.build()  # unknown names fail here, with the list of known ones

    def build(self) -> list[Property]:
        """The property objects of ``properties``, with this config's parameters."""
        return [make_property(name, self) for name in self.properties]


@dataclasses.dataclass
class ScanPlan:
    """Properties, their prepared state, conditions and per-utterance labels (everything but the model pass)."""

    options: ScanOptions
    properties: list[Property]
    states: dict[str, Any]  # property name -> its prepared state
    stats_config: StatsConfig
    inventory: PhoneInventory | None
    utt_labels: list[UtteranceLabels]

    def condition_names(self) -> list[str]:
        return [c.name for c in self.stats_config.conditions]

    def state(self, name: str) -> Any:
        """The prepared state of property ``name`` (e.g. ``plan.state("speaker")["speaker_groups"]``)."""
        if name not in self.states:
            raise KeyError(f"no property {name!r} in this scan (have {list(self.states)})")
        return self.states[name]

    def get_property(self, name: str) -> Property:
        for p in self.properties:
            if p.name == name:
                return p
        raise KeyError(f"no property {name!r} in this scan (have {list(self.states)})")

    @property
    def pitch_edges(self) -> tuple[float, float] | None:
        return self.states["pitch"]["edges"] if "pitch" in self.states else None


def _as_properties(properties: Sequence[Property | str] | None, options: ScanOptions) -> list[Property]:
    if properties is None:
        return options.build()
    if isinstance(properties, str | Property):
        properties = [properties]
    out = [make_property(p, options) if isinstance(p, str) else p for p in properties]
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise ValueError(f"properties named twice: {names}")
    if not out:
        raise ValueError("no property to scan")
    return out


def plan_scan(
    model: nnx.Module, utts: Sequence[Utterance], options: ScanOptions = ScanOptions(),
    issues: DataIssues | None = None, *, decoded: DecodedDataset | None = None,
    properties: Sequence[Property | str] | None = None,
) -> ScanPlan:
    """Label every utterance for the properties (``options.properties`` unless ``properties`` is given) and
    prepare each one (runs YIN when a property needs F0, i-vectors for the speaker property).

    ``decoded``: reuse (and fill) a :class:`DecodedDataset` shared by the scans of several models.
    """
    props = _as_properties(properties, options)
    config = model.config
    geometry = frame_geometry(config)
    num_frames = [int(model.num_frames(u.num_samples)) for u in utts]
    inventory = PhoneInventory.of(manifest_phone_set(utts)) if any(p.needs_phones for p in props) else None
    needs_f0 = any(p.needs_f0 for p in props)
    if decoded is not None:
        decoded.check(utts)
    loaded: list[np.ndarray] = []

    def all_audio() -> list[np.ndarray]:
        if not loaded:
            loaded.extend(decoded.all_audio() if decoded is not None else
                          [load_audio(u.path, 16000, issues=issues) for u in utts])
        return loaded

    key = (geometry, inventory.name if inventory else None, needs_f0)
    labels = decoded.frame_labels.get(key) if decoded is not None else None
    if labels is None or [len(lab.phone) for lab in labels] != num_frames:
        labels = utterance_labels(utts, geometry, inventory, num_frames)
        if needs_f0:
            attach_f0(labels, all_audio())
            if decoded is not None:
                decoded.f0_runs += 1
        if decoded is not None:
            decoded.frame_labels[key] = labels
    ctx = ScanContext(model, utts, inventory, labels, all_audio,
                      decoded.audio if decoded is not None else (lambda i: all_audio()[i]), decoded)
    states = {p.name: p.prepare(ctx) for p in props}
    conditions = tuple(c for p in props for c in p.conditions(states[p.name]))
    widths = tuple(config.ffn_width(i) for i in range(config.num_hidden_layers))
    # rho of the top-k statistics: one per scan (every property of a study uses its paper's 1 %)
    rhos = {p.config.rho for p in props if hasattr(getattr(p, "config", None), "rho")}
    if len(rhos) > 1:
        raise ValueError(f"properties of one scan must share rho (the top-k statistics), got {sorted(rhos)}")
    stats_config = StatsConfig(widths=widths, conditions=conditions, rho=rhos.pop() if rhos else 0.01,
                               examples=options.examples)
    return ScanPlan(options, props, states, stats_config, inventory, labels)


def batch_labels(plan: ScanPlan, utt_indices: np.ndarray, num_frames: int) -> tuple[dict, dict]:
    """(labels, selections) arrays for the rows of one batch; dummy rows (index -1) are all -1."""
    b = len(utt_indices)
    rows = BatchRows(utt_indices, np.full((b, num_frames), -1, np.int32), np.zeros((b, num_frames), bool),
                     np.full((b, 1), -1, np.int32), np.zeros((b, num_frames), np.float32))
    for row, i in enumerate(utt_indices):
        if i < 0:
            continue
        lab = plan.utt_labels[i]
        t = len(lab.phone)
        rows.phone[row, :t], rows.middle[row, :t], rows.gender[row] = lab.phone, lab.middle, lab.gender
        if lab.f0 is not None:
            rows.f0[row, :t] = lab.f0
    labels: dict[str, np.ndarray] = {}
    selections: dict[str, np.ndarray] = {}
    for p in plan.properties:
        labels.update(p.frame_labels(plan.states[p.name], rows))
        selections.update(p.selections(rows))
    return labels, selections


def make_forward(graphdef: nnx.GraphDef, plan: ScanPlan | None = None) -> Callable:
    """``forward_fn(state, batch) -> (h per layer, valid[, labels])`` for :func:`jaxneurons.stats.scan.run_scan`.

    Properties that label frames from the model's own features (the speaker property's SSL cluster of every
    frame) do so in the same pass (:meth:`Property.forward_labels`).
    """
    props = [] if plan is None else [p for p in plan.properties
                                     if type(p).forward_labels is not Property.forward_labels]

    def forward_fn(state, batch):
        model = nnx.merge(graphdef, state)
        out, ffn, _ = forward_with_captures(model, batch["audio"], batch["audio_lengths"])
        if not props:
            return tuple(ffn), out.frame_mask
        extra: dict[str, Any] = {}
        for p in props:
            extra.update(p.forward_labels(plan.states[p.name], out, batch["labels"]))
        return tuple(ffn), out.frame_mask, extra

    return forward_fn


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
                   "selections": selections, "utt_index": batch.utt_indices}

    graphdef, state = nnx.split(model)
    start = 0
    if checkpoint_path and os.path.exists(checkpoint_path):
        from jaxneurons.stats.scan import load_checkpoint

        start = load_checkpoint(checkpoint_path)[1]
    on_batch = ProgressBar(len(loader), start, progress_label, unit="batch") if progress else None
    stats, cursor = run_scan(
        make_forward(graphdef, plan), state, batches, plan.stats_config, mesh=mesh, checkpoint_path=checkpoint_path,
        checkpoint_every=options.checkpoint_every, fingerprint=fingerprint, on_batch=on_batch,
    )
    if cursor != len(loader):
        raise RuntimeError(f"scan stopped after {cursor} of {len(loader)} batches")
    return stats


def score(stats: NeuronStats, plan: ScanPlan) -> dict[str, Any]:
    """Run every property's scorer. Returns {result: {"groups": {group: (L, D) bool}, ...extra}}."""
    widths = stats.config.widths
    out: dict[str, Any] = {}
    for p in plan.properties:
        out.update(p.score(plan.states[p.name], stats, widths))
    return out


def per_layer_counts(scored: Mapping[str, Any]) -> dict[str, dict[str, list[int]]]:
    return {prop: {g: np.asarray(m).sum(axis=1).astype(int).tolist() for g, m in res["groups"].items()}
            for prop, res in scored.items()}


def neuron_sets(scored: Mapping[str, Any]) -> dict[str, dict[str, dict[str, list[int]]]]:
    """JSON-able {property: {group: {"layers.{i}.ffn": [indices]}}} (the format of ``neurons.json``)."""
    return {prop: {g: mask_to_sets(m) for g, m in res["groups"].items()} for prop, res in scored.items()}


def scan_fingerprint(model_id: str, utts: Sequence[Utterance], options: ScanOptions,
                     properties: Sequence[Property] | None = None) -> dict[str, str]:
    """What a checkpoint or finished results directory was computed from (model, data, every setting)."""
    props = [repr(p) for p in (properties if properties is not None else options.build())]
    opts = json.dumps({"options": dataclasses.asdict(options), "properties": props}, sort_keys=True)
    return {"model": model_id, "manifest": manifest_fingerprint(utts),
            "options": hashlib.sha1(opts.encode()).hexdigest()[:16]}


def model_content_id(model: nnx.Module) -> str:
    """Identity of an in-memory model for fingerprints: its config and a hash of its weights."""
    h = hashlib.sha1(json.dumps(dataclasses.asdict(model.config), sort_keys=True, default=str).encode())
    for leaf in jax.tree_util.tree_leaves(nnx.state(model)):
        h.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return f"in-memory model sha1 {h.hexdigest()[:16]}"


# ---------------------------------------------------------------------------------------------------- the entry point


@dataclasses.dataclass
class ScanResult:
    """One model's scan: the plan, the statistics and the scored neuron sets (``results_dir`` when written).

    ``neuron_sets`` is the ``neurons.json`` dict, ``NeuronSets.from_neurons_json(result.neuron_sets, widths)``
    (:mod:`jaxneurons.interventions`) turns it into ablations; ``masks(prop)`` gives (L, D) bool masks.
    A model skipped by a multi-model rerun (finished earlier) is loaded from its directory: no plan / stats.
    """

    name: str
    plan: ScanPlan | None
    stats: NeuronStats | None
    scored: dict[str, Any] | None
    results_dir: str | None = None
    summary: dict[str, Any] | None = None
    separation: dict[str, Any] | None = None
    skipped: bool = False
    seconds: float | None = None
    _neurons: dict[str, Any] | None = None

    @property
    def neuron_sets(self) -> dict[str, dict[str, dict[str, list[int]]]]:
        if self.scored is not None:
            return neuron_sets(self.scored)
        if self._neurons is None and self.results_dir is not None:
            with open(os.path.join(self.results_dir, "neurons.json")) as f:
                self._neurons = json.load(f)
        if self._neurons is None:
            raise ValueError(f"scan {self.name!r} has no neuron sets")
        return self._neurons

    @property
    def widths(self) -> tuple[int, ...]:
        if self.plan is not None:
            return tuple(self.plan.stats_config.widths)
        if self.summary is None and self.results_dir is not None:
            with open(os.path.join(self.results_dir, "summary.json")) as f:
                self.summary = json.load(f)
        return tuple((self.summary or {})["stats_config"]["widths"])

    def masks(self, prop: str) -> dict[str, np.ndarray]:
        """{group: (L, D_max) bool} of one result (``phone_type``, ``aape_gender``, ...)."""
        from jaxneurons.scoring.common import sets_to_mask

        sets = self.neuron_sets
        if prop not in sets:
            raise KeyError(f"no result {prop!r} in scan {self.name!r} (have {list(sets)})")
        w = self.widths
        return {g: sets_to_mask(s, len(w), max(w)) for g, s in sets[prop].items()}

    def per_layer_counts(self) -> dict[str, dict[str, list[int]]]:
        return per_layer_counts({p: {"groups": m} for p, m in ((p, self.masks(p)) for p in self.neuron_sets)})

    def to_neuron_sets(self, *properties: str) -> Any:
        """:class:`jaxneurons.interventions.NeuronSets` of this scan (optionally only some properties)."""
        from jaxneurons.interventions import NeuronSets

        data = self.neuron_sets
        if properties:
            data = {p: data[p] for p in properties}
        return NeuronSets.from_neurons_json(data, self.widths)

    def write(self, res: Any, extra_text: str = "") -> tuple[dict[str, Any], Any]:
        """Fill a :class:`~jaxneurons.results.ResultsDir` (not yet committed) with this scan's arrays, sets,
        summary and report; returns (summary, report) so a study can add its sections before writing it."""
        from jaxneurons.pipeline.scan_report import write_scan_results

        if self.plan is None or self.stats is None:
            raise ValueError(f"scan {self.name!r} was loaded from disk; its statistics are not in memory")
        summary, report = write_scan_results(res, self.plan, self.stats, self.scored, extra_text=extra_text)
        self.summary = summary
        return summary, report


@dataclasses.dataclass
class MultiScanResult:
    """Scans of several models over one dataset: ``results[name]`` and the comparison ``summary``."""

    results: dict[str, ScanResult]
    summary: dict[str, Any] | None = None
    out_dir: str | None = None

    def __getitem__(self, name: str) -> ScanResult:
        return self.results[name]

    def __iter__(self):
        return iter(self.results)


def _is_single(models: Any) -> bool:
    from jaxneurons.pipeline.multiscan import ModelSpec

    return isinstance(models, str | os.PathLike | ModelSpec | nnx.Module)


def _resolve_path(path: str) -> str:
    from jaxneurons.assets import resolve_model_path

    return resolve_model_path(str(path))


def _model_entries(models: Any) -> list[Any]:
    """Model specs of a multi-model call: paths, ModelSpecs, or a {name: model | path | spec} mapping."""
    from jaxneurons.pipeline.multiscan import InMemoryModel, ModelSpec, model_specs

    if isinstance(models, Mapping):
        out = []
        for name, m in models.items():
            if isinstance(m, nnx.Module):
                out.append(InMemoryModel(str(name), m))
            elif isinstance(m, ModelSpec):
                out.append(dataclasses.replace(m, name=str(name)))
            else:
                out.append(ModelSpec(str(name), _resolve_path(m)))
        return out
    items = list(models)
    if all(isinstance(m, str | os.PathLike) for m in items):
        return model_specs([_resolve_path(m) for m in items])
    out = []
    for k, m in enumerate(items):
        if isinstance(m, ModelSpec):
            out.append(m)
        elif isinstance(m, nnx.Module):
            out.append(InMemoryModel(f"model{k}", m))
        else:
            out.append(model_specs([_resolve_path(m)])[0])
    return out


def scan(
    models: Any,
    utterances: Sequence[Utterance],
    properties: Sequence[Property | str] | Property | str | None = None,
    *,
    options: ScanOptions = ScanOptions(),
    out_dir: str | None = None,
    work_dir: str | None = None,
    model_id: str | None = None,
    decoded: DecodedDataset | None = None,
    issues: DataIssues | None = None,
    mesh: jax.sharding.Mesh | None = None,
    process_index: int | None = None,
    process_count: int | None = None,
    progress: bool = True,
    separation: Any = None,
    null_draws: int = 1000,
    run_flags: Mapping[str, Any] | None = None,
    report_text: str = "",
    cache_audio: bool = True,
) -> ScanResult | MultiScanResult:
    """Scan one model or several over ``utterances`` for ``properties`` (objects or names; default
    ``options.properties``).

    ``models``: an ``nnx.Module``, a model directory (``"default"`` = the bundled model) or a
    :class:`~jaxneurons.pipeline.multiscan.ModelSpec` -> :class:`ScanResult`; a list of them or a
    ``{name: model}`` mapping -> :class:`MultiScanResult` (the dataset decoded once, one model in memory at a
    time; with ``out_dir``: ``OUT/<name>/`` per model, finished models skipped on rerun, and the comparison in
    ``OUT/summary.json`` + report).

    ``out_dir``: write a results directory (atomically). Statistics checkpoints (a killed scan resumes to the
    same result) go to ``work_dir`` (default ``OUT.work``; none without either). ``model_id`` names an
    in-memory model in fingerprints (default: a hash of its weights). ``decoded`` shares decoded audio, F0 and
    i-vectors with other scans of the same utterances. Multi-host: pass ``mesh``; processes default to JAX's.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    issues = issues if issues is not None else DataIssues()
    props = _as_properties(properties, options)
    common = dict(mesh=mesh, process_index=process_index, process_count=process_count, issues=issues,
                  progress=progress)
    if _is_single(models):
        return _scan_one(models, utterances, props, options, out_dir=out_dir, work_dir=work_dir, model_id=model_id,
                         decoded=decoded, run_flags=run_flags, report_text=report_text, separation=separation,
                         **common)
    from jaxneurons.pipeline.multiscan import SeparationOptions, run_models

    return run_models(_model_entries(models), utterances, props, options, out_dir=out_dir, work_dir=work_dir,
                      decoded=decoded, cache_audio=cache_audio,
                      separation=SeparationOptions() if separation is None else separation, null_draws=null_draws,
                      run_flags=run_flags, report_text=report_text, **common)


def _scan_one(model: Any, utts: Sequence[Utterance], props: list[Property], options: ScanOptions, *,
              out_dir: str | None, work_dir: str | None, model_id: str | None, decoded: DecodedDataset | None,
              run_flags: Mapping[str, Any] | None, report_text: str, separation: Any, mesh: Any,
              process_index: int, process_count: int, issues: DataIssues, progress: bool,
              name: str | None = None, fingerprint: dict | None = None, progress_label: str = "scan",
              results_kind: str = "scan") -> ScanResult:
    """One model: plan, resumable statistics pass, scoring, and (process 0, with ``out_dir``) the results."""
    from jaxneurons.pipeline.multiscan import InMemoryModel, ModelSpec

    t0 = time.perf_counter()
    path = None
    if isinstance(model, InMemoryModel):
        model_id, name = model_id or model.model_id, name or model.name
        model = model.model
    elif isinstance(model, ModelSpec):
        path, model_id, name = model.path, model_id or model.model_id, name or model.name
        model = model.load()
    elif not isinstance(model, nnx.Module):
        from jaxneurons.models.checkpoint import load_model

        path = _resolve_path(model)
        model_id = model_id or os.path.abspath(path)
        model = load_model(path)
    name = name or (os.path.basename(os.path.normpath(path)) if path else "model")
    if work_dir is None and out_dir is not None:
        work_dir = out_dir.rstrip("/") + ".work"
    checkpoint = None
    if work_dir is not None:
        if fingerprint is None:
            fingerprint = scan_fingerprint(model_id or model_content_id(model), utts, options, props)
        # One checkpoint per (model, data, settings): scans sharing a work dir never resume each other's.
        tag = hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
        os.makedirs(work_dir, exist_ok=True)
        checkpoint = os.path.join(work_dir, f"stats-{tag}.npz")
    plan = plan_scan(model, utts, options, issues, decoded=decoded, properties=props)
    stats = scan_statistics(model, utts, plan, checkpoint_path=checkpoint, fingerprint=fingerprint, mesh=mesh,
                            process_index=process_index, process_count=process_count, issues=issues,
                            progress=progress, decoded=decoded, progress_label=progress_label)
    result = ScanResult(name, plan, stats, score(stats, plan))
    if separation is not None and process_index == 0:
        from jaxneurons.pipeline.multiscan import separation_scores

        result.separation = separation_scores(model, plan, decoded or DecodedDataset(utts, issues=issues),
                                              separation) if separation.enabled else None
    if out_dir is not None and process_index == 0:
        from jaxneurons.pipeline.multiscan import separation_section
        from jaxneurons.results import ResultsDir

        flags = {**(run_flags or {}), "model": path or model_id, "fingerprint": fingerprint,
                 "options": dataclasses.asdict(options), "properties": [repr(p) for p in props]}
        with ResultsDir(out_dir, results_kind, flags=flags) as res:
            res.run["data_issues"] = issues.as_dict()
            text = report_text or (f"Model: {path or model_id or name}. {len(utts)} utterances. "
                                   f"Data: {issues.summary()}.")
            _, report = result.write(res, extra_text=text)
            if result.separation is not None:
                res.save_json("separation", result.separation)
                separation_section(report, {name: result.separation})
            report.write(res.tmp)
        result.results_dir = out_dir
        if work_dir == out_dir.rstrip("/") + ".work":
            shutil.rmtree(work_dir, ignore_errors=True)
    result.seconds = time.perf_counter() - t0
    return result
