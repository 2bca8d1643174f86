"""Probes on frozen features: training (optax AdamW, jit, minibatches, early stopping), evaluation, save / load.

A probe maps features ``x (..., K, C)`` of K kept layers to outputs:

1. standardise each layer with the training set's per-channel mean / std (frozen with the probe, so an
   ablated model's features are judged on the unablated model's scale);
2. SUPERB-style weighted sum over layers with ``softmax(layer_logits)`` (trained jointly; no weight decay, so
   the weights are not pulled back to uniform; with K = 1 it is the identity);
3. a linear map, or a one-hidden-layer ReLU MLP (``hidden > 0``).

Tasks: ``frame_classification`` (per-frame labels, -1 = ignore; optional PER by frame-merge decoding),
``utterance_classification`` (mean-pooled frames), ``frame_regression`` (e.g. log-F0 on voiced frames; the
target is standardised for training, metrics are in target units), ``ctc`` (frame outputs over the classes
plus a blank, trained with ``optax.ctc_loss`` on the merged reference phone sequence, greedy decoding).

Labels: integer arrays are class ids (negative = ignore); any other labels (speaker ids, "m"/"f") are mapped
through the sorted distinct training values (``None`` / "" = ignore). An evaluation label the probe never saw
is an error.

Every metric comes with chance baselines computed on the same evaluation set: the training majority class
(accuracy, balanced accuracy ``1 / #classes present``, and for PER the PER of predicting the majority phone on
every frame), and for regression the MSE of predicting the training mean.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxneurons.probes.features import FeatureStream, FrameFeatures, UtteranceFeatures
from jaxneurons.probes.metrics import ctc_greedy_decode, frame_merge, levenshtein
from jaxneurons.progress import ProgressBar
from jaxneurons.results import atomic_directory

TASKS = ("frame_classification", "utterance_classification", "frame_regression", "ctc")
FORMAT_VERSION = 1
PROBE_JSON = "probe.json"
PROBE_NPZ = "probe.npz"

Source = FrameFeatures | UtteranceFeatures | FeatureStream


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Everything (besides arrays) needed to re-apply a probe and to report chance baselines."""

    task: str
    label_key: str
    layers: tuple[int, ...]
    input_dim: int
    num_outputs: int  # classes (CTC: without the blank, which is index num_outputs); 1 for regression
    hidden: int = 0
    classes: tuple[str, ...] = ()  # class names, index = class id
    map_labels: bool = False  # labels are names mapped through ``classes`` (else integer ids)
    majority_class: int = -1
    class_counts: tuple[int, ...] = ()  # training examples per class
    target_mean: float = 0.0
    target_std: float = 1.0
    log_target: bool = False  # regression on log(label), labels <= 0 ignored (F0 in Hz, 0 = unvoiced)
    per: bool = False  # frame classification: also report PER by frame-merge decoding

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown probe task {self.task!r}; known: {TASKS}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown probe config keys: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclasses.dataclass
class Probe:
    """A trained probe: config + arrays (``params``, per-layer ``mean`` / ``std``) + training ``info``."""

    config: ProbeConfig
    params: dict[str, np.ndarray]
    mean: np.ndarray  # (K, C)
    std: np.ndarray  # (K, C)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def layer_weights(self) -> np.ndarray:
        """Softmax weights over the kept layers (``config.layers``)."""
        return np.asarray(jax.nn.softmax(jnp.asarray(self.params["layer_logits"])))


jax.tree_util.register_dataclass(Probe, data_fields=["params", "mean", "std"], meta_fields=["config", "info"])


# --------------------------------------------------------------------------------------------------------------
# The model (pure functions of the params)


def _outputs(params: dict, mean: jax.Array, std: jax.Array, x: jax.Array, hidden: bool) -> jax.Array:
    x = (x - mean) / std
    h = jnp.einsum("...kc,k->...c", x, jax.nn.softmax(params["layer_logits"]))
    if hidden:
        h = jax.nn.relu(h @ params["w0"] + params["b0"])
        return h @ params["w1"] + params["b1"]
    return h @ params["w0"] + params["b0"]


def _loss(params, mean, std, x, y, w, *, task: str, hidden: bool, num_outputs: int):
    """Weighted mean loss of a minibatch; ``w`` is 0 on padding rows."""
    out = _outputs(params, mean, std, x, hidden)
    if task == "ctc":
        # x (B, T, K, C); y (B, U) labels with -1 padding; w (B, T) 1 on valid frames.
        logit_pad = 1.0 - w
        label_pad = (y < 0).astype(jnp.float32)
        per_seq = optax.ctc_loss(out, logit_pad, jnp.maximum(y, 0), label_pad, blank_id=num_outputs)
        real = (w.sum(1) > 0) & ((1 - label_pad).sum(1) > 0)
        return jnp.where(real, per_seq, 0.0).sum() / jnp.maximum((1 - label_pad).sum(), 1.0)
    if task == "frame_regression":
        err = (out[..., 0] - y) ** 2
    else:
        err = optax.softmax_cross_entropy_with_integer_labels(out, jnp.maximum(y, 0).astype(jnp.int32))
    return (err * w).sum() / jnp.maximum(w.sum(), 1.0)


_loss_jit = jax.jit(_loss, static_argnames=("task", "hidden", "num_outputs"))
_outputs_jit = jax.jit(_outputs, static_argnames=("hidden",))


@functools.lru_cache(maxsize=16)
def _train_step(task: str, hidden: bool, num_outputs: int, learning_rate: float, weight_decay: float,
                param_names: tuple[str, ...]) -> tuple[optax.GradientTransformation, Any]:
    """AdamW and its jitted update step, cached so repeated trainings (per layer, per seed) compile once.

    Weight decay applies to the kernels only, not to biases or the layer logits."""
    opt = optax.adamw(learning_rate, weight_decay=weight_decay, mask={k: k.startswith("w") for k in param_names})

    @jax.jit
    def step(params, opt_state, mean, std, x, y, w):
        loss, grads = jax.value_and_grad(_loss)(params, mean, std, x, y, w, task=task, hidden=hidden,
                                                num_outputs=num_outputs)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return opt, step


def _init_params(seed: int, num_layers: int, input_dim: int, hidden: int, out_dim: int) -> dict:
    """LeCun-normal kernels, zero biases, uniform layer weights (numpy RNG: no per-op compilation)."""
    rng = np.random.default_rng(seed)
    params = {"layer_logits": np.zeros((num_layers,), np.float32)}
    width = hidden or out_dim
    params["w0"] = (rng.standard_normal((input_dim, width)) / math.sqrt(input_dim)).astype(np.float32)
    params["b0"] = np.zeros((width,), np.float32)
    if hidden:
        params["w1"] = (rng.standard_normal((hidden, out_dim)) / math.sqrt(hidden)).astype(np.float32)
        params["b1"] = np.zeros((out_dim,), np.float32)
    return jax.tree.map(jnp.asarray, params)


# --------------------------------------------------------------------------------------------------------------
# Sources and labels


def _frame_level(task: str) -> bool:
    return task != "utterance_classification"


def _chunks(source: Source, task: str) -> Iterator[FrameFeatures | UtteranceFeatures]:
    """Feature chunks of the right level (one for cached features, one per batch for a stream)."""
    parts = source if isinstance(source, FeatureStream) else [source]
    for part in parts:
        if task == "utterance_classification" and isinstance(part, FrameFeatures):
            yield part.pooled()
        elif _frame_level(task) and isinstance(part, UtteranceFeatures):
            raise TypeError(f"task {task!r} needs frame features, got UtteranceFeatures")
        else:
            yield part


def _raw_labels(chunk: FrameFeatures | UtteranceFeatures, key: str, task: str) -> np.ndarray:
    try:
        if isinstance(chunk, UtteranceFeatures):
            return np.asarray(chunk.labels[key])
        return chunk.frame_label(key)
    except KeyError:
        have = sorted(chunk.labels) if isinstance(chunk, UtteranceFeatures) else sorted(
            list(chunk.frame_labels) + list(chunk.utt_labels))
        raise KeyError(f"features have no label {key!r} for task {task!r}; labels present: {have}") from None


def _is_int_labels(labels: np.ndarray) -> bool:
    return np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.bool_)


def _name_valid(labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind in "US":
        return labels != ""
    return np.array([v is not None and str(v) != "" for v in labels.tolist()], dtype=bool)


def _encode(config: ProbeConfig, labels: np.ndarray) -> np.ndarray:
    """Raw labels -> float targets (regression) or int class ids with -1 = ignore."""
    labels = np.asarray(labels)
    if config.task == "frame_regression":
        y = labels.astype(np.float64)
        valid = np.isfinite(y) & ((y > 0) if config.log_target else True)
        t = np.log(np.where(valid, y, 1.0)) if config.log_target else np.where(valid, y, 0.0)
        return np.where(valid, t, np.nan)
    if not config.map_labels:
        if not _is_int_labels(labels):
            raise TypeError(f"probe expects integer class ids for {config.label_key!r}, got dtype {labels.dtype}")
        y = labels.astype(np.int64)
        bad = y >= config.num_outputs
        if bad.any():
            raise ValueError(f"label {int(y[bad].max())} >= number of classes {config.num_outputs}")
        return np.where(y < 0, -1, y)
    valid = _name_valid(labels)
    names = labels.astype(str)
    classes = np.asarray(config.classes, dtype=str)
    order = np.argsort(classes)
    pos = np.minimum(np.searchsorted(classes[order], names), len(classes) - 1)
    found = classes[order][pos] == names
    unseen = sorted(set(names[valid & ~found].tolist()))
    if unseen:
        raise ValueError(f"{len(unseen)} label value(s) of {config.label_key!r} not seen in training: {unseen[:10]}")
    return np.where(valid, order[pos], -1).astype(np.int64)


def _examples(config: ProbeConfig, chunk: FrameFeatures | UtteranceFeatures) -> tuple[np.ndarray, np.ndarray]:
    """(indices of usable examples, encoded targets of all examples) of one chunk."""
    y = _encode(config, _raw_labels(chunk, config.label_key, config.task))
    ok = np.isfinite(y) if config.task == "frame_regression" else y >= 0
    return np.flatnonzero(ok), y


class _Prepared:
    """(chunk, usable example indices, encoded targets) per chunk: computed once for cached features,
    per iteration for a stream."""

    def __init__(self, config: ProbeConfig, source: Source):
        self.config, self.source = config, source
        self.cache = None if isinstance(source, FeatureStream) else list(self._compute())

    def _compute(self) -> Iterator[tuple]:
        for chunk in _chunks(self.source, self.config.task):
            yield (chunk, *_examples(self.config, chunk))

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.cache) if self.cache is not None else self._compute()


# --------------------------------------------------------------------------------------------------------------
# Training


def _first_pass(task: str, source: Source, label_key: str, log_target: bool) -> dict:
    """Training statistics in one pass: feature mean / std per layer, label vocabulary and counts."""
    s1 = s2 = None
    n = 0
    int_labels = None
    names: set[str] = set()
    counts = np.zeros(0, dtype=np.int64)
    t_sum = t_sq = 0.0
    t_n = 0
    layers = input_dim = None
    for chunk in _chunks(source, task):
        layers, input_dim = chunk.layers, chunk.x.shape[-1]
        raw = _raw_labels(chunk, label_key, task)
        if task == "frame_regression":
            y = raw.astype(np.float64)
            ok = np.isfinite(y) & ((y > 0) if log_target else True)
            t = np.log(y[ok]) if log_target else y[ok]
            t_sum, t_sq, t_n = t_sum + t.sum(), t_sq + (t ** 2).sum(), t_n + t.size
        elif _is_int_labels(raw):
            if int_labels is False:
                raise TypeError(f"label {label_key!r} is integer in some batches and not in others")
            int_labels = True
            ok = raw >= 0
            counts_c = np.bincount(raw[ok].astype(np.int64))
            counts = np.pad(counts, (0, max(0, len(counts_c) - len(counts))))
            counts[: len(counts_c)] += counts_c
        else:
            if int_labels is True:
                raise TypeError(f"label {label_key!r} is integer in some batches and not in others")
            int_labels = False
            ok = _name_valid(raw)
            names.update(np.unique(raw[ok].astype(str)).tolist())
        x = chunk.x if task == "ctc" else chunk.x[ok]
        x = x.astype(np.float64)
        s1 = x.sum(0) if s1 is None else s1 + x.sum(0)
        s2 = (x ** 2).sum(0) if s2 is None else s2 + (x ** 2).sum(0)
        n += len(x)
    if layers is None:
        raise ValueError("the training source is empty")
    if n == 0:
        raise ValueError(f"no usable training examples for label {label_key!r}")
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
    # A (nearly) constant channel must not blow up when an ablated model changes it.
    std = np.maximum(std, 1e-3 * std.mean(-1, keepdims=True) + 1e-6)
    return dict(mean=mean.astype(np.float32), std=std.astype(np.float32), layers=layers, input_dim=input_dim,
                int_labels=int_labels, names=names, counts=counts, t_sum=t_sum, t_sq=t_sq, t_n=t_n)


def _make_config(task: str, stats: dict, *, label_key: str, hidden: int, num_classes: int | None,
                 class_names: Sequence[str] | None, log_target: bool, per: bool) -> ProbeConfig:
    common = dict(task=task, label_key=label_key, layers=tuple(stats["layers"]), input_dim=int(stats["input_dim"]),
                  hidden=hidden)
    if task == "frame_regression":
        if stats["t_n"] < 2:
            raise ValueError(f"need at least 2 valid regression targets for {label_key!r}, got {stats['t_n']}")
        m = stats["t_sum"] / stats["t_n"]
        sd = math.sqrt(max(stats["t_sq"] / stats["t_n"] - m * m, 0.0)) or 1.0
        return ProbeConfig(num_outputs=1, target_mean=float(m), target_std=float(sd), log_target=log_target, **common)
    if stats["int_labels"]:
        counts = stats["counts"]
        if num_classes is None:
            num_classes = len(class_names) if class_names is not None else len(counts)
        if len(counts) > num_classes:
            raise ValueError(f"training label {len(counts) - 1} >= num_classes {num_classes}")
        counts = np.pad(counts, (0, num_classes - len(counts)))
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        classes = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(num_classes))
        map_labels = False
    else:
        classes = tuple(sorted(stats["names"]))
        if class_names is not None:
            missing = sorted(set(classes) - set(map(str, class_names)))
            if missing:
                raise ValueError(f"training labels not in class_names: {missing[:10]}")
            classes = tuple(map(str, class_names))
        num_classes = len(classes)
        map_labels = True
    if num_classes < 2:
        raise ValueError(f"classification of {label_key!r} needs at least 2 classes, training data has {num_classes}")
    return ProbeConfig(num_outputs=num_classes, classes=classes, map_labels=map_labels, per=per, **common)


def _count_classes(config: ProbeConfig, prepared: _Prepared) -> np.ndarray:
    counts = np.zeros(config.num_outputs, dtype=np.int64)
    for _, idx, y in prepared:
        counts += np.bincount(y[idx], minlength=config.num_outputs)
    return counts


def _bucket(n: int, step: int = 64) -> int:
    return max(step, -(-n // step) * step)


def _ctc_batch(chunk: FrameFeatures, utts: np.ndarray, y_frames: np.ndarray, size: int) -> tuple:
    """Pad utterances ``utts`` of a chunk into (size, T, K, C), targets (size, U), frame weights (size, T)."""
    lengths = chunk.lengths[utts]
    t = _bucket(int(lengths.max()) if len(utts) else 1)
    segs = [y_frames[chunk.offsets[u]:chunk.offsets[u + 1]] for u in utts]
    seqs = [frame_merge(s, s) for s in segs]
    u_len = _bucket(max([len(s) for s in seqs] + [1]), 16)
    x = np.zeros((size, t) + chunk.x.shape[1:], dtype=np.float32)
    y = np.full((size, u_len), -1, dtype=np.int64)
    w = np.zeros((size, t), dtype=np.float32)
    for i, u in enumerate(utts):
        x[i, : lengths[i]] = chunk.x[chunk.offsets[u]:chunk.offsets[u + 1]]
        y[i, : len(seqs[i])] = seqs[i]
        w[i, : lengths[i]] = 1.0
    return x, y, w, seqs


def _minibatches(config: ProbeConfig, chunk, idx: np.ndarray, y: np.ndarray, batch_size: int,
                 rng: np.random.Generator | None) -> Iterator[tuple]:
    """(x, y, w) minibatches of fixed size (padding rows have weight 0); shuffled when ``rng`` is given."""
    if config.task == "ctc":
        labelled = np.bincount(chunk.utterance_index()[y >= 0], minlength=chunk.num_utterances)
        utts = np.flatnonzero(labelled > 0)
        if rng is not None:
            utts = utts[rng.permutation(len(utts))]
        for s in range(0, len(utts), batch_size):
            x, yy, w, _ = _ctc_batch(chunk, utts[s:s + batch_size], y, batch_size)
            yield x, yy, w
        return
    if rng is not None:
        idx = idx[rng.permutation(len(idx))]
    if config.task == "frame_regression":
        y = (y - config.target_mean) / config.target_std
    for s in range(0, len(idx), batch_size):
        take = idx[s:s + batch_size]
        pad = batch_size - len(take)
        x = chunk.x[take]
        yy = y[take]
        w = np.ones(len(take), dtype=np.float32)
        if pad:
            x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], dtype=x.dtype)])
            yy = np.concatenate([yy, np.zeros(pad, dtype=yy.dtype)])
            w = np.concatenate([w, np.zeros(pad, dtype=np.float32)])
        yy = yy.astype(np.float32 if config.task == "frame_regression" else np.int32)
        yield x.astype(np.float32), yy, w


def _num_examples(config: ProbeConfig, prepared: _Prepared) -> int:
    if prepared.cache is None:
        return -1
    chunk, idx, _ = prepared.cache[0]
    return chunk.num_utterances if config.task == "ctc" else len(idx)


def _dev_loss(config: ProbeConfig, params, mean, std, prepared: _Prepared, batch_size: int) -> float:
    total = weight = 0.0
    kw = dict(task=config.task, hidden=bool(config.hidden), num_outputs=config.num_outputs)
    for chunk, idx, yy in prepared:
        for x, y, w in _minibatches(config, chunk, idx, yy, batch_size, None):
            wsum = float((np.asarray(y) >= 0).sum()) if config.task == "ctc" else float(w.sum())
            total += float(_loss_jit(params, mean, std, x, y, w, **kw)) * wsum
            weight += wsum
    if weight == 0:
        raise ValueError(f"the dev set has no usable examples for {config.label_key!r}")
    return total / weight


def train_probe(
    task: str,
    train: Source,
    dev: Source,
    *,
    label_key: str,
    hidden: int = 0,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    log_target: bool = False,
    per: bool = False,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int | None = None,
    max_epochs: int = 50,
    patience: int = 5,
    min_delta: float = 1e-4,
    min_steps: int = 300,
    seed: int = 0,
) -> Probe:
    """Train a probe of ``task`` on ``train``; early stopping on the ``dev`` loss, best-dev parameters kept.

    Args:
      task: one of ``TASKS``.
      train, dev: :class:`FrameFeatures` / :class:`UtteranceFeatures` (cached) or :class:`FeatureStream`
        (recomputed every epoch). Utterance tasks pool frame features by the mean over valid frames.
      label_key: which label of the features to predict (frame labels, or utterance labels broadcast to frames).
      hidden: 0 = linear probe, > 0 = one ReLU hidden layer of that width.
      num_classes / class_names: fix the class set (integer labels: default max label + 1).
      log_target: regression on ``log(label)``, labels <= 0 ignored (F0 in Hz with 0 = unvoiced).
      per: frame classification also reports PER (frame-merge decoding) in :func:`evaluate`.
      batch_size: frames (frame tasks; default 512), utterances (utterance tasks: 32, CTC: 8).
      max_epochs, patience, min_delta, min_steps: stop after ``patience`` epochs without a dev-loss
        improvement of ``min_delta`` (relative) or after ``max_epochs`` epochs, but never before ``min_steps``
        updates: small sets have few steps per epoch, and the dev loss can rise before the layer weights move.
      seed: initialisation and shuffling.
    """
    if task not in TASKS:
        raise ValueError(f"unknown probe task {task!r}; known: {TASKS}")
    if task != "frame_regression" and log_target:
        raise ValueError("log_target only applies to frame_regression")
    if max_epochs < 1 or patience < 1:
        raise ValueError("max_epochs and patience must be >= 1")
    if task in ("utterance_classification", "frame_regression"):
        per = False
    if task == "utterance_classification" and isinstance(train, FeatureStream):
        train = _cache_pooled(train)
    if task == "utterance_classification" and isinstance(dev, FeatureStream):
        dev = _cache_pooled(dev)
    started = time.time()
    stats = _first_pass(task, train, label_key, log_target)
    config = _make_config(task, stats, label_key=label_key, hidden=hidden, num_classes=num_classes,
                          class_names=class_names, log_target=log_target, per=per)
    train_prep = _Prepared(config, train)
    dev_prep = _Prepared(config, dev)
    if task != "frame_regression":
        counts = _count_classes(config, train_prep)
        config = dataclasses.replace(config, class_counts=tuple(int(c) for c in counts),
                                     majority_class=int(np.argmax(counts)))
    if batch_size is None:
        batch_size = {"utterance_classification": 32, "ctc": 8}.get(task, 512)
    n_train = _num_examples(config, train_prep)
    if n_train == 0:
        raise ValueError(f"no usable training examples for {label_key!r}")
    if n_train > 0:
        batch_size = min(batch_size, n_train)
    out_dim = config.num_outputs + (1 if task == "ctc" else 0)
    params = _init_params(seed, len(config.layers), config.input_dim, hidden, out_dim)
    mean, std = jnp.asarray(stats["mean"]), jnp.asarray(stats["std"])
    opt, step = _train_step(task, bool(hidden), config.num_outputs, float(learning_rate), float(weight_decay),
                            tuple(sorted(params)))
    opt_state = opt.init(params)

    rng = np.random.default_rng(seed)
    best = (math.inf, params, -1)
    history = []
    bad_epochs = steps = 0
    epoch = -1
    # max_epochs is the bar's length; early stopping ends it sooner, min_steps can run past it (not drawn).
    with ProgressBar(max_epochs, desc=f"probe {label_key}", unit="epoch", leave=False) as bar:
        while epoch + 1 < max_epochs or steps < min_steps:
            epoch += 1
            losses = []
            for chunk, idx, yy in train_prep:
                for x, y, w in _minibatches(config, chunk, idx, yy, batch_size, rng):
                    params, opt_state, loss = step(params, opt_state, mean, std, x, y, w)
                    losses.append(loss)
                    steps += 1
            if not losses:
                raise ValueError(f"the training source gave no usable examples for {label_key!r}")
            dev_loss = _dev_loss(config, params, mean, std, dev_prep, batch_size)
            train_loss = float(np.mean([float(v) for v in losses]))
            history.append({"epoch": epoch, "train_loss": train_loss, "dev_loss": dev_loss})
            bar(epoch + 1, train_loss=f"{train_loss:.4f}", dev_loss=f"{dev_loss:.4f}")
            threshold = best[0] - min_delta * abs(best[0]) if math.isfinite(best[0]) else math.inf
            if dev_loss < threshold:
                best = (dev_loss, params, epoch)
                bad_epochs = 0
            else:
                bad_epochs += 1
                if bad_epochs >= patience and steps >= min_steps:
                    break
    info = {
        "format_version": FORMAT_VERSION,
        "best_epoch": best[2],
        "best_dev_loss": best[0],
        "epochs_run": len(history),
        "steps": steps,
        "history": history,
        "train_seconds": round(time.time() - started, 3),
        "hyperparameters": dict(learning_rate=learning_rate, weight_decay=weight_decay, batch_size=batch_size,
                                max_epochs=max_epochs, patience=patience, min_delta=min_delta,
                                min_steps=min_steps, seed=seed),
    }
    return Probe(config, jax.tree.map(np.asarray, best[1]), stats["mean"], stats["std"], info)


def _cache_pooled(stream: FeatureStream) -> UtteranceFeatures:
    """Utterance tasks need only pooled features (tiny): compute them once instead of every epoch."""
    parts = [chunk.pooled() for chunk in stream]
    if not parts:
        raise ValueError("the feature stream is empty")
    return UtteranceFeatures(np.concatenate([p.x for p in parts]), parts[0].layers,
                             {k: np.concatenate([np.asarray(p.labels[k]) for p in parts]) for k in parts[0].labels})


# --------------------------------------------------------------------------------------------------------------
# Prediction and evaluation


def _eval_rows(probe: Probe) -> int:
    k, c = probe.mean.shape
    return int(2 ** np.clip(np.floor(np.log2(max(1, 2 ** 22 // (k * c)))), 6, 12))


def _check_features(probe: Probe, chunk: FrameFeatures | UtteranceFeatures) -> FrameFeatures | UtteranceFeatures:
    """The probe's layers out of ``chunk`` (which may hold more, e.g. all L + 1), or a clear error."""
    cfg = probe.config
    if chunk.x.shape[-1] != cfg.input_dim or not set(cfg.layers) <= set(chunk.layers):
        raise ValueError(
            f"probe expects layers {cfg.layers} of width {cfg.input_dim}, features have layers {chunk.layers} "
            f"of width {chunk.x.shape[-1]}"
        )
    return chunk if tuple(chunk.layers) == tuple(cfg.layers) else chunk.select_layers(list(cfg.layers))


def _frame_outputs(probe: Probe, x: np.ndarray) -> np.ndarray:
    """Outputs for rows ``x (N, K, C)`` in fixed-size slices (one compilation per probe shape)."""
    rows = _eval_rows(probe)
    params = jax.tree.map(jnp.asarray, probe.params)
    out = []
    for s in range(0, len(x), rows):
        part = x[s:s + rows]
        pad = rows - len(part)
        if pad:
            part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], dtype=np.float32)])
        o = _outputs_jit(params, probe.mean, probe.std, part.astype(np.float32), bool(probe.config.hidden))
        out.append(np.asarray(o)[: rows - pad])
    width = probe.config.num_outputs + (1 if probe.config.task == "ctc" else 0)
    return np.concatenate(out) if out else np.zeros((0, width), dtype=np.float32)


def predict(probe: Probe, features: FrameFeatures | UtteranceFeatures) -> np.ndarray | list[np.ndarray]:
    """Class ids (F,) or (N,), regression values in label units (F,), or CTC: one decoded sequence per utterance."""
    (chunk,) = list(_chunks(features, probe.config.task))
    chunk = _check_features(probe, chunk)
    out = _frame_outputs(probe, chunk.x)
    cfg = probe.config
    if cfg.task == "frame_regression":
        t = out[:, 0] * cfg.target_std + cfg.target_mean
        return np.exp(t) if cfg.log_target else t
    pred = out.argmax(-1)
    if cfg.task == "ctc":
        return [ctc_greedy_decode(pred[chunk.offsets[n]:chunk.offsets[n + 1]], cfg.num_outputs)
                for n in range(chunk.num_utterances)]
    return pred


class _Tally:
    """Streaming accumulators for :func:`evaluate`."""

    def __init__(self, cfg: ProbeConfig):
        self.cfg = cfg
        c = max(cfg.num_outputs, 1)
        self.confusion = np.zeros((c, c), dtype=np.int64)
        self.edits = self.chance_edits = self.ref_len = 0
        self.sq = self.chance_sq = self.t_sum = self.t_sq = self.p_sum = self.p_sq = self.tp = 0.0
        self.n = 0

    def add_sequences(self, chunk: FrameFeatures, y: np.ndarray, hyps: list[np.ndarray]) -> None:
        majority = np.full(len(y), self.cfg.majority_class)
        for n, hyp in enumerate(hyps):
            sl = slice(chunk.offsets[n], chunk.offsets[n + 1])
            ref = frame_merge(y[sl], y[sl])
            self.edits += levenshtein(ref, hyp)
            self.chance_edits += levenshtein(ref, frame_merge(majority[sl], y[sl]))
            self.ref_len += len(ref)


def evaluate(
    probe: Probe,
    features: Source,
    labels: np.ndarray | None = None,
    *,
    confusion: bool = False,
) -> dict[str, Any]:
    """Overall and per-class metrics of ``probe`` on ``features`` with chance baselines (JSON-able dict).

    ``labels`` overrides the features' own label (``probe.config.label_key``): (F,) aligned with the frames of
    frame features, or (N,) for utterance tasks; not allowed with a :class:`FeatureStream`.
    """
    cfg = probe.config
    if labels is not None and isinstance(features, FeatureStream):
        raise ValueError("labels cannot be given with a FeatureStream; put them in the batches")
    tally = _Tally(cfg)
    num_utts = 0
    for chunk in _chunks(features, cfg.task):
        chunk = _check_features(probe, chunk)
        if labels is not None:
            n_expected = len(chunk.x)
            if len(labels) != n_expected:
                raise ValueError(f"labels has {len(labels)} entries, features have {n_expected} examples")
            chunk = dataclasses.replace(chunk, **(
                {"labels": {**chunk.labels, cfg.label_key: np.asarray(labels)}} if isinstance(chunk, UtteranceFeatures)
                else {"frame_labels": {**chunk.frame_labels, cfg.label_key: np.asarray(labels)}}))
        num_utts += chunk.num_utterances
        idx, y = _examples(cfg, chunk)
        if cfg.task == "ctc":
            out = _frame_outputs(probe, chunk.x).argmax(-1)
            hyps = [ctc_greedy_decode(out[chunk.offsets[n]:chunk.offsets[n + 1]], cfg.num_outputs)
                    for n in range(chunk.num_utterances)]
            tally.add_sequences(chunk, y, hyps)
            tally.n += len(idx)
            continue
        out = _frame_outputs(probe, chunk.x[idx])
        if cfg.task == "frame_regression":
            t = y[idx]
            p = out[:, 0].astype(np.float64) * cfg.target_std + cfg.target_mean
            tally.sq += ((p - t) ** 2).sum()
            tally.chance_sq += ((t - cfg.target_mean) ** 2).sum()
            tally.t_sum += t.sum()
            tally.t_sq += (t ** 2).sum()
            tally.p_sum += p.sum()
            tally.p_sq += (p ** 2).sum()
            tally.tp += (t * p).sum()
            tally.n += len(t)
            continue
        pred = out.argmax(-1)
        tally.confusion += np.bincount(y[idx] * cfg.num_outputs + pred, minlength=cfg.num_outputs ** 2).reshape(
            cfg.num_outputs, cfg.num_outputs)
        tally.n += len(idx)
        if cfg.per:
            full = np.full(len(y), -1, dtype=np.int64)
            full[idx] = pred
            hyps = [frame_merge(full[chunk.offsets[n]:chunk.offsets[n + 1]], y[chunk.offsets[n]:chunk.offsets[n + 1]])
                    for n in range(chunk.num_utterances)]
            tally.add_sequences(chunk, y, hyps)
    if tally.n == 0:
        raise ValueError(f"no usable evaluation examples for {cfg.label_key!r}")
    result: dict[str, Any] = {"task": cfg.task, "label_key": cfg.label_key, "num_examples": int(tally.n),
                              "num_utterances": int(num_utts), "chance": {}}
    if cfg.task == "frame_regression":
        n = tally.n
        var_t = tally.t_sq / n - (tally.t_sum / n) ** 2
        var_p = tally.p_sq / n - (tally.p_sum / n) ** 2
        cov = tally.tp / n - tally.t_sum * tally.p_sum / n ** 2
        result.update(mse=tally.sq / n, rmse=math.sqrt(tally.sq / n),
                      r2=(1 - tally.sq / n / var_t) if var_t > 0 else None,
                      pearson=(cov / math.sqrt(var_t * var_p)) if var_t > 0 and var_p > 0 else None,
                      target="log" if cfg.log_target else "raw")
        result["chance"] = {"mse": tally.chance_sq / n, "what": "predict the training mean"}
        return result
    if cfg.task != "ctc":
        conf = tally.confusion
        per_class_n = conf.sum(1)
        present = np.flatnonzero(per_class_n)
        recall = np.diag(conf)[present] / per_class_n[present]
        result.update(accuracy=float(np.trace(conf) / tally.n), balanced_accuracy=float(recall.mean()))
        result["per_class"] = {cfg.classes[c]: {"count": int(per_class_n[c]), "accuracy": float(r)}
                               for c, r in zip(present, recall, strict=True)}
        result["chance"].update(
            majority_class=cfg.classes[cfg.majority_class],
            accuracy=float(per_class_n[cfg.majority_class] / tally.n),
            balanced_accuracy=1.0 / len(present),
            uniform_accuracy=1.0 / cfg.num_outputs,
        )
        if confusion:
            result["confusion"] = conf.tolist()
            result["classes"] = list(cfg.classes)
    if cfg.per or cfg.task == "ctc":
        if tally.ref_len == 0:
            raise ValueError("no labelled phones in the evaluation set; cannot compute PER")
        result.update(per=tally.edits / tally.ref_len, per_edits=int(tally.edits), per_ref_len=int(tally.ref_len))
        result["chance"].update(per=tally.chance_edits / tally.ref_len,
                                per_what="the training majority class on every labelled frame, frame-merged")
        result["chance"].setdefault("majority_class", cfg.classes[cfg.majority_class])
    return result


# --------------------------------------------------------------------------------------------------------------
# Save / load


def save_probe(probe: Probe, directory: str) -> str:
    """Write ``probe.json`` (config + info) and ``probe.npz`` (arrays) into ``directory``, atomically."""
    directory = os.path.abspath(directory)
    with atomic_directory(directory) as tmp:
        arrays = {f"params/{k}": np.asarray(v) for k, v in probe.params.items()}
        arrays.update(mean=np.asarray(probe.mean), std=np.asarray(probe.std))
        np.savez(os.path.join(tmp, PROBE_NPZ), **arrays)
        meta = {"format_version": FORMAT_VERSION, "config": probe.config.to_dict(), "info": probe.info}
        with open(os.path.join(tmp, PROBE_JSON), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True, default=float)
    return directory


def load_probe(directory: str) -> Probe:
    """Inverse of :func:`save_probe`; checks the array shapes against the config."""
    json_path, npz_path = os.path.join(directory, PROBE_JSON), os.path.join(directory, PROBE_NPZ)
    for path in (json_path, npz_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{directory} is not a saved probe: missing {os.path.basename(path)}")
    with open(json_path) as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{json_path}: not valid JSON ({e})") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{json_path}: unsupported probe format version {meta.get('format_version')!r}")
    config = ProbeConfig.from_dict(meta["config"])
    with np.load(npz_path, allow_pickle=False) as data:
        params = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("params/")}
        mean, std = data["mean"], data["std"]
    k, c = len(config.layers), config.input_dim
    out_dim = config.num_outputs + (1 if config.task == "ctc" else 0)
    width = config.hidden or out_dim
    expected = {"layer_logits": (k,), "w0": (c, width), "b0": (width,)}
    if config.hidden:
        expected.update(w1=(config.hidden, out_dim), b1=(out_dim,))
    got = {name: tuple(v.shape) for name, v in params.items()}
    if got != expected or mean.shape != (k, c) or std.shape != (k, c):
        raise ValueError(f"{npz_path}: arrays {got}, mean {mean.shape}, std {std.shape} do not match the config "
                         f"(expected {expected}, mean/std {(k, c)})")
    return Probe(config, params, mean, std, meta.get("info", {}))
