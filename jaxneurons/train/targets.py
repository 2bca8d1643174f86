"""Frame-level k-means targets for masked-prediction pre-training.

First iteration (HuBERT): k-means of MFCC + deltas + delta-deltas (39 dims, per-utterance mean/variance
normalised). Model frames are 20 ms (frame ``t`` starts at sample ``320 t``) and MFCC frames 10 ms, so the
feature of model frame ``t`` is the mean of MFCC frames ``2t`` and ``2t + 1`` (clipped at the utterance end).
Later iterations: k-means of one Transformer layer's features (:func:`layer_features`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from sklearn.cluster import MiniBatchKMeans

from jaxneurons.data.batching import padded_batches
from jaxneurons.features.mfcc import add_deltas, cmn, mfcc


@jax.jit
def _mfcc39(audio: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    feats, n = mfcc(audio, lengths)
    feats = add_deltas(feats, n)
    return cmn(feats, n, variance=True), n


def mfcc_frame_features(
    audio: Sequence[np.ndarray], num_frames: Callable[[int], int], batch_size: int = 16
) -> list[np.ndarray]:
    """Per utterance, (num_frames(len), 39) MFCC features aligned to 20 ms model frames."""
    out: list[np.ndarray | None] = [None] * len(audio)
    for idx, batch, lengths in padded_batches(audio, batch_size):
        feats, n = _mfcc39(jnp.asarray(batch), jnp.asarray(lengths))
        feats, n = np.asarray(feats), np.asarray(n)
        for row, i in enumerate(idx):
            frames = int(num_frames(int(lengths[row])))
            last = max(int(n[row]) - 1, 0)
            a = np.minimum(2 * np.arange(frames), last)
            b = np.minimum(2 * np.arange(frames) + 1, last)
            out[i] = 0.5 * (feats[row, a] + feats[row, b])
    return out  # type: ignore[return-value]


def layer_features(
    model: nnx.Module, audio: Sequence[np.ndarray], layer: int, batch_size: int = 8
) -> list[np.ndarray]:
    """Per utterance, (T, C) hidden states of ``hidden_states[layer]`` (0 = input of the first layer)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, audio, lengths):
        out = nnx.merge(graphdef, state)(audio, lengths)
        return out.hidden_states[layer], out.frame_lengths

    result: list[np.ndarray | None] = [None] * len(audio)
    for idx, batch, lengths in padded_batches(audio, batch_size):
        hidden, n = forward(state, jnp.asarray(batch), jnp.asarray(lengths))
        hidden, n = np.asarray(hidden), np.asarray(n)
        for row, i in enumerate(idx):
            result[i] = hidden[row, : int(n[row])]
    return result  # type: ignore[return-value]


def kmeans_targets(
    features: Sequence[np.ndarray], num_clusters: int, seed: int = 0, max_fit_frames: int = 200_000
) -> tuple[list[np.ndarray], MiniBatchKMeans]:
    """Fit k-means on (a seeded subsample of) all frames; return per-utterance int32 cluster ids."""
    stacked = np.concatenate(features, axis=0)
    if len(stacked) < num_clusters:
        raise ValueError(f"k-means targets: {len(stacked)} frames are fewer than {num_clusters} clusters")
    rng = np.random.default_rng(seed)
    fit = stacked if len(stacked) <= max_fit_frames else stacked[rng.choice(len(stacked), max_fit_frames, False)]
    km = MiniBatchKMeans(n_clusters=num_clusters, random_state=seed, n_init=3, batch_size=4096).fit(fit)
    labels = km.predict(stacked).astype(np.int32)
    splits = np.cumsum([len(f) for f in features])[:-1]
    return list(np.split(labels, splits)), km
