"""Multi-model scans: many checkpoints x one dataset in one launch.

The dataset is decoded once (:class:`~jaxneurons.pipeline.scan.DecodedDataset`: audio, i-vector groups, and
frame labels with F0 once per front-end geometry) and reused for every model; models are scanned one at a
time, each exactly as ``jaxneurons scan --model DIR`` would (same plan, same sharded resumable pass, same
results directory ``OUT/<name>/``), so peak memory is one model + its accumulators + the decoded cache.
A model whose ``OUT/<name>/run.json`` carries the same fingerprint is skipped on rerun; an unfinished one
resumes from ``OUT/<name>.work/stats-<fingerprint tag>.npz``. ``OUT/summary.json`` + ``OUT/report.{md,html}``
compare the models: property neurons per layer (depth-normalised profiles), cluster separation (silhouette) per layer,
and overlap of neuron sets between models of the same shape with a shuffled-set null.

Random-init twins (``ModelSpec(..., random_seed=S)``) are models of a checkpoint's config with fresh
weights: the baseline every property-neuron count should be read against.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from jaxneurons.config_flags import field_help
from jaxneurons.data import DataIssues, Utterance
from jaxneurons.models import SpeechConfig, build_model, forward_with_captures
from jaxneurons.models.checkpoint import CONFIG_FILE, load_model
from jaxneurons.pipeline.labels import frame_geometry
from jaxneurons.pipeline.properties import Property
from jaxneurons.pipeline.scan import (
    DecodedDataset,
    MultiScanResult,
    ScanOptions,
    ScanPlan,
    ScanResult,
    _scan_one,
    model_content_id,
    scan_fingerprint,
)
from jaxneurons.report import Report, heatmap, layer_profile
from jaxneurons.results import FORMAT_VERSION, RUN_FILE, software_versions, write_json
from jaxneurons.scoring.common import sets_to_mask
from jaxneurons.scoring.overlap import overlap_matrix_null

log = logging.getLogger(__name__)

TWIN_SUFFIX = "-random"
_GLOB_CHARS = re.compile(r"[*?\[]")


# ---------------------------------------------------------------- which models

@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of a multi-model scan: a model directory, or a random-init twin of its config."""

    name: str  # results subdirectory: OUT/<name>/
    path: str  # jaxneurons model directory (a twin reads only its config.json)
    random_seed: int | None = None  # set: fresh weights of path's config, seeded (a random-init twin)

    @property
    def config(self) -> SpeechConfig:
        return SpeechConfig.load(os.path.join(self.path, CONFIG_FILE))

    @property
    def model_id(self) -> str:
        """Identity in fingerprints: what weights the scan saw."""
        path = os.path.abspath(self.path)
        if self.random_seed is None:
            return path
        cfg = hashlib.sha1(json.dumps(dataclasses.asdict(self.config), sort_keys=True).encode()).hexdigest()[:12]
        return f"random-init(config of {path}, config sha1 {cfg}, seed {self.random_seed})"

    def load(self) -> nnx.Module:
        return load_model(self.path) if self.random_seed is None else build_model(self.config, self.random_seed)


@dataclasses.dataclass
class InMemoryModel:
    """A model object of a multi-model scan (``scan({"mine": model, ...}, ...)``): no directory."""

    name: str
    model: nnx.Module
    random_seed: int | None = None
    path: str = "(in memory)"

    @property
    def config(self) -> SpeechConfig:
        return self.model.config

    @property
    def model_id(self) -> str:
        return model_content_id(self.model)

    def load(self) -> nnx.Module:
        return self.model


def expand_model_list(arg: str, resolve: Any = None) -> list[str]:
    """``--model`` value -> model directories: a comma list whose items may be globs, or ``@file`` (one path or
    glob per line, ``#`` comments). Globs match directories holding ``config.json``; order is kept (globs
    sorted). ``resolve`` maps names such as ``default`` to directories."""
    resolve = resolve or (lambda x: x)
    if arg.startswith("@"):
        with open(arg[1:]) as f:
            items = [line.split("#", 1)[0].strip() for line in f]
        base = os.path.dirname(os.path.abspath(arg[1:]))
        items = [i if os.path.isabs(i) or i == "default" else os.path.join(base, i) for i in items if i]
    else:
        items = [i.strip() for i in arg.split(",") if i.strip()]
    paths: list[str] = []
    for item in items:
        if _GLOB_CHARS.search(item):
            found = sorted(p for p in glob.glob(item) if os.path.exists(os.path.join(p, CONFIG_FILE)))
            if not found:
                raise ValueError(f"--model pattern {item!r} matches no model directory (with {CONFIG_FILE})")
            paths += found
        else:
            paths.append(resolve(item))
    if not paths:
        raise ValueError(f"--model {arg!r} names no model")
    seen: set[str] = set()
    unique = []
    for p in paths:
        if os.path.abspath(p) not in seen:
            seen.add(os.path.abspath(p))
            unique.append(p)
    return unique


def is_multi_model_arg(arg: str) -> bool:
    """Does a ``--model`` value ask for a multi-model scan (comma list, glob or @file)?"""
    return arg.startswith("@") or "," in arg or bool(_GLOB_CHARS.search(arg))


def model_specs(paths: Sequence[str], *, random_twin: bool = False, twin_seed: int = 0) -> list[ModelSpec]:
    """Specs with unique, file-system-safe names (directory basenames; ``-2``, ``-3`` on clashes); with
    ``random_twin`` each model is followed by ``<name>-random``."""
    specs: list[ModelSpec] = []
    used: set[str] = set()

    def unique(name: str) -> str:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
        out, k = name, 2
        while out in used:
            out, k = f"{name}-{k}", k + 1
        used.add(out)
        return out

    for p in paths:
        name = unique(os.path.basename(os.path.normpath(os.path.abspath(p))))
        specs.append(ModelSpec(name, p))
        if random_twin:
            specs.append(ModelSpec(unique(name + TWIN_SUFFIX), p, twin_seed))
    return specs


def front_end_name(config: SpeechConfig) -> str:
    """Models with the same name share decoded frame labels (and F0)."""
    g = frame_geometry(config)
    if hasattr(g, "kernels"):
        return f"conv k={','.join(map(str, g.kernels))} s={','.join(map(str, g.strides))}"
    return f"log-mel hop={g.hop} win={g.window} stack={g.stack}"


# ---------------------------------------------------------------- cluster separation

@dataclasses.dataclass(frozen=True)
class SeparationOptions:
    """Silhouette of phone-middle frame features by phone type and by gender, per layer (seeded subsample)."""

    enabled: bool = field_help(True, "Multi-model scans: silhouette of phone-middle frames by phone type and gender, "
                               "per layer, on a seeded subsample.")
    max_utterances: int = field_help(64, "Utterances of the subsample.")
    max_points: int = field_help(2000, "Frames of the subsample.")
    metric: str = field_help("cosine", "Distance of the silhouette (sklearn metric name).")
    seed: int = field_help(0, "Seed of the subsample.")
    batch_size: int = field_help(8, "Utterances per forward batch.")


def separation_scores(model: nnx.Module, plan: ScanPlan, decoded: DecodedDataset,
                      options: SeparationOptions = SeparationOptions()) -> dict[str, Any]:
    """Per Transformer layer (hidden_states[1..L]): silhouette of the middle frame of every phone, labelled
    by phone type (vowel / voiced / unvoiced) and by the speaker's gender; NaN where a labelling has < 2
    classes. A separate small forward pass on a seeded subsample of utterances (not the scan's statistics)."""
    from sklearn.metrics import silhouette_score

    num_layers = model.config.num_hidden_layers
    empty = {"phone_type": [float("nan")] * num_layers, "gender": [float("nan")] * num_layers, "points": 0,
             "metric": options.metric, **dataclasses.asdict(options)}
    if plan.inventory is None:
        return empty
    rng = np.random.default_rng(options.seed)
    usable = [i for i, lab in enumerate(plan.utt_labels) if (lab.middle & (lab.phone >= 0)).any()]
    if not usable:
        return empty
    pick = sorted(rng.choice(usable, min(len(usable), options.max_utterances), replace=False).tolist(),
                  key=lambda i: decoded.utts[i].num_samples)
    graphdef, state = nnx.split(model)

    @jax.jit
    def hidden(state, audio, lengths):
        out, _, _ = forward_with_captures(nnx.merge(graphdef, state), audio, lengths, capture_ffn=False)
        return out.hidden_states[1:]

    types = np.array([{"vowel": 0, "voiced": 1, "unvoiced": 2}.get(t, -1) for t in plan.inventory.types])
    feats: list[list[np.ndarray]] = [[] for _ in range(num_layers)]
    ptype, gender = [], []
    for start in range(0, len(pick), options.batch_size):
        idx = pick[start:start + options.batch_size]
        audio = [decoded.audio(i) for i in idx]
        padded = -(-max(len(a) for a in audio) // 16000) * 16000
        batch = np.zeros((options.batch_size, padded), np.float32)
        lengths = np.zeros(options.batch_size, np.int32)
        for row, a in enumerate(audio):
            batch[row, :len(a)], lengths[row] = a, len(a)
        hs = [np.asarray(h) for h in hidden(state, batch, lengths)]
        for row, i in enumerate(idx):
            lab = plan.utt_labels[i]
            t = np.flatnonzero(lab.middle & (lab.phone >= 0))
            for layer in range(num_layers):
                feats[layer].append(hs[layer][row, t])
            ptype.append(types[lab.phone[t]])
            gender.append(np.full(len(t), lab.gender))
    ptype_a, gender_a = np.concatenate(ptype), np.concatenate(gender)
    keep = np.arange(len(ptype_a))
    if len(keep) > options.max_points:
        keep = np.sort(rng.choice(keep, options.max_points, replace=False))
    out = dict(empty, points=int(len(keep)))
    for name, labels in (("phone_type", ptype_a[keep]), ("gender", gender_a[keep])):
        ok = labels >= 0
        if len(np.unique(labels[ok])) < 2 or ok.sum() <= len(np.unique(labels[ok])):
            continue
        out[name] = [float(silhouette_score(np.concatenate(feats[layer])[keep][ok], labels[ok],
                                            metric=options.metric)) for layer in range(num_layers)]
    return out


# ---------------------------------------------------------------- the scan

def model_fingerprint(spec: ModelSpec, utts: Sequence[Utterance], options: ScanOptions,
                      separation: SeparationOptions) -> dict[str, str]:
    """What a finished ``OUT/<name>/`` must have been computed from to be skipped on rerun.

    The model is identified by content (config + every weight, :func:`weights_fingerprint`), not by its path:
    weights replaced in place give another fingerprint, so the model is scanned again; so do changed scan or
    separation options and another manifest.
    """
    from jaxneurons.train.fingerprint import weights_fingerprint

    content = f"{weights_fingerprint(spec.load())} ({spec.model_id})"
    fp = scan_fingerprint(content, utts, options)
    sep = json.dumps(dataclasses.asdict(separation), sort_keys=True)
    return {**fp, "separation": hashlib.sha1(sep.encode()).hexdigest()[:16]}


def _finished(path: str, fingerprint: dict[str, str]) -> bool:
    """Whether ``path`` holds finished results of exactly ``fingerprint``. Partial statistics of another
    fingerprint (other weights or options) are never resumed: each checkpoint is named by its fingerprint
    (``path.work/stats-<tag>.npz``), and ``path.work/`` is removed once the model is finished."""
    run_path = os.path.join(path, RUN_FILE)
    if not os.path.exists(run_path):
        return False
    try:
        with open(run_path) as f:
            run = json.load(f)
    except (OSError, ValueError):
        return False
    return run.get("flags", {}).get("fingerprint") == fingerprint and os.path.exists(os.path.join(path, "neurons.json"))


def _agree(flag: bool) -> bool:
    """Process 0's decision for every process (all must skip or scan the same models, or collectives hang)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def run_models(
    specs: Sequence[ModelSpec | InMemoryModel],
    utts: Sequence[Utterance],
    properties: Sequence[Property],
    options: ScanOptions,
    *,
    out_dir: str | None,
    work_dir: str | None = None,
    decoded: DecodedDataset | None = None,
    cache_audio: bool = True,
    separation: SeparationOptions = SeparationOptions(),
    null_draws: int = 1000,
    mesh: jax.sharding.Mesh | None = None,
    process_index: int = 0,
    process_count: int = 1,
    issues: DataIssues | None = None,
    progress: bool = True,
    run_flags: dict[str, Any] | None = None,
    report_text: str = "",
) -> MultiScanResult:
    """The multi-model half of :func:`jaxneurons.pipeline.scan.scan` (call that): every model of ``specs``
    over ``utts``, one at a time, sharing one :class:`DecodedDataset`; with ``out_dir``, ``OUT/<name>/`` per
    model (skipped when finished with the same fingerprint, resumed from ``OUT/<name>.work/``) and the
    comparison in ``OUT/summary.json`` + report (process 0)."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    issues = issues if issues is not None else DataIssues()
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
    decoded = decoded if decoded is not None else DecodedDataset(utts, keep_audio=cache_audio, issues=issues)
    results: dict[str, ScanResult] = {}
    seconds: dict[str, float | None] = {}
    t_all = time.perf_counter()
    for k, spec in enumerate(specs):
        path = os.path.join(out_dir, spec.name) if out_dir is not None else None
        fp = model_fingerprint(spec, utts, options, separation)
        fp["properties"] = scan_fingerprint(spec.model_id, utts, options, properties)["options"]
        if path is not None and _agree(_finished(path, fp)):
            log.info("%s: finished earlier (same fingerprint), skipped", spec.name)
            seconds[spec.name] = None
            results[spec.name] = ScanResult(spec.name, None, None, None, results_dir=path, skipped=True)
            continue
        what = (f"random-init twin (seed {spec.random_seed}) of the config of {spec.path}"
                if spec.random_seed is not None else spec.path)
        text = report_text or f"Model {spec.name}: {what}. {len(utts)} utterances. Data: {issues.summary()}."
        flags = {**(run_flags or {}), "random_seed": spec.random_seed,
                 "multiscan": os.path.abspath(out_dir) if out_dir else None}
        model_work = (os.path.join(work_dir, spec.name) if work_dir is not None else
                      (path + ".work" if path is not None else None))
        result = _scan_one(
            spec, utts, list(properties), options, out_dir=path, work_dir=model_work, model_id=spec.model_id,
            decoded=decoded, run_flags=flags, report_text=text, separation=separation, mesh=mesh,
            process_index=process_index, process_count=process_count, issues=issues, progress=progress,
            name=spec.name, fingerprint=fp, progress_label=f"scan {k + 1}/{len(specs)} {spec.name}")
        if path is not None and process_index == 0 and model_work is not None:
            shutil.rmtree(model_work, ignore_errors=True)
        if path is not None:
            result.stats = None  # one model's accumulators in memory at a time; the arrays are on disk
        seconds[spec.name] = result.seconds
        results[spec.name] = result
    if out_dir is None or process_index != 0:
        return MultiScanResult(results, None, out_dir)
    decoding = {"cache_audio": decoded.keep_audio, "audio_decodes": decoded.audio_decodes,
                "f0_runs": decoded.f0_runs, "ivector_runs": decoded.ivector_runs,
                "cached_audio_mb": decoded.cached_bytes / 2**20, "utterances": len(utts),
                "seconds_total": time.perf_counter() - t_all}
    summary = write_combined(out_dir, specs, options, seconds=seconds, decoding=decoding, null_draws=null_draws,
                             run_flags=run_flags)
    return MultiScanResult(results, summary, out_dir)


# ---------------------------------------------------------------- the combined summary and report

def _load_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def _model_entry(out_dir: str, spec: ModelSpec) -> dict[str, Any]:
    d = os.path.join(out_dir, spec.name)
    summary = _load_json(os.path.join(d, "summary.json"))
    sep_path = os.path.join(d, "separation.json")
    widths = summary["stats_config"]["widths"]
    config = spec.config
    return {
        "results_dir": spec.name, "path": os.path.abspath(spec.path), "random_twin_seed": spec.random_seed,
        "family": config.family, "num_layers": len(widths), "widths": widths, "front_end": front_end_name(config),
        "per_layer_counts": summary["per_layer_counts"], "totals": summary["totals"],
        "separation": _load_json(sep_path) if os.path.exists(sep_path) else None,
    }


def _overlaps(out_dir: str, models: dict[str, dict], null_draws: int) -> list[dict[str, Any]]:
    """Per group of models with equal FFN widths, per property and group (and the union of a property's
    groups, ``*``): pooled IoU and containment matrices with their shuffled-set null."""
    by_shape: dict[tuple, list[str]] = {}
    for name, m in models.items():
        by_shape.setdefault(tuple(m["widths"]), []).append(name)
    out = []
    for widths, names in by_shape.items():
        if len(names) < 2:
            continue
        shape = (len(widths), max(widths))
        sets = {n: _load_json(os.path.join(out_dir, models[n]["results_dir"], "neurons.json")) for n in names}
        props = [p for p in sets[names[0]] if all(p in sets[n] for n in names)]
        for prop in props:
            groups = [g for g in sets[names[0]][prop] if all(g in sets[n][prop] for n in names)]
            if not groups:
                continue
            masks = {n: {g: sets_to_mask(sets[n][prop][g], *shape) for g in groups} for n in names}
            for group in [*groups, "*"]:
                sel = {n: (np.any(list(masks[n].values()), axis=0) if group == "*" else masks[n][group])
                       for n in names}
                entry: dict[str, Any] = {"models": names, "widths": list(widths), "property": prop, "group": group,
                                         "sizes": [int(sel[n].sum()) for n in names]}
                for metric in ("iou", "containment"):
                    _, res = overlap_matrix_null(sel, metric, n_draws=null_draws, seed=0)
                    for key in ("observed", "null_mean", "z", "p_value"):
                        entry[f"{metric}_{key}" if key != "observed" else metric] = res[key]
                out.append(entry)
    return out


def separation_section(report: Report, seps: dict[str, dict], figure: str | None = None) -> None:
    seps = {n: s for n, s in seps.items() if s is not None}
    if not seps:
        return
    report.heading("Cluster separation per layer")
    s0 = next(iter(seps.values()))
    report.text(f"Silhouette ({s0['metric']} distance) of the middle frame of each phone, on a seeded subsample "
                f"(at most {s0['max_utterances']} utterances, {s0['max_points']} frames), labelled by phone type "
                "(vowel / voiced / unvoiced consonant) and by speaker gender. Higher = better separated; "
                "n/a = fewer than two classes.")
    rows = []
    for name, s in seps.items():
        for layer, (a, b) in enumerate(zip(s["phone_type"], s["gender"], strict=True)):
            rows.append([name, layer + 1, _fmt(a), _fmt(b), s["points"]])
    report.table(["model", "layer", "silhouette phone type", "silhouette gender", "frames"], rows,
                 caption="cluster separation per model and layer")
    if figure is not None:
        for key in ("phone_type", "gender"):
            series = {n: s[key] for n, s in seps.items() if np.isfinite(s[key]).any()}
            if series:
                path = layer_profile(f"{figure}_{key}.png", series, f"Silhouette by {key.replace('_', ' ')}",
                                     ylabel="silhouette", normalise_depth=True)
                report.figure(path, f"silhouette by {key.replace('_', ' ')}, all models (depth normalised)")


def _fmt(x: float) -> str | float:
    return "n/a" if x is None or not np.isfinite(x) else round(float(x), 4)


def write_combined(out_dir: str, specs: Sequence[ModelSpec], options: ScanOptions, *,
                   seconds: dict[str, float | None] | None = None, decoding: dict[str, Any] | None = None,
                   null_draws: int = 1000, run_flags: dict[str, Any] | None = None) -> dict[str, Any]:
    """``OUT/summary.json``, ``OUT/report.{md,html}``, ``OUT/figures/`` and ``OUT/run.json`` from the
    per-model results directories (each file written atomically)."""
    seconds = seconds or {}
    models = {s.name: {**_model_entry(out_dir, s), "scan_seconds": seconds.get(s.name),
                       "skipped": s.name in seconds and seconds[s.name] is None} for s in specs}
    front_ends: dict[str, list[str]] = {}
    for name, m in models.items():
        front_ends.setdefault(m["front_end"], []).append(name)
    overlaps = _overlaps(out_dir, models, null_draws)
    summary = {"models": models, "front_ends": front_ends, "decoding": decoding, "overlap": overlaps,
               "null_draws": null_draws, "options": dataclasses.asdict(options)}
    write_json(os.path.join(out_dir, "summary.json"), summary)

    fig_dir = os.path.join(out_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    report = Report("Multi-model neuron scan")
    report.text(f"{len(models)} models, one dataset ({(decoding or {}).get('utterances', '?')} utterances). "
                "Each model's own results: the directory named after it.")
    report.heading("Models")
    report.table(["model", "family", "layers", "FFN width", "front end", "random twin seed", "scan s"],
                 [[n, m["family"], m["num_layers"], "/".join(map(str, sorted(set(m["widths"])))), m["front_end"],
                   "" if m["random_twin_seed"] is None else m["random_twin_seed"],
                   "skipped (done)" if m["skipped"] else ("" if m["scan_seconds"] is None else
                                                          round(m["scan_seconds"], 1))]
                  for n, m in models.items()])
    if decoding:
        report.text(f"Decoding: {decoding['audio_decodes']} audio decodes for {decoding['utterances']} utterances "
                    f"(audio cache {'on' if decoding['cache_audio'] else 'off'}, "
                    f"{decoding['cached_audio_mb']:.1f} MiB), F0 runs {decoding['f0_runs']} "
                    f"(one per front end), i-vector runs {decoding['ivector_runs']}; front ends: "
                    + "; ".join(f"{k}: {', '.join(v)}" for k, v in front_ends.items()) + ".")
    report.heading("Property neurons per layer")
    props = list(dict.fromkeys(p for m in models.values() for p in m["per_layer_counts"]))
    max_layers = max(m["num_layers"] for m in models.values())
    for prop in props:
        series = {n: np.sum([v for v in m["per_layer_counts"][prop].values()], axis=0).tolist()
                  for n, m in models.items() if m["per_layer_counts"].get(prop)}
        if not series:
            continue
        path = layer_profile(os.path.join(fig_dir, f"profile_{prop}.png"), series,
                             f"{prop} neurons per layer (all groups)", ylabel="neurons", normalise_depth=True)
        report.figure(path, f"{prop}: neurons per layer of every model (x: layer / number of layers)")
        rows = []
        for n, m in models.items():
            for g, v in m["per_layer_counts"].get(prop, {}).items():
                rows.append([n, g, *v, *[""] * (max_layers - len(v)), sum(v)])
        report.table(["model", "group", *[f"L{i + 1}" for i in range(max_layers)], "total"], rows,
                     caption=f"{prop}: neurons per layer")
    separation_section(report, {n: m["separation"] for n, m in models.items()}, os.path.join(fig_dir, "separation"))
    if overlaps:
        report.heading("Overlap of neuron sets between models of the same shape")
        report.text(f"Pooled over layers: IoU |A∩B|/|A∪B| and containment |A∩B|/|A| (row A, column B), against "
                    f"{null_draws} random sets with B's size in every layer (p: one-sided, overlap above chance). "
                    "Group '*' is the union of a property's groups. Neuron indices correspond only between models "
                    "that share an initialisation (checkpoints of one run, fine-tunes of one model); between "
                    "independently initialised models (e.g. a model and its random twin) expect the null.")
        for e in overlaps:
            if e["group"] == "*" and len(e["models"]) >= 2:
                path = heatmap(os.path.join(fig_dir, f"iou_{e['property']}_{len(e['widths'])}x"
                                            f"{max(e['widths'])}.png"), e["iou"], e["models"], e["models"],
                               f"{e['property']} neurons: IoU between models", "IoU (pooled over layers)")
                report.figure(path, f"{e['property']} (all groups): IoU between models")
        rows = []
        for e in overlaps:
            ms = e["models"]
            for i in range(len(ms)):
                for j in range(i + 1, len(ms)):
                    rows.append([e["property"], e["group"], ms[i], ms[j], e["sizes"][i], e["sizes"][j],
                                 _fmt(e["iou"][i][j]), _fmt(e["iou_null_mean"][i][j]), _fmt(e["iou_p_value"][i][j]),
                                 _fmt(e["containment"][i][j]), _fmt(e["containment"][j][i])])
        report.table(["property", "group", "A", "B", "|A|", "|B|", "IoU", "null IoU", "p", "|A∩B|/|A|", "|A∩B|/|B|"],
                     rows, caption="overlap of neuron sets (pooled over layers)")
    report.write(out_dir)
    run = {"format_version": FORMAT_VERSION, "kind": "multiscan", "flags": run_flags or {},
           "models": [s.name for s in specs], "software": software_versions()}
    write_json(os.path.join(out_dir, RUN_FILE), run)
    from jaxneurons.report.explorer import write_multi_explorer

    write_multi_explorer(out_dir, summary)  # OUT/explorer/: every model's neuron index + the overlap tables
    return summary
