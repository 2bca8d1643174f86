"""One probe suite for every study: one split policy, one training recipe, chance baselines and 95 % CIs.

A researcher measuring "what does removing these neurons / heads do" needs numbers that are comparable
across studies, so every study goes through :class:`ProbeSuite`:

1. **Split** (one policy): speaker-disjoint train / dev / test (:func:`jaxneurons.probes.speaker_disjoint_split`;
   fractions are of speakers), stratified so every part sees every class where the corpus allows it: by
   gender and every utterance task whose label is constant within each speaker (language, corpus, ...) when
   each such stratum has at least 3 speakers, else by gender alone when that holds, else not at all (the
   kind used is recorded in every result's ``split``). Phones, phone types, gender, pitch and any utterance label are
   trained and tested on *different speakers*, so a probe cannot succeed by recognising the speaker.
   Speaker identification is the one exception, necessarily: its test speakers must be classes the probe was
   trained on, so it uses a within-speaker, utterance-disjoint split (:func:`within_speaker_split`).
2. **Training recipe** (one for every task): the linear probe of :func:`jaxneurons.probes.train_probe`
   (per-layer standardisation frozen from the unablated training features, AdamW lr 1e-3, weight decay 1e-4,
   early stopping on the dev loss with patience 5, at most ``epochs`` = 50 epochs and at least 300 updates,
   best-dev parameters kept), on ONE hidden state (``layer``, default the last layer's output, which every
   ablated layer feeds).
3. **Evaluation**: probes are trained once on the unablated model (:meth:`ProbeSuite.fit`) and applied
   unchanged to the features of an ablated model (:meth:`ProbeSuite.evaluate`). Every result carries the
   chance baseline on the same test set (accuracy of always predicting the training majority class; for
   pitch, R² of predicting the training mean) and a 95 % confidence interval from a percentile bootstrap
   over *test utterances* (frames of one utterance are not independent, so utterances are resampled, not
   frames). :meth:`ProbeSuite.drops` reports clean minus ablated with a *paired* bootstrap CI (the same
   resampled utterances for both).

Tasks: ``phone`` (frame phone classification, silence excluded), ``phone_type`` (vowel / voiced / unvoiced
consonant per frame), ``gender`` (per utterance, mean-pooled frames), ``speaker`` (per utterance), ``pitch``
(per voiced frame, log-F0 regression; F0 by YIN, 20 ms frames, 71-800 Hz), or any key of
``Utterance.labels`` (per utterance).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import nnx

from jaxneurons.config_flags import field_help
from jaxneurons.data import BatchLoader, FrameLabelSpec, LabelVocab, Utterance, load_audio
from jaxneurons.data.phones import PHONE_TYPES
from jaxneurons.interventions.sets import Ablation
from jaxneurons.probes.features import FrameFeatures, extract_features, resolve_layers
from jaxneurons.probes.probe import Probe, _encode, evaluate, predict, train_probe
from jaxneurons.probes.splits import Split, SplitError, speaker_disjoint_split, within_speaker_split

__all__ = ["FRAME_TASKS", "ProbeSuite", "ProbeSuiteConfig", "bootstrap_ci"]

FRAME_TASKS = ("phone", "phone_type", "pitch")  # the others are utterance-level
SILENCE = "sil"
GENDERS = ("m", "f")


@dataclasses.dataclass(frozen=True)
class ProbeSuiteConfig:
    """Split, training recipe and reporting of :class:`ProbeSuite` (module docstring).

    Defaults: the linear-probe recipe of :func:`jaxneurons.probes.train_probe` (``epochs`` 50, ``patience`` 5,
    ``min_steps`` 300, lr 1e-3, weight decay 1e-4; SUPERB-style frozen-feature probing) and the split
    fractions the property-neuron ablation used (dev 15 %, test 25 % of speakers).
    ``layer``: hidden-state index (0 = input of the first layer, ``L`` = output of the last; negative counts
    from the end) as an int or a string, ``"last"`` / ``"mid"`` (``L // 2``), or ``"all"`` (every hidden state,
    combined by the probe's learned softmax layer weights, SUPERB-style).
    """

    tasks: tuple[str, ...] = field_help(("phone", "gender"), "Probe tasks: phone, phone_type, gender, speaker, "
                                        "pitch or an utterance label key.")
    layer: str = field_help("last", "Hidden state the probes read: an index (0 = input of layer 1, negative from "
                            "the end), 'last', 'mid', or 'all' (SUPERB-style learned weighted sum of all L + 1).")
    dev_fraction: float = field_help(0.15, "Fraction of speakers in the dev split.")
    test_fraction: float = field_help(0.25, "Fraction of speakers in the test split.")
    epochs: int = field_help(50, "Maximum probe training epochs (early stopping on the dev loss).")
    patience: int = field_help(5, "Epochs without dev-loss improvement before stopping.")
    min_steps: int = field_help(300, "Minimum probe updates (small sets have few steps per epoch).")
    learning_rate: float = field_help(1e-3, "Probe AdamW learning rate.")
    weight_decay: float = field_help(1e-4, "Probe AdamW weight decay (kernels only).")
    batch_size: int = field_help(8, "Utterances per forward batch of the feature extraction.")
    pad_seconds: float = field_help(1.0, "Audio padded to multiples of this (few shapes to compile).")
    bootstrap_draws: int = field_help(1000, "Bootstrap resamples of test utterances for the 95 % CIs.")
    seed: int = field_help(0, "Seed of the split, the probes and the bootstrap.")

    def __post_init__(self) -> None:
        layer = self.layer
        if isinstance(layer, int | np.integer) and not isinstance(layer, bool):
            object.__setattr__(self, "layer", str(int(layer)))
        elif not (isinstance(layer, str) and (layer in ("last", "mid", "all") or layer.lstrip("-").isdigit())):
            raise ValueError(f"ProbeSuiteConfig.layer must be an int, 'last', 'mid' or 'all', got {layer!r}")
        if isinstance(self.tasks, str):
            object.__setattr__(self, "tasks", tuple(t for t in self.tasks.split(",") if t))
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"ProbeSuiteConfig.tasks must be non-empty and distinct, got {self.tasks}")
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1 or self.bootstrap_draws < 1:
            raise ValueError("epochs, patience, batch_size and bootstrap_draws must be >= 1")

    def hidden_states(self, num_layers: int) -> tuple[int, ...]:
        """The hidden-state indices ``layer`` names for a model of ``num_layers`` layers."""
        if self.layer == "last":
            return (num_layers,)
        if self.layer == "mid":
            return (num_layers // 2,)
        if self.layer == "all":
            return tuple(range(num_layers + 1))
        return resolve_layers(int(self.layer), num_layers + 1)


def bootstrap_ci(numerator: np.ndarray, denominator: np.ndarray, draws: np.ndarray) -> list[float]:
    """95 % percentile interval of ``sum(num[d]) / sum(den[d])`` over resamples ``draws`` (B, N) of utterances."""
    num, den = np.asarray(numerator, np.float64)[draws].sum(1), np.asarray(denominator, np.float64)[draws].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = num / den
    lo, hi = np.nanpercentile(stat, [2.5, 97.5])
    return [float(lo), float(hi)]


@dataclasses.dataclass
class _TaskStats:
    """Per test utterance sufficient statistics of one task (the bootstrap resamples these rows)."""

    metric: str
    correct: np.ndarray  # classification: correct examples; regression: squared error sum
    total: np.ndarray  # examples
    extra: dict[str, np.ndarray]  # regression: sum t, sum t^2; classification: nothing
    result: dict[str, Any]


class ProbeSuite:
    """Probes trained once on a clean model, evaluated under any :class:`Ablation` (module docstring).

    ``utterances``: the corpus (speakers needed; phone segments for phone tasks, genders for gender).
    ``audio``: optional pre-loaded waveforms (16 kHz float32) aligned with ``utterances``.
    """

    def __init__(self, utterances: Sequence[Utterance], config: ProbeSuiteConfig = ProbeSuiteConfig(), *,
                 audio: Sequence[np.ndarray] | None = None):
        self.utts = list(utterances)
        self.config = config
        if not self.utts:
            raise ValueError("ProbeSuite: no utterances")
        if audio is not None and len(audio) != len(self.utts):
            raise ValueError(f"ProbeSuite: {len(audio)} waveforms for {len(self.utts)} utterances")
        self._audio = {u.utt_id: a for u, a in zip(self.utts, audio, strict=True)} if audio is not None else None
        self.probes: dict[str, Probe] = {}
        self.splits: dict[str, tuple[Split, str]] = {}
        self._inventory = None
        self._f0: dict[int, np.ndarray] | None = None
        self._check_tasks()
        self._make_splits()
        self._test_ids = {self.utts[i].utt_id for i in self._test_indices()}
        self._cache: dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------- set-up

    def _check_tasks(self) -> None:
        for task in self.config.tasks:
            if task in ("phone", "phone_type"):
                from jaxneurons.pipeline.labels import PhoneInventory, manifest_phone_set

                self._inventory = PhoneInventory.of(manifest_phone_set(self.utts))
            elif task in ("gender", "speaker", "pitch"):
                continue
            elif not any(task in u.labels for u in self.utts):
                raise ValueError(f"ProbeSuite: task {task!r} is neither a built-in task (phone, phone_type, gender, "
                                 "speaker, pitch) nor a label key of any utterance")

    def _make_splits(self) -> None:
        cfg = self.config
        speakers = [u.speaker for u in self.utts]
        kw = dict(dev_fraction=cfg.dev_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed)
        if any(t != "speaker" for t in cfg.tasks):
            stratify, strata_what = self._strata(speakers)
            try:
                split = speaker_disjoint_split(speakers, stratify=stratify, **kw)
            except SplitError as e:
                raise SplitError(f"ProbeSuite: {e} (the probes need speaker-disjoint train / dev / test splits: "
                                 "give a corpus with at least 3 speakers)") from None
            for t in cfg.tasks:
                if t != "speaker":
                    self.splits[t] = (split, "speaker_disjoint" + (f"_stratified_by_{strata_what}" if stratify else ""))
        if "speaker" in cfg.tasks:
            self.splits["speaker"] = (within_speaker_split(speakers, **kw), "within_speaker")

    def _strata(self, speakers: Sequence[str | None]) -> tuple[list[str] | None, str]:
        """Speaker strata for the split: the finest of (gender + every utterance task whose label is constant
        within each speaker, e.g. language or corpus), (gender) and (none) in which every stratum has at least
        3 speakers, so each part sees every class where the corpus allows it."""
        by_speaker: dict[str, list[int]] = {}
        for i, s in enumerate(speakers):
            by_speaker.setdefault(str(s), []).append(i)
        keys = []
        if all(u.gender in GENDERS for u in self.utts):
            keys.append("gender")
        keys += [t for t in self.config.tasks if t not in FRAME_TASKS and t not in ("gender", "speaker")
                 and all(len({self._utt_value(t, self.utts[i]) for i in idx}) == 1 for idx in by_speaker.values())]
        for use in (keys, keys[:1] if keys[:1] == ["gender"] else []):
            if not use:
                break
            values = ["|".join(str(self._utt_value(k, u)) for k in use) for u in self.utts]
            per_stratum: dict[str, set] = {}
            for v, s in zip(values, speakers, strict=True):
                per_stratum.setdefault(v, set()).add(s)
            if all(len(v) >= 3 for v in per_stratum.values()):
                return values, "+".join(use)
        return None, ""

    def _label_specs(self) -> dict[str, FrameLabelSpec]:
        specs = {}
        if "phone" in self.config.tasks:
            specs["phone"] = FrameLabelSpec("phones", self._inventory.vocab, ignore=(SILENCE,))
        if "phone_type" in self.config.tasks:
            specs["phone_type"] = FrameLabelSpec("phone_type", LabelVocab(list(PHONE_TYPES), name="phone_type"))
        return specs

    def _utt_value(self, task: str, u: Utterance) -> Any:
        if task == "gender":
            return u.gender if u.gender in GENDERS else None
        if task == "speaker":
            return u.speaker
        value = u.labels.get(task)
        return None if value is None else str(value)

    def _load(self, u: Utterance) -> np.ndarray:
        if self._audio is not None:
            return self._audio[u.utt_id]
        if u.utt_id in self._cache:
            return self._cache[u.utt_id]
        audio = load_audio(u.path, 16000)
        if u.utt_id in self._test_ids:  # decoded once: every ablation re-reads only the test utterances
            self._cache[u.utt_id] = audio
        return audio

    def _pitch(self, model: nnx.Module, idx: Sequence[int]) -> dict[int, np.ndarray]:
        """F0 (Hz, 0 unvoiced) per model frame of utterances ``idx`` by YIN, computed once per utterance."""
        import jax.numpy as jnp

        from jaxneurons.data.batching import padded_batches
        from jaxneurons.features.pitch import yin

        self._f0 = self._f0 or {}
        todo = [i for i in idx if i not in self._f0]
        if todo:
            audio = [self._load(self.utts[i]) for i in todo]
            for rows, batch, lengths in padded_batches(audio, 16):
                f0, voiced, _ = yin(jnp.asarray(batch), jnp.asarray(lengths))
                f0 = np.where(np.asarray(voiced), np.asarray(f0), 0.0)
                for r, j in enumerate(rows):
                    self._f0[todo[j]] = f0[r]
        return {i: self._f0[i] for i in idx}

    # ---------------------------------------------------------------- features

    def _features(self, model: nnx.Module, idx: Sequence[int], ablation: Ablation | None) -> FrameFeatures:
        """Frame features of utterances ``idx`` (in that order) at the suite's layer, with every task's labels."""
        from jaxneurons.pipeline.labels import frame_geometry

        cfg = self.config
        idx = np.asarray(sorted(set(int(i) for i in idx)), np.int64)
        utts = [self.utts[i] for i in idx]
        loader = BatchLoader(utts, cfg.batch_size, frame_geometry(model.config), labels=self._label_specs(),
                             pad_multiple=int(cfg.pad_seconds * 16000), load_fn=self._load)
        utt_tasks = [t for t in cfg.tasks if t not in FRAME_TASKS]
        values = {"_utt": idx, **{t: np.asarray([self._utt_value(t, u) for u in utts], dtype=object)
                                  for t in utt_tasks}}
        layers = list(cfg.hidden_states(model.config.num_hidden_layers))
        feats = extract_features(model, loader, layers=layers, frame_label_keys=tuple(self._label_specs()),
                                 utt_label_values=values, **(ablation.kwargs() if ablation is not None else {}))
        feats = feats.subset(np.argsort(feats.utt_labels["_utt"], kind="stable"))  # manifest order
        if "pitch" in cfg.tasks:
            f0 = self._pitch(model, idx)
            parts = []
            for n, i in enumerate(feats.utt_labels["_utt"]):
                t = int(feats.lengths[n])
                v = f0[int(i)][:t]
                parts.append(np.pad(v, (0, t - len(v))))
            feats.frame_labels["pitch"] = np.concatenate(parts).astype(np.float32)
        return feats

    @staticmethod
    def _rows(feats: FrameFeatures, idx: np.ndarray) -> FrameFeatures:
        """The utterances ``idx`` (manifest indices) of features holding a sorted set of utterances."""
        have = np.asarray(feats.utt_labels["_utt"])
        pos = np.searchsorted(have, idx)
        if not (pos < len(have)).all() or not (have[np.minimum(pos, len(have) - 1)] == idx).all():
            raise ValueError("features lack some utterances of the split")
        return feats.subset(pos)

    @staticmethod
    def _source(task: str, feats: FrameFeatures):
        return feats if task in FRAME_TASKS else feats.pooled()

    # ---------------------------------------------------------------- training and evaluation

    def _test_indices(self) -> np.ndarray:
        return np.unique(np.concatenate([s.test for s, _ in self.splits.values()]))

    def fit(self, model: nnx.Module) -> dict[str, dict]:
        """Train one probe per task on the unablated ``model``; returns :meth:`evaluate` of the clean model."""
        cfg = self.config
        feats = self._features(model, np.arange(len(self.utts)), None)
        for task in cfg.tasks:
            split, _ = self.splits[task]
            train = self._source(task, self._rows(feats, split.train))
            dev = self._source(task, self._rows(feats, split.dev))
            common = dict(label_key=task, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                          max_epochs=cfg.epochs, patience=cfg.patience, min_steps=cfg.min_steps, seed=cfg.seed)
            try:
                if task == "phone":
                    probe = train_probe("frame_classification", train, dev, num_classes=self._inventory.size,
                                        class_names=self._inventory.vocab.labels, per=True, **common)
                elif task == "phone_type":
                    probe = train_probe("frame_classification", train, dev, num_classes=len(PHONE_TYPES),
                                        class_names=list(PHONE_TYPES), **common)
                elif task == "pitch":
                    probe = train_probe("frame_regression", train, dev, log_target=True, **common)
                else:
                    probe = train_probe("utterance_classification", train, dev, **common)
            except (ValueError, TypeError) as e:  # the corpus's problem (e.g. one class among the training speakers)
                raise SplitError(f"ProbeSuite: cannot train the {task!r} probe: {e} (a corpus with more speakers "
                                 "gives every split each class)") from None
            self.probes[task] = probe
        return self._evaluate_features(feats)

    def evaluate(self, model: nnx.Module, ablation: Ablation | None = None) -> dict[str, dict]:
        """Per task ``{"metric", "value", "ci95", "chance", "n", "n_utterances", "per_class" (accuracy per class),
        "per_class_n" (test examples per class), "split"}`` on the
        test split, with the probes of :meth:`fit` applied unchanged to ``model`` under ``ablation``."""
        return {t: s.result for t, s in self._stats(model, ablation).items()}

    def _stats(self, model: nnx.Module, ablation: Ablation | None) -> dict[str, _TaskStats]:
        if not self.probes:
            raise RuntimeError("ProbeSuite: call fit(model) before evaluate()")
        return self._task_stats(self._features(model, self._test_indices(), ablation))

    def _evaluate_features(self, feats: FrameFeatures) -> dict[str, dict]:
        return {t: s.result for t, s in self._task_stats(feats).items()}

    def _draws(self, n: int) -> np.ndarray:
        """Bootstrap resamples (B, n) of test utterances: a function of n and the seed only (paired by design)."""
        return np.random.default_rng(self.config.seed + 7919).integers(0, n, size=(self.config.bootstrap_draws, n))

    def _task_stats(self, feats: FrameFeatures) -> dict[str, _TaskStats]:
        out = {}
        for task, probe in self.probes.items():
            split, kind = self.splits[task]
            test = self._source(task, self._rows(feats, split.test))
            cfg = probe.config
            raw = test.frame_label(task) if isinstance(test, FrameFeatures) else np.asarray(test.labels[task])
            y = _encode(cfg, raw)
            utt = test.utterance_index() if isinstance(test, FrameFeatures) else np.arange(test.num_utterances)
            n_utt = test.num_utterances
            pred = np.asarray(predict(probe, test))
            if cfg.task == "frame_regression":
                ok = np.isfinite(y)
                t, p = y[ok], np.log(np.maximum(pred[ok], 1e-12))
                u = utt[ok]
                sse = np.bincount(u, (p - t) ** 2, n_utt)
                total = np.bincount(u, minlength=n_utt).astype(np.float64)
                st, stt = np.bincount(u, t, n_utt), np.bincount(u, t * t, n_utt)
                value = _r2(sse.sum(), total.sum(), st.sum(), stt.sum())
                chance_sse = ((t - cfg.target_mean) ** 2).sum()
                draws = self._draws(n_utt)
                boot = [_r2(sse[d].sum(), total[d].sum(), st[d].sum(), stt[d].sum()) for d in draws]
                lo, hi = np.nanpercentile(boot, [2.5, 97.5])
                result = {"metric": "r2_log_f0", "value": value, "ci95": [float(lo), float(hi)],
                          "chance": _r2(chance_sse, total.sum(), st.sum(), stt.sum()),
                          "chance_what": "predict the training mean log-F0", "n": int(ok.sum()),
                          "n_utterances": int((total > 0).sum()), "per_class": {}, "per_class_n": {},
                          "split": kind}
                out[task] = _TaskStats("r2_log_f0", sse, total, {"st": st, "stt": stt}, result)
                continue
            ok = y >= 0
            hit = (pred == y) & ok
            correct = np.bincount(utt[ok], hit[ok].astype(np.float64), n_utt)
            total = np.bincount(utt[ok], minlength=n_utt).astype(np.float64)
            if total.sum() == 0:
                raise ValueError(f"ProbeSuite: no labelled test examples for task {task!r}")
            per_class, per_class_n = {}, {}
            for c in np.unique(y[ok]):
                sel = ok & (y == c)
                per_class[cfg.classes[c]] = float(hit[sel].mean())
                per_class_n[cfg.classes[c]] = int(sel.sum())
            result = {"metric": "accuracy", "value": float(correct.sum() / total.sum()),
                      "ci95": bootstrap_ci(correct, total, self._draws(n_utt)),
                      "chance": float((y[ok] == cfg.majority_class).mean()),
                      "chance_what": f"always the training majority class {cfg.classes[cfg.majority_class]!r}",
                      "n": int(total.sum()), "n_utterances": int((total > 0).sum()), "per_class": per_class,
                      "per_class_n": per_class_n, "split": kind}
            if cfg.per:  # phone error rate by frame-merge decoding, with its chance level
                ev = evaluate(probe, test)
                result.update(per=ev["per"], per_chance=ev["chance"]["per"])
            out[task] = _TaskStats("accuracy", correct, total, {}, result)
        return out

    def drops(self, model: nnx.Module, ablations: Mapping[str, Ablation]) -> dict[str, Any]:
        """Clean vs each ablation with the same probes: ``{"clean": evaluate(model), name: {task: {**result,
        "drop": clean - ablated, "drop_ci95": paired bootstrap over test utterances}}}``."""
        clean = self._stats(model, None)
        out: dict[str, Any] = {"clean": {t: s.result for t, s in clean.items()}}
        for name, ablation in ablations.items():
            if name == "clean":
                raise ValueError("ProbeSuite.drops: 'clean' is reserved for the unablated model")
            ablated = self._stats(model, ablation)
            row = {}
            for task, a in ablated.items():
                c = clean[task]
                draws = self._draws(len(c.total))
                cv, av = _boot_values(c, draws), _boot_values(a, draws)
                lo, hi = np.nanpercentile(cv - av, [2.5, 97.5])
                row[task] = {**a.result, "drop": float(c.result["value"] - a.result["value"]),
                             "drop_ci95": [float(lo), float(hi)]}
            out[name] = row
        return out


def _r2(sse: float, n: float, st: float, stt: float) -> float:
    var = stt - st * st / n if n > 0 else 0.0
    return float(1.0 - sse / var) if var > 0 else float("nan")


def _boot_values(stats: _TaskStats, draws: np.ndarray) -> np.ndarray:
    if stats.metric == "accuracy":
        return stats.correct[draws].sum(1) / np.maximum(stats.total[draws].sum(1), 1)
    return np.array([_r2(stats.correct[d].sum(), stats.total[d].sum(), stats.extra["st"][d].sum(),
                         stats.extra["stt"][d].sum()) for d in draws])
