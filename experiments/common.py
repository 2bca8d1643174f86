"""Shared set-up of the study launchers (``experiments/*.py``): model, corpus, probes and pruning curves.

Stable API (other launchers import it; extend, do not change signatures):

- Flags: :func:`define_data_flags` (``--model --manifest --out --workdir --num_speakers --minutes
  --corpus_seed --max_utterances --batch_size --seed``), :func:`define_probe_flags` (``--probe_layer
  --probe_max_epochs --probe_min_steps``), :func:`define_pruning_flags` (densities, strategy, iterative schedule
  and its continued pre-training). Call them at module level of a launcher, before ``app.run``.
- :func:`load_setup` -> :class:`Setup` (model, manifest, utterances, work directory, a sentence for the report):
  ``--model DIR`` or the bundled ``default``; ``--manifest PATH`` or a fresh synthetic espeak corpus.
- :class:`ProbeKit`: one loader, speaker-disjoint and within-speaker splits, ``features(model, neuron_mask)``
  (frame features of one layer, with extra per-frame labels) and ``train_*`` / ``eval_*`` helpers.
- :class:`ScanIdentify`: the ``identify(model, keep, layer)`` callback of :mod:`jaxneurons.pruning` that finds
  protected neurons by a fresh scan of the partly pruned model (its first call on the unpruned model reuses
  the scan already done).
- :func:`pruning_curves` (one-shot L1 vs protected at several densities, and iterative pruning with short
  continued pre-training between steps) and :func:`pruning_section` (tables + curves for the report).
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
from absl import flags

FLAGS = flags.FLAGS
Metrics = dict[str, float]
EvaluateFn = Callable[[Any, Any], Metrics]  # (model, neuron_mask or None) -> metrics


# ---------------------------------------------------------------------------------------------------------------
# Flags, model and corpus


def define_data_flags(*, num_speakers: int = 16, minutes: float = 10.0, corpus_seed: int = 12345) -> None:
    """Model / corpus / output flags shared by every launcher."""
    flags.DEFINE_string("model", "default", "Model directory (jaxneurons format), or 'default' for the bundled one.")
    flags.DEFINE_string("manifest", None, "Manifest JSONL of the evaluation corpus (any reader's output, e.g. "
                        "jaxneurons/data/readers.py). Default: synthesise an espeak corpus into the work directory.")
    flags.DEFINE_string("out", None, "Results directory (written atomically).")
    flags.DEFINE_string("workdir", None, "Corpus, scan checkpoints and training work (default: OUT.work).")
    flags.DEFINE_integer("num_speakers", num_speakers, "Speakers of the synthetic corpus (without --manifest).")
    flags.DEFINE_float("minutes", minutes, "Minutes of audio of the synthetic corpus (without --manifest).")
    flags.DEFINE_integer("corpus_seed", corpus_seed, "Synthetic corpus seed (the default model was trained on "
                         "seed 1, so the default evaluates on unheard speakers).")
    flags.DEFINE_integer("max_utterances", 0, "Use at most this many utterances of the manifest (0: all).")
    flags.DEFINE_integer("batch_size", 8, "Utterances per batch of the scan and feature passes.")
    flags.DEFINE_integer("seed", 0, "Seed of splits, probes, random controls and continued pre-training.")


def define_probe_flags() -> None:
    flags.DEFINE_string("probe_layer", "-1", "hidden_states index the probes read (-1: last layer output).")
    flags.DEFINE_integer("probe_max_epochs", 30, "Probe epochs (early stopping on the dev loss).")
    flags.DEFINE_integer("probe_min_steps", 300, "Minimum probe updates (small sets have few steps per epoch).")


def launcher_flags() -> dict[str, Any]:
    """Values of the flags defined by the launcher and this module (for ``run.json``; absl's own left out)."""
    return {f.name: f.value for module, defined in FLAGS.flags_by_module_dict().items()
            if not module.startswith("absl") for f in defined}


@dataclasses.dataclass
class Setup:
    """What every launcher starts from."""

    model: Any
    model_path: str
    manifest: str
    utts: list
    workdir: str
    description: str


def corpus_summary(utts: Sequence) -> dict[str, Any]:
    genders: dict[str, int] = {}
    for u in {u.speaker: u for u in utts}.values():
        genders[str(u.gender)] = genders.get(str(u.gender), 0) + 1
    return {"utterances": len(utts), "speakers": len({u.speaker for u in utts}),
            "minutes": round(sum(u.duration for u in utts) / 60, 2), "speakers_per_gender": genders}


def load_setup(languages: Sequence[str] = ("en",)) -> Setup:
    """Model and corpus from the data flags (synthesising the corpus unless ``--manifest`` is given)."""
    from jaxneurons.assets import resolve_model_path
    from jaxneurons.data import generate_corpus, read_manifest
    from jaxneurons.models.checkpoint import load_model

    if not FLAGS.out:
        sys.exit("error: --out is required")
    workdir = os.path.abspath(FLAGS.workdir or FLAGS.out.rstrip("/") + ".work")
    os.makedirs(workdir, exist_ok=True)
    manifest = FLAGS.manifest
    if not manifest:
        manifest = generate_corpus(os.path.join(workdir, "corpus"), FLAGS.num_speakers, FLAGS.minutes,
                                   list(languages), seed=FLAGS.corpus_seed, progress=False)
    utts = read_manifest(manifest)
    if FLAGS.max_utterances:
        utts = utts[:FLAGS.max_utterances]
    if not utts:
        sys.exit(f"error: {manifest}: no utterances")
    model_path = resolve_model_path(FLAGS.model)
    model = load_model(model_path)
    cfg = model.config
    info = corpus_summary(utts)
    source = "synthetic espeak corpus" if not FLAGS.manifest else "manifest"
    description = (f"Model: {model_path} ({cfg.family}, {cfg.num_hidden_layers} layers, "
                   f"{cfg.intermediate_size} FFN neurons per layer). Data: {source} {manifest} ({info['utterances']} "
                   f"utterances, {info['speakers']} speakers, {info['minutes']} min).")
    return Setup(model, model_path, manifest, utts, workdir, description)


def probe_layer_index(model: Any, spec: str) -> int:
    """``--probe_layer`` -> non-negative hidden_states index."""
    n = model.config.num_hidden_layers + 1
    i = int(spec)
    return i + n if i < 0 else i


# ---------------------------------------------------------------------------------------------------------------
# Probes


class ProbeKit:
    """Frame features of one layer for every utterance, splits and the studies' probes.

    Splits (fixed for all models/masks so numbers compare): phones, gender and pitch on disjoint speakers
    (stratified by gender when every speaker has one and both occur), speaker ID on disjoint utterances of
    the same speakers. ``extra_frame_labels``: name -> per-utterance int arrays of model-frame length (manifest
    order), e.g. pitch bins; -1 = ignore.
    """

    def __init__(self, model: Any, utts: Sequence, *, inventory: Any = None, layer: int = -1, batch_size: int = 8,
                 seed: int = 0, max_epochs: int = 30, min_steps: int = 300,
                 extra_frame_labels: Mapping[str, Sequence[np.ndarray]] | None = None):
        from jaxneurons.data import BatchLoader, FrameLabelSpec
        from jaxneurons.pipeline.labels import GENDERS, frame_geometry
        from jaxneurons.probes import SplitError, speaker_disjoint_split, within_speaker_split

        self.utts, self.inventory, self.seed = list(utts), inventory, seed
        self.max_epochs, self.min_steps = max_epochs, min_steps
        self.layer = layer
        labels = {}
        if inventory is not None:
            labels["phone"] = FrameLabelSpec("phones", inventory.vocab, frames="all", ignore=("sil",))
        self.loader = BatchLoader(self.utts, batch_size, frame_geometry(model.config), labels=labels)
        self.speaker_names = sorted({str(u.speaker) for u in self.utts})
        self.values = {"utt": np.arange(len(self.utts)),
                       "gender": np.array([GENDERS.index(u.gender) if u.gender in GENDERS else -1 for u in self.utts]),
                       "speaker": np.array([self.speaker_names.index(str(u.speaker)) for u in self.utts])}
        self.extra = {k: list(v) for k, v in (extra_frame_labels or {}).items()}
        self.notes: list[str] = []
        speakers = [str(u.speaker) for u in self.utts]
        gender = self.values["gender"]
        stratify = gender if (gender >= 0).all() and len(set(gender.tolist())) == 2 else None
        self.disjoint = speaker_disjoint_split(speakers, dev_fraction=0.15, test_fraction=0.25, seed=seed,
                                               stratify=stratify)
        try:
            self.within = within_speaker_split(speakers, dev_fraction=0.2, test_fraction=0.2, seed=seed)
        except SplitError as e:
            self.within = None
            self.notes.append(f"no speaker-ID probe: {e}")
        self.has_gender = stratify is not None
        self.frozen: dict[str, Any] = {}  # reference probes of freeze_reference

    def features(self, model: Any, neuron_mask: Any = None) -> Any:
        """Frame features of ``self.layer`` in MANIFEST order (so the fixed splits apply)."""
        from jaxneurons.probes import extract_features

        keys = ("phone",) if self.inventory is not None else ()
        feats = extract_features(model, self.loader, layers=[self.layer], frame_label_keys=keys,
                                 utt_label_values=self.values, neuron_mask=neuron_mask)
        order = np.asarray(feats.utt_labels["utt"])
        if sorted(order.tolist()) != list(range(len(self.utts))):
            raise RuntimeError(f"features cover {len(order)} of {len(self.utts)} utterances; see the data issues")
        feats = feats.subset(np.argsort(order))  # back to manifest order
        lengths = feats.lengths
        extra = {}
        for key, per_utt in self.extra.items():
            parts = []
            for i, n in enumerate(lengths):
                a = np.asarray(per_utt[i])[:n]
                parts.append(np.pad(a, (0, n - len(a)), constant_values=-1))
            extra[key] = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
        return dataclasses.replace(feats, frame_labels={**feats.frame_labels, **extra})

    # -- training (on clean or pruned features) -----------------------------------------------------------
    def _kw(self) -> dict:
        return dict(max_epochs=self.max_epochs, min_steps=self.min_steps, seed=self.seed)

    def train_phone(self, feats: Any) -> Any:
        from jaxneurons.probes import train_phone_probe

        inv = self.inventory
        return train_phone_probe(feats.subset(self.disjoint.train), feats.subset(self.disjoint.dev),
                                 num_classes=inv.size, class_names=inv.vocab.labels, **self._kw())

    def train_gender(self, feats: Any) -> Any:
        from jaxneurons.pipeline.labels import GENDERS
        from jaxneurons.probes import train_gender_probe

        pooled = feats.pooled()
        return train_gender_probe(pooled.subset(self.disjoint.train), pooled.subset(self.disjoint.dev),
                                  num_classes=2, class_names=list(GENDERS), seed=self.seed,
                                  min_steps=self.min_steps)

    def train_speaker(self, feats: Any) -> Any:
        from jaxneurons.probes import train_speaker_probe

        pooled = feats.pooled()
        return train_speaker_probe(pooled.subset(self.within.train), pooled.subset(self.within.dev),
                                   num_classes=len(self.speaker_names), class_names=self.speaker_names,
                                   seed=self.seed, min_steps=self.min_steps)

    def train_frame(self, feats: Any, key: str, class_names: Sequence[str]) -> Any:
        from jaxneurons.probes import train_frame_classifier

        return train_frame_classifier(feats.subset(self.disjoint.train), feats.subset(self.disjoint.dev),
                                      label_key=key, num_classes=len(class_names), class_names=list(class_names),
                                      **self._kw())

    # -- evaluation on the test part ----------------------------------------------------------------------
    def eval_frames(self, probe: Any, feats: Any) -> dict:
        from jaxneurons.probes import evaluate

        return evaluate(probe, feats.subset(self.disjoint.test))

    def eval_gender(self, probe: Any, feats: Any) -> dict:
        from jaxneurons.probes import evaluate

        return evaluate(probe, feats.pooled().subset(self.disjoint.test))

    def eval_speaker(self, probe: Any, feats: Any) -> dict:
        from jaxneurons.probes import evaluate

        return evaluate(probe, feats.pooled().subset(self.within.test))

    def freeze_reference(self, model: Any, *, phones: bool = True, speaker: bool = True) -> None:
        """Train probes once on the unpruned ``model``; :meth:`retrained_metrics` then also reports them
        applied unchanged to each pruned model (``*_frozen_probe``): how far pruning moved the representation
        the reference probes read, which retrained probes can hide when the residual stream keeps the
        information in another form."""
        feats = self.features(model)
        self.frozen = {}
        if phones and self.inventory is not None:
            self.frozen["phone"] = self.train_phone(feats)
        if speaker and self.within is not None:
            self.frozen["speaker"] = self.train_speaker(feats)

    def retrained_metrics(self, model: Any, neuron_mask: Any = None, *, phones: bool = True,
                          speaker: bool = True) -> Metrics:
        """Probes trained afresh on this (pruned) model: phone accuracy + PER, speaker-ID accuracy; plus the
        reference probes of :meth:`freeze_reference` applied unchanged, if it was called."""
        feats = self.features(model, neuron_mask)
        frozen = self.frozen
        out: Metrics = {}
        if phones and self.inventory is not None:
            ev = self.eval_frames(self.train_phone(feats), feats)
            out.update(phone_accuracy=ev["accuracy"], per=ev["per"])
            if "phone" in frozen:
                out["phone_accuracy_frozen_probe"] = self.eval_frames(frozen["phone"], feats)["accuracy"]
        if speaker and self.within is not None:
            out["speaker_accuracy"] = self.eval_speaker(self.train_speaker(feats), feats)["accuracy"]
            if "speaker" in frozen:
                out["speaker_accuracy_frozen_probe"] = self.eval_speaker(frozen["speaker"], feats)["accuracy"]
        return out


def per_class_group_accuracy(result: dict, groups: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Accuracy over the test examples of each group of classes (count-weighted per-class recall)."""
    per = result["per_class"]
    out = {}
    for g, classes in groups.items():
        n = sum(per[c]["count"] for c in classes if c in per)
        hit = sum(per[c]["count"] * per[c]["accuracy"] for c in classes if c in per)
        out[g] = hit / n if n else float("nan")
    return out


def zero_mask(model: Any, remove: np.ndarray) -> Any:
    """(L, D_max) bool neurons to zero (scan layout, padded for pruned models) -> the model's ``neuron_mask``."""
    widths = [model.config.ffn_width(i) for i in range(model.config.num_hidden_layers)]
    rows = [(~np.asarray(r, bool)[:w]).astype(np.float32) for r, w in zip(remove, widths, strict=True)]
    return np.stack(rows) if len(set(widths)) == 1 else rows


def real_neuron_mask(model: Any) -> np.ndarray:
    """(L, D_max) bool: True for neurons that exist (all, unless the model was physically pruned)."""
    from jaxneurons.scoring.common import real_neurons

    widths = [model.config.ffn_width(i) for i in range(model.config.num_hidden_layers)]
    return real_neurons(len(widths), max(widths), widths)


# ---------------------------------------------------------------------------------------------------------------
# Protected neurons by a fresh scan


def union_mask(scored: Mapping[str, Any], properties: Sequence[str]) -> np.ndarray:
    """(L, D) bool union of every group of ``properties`` in a :func:`jaxneurons.pipeline.scan.score` result."""
    masks = [np.asarray(m, bool) for p in properties for m in scored[p]["groups"].values()]
    return np.any(np.stack(masks), axis=0)


class ScanIdentify:
    """``identify(model, keep, layer)`` for :mod:`jaxneurons.pruning`: the union of ``properties``' neurons.

    The partly pruned model (``slim_model(model, keep)``: only its live neurons, so the top-1 % event size follows
    the shrinking width) is scanned afresh with ``options``; the result is mapped back to ``model``'s neurons.
    The unpruned ``base_model`` reuses ``base_mask`` (the launcher's own scan). ``calls`` counts fresh scans.
    """

    def __init__(self, utts: Sequence, options: Any, properties: Sequence[str], *, decoded: Any = None,
                 base_model: Any = None, base_mask: np.ndarray | None = None):
        self.utts, self.options, self.properties = list(utts), options, tuple(properties)
        self.decoded, self.base_model, self.base_mask = decoded, base_model, base_mask
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, model: Any, keep: Any, layer: int | None) -> list[np.ndarray]:
        from jaxneurons.pipeline.scan import plan_scan, scan_statistics, score
        from jaxneurons.pruning import slim_model
        from jaxneurons.pruning.scores import as_bool_rows, ffn_widths

        widths = ffn_widths(model)
        rows = as_bool_rows(keep, widths, "keep")
        if model is self.base_model and self.base_mask is not None and all(r.all() for r in rows):
            return [np.asarray(m, bool)[:w] for m, w in zip(self.base_mask, widths, strict=True)]
        t0 = time.time()
        sub = model if all(r.all() for r in rows) else slim_model(model, rows)
        plan = plan_scan(sub, self.utts, self.options, decoded=self.decoded)
        stats = scan_statistics(sub, self.utts, plan, progress=False, decoded=self.decoded)
        found = union_mask(score(stats, plan), self.properties)
        out = []
        for r, f in zip(rows, found, strict=True):
            full = np.zeros(len(r), bool)
            full[np.flatnonzero(r)] = f[: int(r.sum())]
            out.append(full)
        self.calls += 1
        self.seconds += time.time() - t0
        return out


# ---------------------------------------------------------------------------------------------------------------
# Pruning curves


def define_pruning_flags(*, densities: Sequence[str] = ("0.75", "0.5", "0.3", "0.2"), neurons_per_step: int = 32,
                         num_steps: int = 20, updates_per_step: int = 50) -> None:
    """Pruning flags. Paper schedule (arXiv 2409.05910, MelHuBERT D=3072): 128 neurons/layer/step, 20 steps,
    25k CPT updates per step, lr 1e-5, batch 4, mask_prob 0.7, mask_length 5, 512 k-means targets."""
    flags.DEFINE_list("densities", list(densities), "One-shot pruning densities (fraction of FFN neurons kept "
                      "per layer). The paper's main point: 577/3072 = 0.19.")
    flags.DEFINE_enum("strategy", "all", ["all", "each"], "Protection: identify once per step ('all') or again "
                      "before each layer ('each': one scan per layer, slow).")
    flags.DEFINE_bool("clamp", True, "Keep every protected neuron when they exceed a layer's target (that layer "
                      "then ends above the density; achieved densities are reported). False: error.")
    flags.DEFINE_bool("iterative", True, "Also run iterative pruning with continued pre-training between steps.")
    flags.DEFINE_integer("neurons_per_step", neurons_per_step, "Iterative: neurons removed per layer per step "
                         "(paper: 128 of 3072; scaled to the default model's 768 -> 32).")
    flags.DEFINE_integer("num_steps", num_steps, "Iterative: pruning steps (paper: 20).")
    flags.DEFINE_integer("updates_per_step", updates_per_step, "Iterative: continued pre-training updates after "
                         "each step (paper: 25000; scaled to the 2-core CPU default; 0: no training).")
    flags.DEFINE_float("cpt_learning_rate", 1e-5, "Continued pre-training peak learning rate (paper: 1e-5).")
    flags.DEFINE_integer("cpt_batch_size", 4, "Continued pre-training utterances per update (paper: 4).")
    flags.DEFINE_float("cpt_mask_prob", 0.7, "Span-mask probability (paper, MelHuBERT: 0.7).")
    flags.DEFINE_integer("cpt_mask_length", 5, "Span-mask length in frames (paper: 5).")
    flags.DEFINE_float("cpt_crop_seconds", 4.0, "Random crop per utterance for continued pre-training.")
    flags.DEFINE_integer("cpt_warmup_steps", 0, "Warm-up updates of each continued pre-training run.")
    flags.DEFINE_integer("num_clusters", 512, "k-means MFCC targets for models without a prediction head (paper: "
                         "512); a model with its own head (MelHuBERT final_proj) uses its own number.")


@dataclasses.dataclass(frozen=True)
class PruneSettings:
    densities: tuple[float, ...]
    strategy: str = "all"
    clamp: bool = True
    iterative: bool = True
    neurons_per_step: int = 32
    num_steps: int = 20
    updates_per_step: int = 50
    learning_rate: float = 1e-5
    batch_size: int = 4
    mask_prob: float = 0.7
    mask_length: int = 5
    crop_seconds: float = 4.0
    warmup_steps: int = 0
    num_clusters: int = 512
    seed: int = 0

    @classmethod
    def from_flags(cls) -> PruneSettings:
        return cls(tuple(float(d) for d in FLAGS.densities), FLAGS.strategy, FLAGS.clamp, FLAGS.iterative,
                   FLAGS.neurons_per_step, FLAGS.num_steps, FLAGS.updates_per_step, FLAGS.cpt_learning_rate,
                   FLAGS.cpt_batch_size, FLAGS.cpt_mask_prob, FLAGS.cpt_mask_length, FLAGS.cpt_crop_seconds,
                   FLAGS.cpt_warmup_steps, FLAGS.num_clusters, FLAGS.seed)


def _densities(keep: Any) -> tuple[float, list[float]]:
    from jaxneurons.pruning.scores import as_bool_rows

    rows = as_bool_rows(keep, None, "keep")
    per = [float(r.mean()) for r in rows]
    return float(sum(r.sum() for r in rows) / sum(len(r) for r in rows)), per


def _cpt_data(model: Any, utts: Sequence, settings: PruneSettings, decoded: Any = None) -> Any:
    """Audio and k-means MFCC targets for continued pre-training (as ``jaxneurons train`` makes them)."""
    from jaxneurons.data import load_audio
    from jaxneurons.train.pretrain import TrainData
    from jaxneurons.train.targets import kmeans_targets, mfcc_frame_features

    audio = decoded.all_audio() if decoded is not None else [load_audio(u.path, 16000) for u in utts]
    head = getattr(model, "final_proj", None)
    k = head.out_features if head is not None else settings.num_clusters
    feats = mfcc_frame_features(audio, lambda n: int(model.num_frames(n)))
    k = min(k, sum(len(f) for f in feats))
    targets, _ = kmeans_targets(feats, k, seed=settings.seed)
    return TrainData(audio, targets, k)


def _rotated(data: Any, offset: int) -> Any:
    """The same utterances starting at ``offset``: each pruning step's CPT sees new batches while the train
    config (and so the compiled step) stays the same."""
    from jaxneurons.train.pretrain import TrainData

    k = offset % len(data.audio)
    return TrainData(list(data.audio[k:]) + list(data.audio[:k]), list(data.targets[k:]) + list(data.targets[:k]),
                     data.num_clusters)


def pruning_curves(model: Any, utts: Sequence, evaluate: EvaluateFn, identify: Callable, settings: PruneSettings,
                   workdir: str, *, decoded: Any = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """L1 vs protected pruning, one-shot at each density and (optionally) iterative with CPT between steps.

    ``evaluate(model, neuron_mask)`` retrains the launcher's probes and returns metrics. Returns a dict:
    ``unpruned`` metrics, ``one_shot``/``iterative`` {method: [{density, achieved_density, per_layer_density,
    metrics, ...}]}, the settings, notes and ``keep`` {name: keep mask over the original neurons} (arrays: save
    with :func:`save_pruning`).
    """
    from jaxneurons.pruning import PruningError, iterative_prune, keep_neuron_mask, protected_prune
    from jaxneurons.pruning.scores import ffn_widths
    from jaxneurons.train.pretrain import TrainConfig, Trainer

    out: dict[str, Any] = {"settings": dataclasses.asdict(settings), "notes": [], "one_shot": {}, "iterative": {},
                           "keep": {}}
    out["unpruned"] = evaluate(model, None)
    methods = {"L1": None, "protected": identify}
    for name, ident in methods.items():
        rows = []
        for d in settings.densities:
            try:
                keep = protected_prune(model, d, identify=ident, strategy=settings.strategy, clamp=settings.clamp)
            except PruningError as e:
                out["notes"].append(f"one-shot {name} at density {d}: {e}")
                continue
            total, per = _densities(keep)
            metrics = evaluate(model, keep_neuron_mask(keep))
            rows.append({"density": d, "achieved_density": total, "per_layer_density": per, "metrics": metrics})
            out["keep"][f"one_shot_{name}_{d:g}"] = keep
            log(f"one-shot {name} density {d:g} (achieved {total:.3f}): {_fmt(metrics)}")
        out["one_shot"][name] = rows
    if not settings.iterative:
        return out
    width = min(ffn_widths(model))
    steps = min(settings.num_steps, (width - 1) // settings.neurons_per_step)
    if steps < settings.num_steps:
        out["notes"].append(f"iterative: {settings.num_steps} steps of {settings.neurons_per_step} would empty a "
                            f"layer of {width}; ran {steps}")
    if steps < 1:
        return out
    step_density = [1 - (s + 1) * settings.neurons_per_step / width for s in range(steps)]
    eval_steps = {int(np.argmin([abs(x - d) for x in step_density])) for d in settings.densities} | {steps - 1}
    out["iterative_eval_steps"] = sorted(eval_steps)
    data = _cpt_data(model, utts, settings, decoded) if settings.updates_per_step > 0 else None
    config = TrainConfig(steps=max(settings.updates_per_step, 1), batch_size=settings.batch_size,
                         crop_seconds=settings.crop_seconds, learning_rate=settings.learning_rate,
                         warmup_steps=settings.warmup_steps, mask_prob=settings.mask_prob,
                         mask_length=settings.mask_length, seed=settings.seed,
                         checkpoint_every=max(settings.updates_per_step, 1), keep_checkpoints=1,
                         log_every=max(settings.updates_per_step, 1))
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
                trainer = Trainer(m, _rotated(data, step * config.steps * config.batch_size), config, run_dir)
                hist = trainer.train()
                m = trainer.encoder()
                losses.append({"step": step, "loss": float(np.mean([h["loss"] for h in hist])),
                               "masked_accuracy": float(np.mean([h["masked_accuracy"] for h in hist]))})
            if step in eval_steps:
                kept = current["record"].kept
                total = sum(len(k) for k in kept) / sum(ffn_widths(model))
                metrics = evaluate(m, None)
                rows.append({"step": step + 1, "density": step_density[step], "achieved_density": total,
                             "per_layer_density": [len(k) / w for k, w in zip(kept, ffn_widths(model),
                                                                                strict=True)],
                             "metrics": metrics})
                log(f"iterative {name} step {step + 1}/{steps} (density {total:.3f}): {_fmt(metrics)}")
            return m

        try:
            _, keep, _ = iterative_prune(
                model, neurons_per_step=settings.neurons_per_step, num_steps=steps, train_fn=train_fn,
                identify=ident, strategy=settings.strategy, physical=False, clamp=settings.clamp, on_step=on_step)
            out["keep"][f"iterative_{name}_final"] = keep
        except PruningError as e:
            out["notes"].append(f"iterative {name}: {e}")
        out["iterative"][name] = rows
        out.setdefault("cpt", {})[name] = losses
    return out


def protected_pruning_run(model: Any, utts: Sequence, options: Any, protect: Sequence[str], scored: Mapping,
                          kit: ProbeKit, workdir: str, *, decoded: Any = None, phones: bool = True) -> dict[str, Any]:
    """The launchers' pruning step: :func:`pruning_curves` with ``protect``'s neurons re-identified by
    :class:`ScanIdentify`, probes retrained on each pruned model and the unpruned model's probes frozen as a
    reference (``phones=False``: speaker ID only), from the ``--densities``/iterative flags."""
    identify = ScanIdentify(utts, options, list(protect), decoded=decoded, base_model=model,
                            base_mask=union_mask(scored, protect))
    kit.freeze_reference(model, phones=phones)
    curves = pruning_curves(model, utts, lambda m, mask: kit.retrained_metrics(m, mask, phones=phones), identify,
                            PruneSettings.from_flags(), workdir, decoded=decoded,
                            log=lambda s: print(s, file=sys.stderr, flush=True))
    curves["identify_scans"] = {"count": identify.calls, "seconds": round(identify.seconds, 1)}
    return curves


def _fmt(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())


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


METRIC_LABELS = {"phone_accuracy": "frame phone accuracy", "per": "phone error rate (PER)",
                 "speaker_accuracy": "speaker-ID accuracy",
                 "phone_accuracy_frozen_probe": "frame phone accuracy, probe of the unpruned model",
                 "speaker_accuracy_frozen_probe": "speaker-ID accuracy, probe of the unpruned model"}


def pruning_section(report: Any, res: Any, curves: Mapping[str, Any], protected_what: str) -> None:
    """Tables and one figure per metric: accuracy vs density, L1 vs protected, one-shot and iterative."""
    s = curves["settings"]
    report.heading("Pruning")
    report.text(
        f"Structured FFN pruning by the L1 score ‖W1[i,:]‖₁ + |b1[i]| + ‖W2[:,i]‖₁ (lowest removed, per layer). "
        f"'protected': {protected_what} are removed from the candidates (strategy '{s['strategy']}', re-identified "
        f"on the partly pruned model by a fresh scan). One-shot: one step to each density. Iterative: "
        f"{s['neurons_per_step']} neurons per layer per step, {s['updates_per_step']} updates of masked-prediction "
        f"continued pre-training after each step (lr {s['learning_rate']:g}, batch {s['batch_size']}, mask_prob "
        f"{s['mask_prob']}, mask_length {s['mask_length']}; the paper: 128 of 3072 per step, 20 steps, 25k updates). "
        "Probes are retrained on each pruned model (phones on disjoint speakers, speaker ID on disjoint "
        "utterances of the same speakers); the '... probe of the unpruned model' metrics apply the unpruned "
        "model's probes unchanged, which shows how far pruning moved the representation itself."
    )
    base = curves["unpruned"]
    metrics = list(base)
    rows = [["unpruned", "", 1.0, *[base[m] for m in metrics]]]
    for kind in ("one_shot", "iterative"):
        for method, entries in curves[kind].items():
            for e in entries:
                rows.append([f"{kind.replace('_', '-')} {method}", e["density"], e["achieved_density"],
                             *[e["metrics"].get(m, float("nan")) for m in metrics]])
    report.table(["pruning", "target density", "achieved density", *[METRIC_LABELS.get(m, m) for m in metrics]],
                 rows, caption="Probe metrics on the test split after pruning")
    for m in metrics:
        fig_series: dict[str, tuple[list, list]] = {}
        for kind in ("one_shot", "iterative"):
            for method, entries in curves[kind].items():
                if entries:
                    fig_series[f"{kind.replace('_', '-')} {method}"] = (
                        [e["achieved_density"] for e in entries], [e["metrics"].get(m, np.nan) for e in entries])
        if not fig_series:
            continue
        path = _xy_curves(res.file(f"figures/pruning_{m}.png"), fig_series, f"{METRIC_LABELS.get(m, m)} after "
                          "pruning", "fraction of FFN neurons kept", METRIC_LABELS.get(m, m), base[m])
        report.figure(path, f"{METRIC_LABELS.get(m, m)} vs density (dashed: unpruned)")
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
