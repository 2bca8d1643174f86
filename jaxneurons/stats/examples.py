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
ascending utterance order, then over the kept blocks' frames; see ``_candidates``) never transposes or
sorts the full activations. Across devices the per-device candidates are gathered over the mesh axis (a
``psum`` of per-device slots) and reduced by a lexicographic sort; across batches the running state and
the batch's candidates, both sorted, are merged by a bitonic merge (:func:`merge_examples`).
Every merge is exact and associative, so 1 device, 8 devices, 2 processes and a resumed scan give
identical arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
    """First ``n`` of two lists each sorted in the tie-rule order (last axis, length n), by a bitonic merge.

    Both lists are padded with empty entries to a power of two P; ``c[i] = better(a[i], b[P-1-i])`` holds the
    top P of the union as a bitonic sequence (descending, then ascending), which log2(P) stages of
    compare-exchanges at distance P/2, P/4, .., 1 sort. Keys are distinct in a scan (every frame is seen once),
    so the result is the unique top n. O(n log n) elementwise work, vs O(n^2) for merge ranks (at n = 16 on
    12 x 3072 neurons: 39 vs 74 ms CPU on XLA CPU, measured on the loaded 2-core machine).
    """
    P = 1 << max(0, (n - 1).bit_length())
    fills = (-jnp.inf, EMPTY, EMPTY)

    def pad(x, fill):
        return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, P - x.shape[-1])], constant_values=fill)

    a = tuple(pad(x, f) for x, f in zip(a, fills, strict=True))
    b = tuple(pad(x, f)[..., ::-1] for x, f in zip(b, fills, strict=True))
    take_b = _before(*b, *a)
    c = tuple(jnp.where(take_b, xb, xa) for xa, xb in zip(a, b, strict=True))
    lead = c[0].shape[:-1]
    d = P // 2
    while d >= 1:  # pairs (i, i + d) within blocks of 2d slots
        parts = [x.reshape(*lead, P // (2 * d), 2, d) for x in c]
        lo = tuple(x[..., 0, :] for x in parts)
        hi = tuple(x[..., 1, :] for x in parts)
        swap = _before(*hi, *lo)
        first = tuple(jnp.where(swap, h, l_) for l_, h in zip(lo, hi, strict=True))
        second = tuple(jnp.where(swap, l_, h) for l_, h in zip(lo, hi, strict=True))
        c = tuple(jnp.stack([f, s_], axis=-2).reshape(*lead, P) for f, s_ in zip(first, second, strict=True))
        d //= 2
    return tuple(x[..., :n] for x in c)


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
    """(B, T, D) -> (B, nb, D): max over frames [c * chunk, (c + 1) * chunk) of each row (strided slices:
    elementwise maxima, no reduction over a short axis; the last block may be short). A max over a reshaped
    (B, nb, chunk, D) axis measured 1.1x (2 x 249 frames) to 2x (8 x 500) slower inside the kernel."""
    m = None
    for j in range(chunk):
        s = x[:, j::chunk]
        if s.shape[1] < nb:
            s = jnp.pad(s, ((0, 0), (0, nb - s.shape[1]), (0, 0)), constant_values=-jnp.inf)
        m = s if m is None else jnp.maximum(m, s)
    return m


def _sort_rows_ascending(v: jax.Array) -> jax.Array:
    """Sort ``v`` (rows, m) int32 ascending along the last axis with a bitonic network of elementwise min / max
    on (rows,) vectors (values only: the entries are distinct block ids, so no payload is needed). XLA:CPU runs
    ``jnp.sort`` along a short axis with a comparator call per comparison: at (3072, 16) the network measured
    about 0.1 ms against 1 ms for the sort."""
    rows, m = v.shape
    P = 1 << max(0, (m - 1).bit_length())
    big = jnp.iinfo(v.dtype).max
    vt = v.T  # (m, rows): each entry a contiguous row (and XLA keeps recognising the top_k that made v)
    cols = [vt[i] for i in range(m)] + [jnp.full((rows,), big, v.dtype)] * (P - m)
    size = 2
    while size <= P:  # bitonic sort: blocks of `size` alternate direction, then merge at strides size/2 .. 1
        stride = size // 2
        while stride >= 1:
            for i in range(P):
                j = i ^ stride
                if j > i:
                    up = (i & size) == 0
                    lo, hi = jnp.minimum(cols[i], cols[j]), jnp.maximum(cols[i], cols[j])
                    cols[i], cols[j] = (lo, hi) if up else (hi, lo)
            stride //= 2
        size *= 2
    return jnp.stack(cols[:m], axis=-1)


def _kept_frames(blocks: jax.Array, order: jax.Array, nb: int, chunk: int) -> tuple[jax.Array, jax.Array]:
    """Kept block ids (neurons, nsel), ascending -> the frame ``t`` and the batch row ``r`` of each candidate,
    (neurons, nsel * chunk), in ascending (utterance, frame) order (``t`` may run past the row's end in its
    last block)."""
    k, nsel = blocks.shape
    row = jnp.take(order, blocks // nb)  # original row of each kept block
    t = ((blocks % nb) * chunk)[..., None] + jnp.arange(chunk)
    return t.reshape(k, nsel * chunk), jnp.repeat(row, chunk, axis=-1)


def _masked(x: jax.Array, valid: jax.Array) -> jax.Array:
    """Invalid frames -> -inf (never win); -0.0 -> 0.0 (ties 0.0)."""
    return jnp.where(valid[:, :, None], jnp.where(x == 0, 0.0, x), -jnp.inf)


def _block_maxima(x: jax.Array, order: jax.Array, valid: jax.Array, chunk: int) -> jax.Array:
    """Stage 1's input: the maxima of blocks of ``chunk`` consecutive frames of a row of one layer ``x``
    (B, T, D_l) -> (D_l, B * nb), rows in ascending utterance order (so that ``lax.top_k``'s
    lower-index-first tie rule ranks equal maxima by (utterance, frame))."""
    B, T, d = x.shape
    nb = -(-T // chunk)
    return jnp.take(_block_max(_masked(x, valid), chunk, nb), order, axis=0).reshape(B * nb, d).T


def _candidates(x: jax.Array, blocks: jax.Array, order: jax.Array, valid: jax.Array,
                chunk: int) -> tuple[jax.Array, jax.Array]:
    """Stage 2's input: the frames of each neuron's kept blocks (D_l, nsel), from stage 1's ``lax.top_k`` ->
    ``(cand, sorted_blocks)``: (D_l, nsel * chunk) values in ascending (utterance, frame) order
    (``_kept_frames``), -inf past a row's end, and the block ids sorted ascending, which index that order.
    (``_masked`` runs again here rather than being passed from ``_block_maxima``: XLA fuses it into the
    gather, where a phase output would materialise the whole masked layer.)

    The two stages are exact under the tie rule: stage 1 keeps the ``nsel = min(n, blocks)`` blocks with the
    largest maxima; stage 2 takes the top ``min(n, nsel * chunk)`` of their frames. A frame outside the kept
    blocks is preceded by the maximum of each of the n kept blocks (a larger value, or an equal one earlier
    in the order), so it cannot be among the top n."""
    B, T, d = x.shape
    blocks = _sort_rows_ascending(blocks)  # ascending key order
    t, r = _kept_frames(blocks, order, -(-T // chunk), chunk)
    inside = t < T
    flat = jnp.where(inside, r * T + t, 0)
    cand = jnp.take_along_axis(_masked(x, valid).reshape(B * T, d), flat.T, axis=0).T
    return jnp.where(inside, cand, -jnp.inf), blocks


def _layer_examples(value: jax.Array, j: jax.Array, block_max: jax.Array, blocks: jax.Array, order: jax.Array,
                    utt: jax.Array, valid: jax.Array, n: int, width: int,
                    chunk: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One layer's stage-2 ``lax.top_k`` outputs ``value, j`` (``j`` indexes the candidates of the sorted
    ``blocks`` from ``_candidates``) and stage 1's ``block_max`` -> three (width, n) arrays value / utt / frame
    (padded neurons empty)."""
    T = valid.shape[1]
    d, nsel = blocks.shape
    m = value.shape[-1]
    t, r = _kept_frames(blocks, order, -(-T // chunk), chunk)
    fr = jnp.take_along_axis(t, j, axis=-1)
    rr = jnp.take_along_axis(r, j, axis=-1)
    ok = (fr < T) & valid[rr, jnp.minimum(fr, T - 1)]
    if m == nsel:
        # Always true (the top n frames are at least the n-th kept block maximum: the n kept maxima are
        # candidates). Reading block_max here keeps every layer's stage-1 outputs alive until the end:
        # XLA:CPU otherwise gives the unused block maxima of all layers one buffer, and a buffer shared
        # between layers orders their top-k calls one after the other (benchmarks/scan.md).
        ok = ok & (value >= block_max[:, nsel - 1:])
    pad = ((0, width - d), (0, n - m))
    return (jnp.pad(jnp.where(ok, value, -jnp.inf), pad, constant_values=-jnp.inf),
            jnp.pad(jnp.where(ok, utt[rr], EMPTY).astype(jnp.int32), pad, constant_values=EMPTY),
            jnp.pad(jnp.where(ok, fr, EMPTY).astype(jnp.int32), pad, constant_values=EMPTY))


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


def _bound(running: Mapping[str, jax.Array] | None, layer: int, d: int, n: int) -> tuple[jax.Array, ...] | None:
    """The running state's n-th entry (value, utt, frame) of each of the layer's ``d`` neurons."""
    return None if running is None else tuple(running[f"{PREFIX}/{k}"][layer, :d, n - 1] for k in KEYS)


def _phase_runner(valid: jax.Array) -> Callable[[Callable[[Any], Any], Any], Any]:
    """``run(fn, payload)``: ``fn(payload)`` inside ``lax.cond(any(valid), ...)``, zeros when no frame is valid.

    Why (XLA:CPU): without a conditional boundary XLA fuses the layer's elementwise producer (the FFN's GELU,
    an expanded erf polynomial) into the examples' gather fusions, which run as scalar loops: +30 % of the
    forward instead of the kernel's own ~6 % (benchmarks/scan.md). A conditional's operands are
    materialised, so the examples read h once, and a device without valid frames skips the work. The
    examples run as four such phases (block maxima, stage-1 top-k, candidate frames, stage-2 top-k): each
    phase's results are alive together at its end, so XLA gives every layer its own buffers, and the
    single-threaded ``lax.top_k`` calls of the 12 layers run on all cores. Inside one phase, buffers that
    XLA shares between layers order the layers' calls one after the other (on 12 x 3072 neurons and 2 x 249
    frames on 2 cores: 198 -> 126-138 ms wall at the same CPU time; benchmarks/bench_examples_kernel.py).
    """
    pred = jnp.any(valid)

    def run(fn: Callable[[Any], Any], payload: Any) -> Any:
        shapes = jax.eval_shape(fn, payload)

        def zeros(operands: tuple) -> Any:
            # typed like the operands (inside shard_map: varying over the mesh axis)
            none = jnp.any(operands[1])
            return jax.tree.map(lambda a: jnp.where(none, jnp.zeros(a.shape, a.dtype), jnp.zeros(a.shape, a.dtype)),
                                shapes)

        return lax.cond(pred, lambda operands: fn(operands[0]), zeros, (payload, valid))

    return run


def batch_examples(layers: Sequence[jax.Array], valid: jax.Array, utt_index: jax.Array, n: int, width: int, *,
                   axis_name: str | None = None, chunk: int = 8, native: bool = False,
                   running: Mapping[str, jax.Array] | None = None,
                   isolate: bool | None = None) -> dict[str, jax.Array]:
    """The batch's top-n frames of every neuron: three (L, width, n) arrays, merged over ``axis_name``.

    ``layers``: L arrays (B, T, D_l); ``valid``: (B, T) bool; ``utt_index``: (B,) global utterance index of
    each row (``-1`` for padding rows, whose frames never count). Inside ``shard_map`` each device works on
    its rows and the candidates are gathered and reduced, so the result is replicated.

    ``running``: the state this batch will be merged into (None: the plain batch top-n). A frame that does
    not come before its neuron's n-th entry there cannot enter it, so ``merge_examples(running, batch)`` is
    the same whether or not such frames are kept. ``native``: the CPU FFI kernel
    (``jaxneurons/stats/native/examples.cc``), which keeps only the frames that can enter; the XLA path
    runs its two top-k stages (``_block_maxima``, ``_candidates``) on every neuron and ignores ``running``.
    """
    utt_index = utt_index.astype(jnp.int32)
    valid = valid.astype(bool) & (utt_index >= 0)[:, None]
    if native:
        B, T = valid.shape
        utt = jnp.where(valid, utt_index[:, None], -1).reshape(B * T)  # -1: not counted
        frame = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32)[None], (B, T)).reshape(B * T)
        parts = [_native_layer(x, utt, frame, _bound(running, l, x.shape[-1], n), n, width)
                 for l, x in enumerate(layers)]
    else:
        order = jnp.argsort(utt_index)  # utterance indices are distinct; padding rows (-1) first, all invalid
        if isolate is None:
            isolate = jax.default_backend() == "cpu"
        run = _phase_runner(valid) if isolate else (lambda fn, payload: fn(payload))
        xs = tuple(layers)
        maxima = run(lambda p: [_block_maxima(x, p[1], p[2], chunk) for x in p[0]], (xs, order, valid))
        first = run(lambda p: [lax.top_k(b, min(n, b.shape[-1])) for b in p], tuple(maxima))
        cands = run(lambda p: [_candidates(x, blocks, p[2], p[3], chunk)
                               for x, (_, blocks) in zip(p[0], p[1], strict=True)], (xs, tuple(first), order, valid))
        second = run(lambda p: [lax.top_k(c, min(n, c.shape[-1])) for c, _ in p], tuple(cands))
        parts = [_layer_examples(v, j, bmax, blocks, order, utt_index, valid, n, width, chunk)
                 for (v, j), (bmax, _), (_, blocks) in zip(second, first, cands, strict=True)]
    out = {f"{PREFIX}/{k}": jnp.stack([p[i] for p in parts]) for i, k in enumerate(KEYS)}
    if axis_name is not None:
        gathered = [_gather(out[f"{PREFIX}/{k}"], axis_name) for k in KEYS]  # (L, W, ndev * n)
        out = dict(zip((f"{PREFIX}/{k}" for k in KEYS), _select(*gathered, n), strict=True))  # not out's order
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
