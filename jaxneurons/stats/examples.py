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

Per batch (``batch_examples``): invalid frames get ``-inf``; a two-stage exact top-N per layer (maxima
of blocks of 8 frames by strided elementwise maxima, ``lax.top_k`` over the block maxima with rows in
ascending utterance order, then over the kept blocks' frames; see ``_layer_candidates``) never
transposes or sorts the full activations. Across devices the per-device candidates are gathered over
the mesh axis (a ``psum`` of per-device slots) and reduced by a lexicographic sort; across batches the
running state and the batch's candidates, both sorted, are merged by merge ranks (:func:`merge_examples`).
Every merge is exact and associative, so 1 device, 8 devices, 2 processes and a resumed scan give
identical arrays.
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


def _before(v1, u1, f1, v2, u2, f2):
    """Strict tie-rule order: (v1, u1, f1) comes before (v2, u2, f2)."""
    return (v1 > v2) | ((v1 == v2) & ((u1 < u2) | ((u1 == u2) & (f1 < f2))))


def _merge_sorted(a: tuple[jax.Array, ...], b: tuple[jax.Array, ...], n: int) -> tuple[jax.Array, ...]:
    """First ``n`` of two lists each sorted in the tie-rule order (last axis), by merge ranks.

    The merged position of a[i] is i + #{j: b[j] before a[i]} (keys are distinct, so the ranks are a
    permutation); elementwise (..., n, n) comparisons and selects, much cheaper on XLA CPU than a 3-key sort.
    """
    va, ua, fa = (x[..., :, None] for x in a)
    vb, ub, fb = (x[..., None, :] for x in b)
    b_first = _before(vb, ub, fb, va, ua, fa)  # (..., i over a, j over b)
    ia = jnp.arange(a[0].shape[-1])
    ib = jnp.arange(b[0].shape[-1])
    pos_a = ia + jnp.sum(b_first, axis=-1)  # (..., len a)
    pos_b = ib + jnp.sum(~b_first, axis=-2)  # (..., len b)
    slots = jnp.arange(n)
    hit_a = pos_a[..., :, None] == slots  # (..., len a, n)
    hit_b = pos_b[..., :, None] == slots
    out = []
    for xa, xb, fill in ((a[0], b[0], -jnp.inf), (a[1], b[1], EMPTY), (a[2], b[2], EMPTY)):
        pick_a = jnp.where(hit_a, xa[..., :, None], fill)
        pick_b = jnp.where(hit_b, xb[..., :, None], fill)
        red = jnp.max if fill == -jnp.inf else jnp.min
        out.append(red(jnp.concatenate([pick_a, pick_b], axis=-2), axis=-2))
    return tuple(out)


def merge_examples(a: Mapping[str, jax.Array], b: Mapping[str, jax.Array], *,
                   native: bool | None = None) -> dict[str, jax.Array]:
    """Exact merge of two example states of the same shape (each sorted, best first; order-independent).

    ``native``: the CPU FFI two-pointer merge (O(n) per neuron) instead of the XLA merge ranks (O(n^2));
    None = the counting kernels' ``auto`` choice (native on CPU when it builds; ``JAXNEURONS_NATIVE=0``
    turns it off). Both give the same bits.
    """
    if native is None:
        from jaxneurons.stats.native import resolve_topk_method

        native = resolve_topk_method("auto") == "native"
    ta, tb = tuple(a[f"{PREFIX}/{k}"] for k in KEYS), tuple(b[f"{PREFIX}/{k}"] for k in KEYS)
    if native:
        from jaxneurons.stats.native import merge_top_examples

        merged = merge_top_examples(ta, tb)
    else:
        merged = _merge_sorted(ta, tb, ta[0].shape[-1])
    return dict(zip((f"{PREFIX}/{k}" for k in KEYS), merged, strict=True))


def _block_max(x: jax.Array, chunk: int, nb: int) -> jax.Array:
    """(B, T, D) -> (B, nb, D): max over frames [c * chunk, (c + 1) * chunk) of each row (the last block
    padded with -inf). A max over a reshaped axis: XLA fuses strided-slice maxima into the transpose that
    follows and recomputes them in its (cache-hostile) order, 6x slower in the kernel (measured)."""
    B, T, D = x.shape
    x = jnp.pad(x, ((0, 0), (0, nb * chunk - T), (0, 0)), constant_values=-jnp.inf)
    return jnp.max(x.reshape(B, nb, chunk, D), axis=2)


def _layer_candidates(x: jax.Array, order: jax.Array, utt: jax.Array, valid: jax.Array, n: int, width: int,
                      chunk: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Exact top-n frames of one layer ``x`` (B, T, D_l) -> three (width, n) arrays (padded neurons empty).

    Two stages, exact under the tie rule: frames are cut into blocks of ``chunk`` consecutive frames of a
    row; the n blocks with the largest maxima are kept (rows in ascending utterance order, so that
    ``lax.top_k``'s lower-index-first tie rule ranks equal maxima by (utterance, frame)); the top n of their
    ``n * chunk`` frames, gathered in ascending (utterance, frame) order, are the batch's top n. A frame
    outside the kept blocks is preceded by the maximum of each of the n kept blocks (a larger value, or
    an equal one earlier in the order), so it cannot be among the top n.
    """
    B, T, d = x.shape
    nb = -(-T // chunk)
    x = jnp.where(valid[:, :, None], jnp.where(x == 0, 0.0, x), -jnp.inf)  # -0.0 ties 0.0; invalid never wins
    bm = jnp.take(_block_max(x, chunk, nb), order, axis=0).reshape(B * nb, d).T  # (D_l, blocks), key order
    nsel = min(n, B * nb)
    _, blocks = lax.top_k(bm, nsel)
    blocks = jnp.sort(blocks, axis=-1)  # ascending key order
    row = jnp.take(order, blocks // nb)  # original row of each kept block
    t0 = (blocks % nb) * chunk
    t = (t0[..., None] + jnp.arange(chunk)).reshape(d, nsel * chunk)  # (D_l, cand) frame in the row
    r = jnp.repeat(row, chunk, axis=-1)
    inside = t < T
    flat = jnp.where(inside, r * T + t, 0)
    cand = jnp.take_along_axis(x.reshape(B * T, d), flat.T, axis=0).T  # (D_l, cand)
    cand = jnp.where(inside, cand, -jnp.inf)
    m = min(n, cand.shape[-1])
    val, j = lax.top_k(cand, m)
    fr = jnp.take_along_axis(t, j, axis=-1)
    rr = jnp.take_along_axis(r, j, axis=-1)
    ok = jnp.take_along_axis(inside, j, axis=-1) & valid[rr, jnp.minimum(fr, T - 1)]
    u = jnp.where(ok, utt[rr], EMPTY).astype(jnp.int32)
    f = jnp.where(ok, fr, EMPTY).astype(jnp.int32)
    val = jnp.where(ok, val, -jnp.inf)
    pad = ((0, width - d), (0, n - m))
    return (jnp.pad(val, pad, constant_values=-jnp.inf), jnp.pad(u, pad, constant_values=EMPTY),
            jnp.pad(f, pad, constant_values=EMPTY))


def _native_layer(x: jax.Array, utt: jax.Array, frame: jax.Array, bound: tuple[jax.Array, ...] | None, n: int,
                  width: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One layer (B, T, D_l) through the native kernel -> three (width, n) arrays (padded neurons empty)."""
    from jaxneurons.stats.native import top_examples

    B, T, d = x.shape
    if bound is None:
        bound = (jnp.full((d,), -jnp.inf, jnp.float32), jnp.full((d,), EMPTY, jnp.int32),
                 jnp.full((d,), EMPTY, jnp.int32))
    val, u, f = top_examples(x.reshape(B * T, d), utt, frame, bound, n=n)
    pad = ((0, width - d), (0, 0))
    return (jnp.pad(val, pad, constant_values=-jnp.inf), jnp.pad(u, pad, constant_values=EMPTY),
            jnp.pad(f, pad, constant_values=EMPTY))


def batch_examples(layers: Sequence[jax.Array], valid: jax.Array, utt_index: jax.Array, n: int, width: int, *,
                   axis_name: str | None = None, chunk: int = 8, native: bool = False,
                   running: Mapping[str, jax.Array] | None = None) -> dict[str, jax.Array]:
    """The batch's top-n frames of every neuron: three (L, width, n) arrays, merged over ``axis_name``.

    ``layers``: L arrays (B, T, D_l); ``valid``: (B, T) bool; ``utt_index``: (B,) global utterance index of
    each row (``-1`` for padding rows, whose frames never count). Inside ``shard_map`` each device works on
    its rows and the candidates are gathered and reduced, so the result is replicated.

    ``native``: the CPU FFI kernel (``jaxneurons/stats/native/examples.cc``) instead of the XLA two-stage
    top-n. It keeps only the frames that come before ``running``'s n-th entry of their neuron (the state
    this batch will be merged into, when given): the other frames cannot enter it, so
    ``merge_examples(running, batch)`` is the same as with the full batch top-n.
    """
    utt_index = utt_index.astype(jnp.int32)
    valid = valid.astype(bool) & (utt_index >= 0)[:, None]
    if native:
        B, T = valid.shape
        utt = jnp.where(valid, utt_index[:, None], -1).reshape(B * T)  # -1: not counted
        frame = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32)[None], (B, T)).reshape(B * T)
        parts = []
        for l, x in enumerate(layers):
            d = x.shape[-1]
            bound = None if running is None else tuple(running[f"{PREFIX}/{k}"][l, :d, n - 1] for k in KEYS)
            parts.append(_native_layer(x, utt, frame, bound, n, width))
    else:
        order = jnp.argsort(utt_index)  # utterance indices are distinct; padding rows (-1) first, all invalid
        parts = [_layer_candidates(x, order, utt_index, valid, n, width, chunk) for x in layers]
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
