"""Frozen layer features for probes: one jitted forward per batch, kept on host as float32 numpy.

Layer indices refer to ``EncoderOutput.hidden_states``: ``0`` is the input of the first Transformer layer
(after the front end and positional convolution), ``i`` the output of layer ``i - 1``; ``"all"`` keeps all
``L + 1`` for a SUPERB-style learned weighted sum, negative indices count from the end.

Frame features are stored ragged: only valid frames, concatenated over utterances, ``x (F, K, C)`` with
``offsets (N + 1,)`` (utterance ``n`` is ``x[offsets[n]:offsets[n + 1]]``), so padding costs nothing.
For a base model with all 13 layers that is 13 x 768 x 4 B = 40 KB per frame, 7.2 GB per hour of audio at 50
frames/s: when that is too much,
use :class:`FeatureStream`, which re-runs the encoder per batch each time it is iterated (every epoch).

Batches are mappings or objects (such as :class:`jaxneurons.data.batching.Batch`) holding ``audio`` (B, S)
float32, ``lengths`` or ``audio_lengths`` (B,), and any label keys asked for, as fields or in a ``labels``
dict: frame labels (B, W) with ``W >=`` each row's frame count (extra columns are ignored; -1 = ignore for
class labels), utterance labels (B,). Rows with zero audio length (batch padding) are dropped. When a batch
carries ``frame_lengths`` they must equal the model's (labels framed for another front end are refused).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

LayerSpec = int | str | Sequence[int]


def resolve_layers(layers: LayerSpec, num_hidden_states: int) -> tuple[int, ...]:
    """``"all"`` | int | sequence of ints -> sorted-as-given tuple of non-negative hidden-state indices."""
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be 'all', an int or a sequence of ints, got {layers!r}")
        return tuple(range(num_hidden_states))
    items = [layers] if isinstance(layers, int | np.integer) else list(layers)
    if not items:
        raise ValueError("layers is empty")
    out = []
    for i in items:
        j = int(i) + num_hidden_states if int(i) < 0 else int(i)
        if not 0 <= j < num_hidden_states:
            raise ValueError(
                f"layer {i} out of range for {num_hidden_states} hidden states (0..{num_hidden_states - 1})")
        out.append(j)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate layers in {items}")
    return tuple(out)


def _lengths_to_offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


def _gather_index(offsets: np.ndarray, utts: np.ndarray) -> np.ndarray:
    """Frame indices of utterances ``utts`` (in that order), vectorised."""
    starts = offsets[utts]
    lengths = offsets[utts + 1] - starts
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    base = np.repeat(starts - _lengths_to_offsets(lengths)[:-1], lengths)
    return base + np.arange(lengths.sum(), dtype=np.int64)


def _layer_positions(have: tuple[int, ...], want: LayerSpec) -> tuple[tuple[int, ...], list[int]]:
    """Hidden-state indices ``want`` (as stored, negative from the end of ``have``) -> (layers, positions)."""
    if isinstance(want, str):
        raise ValueError("select_layers takes hidden-state indices, not a string")
    items = [want] if isinstance(want, int | np.integer) else list(want)
    layers = tuple(have[int(i)] if int(i) < 0 else int(i) for i in items)
    missing = [i for i in layers if i not in have]
    if missing:
        raise ValueError(f"layers {missing} were not extracted (have {have})")
    return layers, [have.index(i) for i in layers]


@dataclasses.dataclass
class UtteranceFeatures:
    """Per-utterance features ``x (N, K, C)`` (mean over valid frames) and utterance labels ``(N,)``."""

    x: np.ndarray
    layers: tuple[int, ...]
    labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.ndim != 3:
            raise ValueError(f"utterance features must be (N, K, C), got shape {self.x.shape}")
        if self.x.shape[1] != len(self.layers):
            raise ValueError(f"features have {self.x.shape[1]} layers but layers={self.layers}")
        for key, value in self.labels.items():
            if len(value) != len(self.x):
                raise ValueError(f"utterance label {key!r} has {len(value)} values for {len(self.x)} utterances")

    @property
    def num_utterances(self) -> int:
        return len(self.x)

    def select_layers(self, layers: int | Sequence[int]) -> UtteranceFeatures:
        """Keep some of the extracted hidden states (indices as in ``self.layers``; negative from the end)."""
        kept, pos = _layer_positions(self.layers, layers)
        return UtteranceFeatures(self.x[:, pos], kept, dict(self.labels))

    def subset(self, utts: Sequence[int] | np.ndarray) -> UtteranceFeatures:
        utts = np.asarray(utts, dtype=np.int64)
        return UtteranceFeatures(self.x[utts], self.layers, {k: np.asarray(v)[utts] for k, v in self.labels.items()})

    @classmethod
    def from_array(cls, x: np.ndarray, labels: Mapping[str, Any] | None = None,
                   layers: Sequence[int] | None = None) -> UtteranceFeatures:
        """Plain arrays: ``x`` (N, C) for one layer or (N, K, C)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:
            x = x[:, None]
        layers = tuple(range(x.shape[1])) if layers is None else tuple(layers)
        return cls(x, layers, {k: np.asarray(v) for k, v in (labels or {}).items()})


@dataclasses.dataclass
class FrameFeatures:
    """Valid frames of N utterances: ``x (F, K, C)``, ``offsets (N + 1,)``, frame and utterance labels."""

    x: np.ndarray
    offsets: np.ndarray
    layers: tuple[int, ...]
    frame_labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    utt_labels: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.ndim != 3:
            raise ValueError(f"frame features must be (F, K, C), got shape {self.x.shape}")
        if self.x.shape[1] != len(self.layers):
            raise ValueError(f"features have {self.x.shape[1]} layers but layers={self.layers}")
        if self.offsets.ndim != 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.x) or (
            np.diff(self.offsets) < 0).any():
            raise ValueError("offsets must start at 0, be non-decreasing and end at the number of frames")
        for key, value in self.frame_labels.items():
            if len(value) != len(self.x):
                raise ValueError(f"frame label {key!r} has {len(value)} values for {len(self.x)} frames")
        for key, value in self.utt_labels.items():
            if len(value) != self.num_utterances:
                raise ValueError(f"utterance label {key!r} has {len(value)} values for {self.num_utterances} utts")

    @property
    def num_utterances(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def utterance_index(self) -> np.ndarray:
        """(F,) index of the utterance each frame belongs to."""
        return np.repeat(np.arange(self.num_utterances), self.lengths)

    def select_layers(self, layers: int | Sequence[int]) -> FrameFeatures:
        """Keep some of the extracted hidden states (extract all once, probe each layer)."""
        kept, pos = _layer_positions(self.layers, layers)
        return FrameFeatures(self.x[:, pos], self.offsets, kept, dict(self.frame_labels), dict(self.utt_labels))

    def subset(self, utts: Sequence[int] | np.ndarray) -> FrameFeatures:
        utts = np.asarray(utts, dtype=np.int64)
        idx = _gather_index(self.offsets, utts)
        return FrameFeatures(
            self.x[idx], _lengths_to_offsets(self.lengths[utts]), self.layers,
            {k: v[idx] for k, v in self.frame_labels.items()},
            {k: np.asarray(v)[utts] for k, v in self.utt_labels.items()},
        )

    def frame_label(self, key: str) -> np.ndarray:
        """A frame label, or an utterance label repeated over the utterance's frames (e.g. frame-level gender)."""
        if key in self.frame_labels:
            return self.frame_labels[key]
        if key in self.utt_labels:
            return np.repeat(np.asarray(self.utt_labels[key]), self.lengths)
        have = sorted(self.frame_labels) + sorted(self.utt_labels)
        raise KeyError(f"no frame or utterance label {key!r}; have {have}")

    def pooled(self) -> UtteranceFeatures:
        """Mean over each utterance's frames (per layer; pooling commutes with the layer weighted sum)."""
        sums = np.zeros((self.num_utterances,) + self.x.shape[1:], dtype=np.float64)
        np.add.at(sums, self.utterance_index(), self.x)
        lengths = self.lengths
        if (lengths == 0).any():
            raise ValueError(f"{int((lengths == 0).sum())} utterance(s) have no frames; cannot pool")
        return UtteranceFeatures((sums / lengths[:, None, None]).astype(np.float32), self.layers, dict(self.utt_labels))

    @classmethod
    def from_padded(
        cls,
        x: np.ndarray,
        lengths: np.ndarray,
        frame_labels: Mapping[str, np.ndarray] | None = None,
        utt_labels: Mapping[str, Any] | None = None,
        layers: Sequence[int] | None = None,
    ) -> FrameFeatures:
        """Plain arrays: ``x`` (N, T, C) or (N, T, K, C), ``lengths`` (N,), frame labels (N, T)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[:, :, None]
        if x.ndim != 4:
            raise ValueError(f"padded features must be (N, T, C) or (N, T, K, C), got shape {x.shape}")
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.shape != (x.shape[0],) or (lengths < 0).any() or (lengths > x.shape[1]).any():
            raise ValueError(f"lengths must be (N,) = ({x.shape[0]},) with 0 <= length <= T = {x.shape[1]}")
        valid = np.arange(x.shape[1])[None] < lengths[:, None]
        labels = {}
        for key, value in (frame_labels or {}).items():
            value = np.asarray(value)
            if value.shape[0] != x.shape[0] or value.shape[1] < x.shape[1]:
                raise ValueError(f"frame label {key!r} shape {value.shape} does not cover features {x.shape[:2]}")
            labels[key] = value[:, : x.shape[1]][valid]
        layers = tuple(range(x.shape[2])) if layers is None else tuple(layers)
        return cls(x[valid], _lengths_to_offsets(lengths), layers, labels,
                   {k: np.asarray(v) for k, v in (utt_labels or {}).items()})

    @classmethod
    def concatenate(cls, parts: Sequence[FrameFeatures]) -> FrameFeatures:
        if not parts:
            raise ValueError("nothing to concatenate")
        layers = parts[0].layers
        if any(p.layers != layers for p in parts):
            raise ValueError("cannot concatenate features of different layers")
        keys_f, keys_u = set(parts[0].frame_labels), set(parts[0].utt_labels)
        if any(set(p.frame_labels) != keys_f or set(p.utt_labels) != keys_u for p in parts):
            raise ValueError("cannot concatenate features with different label keys")
        lengths = np.concatenate([p.lengths for p in parts])
        return cls(
            np.concatenate([p.x for p in parts]), _lengths_to_offsets(lengths), layers,
            {k: np.concatenate([p.frame_labels[k] for p in parts]) for k in keys_f},
            {k: np.concatenate([np.asarray(p.utt_labels[k]) for p in parts]) for k in keys_u},
        )


# --------------------------------------------------------------------------------------------------------------
# Extraction from a model


@functools.lru_cache(maxsize=32)
def _forward_fn(graphdef: nnx.GraphDef, layers: tuple[int, ...], pool: bool) -> Callable:
    """Jitted forward returning the kept hidden states; cached so every mask reuses one compilation."""

    @jax.jit
    def forward(state, audio, lengths, masks):
        model = nnx.merge(graphdef, state)
        out = model(audio, lengths, **masks)
        hs = jnp.stack([out.hidden_states[i] for i in layers], axis=2).astype(jnp.float32)  # (B, T, K, C)
        if pool:
            m = out.frame_mask[:, :, None, None].astype(jnp.float32)
            hs = (hs * m).sum(1) / jnp.maximum(out.frame_lengths, 1)[:, None, None].astype(jnp.float32)
        return hs, out.frame_lengths

    return forward


def _get(batch: Any, *names: str, required: bool = True) -> Any:
    """A field of a mapping batch, an attribute, or an entry of its ``labels`` dict (``data.batching.Batch``)."""
    labels = batch.get("labels") if isinstance(batch, Mapping) else getattr(batch, "labels", None)
    for name in names:
        if isinstance(batch, Mapping):
            if name in batch:
                return batch[name]
        elif hasattr(batch, name):
            return getattr(batch, name)
        if isinstance(labels, Mapping) and name in labels:
            return labels[name]
    if required:
        raise KeyError(f"batch has none of {names}")
    return None


def _masks(config: Any, neuron_mask: Any, neuron_offset: Any, head_mask: Any) -> dict:
    """Always pass all three masks (identity where not given): one compilation serves clean and ablated runs."""
    num_layers = config.num_hidden_layers
    widths = [config.ffn_width(i) for i in range(num_layers)]
    ref = neuron_mask if neuron_mask is not None else neuron_offset
    # (L, D) arrays for uniform widths, a sequence of L (D_l,) arrays after physical pruning
    as_list = not config.uniform_ffn if ref is None else (not hasattr(ref, "shape") or np.ndim(ref) != 2)
    if as_list:
        def full(value, given):
            if given is not None:
                if len(given) != num_layers:
                    raise ValueError(f"per-layer mask has {len(given)} entries for {num_layers} layers")
                return tuple(np.asarray(g, np.float32) for g in given)
            return tuple(np.full((w,), value, np.float32) for w in widths)
    else:
        def full(value, given):
            if given is not None:
                return np.asarray(given, np.float32)
            return np.full((num_layers, widths[0]), value, np.float32)
    masks = dict(neuron_mask=full(1.0, neuron_mask), neuron_offset=full(0.0, neuron_offset))
    shapes = [np.shape(m) for m in jax.tree.leaves(masks)]
    expected = [(w,) for w in widths] * 2 if as_list else [(num_layers, widths[0])] * 2
    if shapes != expected:
        raise ValueError(f"neuron_mask / neuron_offset shapes {shapes} do not match the model's FFN widths {widths}")
    heads = (num_layers, config.num_attention_heads)
    masks["head_mask"] = np.ones(heads, np.float32) if head_mask is None else np.asarray(head_mask, np.float32)
    if masks["head_mask"].shape != heads:
        raise ValueError(f"head_mask shape {masks['head_mask'].shape} != (layers, heads) = {heads}")
    return masks


def _batch_features(
    model: nnx.Module,
    batch: Any,
    layers: tuple[int, ...],
    pool: bool,
    masks: dict,
    frame_label_keys: Sequence[str],
    utt_label_keys: Sequence[str],
    utt_label_values: Mapping[str, np.ndarray],
) -> FrameFeatures | UtteranceFeatures:
    audio = np.asarray(_get(batch, "audio"), dtype=np.float32)
    if audio.ndim != 2:
        raise ValueError(f"batch audio must be (B, S), got shape {audio.shape}")
    lengths = _get(batch, "lengths", "audio_lengths", required=False)
    lengths = np.full(audio.shape[0], audio.shape[1]) if lengths is None else np.asarray(lengths)
    if lengths.shape != (audio.shape[0],):
        raise ValueError(f"batch lengths must be (B,) = ({audio.shape[0]},), got shape {lengths.shape}")
    graphdef, state = nnx.split(model)
    hs, frame_lengths = _forward_fn(graphdef, layers, pool)(state, audio, lengths.astype(np.int32), masks)
    hs = np.asarray(hs)
    frame_lengths = np.where(lengths > 0, np.asarray(frame_lengths), 0).astype(np.int64)
    given = _get(batch, "frame_lengths", required=False)
    if given is not None and not np.array_equal(np.asarray(given), frame_lengths):
        raise ValueError(
            f"batch frame_lengths {np.asarray(given).tolist()} differ from the model's {frame_lengths.tolist()}: "
            "the labels were framed for another front end"
        )
    keep = np.flatnonzero(lengths > 0)
    utt = {}
    if utt_label_values:
        index = _get(batch, "utt_indices", required=False)
        if index is None:
            raise ValueError("utt_label_values needs batches with utt_indices (row -> manifest index)")
        index = np.asarray(index)
        for key, values in utt_label_values.items():
            utt[key] = np.asarray(values)[index[keep]]
    for key in utt_label_keys:
        value = np.asarray(_get(batch, key))
        if value.shape[:1] != (audio.shape[0],):
            raise ValueError(f"utterance label {key!r} must be (B,) = ({audio.shape[0]},), got shape {value.shape}")
        utt[key] = value[keep]
    if pool:
        return UtteranceFeatures(hs[keep], layers, utt)
    width = hs.shape[1]
    frame = {}
    for key in frame_label_keys:
        value = np.asarray(_get(batch, key))
        if value.ndim != 2 or value.shape[0] != audio.shape[0]:
            raise ValueError(f"frame label {key!r} must be (B, W) with B = {audio.shape[0]}, got shape {value.shape}")
        short = np.flatnonzero(frame_lengths > value.shape[1])
        if len(short):
            raise ValueError(
                f"frame label {key!r} has {value.shape[1]} columns but the model gives {frame_lengths[short[0]]} "
                f"frames for row {short[0]}; align labels to model.num_frames(lengths)"
            )
        if value.shape[1] < width:  # pad so the valid-frame mask applies; padded cells are never valid
            pad = np.zeros((value.shape[0], width - value.shape[1]), dtype=value.dtype)
            value = np.concatenate([value, pad], axis=1)
        frame[key] = value[:, :width]
    sub = FrameFeatures.from_padded(hs[keep], frame_lengths[keep], {k: v[keep] for k, v in frame.items()}, utt, layers)
    return sub


class FeatureStream:
    """Frame features recomputed from the model each time it is iterated (one :class:`FrameFeatures` per batch).

    ``batches``: a re-iterable (list, or any object whose ``__iter__`` starts over) or a zero-argument callable
    returning a fresh iterable. A one-shot iterator is refused, since training iterates once per epoch.
    """

    def __init__(
        self,
        model: nnx.Module,
        batches: Iterable | Callable[[], Iterable],
        *,
        layers: LayerSpec = "all",
        frame_label_keys: Sequence[str] = (),
        utt_label_keys: Sequence[str] = (),
        utt_label_values: Mapping[str, Sequence] | None = None,
        neuron_mask: Any = None,
        neuron_offset: Any = None,
        head_mask: Any = None,
    ):
        if not callable(batches) and iter(batches) is batches:
            raise TypeError(
                "FeatureStream needs a re-iterable (list or callable returning an iterable), not a one-shot iterator")
        self.model = model
        self.batches = batches
        self.layers = resolve_layers(layers, model.config.num_hidden_layers + 1)
        self.frame_label_keys = tuple(frame_label_keys)
        self.utt_label_keys = tuple(utt_label_keys)
        self.utt_label_values = {k: np.asarray(v) for k, v in (utt_label_values or {}).items()}
        self.masks = _masks(model.config, neuron_mask, neuron_offset, head_mask)

    def __iter__(self) -> Iterator[FrameFeatures]:
        batches = self.batches() if callable(self.batches) else self.batches
        for batch in batches:
            yield _batch_features(self.model, batch, self.layers, False, self.masks, self.frame_label_keys,
                                  self.utt_label_keys, self.utt_label_values)


def extract_features(
    model: nnx.Module,
    batches: Iterable,
    *,
    layers: LayerSpec = "all",
    level: str = "frame",
    frame_label_keys: Sequence[str] = (),
    utt_label_keys: Sequence[str] = (),
    utt_label_values: Mapping[str, Sequence] | None = None,
    neuron_mask: Any = None,
    neuron_offset: Any = None,
    head_mask: Any = None,
    recompute: bool = False,
) -> FrameFeatures | UtteranceFeatures | FeatureStream:
    """Run ``model`` over ``batches`` once and keep the chosen hidden states on host.

    ``level="frame"`` -> :class:`FrameFeatures` (valid frames only); ``"utterance"`` -> :class:`UtteranceFeatures`
    (mean over valid frames, computed inside the jitted forward). Masks are passed to the model, so probes
    trained on the unablated model can be evaluated on the features of an ablated one.

    ``frame_label_keys`` / ``utt_label_keys`` name batch fields (or entries of a batch's ``labels`` dict) to
    keep; ``utt_label_values`` maps a name to an array over the whole manifest, looked up with the batch's
    ``utt_indices`` (as :class:`jaxneurons.data.batching.Batch` provides), e.g. ``{"speaker": speakers}``.

    ``recompute=True`` (frame level, for data too large to keep): return a :class:`FeatureStream` that runs the
    model again on every pass instead of features.
    """
    if level not in ("frame", "utterance"):
        raise ValueError(f"level must be 'frame' or 'utterance', got {level!r}")
    if recompute:
        if level != "frame":
            raise ValueError("recompute applies to frame features; pooled utterance features are small, keep them")
        return FeatureStream(model, batches, layers=layers, frame_label_keys=frame_label_keys,
                             utt_label_keys=utt_label_keys, utt_label_values=utt_label_values,
                             neuron_mask=neuron_mask, neuron_offset=neuron_offset, head_mask=head_mask)
    resolved = resolve_layers(layers, model.config.num_hidden_layers + 1)
    masks = _masks(model.config, neuron_mask, neuron_offset, head_mask)
    values = {k: np.asarray(v) for k, v in (utt_label_values or {}).items()}
    parts = [
        _batch_features(model, b, resolved, level == "utterance", masks, frame_label_keys, utt_label_keys, values)
        for b in batches
    ]
    if not parts:
        raise ValueError("no batches")
    if level == "frame":
        return FrameFeatures.concatenate(parts)
    return UtteranceFeatures(
        np.concatenate([p.x for p in parts]), resolved,
        {k: np.concatenate([p.labels[k] for p in parts]) for k in parts[0].labels},
    )
