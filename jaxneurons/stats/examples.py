"""Max-activating examples, streamed: the top-N frames of every neuron of every layer, exactly.

For each neuron (layer l, index d) the state keeps the N frames of the whole corpus with the largest
activation ``h`` (signed: what the neuron *responds* to, as in Neuroscope-style viewers), as three
``(L, D_max, N)`` arrays ``examples/value`` (float32), ``examples/utt`` and ``examples/frame`` (int32: the
global utterance index and the frame index within the utterance). Memory is O(L * D * N), independent of
the corpus size.

Tie rule (deterministic, so that every merge order gives the same bits): frames are ranked by ``value``
descending, then by global utterance index ascending, then by frame index ascending (``-0.0`` counts as
``0.0``). The NumPy reference is ``np.lexsort((frame, utt, -value))[:N]``. Empty slots (a neuron has seen
fewer than N frames, or the padding of a narrower layer) hold ``value = -inf, utt = frame = EMPTY``
(int32 max), which sort after every real frame; :func:`examples_to_numpy` reports them as ``utt = -1``.

Per batch (``batch_examples``): each layer's rows are put in ascending utterance order (one gather fused
with the transpose ``lax.top_k`` needs anyway), invalid frames get ``-inf``, and ``lax.top_k`` along the
frame axis, which prefers the lower flat index on ties, i.e. the lower (utterance, frame), gives the
batch's exact top N. Across devices the per-device candidates are gathered over the mesh axis
(a ``psum`` of per-device slots) and reduced by the same lexicographic sort (:func:`merge_examples`);
across batches the running state is merged with the batch the same way. Every merge is exact and
associative, so 1 device, 8 devices, 2 processes and a resumed scan give identical arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

EMPTY = np.iinfo(np.int32).max
KEYS = ("value", "utt", "frame")
PREFIX = "examples"


def example_shapes(num_layers: int, max_width: int, n: int) -> dict[str, tuple[tuple[int, ...], jnp.dtype]]:
    """Shapes and dtypes of the example arrays (keys ``examples/value|utt|frame``)."""
    shape = (num_layers, max_width, n)
    return {f"{PREFIX}/value": (shape, jnp.float32), f"{PREFIX}/utt": (shape, jnp.int32),
            f"{PREFIX}/frame": (shape, jnp.int32)}


def empty_examples(num_layers: int, max_width: int, n: int) -> dict[str, jax.Array]:
    """The state before any frame: every slot empty."""
    shape = (num_layers, max_width, n)
    return {f"{PREFIX}/value": jnp.full(shape, -jnp.inf, jnp.float32),
            f"{PREFIX}/utt": jnp.full(shape, EMPTY, jnp.int32),
            f"{PREFIX}/frame": jnp.full(shape, EMPTY, jnp.int32)}


def _select(value: jax.Array, utt: jax.Array, frame: jax.Array, n: int) -> tuple[jax.Array, ...]:
    """The first ``n`` of the last axis in the tie-rule order (value desc, utt asc, frame asc)."""
    neg, u, f = lax.sort((-value, utt, frame), dimension=value.ndim - 1, num_keys=3)
    return -neg[..., :n], u[..., :n], f[..., :n]


def merge_examples(a: Mapping[str, jax.Array], b: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Exact merge of two example states of the same shape (order-independent, bit for bit)."""
    n = a[f"{PREFIX}/value"].shape[-1]
    cat = [jnp.concatenate([a[f"{PREFIX}/{k}"], b[f"{PREFIX}/{k}"]], axis=-1) for k in KEYS]
    return dict(zip((f"{PREFIX}/{k}" for k in KEYS), _select(*cat, n), strict=True))


def _layer_candidates(x: jax.Array, order: jax.Array, utt_sorted: jax.Array, valid_sorted: jax.Array,
                      T: int, n: int, width: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Top-n frames of one layer ``x`` (B, T, D_l) -> three (width, n) arrays (padded neurons empty)."""
    B, _, d = x.shape
    xs = jnp.take(x, order, axis=0)  # rows in ascending utterance order
    xs = jnp.where(valid_sorted[:, :, None], xs, -jnp.inf)
    xs = jnp.where(xs == 0, 0.0, xs)  # -0.0 -> 0.0: equal values must tie
    cols = xs.reshape(B * T, d).T  # (D_l, frames), frames ordered by (utterance, frame)
    if n > B * T:  # fewer frames than slots: pad with invalid columns
        cols = jnp.pad(cols, ((0, 0), (0, n - B * T)), constant_values=-jnp.inf)
    val, idx = lax.top_k(cols, n)
    ok = jnp.take(jnp.pad(valid_sorted.reshape(-1), (0, max(0, n - B * T))), idx)
    row = jnp.minimum(idx // T, B - 1)
    utt = jnp.where(ok, jnp.take(utt_sorted, row), EMPTY).astype(jnp.int32)
    frame = jnp.where(ok, idx % T, EMPTY).astype(jnp.int32)
    val = jnp.where(ok, val, -jnp.inf)
    pad = ((0, width - d), (0, 0))
    return (jnp.pad(val, pad, constant_values=-jnp.inf), jnp.pad(utt, pad, constant_values=EMPTY),
            jnp.pad(frame, pad, constant_values=EMPTY))


def batch_examples(layers: Sequence[jax.Array], valid: jax.Array, utt_index: jax.Array, n: int, width: int, *,
                   axis_name: str | None = None) -> dict[str, jax.Array]:
    """The batch's top-n frames of every neuron: three (L, width, n) arrays, merged over ``axis_name``.

    ``layers``: L arrays (B, T, D_l); ``valid``: (B, T) bool; ``utt_index``: (B,) global utterance index of
    each row (``-1`` for padding rows, whose frames never count). Inside ``shard_map`` each device works on
    its rows and the candidates are all-gathered and reduced, so the result is replicated.
    """
    B, T = valid.shape
    utt_index = utt_index.astype(jnp.int32)
    valid = valid.astype(bool) & (utt_index >= 0)[:, None]
    order = jnp.argsort(utt_index)  # utterance indices are distinct; padding rows (-1) first, all invalid
    utt_sorted, valid_sorted = jnp.take(utt_index, order), jnp.take(valid, order, axis=0)
    parts = [_layer_candidates(x, order, utt_sorted, valid_sorted, T, n, width) for x in layers]
    out = {f"{PREFIX}/{k}": jnp.stack([p[i] for p in parts]) for i, k in enumerate(KEYS)}
    if axis_name is not None:
        gathered = [_gather(out[f"{PREFIX}/{k}"], axis_name) for k in KEYS]  # (L, W, ndev * n)
        out = dict(zip(out, _select(*gathered, n), strict=True))
    return out


def _gather(x: jax.Array, axis_name: str) -> jax.Array:
    """All devices' ``x`` (L, W, n) side by side on the last axis, replicated: each device writes its own
    slot of a zero array and the slots are ``psum``-ed (exact: every other term is 0; and, unlike
    ``all_gather``, shard_map knows the result is the same on every device)."""
    ndev = lax.axis_size(axis_name)
    slots = jnp.zeros((ndev, *x.shape), x.dtype).at[lax.axis_index(axis_name)].set(x)
    return jnp.moveaxis(lax.psum(slots, axis_name), 0, -2).reshape(*x.shape[:-1], ndev * x.shape[-1])


def examples_to_numpy(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Host form of the state: ``value`` (L, D, N) float32 (NaN where empty), ``utt`` / ``frame`` int32
    (-1 where empty), best first."""
    utt = np.asarray(arrays[f"{PREFIX}/utt"])
    empty = utt == EMPTY
    return {"value": np.where(empty, np.nan, np.asarray(arrays[f"{PREFIX}/value"])).astype(np.float32),
            "utt": np.where(empty, -1, utt).astype(np.int32),
            "frame": np.where(empty, -1, np.asarray(arrays[f"{PREFIX}/frame"])).astype(np.int32)}


def reference_examples(layers: Sequence[np.ndarray], valid: np.ndarray, ids: np.ndarray, n: int,
                       width: int) -> dict[str, np.ndarray]:
    """NumPy reference of the tie rule over a corpus's frames, in :func:`examples_to_numpy` form.

    ``layers``: L arrays (F, D_l), one row per frame; ``valid``: (F,) bool; ``ids``: (F, 2) int, the
    (global utterance, frame) of every row.
    """
    L = len(layers)
    out = {"value": np.full((L, width, n), np.nan, np.float32), "utt": np.full((L, width, n), -1, np.int32),
           "frame": np.full((L, width, n), -1, np.int32)}
    keep = np.asarray(valid, bool)
    u, f = ids[keep, 0], ids[keep, 1]
    for l, x in enumerate(layers):
        x = np.asarray(x, np.float32)[keep]
        x = np.where(x == 0, np.float32(0), x)
        for d in range(x.shape[1]):
            order = np.lexsort((f, u, -x[:, d]))[:n]
            m = len(order)
            out["value"][l, d, :m], out["utt"][l, d, :m], out["frame"][l, d, :m] = x[order, d], u[order], f[order]
    return out
