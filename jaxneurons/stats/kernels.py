"""The per-batch statistics kernel: pure, jit-able, optionally reduced over a mesh axis.

Inputs per batch (from any ``forward_fn``):
  ``h``: FFN post-activation values, ``(L, B, T, D)`` float32, or a tuple of L arrays ``(B, T, D_l)``
  for physically pruned models (zero-padded to ``max(D_l)`` here, so one kernel serves all layers);
  ``valid``: ``(B, T)`` bool, False on padded frames;
  ``labels``: name -> ``(B, T)`` or ``(B,)`` ints (condition sets, -1 = ignore) or floats (continuous,
  NaN = ignore); ``selections``: name -> ``(B, T)`` bool.

On the CPU backend ``topk_method="auto"`` runs the top-k and ``h > 0`` counts in a native XLA FFI kernel
(``jaxneurons/stats/native``: one pass over each layer's ``h``, same tie rule, same counts); elsewhere,
or when it cannot be built, the pure-XLA formulations below.

Formulations chosen for XLA CPU (see benchmarks/stats_kernel.md and benchmarks/scan.md):
  * layer by layer: each layer's ``h`` is used at its own width and never stacked (only the moment and
    correlation statistics build the ``(L, N, D_max)`` stack), so nothing copies all layers' activations;
  * top-k events: top-k *indices* scatter-added into one flat int32 count array covering every layer and
    every condition set (a dump row absorbs ignored frames); never ``abs(h) >= kth`` (a 30x cliff);
  * ``h > 0`` counts and moments: ``one_hot(labels)^T @ x`` matmuls in float32 (bool reductions over
    leading axes are a 7x cliff).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jaxneurons.stats.examples import batch_examples
from jaxneurons.stats.native import neuron_counts, resolve_topk_method
from jaxneurons.stats.spec import StatsConfig
from jaxneurons.stats.state import NeuronStats, float_dtype, merge_stats, state_shapes
from jaxneurons.stats.topk import topk_indices

Activations = jax.Array | Sequence[jax.Array]


def stack_activations(h: Activations, config: StatsConfig) -> jax.Array:
    """``(L, B, T, D_max)`` float32 from a stacked array or a per-layer tuple (zero-padded)."""
    L, D = config.num_layers, config.max_width
    if isinstance(h, (list, tuple)):
        if len(h) != L:
            raise ValueError(f"activations: got {len(h)} layers, config has {L}")
        parts = []
        for i, (x, w) in enumerate(zip(h, config.widths, strict=True)):
            if x.ndim != 3 or x.shape[-1] != w:
                raise ValueError(f"activations: layer {i} has shape {x.shape}, expected (B, T, {w})")
            if x.shape[:2] != h[0].shape[:2]:
                raise ValueError(f"activations: layer {i} has (B, T) = {x.shape[:2]}, layer 0 {h[0].shape[:2]}")
            parts.append(jnp.pad(x.astype(jnp.float32), ((0, 0), (0, 0), (0, D - w))))
        return jnp.stack(parts)
    if h.ndim != 4 or h.shape[0] != L or h.shape[-1] != D or len(set(config.widths)) != 1:
        raise ValueError(f"activations: got shape {h.shape}, expected (L={L}, B, T, D={D}) with equal "
                         f"widths (config widths {config.widths}); pass a tuple of per-layer arrays otherwise")
    return h.astype(jnp.float32)


def layer_activations(h: Activations, config: StatsConfig) -> list[jax.Array]:
    """The L per-layer float32 arrays ``(B, T, D_l)`` of a stacked array or a per-layer tuple (validated).

    The kernel works layer by layer on these: stacking (a copy of every layer's ``h``) is left to the
    statistics that need it (moments, correlations).
    """
    L = config.num_layers
    if isinstance(h, (list, tuple)):
        if len(h) != L:
            raise ValueError(f"activations: got {len(h)} layers, config has {L}")
        for i, (x, w) in enumerate(zip(h, config.widths, strict=True)):
            if x.ndim != 3 or x.shape[-1] != w:
                raise ValueError(f"activations: layer {i} has shape {x.shape}, expected (B, T, {w})")
            if x.shape[:2] != h[0].shape[:2]:
                raise ValueError(f"activations: layer {i} has (B, T) = {x.shape[:2]}, layer 0 {h[0].shape[:2]}")
        return [x.astype(jnp.float32) for x in h]
    D = config.max_width
    if h.ndim != 4 or h.shape[0] != L or h.shape[-1] != D or len(set(config.widths)) != 1:
        raise ValueError(f"activations: got shape {h.shape}, expected (L={L}, B, T, D={D}) with equal "
                         f"widths (config widths {config.widths}); pass a tuple of per-layer arrays otherwise")
    h = h.astype(jnp.float32)
    return [h[i] for i in range(L)]


def _positive_counts(ohT: jax.Array, x: jax.Array, width: int) -> jax.Array:
    """``(C, width)`` int32 counts of ``x > 0`` per class: ``one_hot^T @ (x > 0)`` in float32 (exact below
    2**24 frames per batch), zero-padded from ``x``'s own width to ``width``."""
    cnt = lax.dot_general(ohT, (x > 0).astype(jnp.float32), (((1,), (0,)), ((), ())),
                          preferred_element_type=jnp.float32)
    cnt = jnp.round(cnt).astype(jnp.int32)
    return jnp.pad(cnt, ((0, 0), (0, width - x.shape[-1])))


def _frame_labels(x: jax.Array, B: int, T: int, what: str) -> jax.Array:
    if x.shape == (B,):
        return jnp.broadcast_to(x[:, None], (B, T))
    if x.shape != (B, T):
        raise ValueError(f"{what}: shape {x.shape} does not match the activations' (B, T) = ({B}, {T}) or (B,)")
    return x


def _class_sum(oh: jax.Array, v: jax.Array, dtype=jnp.float32) -> jax.Array:
    """``(L, C, D) = one_hot^T @ v[l]`` for every layer, as a batched matmul.

    Written with an explicit layer batch dimension: ``einsum("nc,lnd->lcd")`` makes XLA transpose the
    whole (L, N, D) activation tensor first (measured 3x slower).
    """
    L = v.shape[0]
    ohT = jnp.broadcast_to(oh.T.astype(dtype)[None], (L, oh.shape[1], oh.shape[0]))
    return lax.dot_general(ohT, v.astype(dtype), (((2,), (1,)), ((0,), (0,))), preferred_element_type=dtype)


def _per_frame(a: jax.Array, cls: jax.Array) -> jax.Array:
    """(L, C, D) per-class values -> (L, N, D) per frame; frames of the ignore class C get 0."""
    return jnp.take(jnp.pad(a, ((0, 0), (0, 1), (0, 0))), cls, axis=1)


def _psum(x, axis_name):
    return x if axis_name is None else lax.psum(x, axis_name)


def batch_partials(
    h: Activations,
    valid: jax.Array,
    labels: Mapping[str, jax.Array],
    selections: Mapping[str, jax.Array] | None,
    config: StatsConfig,
    *,
    axis_name: str | None = None,
    topk_method: str = "auto",
    shifts: Mapping[str, jax.Array] | None = None,
    utt_index: jax.Array | None = None,
) -> NeuronStats:
    """Statistics of one batch as a NeuronStats, psum-reduced over ``axis_name``.

    ``utt_index``: (B,) global utterance index of each row (-1 = padding row); required when the config
    keeps max-activating examples (``config.examples > 0``, see :mod:`jaxneurons.stats.examples`).

    Batch means are returned as pairs ``(hi=shift, lo=mean - shift)`` where ``shifts`` holds the running
    means (keys ``{cond}/mean``, ``{cond}/abs_mean``, ``{y}/y_mean``, ``{y}/h_mean``; zero if None).
    ``topk_method`` (top-k and ``h > 0`` counts; identical results): "auto" = "native" on the CPU backend
    when the native kernel is available, else "topk"; "native" (the FFI kernel, error if unavailable),
    "topk" (``lax.top_k`` indices + scatter-add, matmul for h > 0) or "blocked" (two-stage top-k).
    """
    selections = selections or {}
    layers = layer_activations(h, config)  # L arrays (B, T, D_l): never stacked unless moments need it
    B, T = layers[0].shape[:2]
    L, D = config.num_layers, config.max_width
    N = B * T
    if valid.shape != (B, T):
        raise ValueError(f"valid mask: shape {valid.shape} does not match the activations' (B, T) = ({B}, {T})")
    flat_layers = [x.reshape(N, x.shape[-1]) for x in layers]
    stacked: list[jax.Array] = []

    def stacked_x() -> jax.Array:
        """(L, N, D_max) zero-padded stack, built only for the moment / correlation statistics."""
        if not stacked:
            stacked.append(jnp.stack([jnp.pad(x, ((0, 0), (0, D - x.shape[-1]))) for x in flat_layers]))
        return stacked[0]

    f = float_dtype()
    valid = valid.astype(bool)
    sel_masks = {}
    for name in config.selections():
        if name not in selections:
            raise KeyError(f"selection {name!r} is required by the config but missing from the batch")
        sel_masks[name] = _frame_labels(selections[name], B, T, f"selection {name!r}").astype(bool)

    def frame_mask(sel):
        return valid if sel is None else valid & sel_masks[sel]

    out: dict[str, jax.Array] = {k: jnp.zeros(s, d) for k, (s, d) in state_shapes(config).items()}
    rows: dict[str, jax.Array] = {}      # per condition: (N,) class index, C = ignored
    onehots: dict[str, jax.Array] = {}   # per condition: (N, C) float32, zero rows for ignored frames
    for c in config.conditions:
        if c.name not in labels:
            raise KeyError(f"labels for condition {c.name!r} are missing from the batch")
        lab = _frame_labels(jnp.asarray(labels[c.name]), B, T, f"labels {c.name!r}").astype(jnp.int32)
        m = frame_mask(c.selection)
        ok = m & (lab >= 0) & (lab < c.num_classes)
        out[f"{c.name}/rejected"] = _psum(jnp.sum(m & ((lab < -1) | (lab >= c.num_classes)), dtype=jnp.int32),
                                          axis_name)
        cls = jnp.where(ok, lab, c.num_classes).reshape(N)
        rows[c.name] = cls
        oh = jax.nn.one_hot(cls, c.num_classes, dtype=jnp.float32)  # class C -> all-zero row
        onehots[c.name] = oh
        out[f"{c.name}/frames"] = _psum(jnp.round(oh.sum(0)).astype(jnp.int32), axis_name)

    tk = [c for c in config.conditions if "topk" in c.stats]
    pc = [c for c in config.conditions if "positive" in c.stats]
    method = resolve_topk_method(topk_method) if tk or pc or config.examples else topk_method

    def offsets(conds):
        offs, R = {}, 0
        for c in conds:
            offs[c.name] = R
            R += c.num_classes
        return offs, R

    t_offs, Rt = offsets(tk)
    p_offs, Rp = offsets(pc)

    def split(counts, conds, offs, kind):
        for c in conds:
            out[f"{c.name}/{kind}"] = counts[:, offs[c.name]:offs[c.name] + c.num_classes]

    if method == "native" and (tk or pc):
        # ---- native CPU kernel: top-k and h > 0 counts of each layer in one pass over its h (see
        # jaxneurons/stats/native); one call per layer for per-layer inputs, so that it can run as soon as
        # that layer's h exists.
        crow = [jnp.where(rows[c.name] < c.num_classes, rows[c.name] + offs[c.name], -1)
                for conds, offs in ((tk, t_offs), (pc, p_offs)) for c in conds]
        row_arr = jnp.stack(crow).astype(jnp.int32)  # (S, N), -1 = frame not counted
        kw = dict(n_topk=len(tk), topk_rows=Rt, positive_rows=Rp)
        if isinstance(h, (list, tuple)):
            t_parts, p_parts = [], []
            for x, k in zip(flat_layers, config.ks, strict=True):
                t_l, p_l = neuron_counts(x, row_arr, k=k, **kw)
                pad = ((0, 0), (0, D - x.shape[-1]))
                t_parts.append(jnp.pad(t_l, pad))
                p_parts.append(jnp.pad(p_l, pad))
            t_cnt, p_cnt = jnp.stack(t_parts), jnp.stack(p_parts)
        else:  # a stacked (L, B, T, D) array: one call, so no per-layer slice is copied for the FFI operand
            t_cnt, p_cnt = neuron_counts(h.reshape(L, N, D).astype(jnp.float32), row_arr, k=config.ks[0], **kw)
        if tk:
            split(_psum(t_cnt, axis_name), tk, t_offs, "topk")
        if pc:
            split(_psum(p_cnt, axis_name), pc, p_offs, "positive")
    else:
        # ---- top-k membership: per layer, top-k indices of |h_l| at the layer's own width (nothing
        # stacked or padded, so XLA can run each layer's top-k as soon as its h exists); one scatter-add
        # of all indices (a dump row absorbs ignored frames).
        if tk:
            dump, R = Rt, Rt + 1
            base = {c.name: jnp.where(rows[c.name] < c.num_classes, rows[c.name] + t_offs[c.name], dump)
                    for c in tk}  # (N,) count row of every frame
            flats = []
            for l, (x, k) in enumerate(zip(flat_layers, config.ks, strict=True)):
                idx = topk_indices(jnp.abs(x), k, method=method)  # (N, k_l), indices < D_l
                for c in tk:
                    flats.append((((l * R + base[c.name]) * D)[:, None] + idx).reshape(-1))
            flat = jnp.concatenate(flats)
            counts = jnp.zeros(L * R * D, jnp.int32).at[flat].add(1, mode="promise_in_bounds")
            split(_psum(counts.reshape(L, R, D), axis_name), tk, t_offs, "topk")
        # ---- h > 0 counts: per layer, one matmul against the concatenated one-hots.
        if pc:
            ohT = jnp.concatenate([onehots[c.name] for c in pc], axis=1).T  # (sumC, N)
            per_layer = [_positive_counts(ohT, x, D) for x in flat_layers]
            split(_psum(jnp.stack(per_layer), axis_name), pc, p_offs, "positive")

    # ---- max-activating examples: the batch's exact top-N frames per neuron, merged over the mesh.
    if config.examples:
        if utt_index is None:
            raise KeyError("the config keeps max-activating examples but the batch has no 'utt_index' (B,)")
        if utt_index.shape != (B,):
            raise ValueError(f"utt_index: shape {utt_index.shape}, expected (B,) = ({B},)")
        out.update(batch_examples(layers, valid, utt_index, config.examples, D, axis_name=axis_name,
                                  native=method == "native", running=shifts))

    # ---- per-class moments of h and |h| (two passes: global batch mean, then centred squares).
    for c in config.conditions:
        if "moments" not in c.stats:
            continue
        oh = onehots[c.name]
        n_b = out[f"{c.name}/frames"].astype(f)  # already reduced over the mesh
        inv = jnp.where(n_b > 0, 1.0 / jnp.where(n_b > 0, n_b, 1), 0.0)[None, :, None]
        cls = rows[c.name]
        seen = (jnp.zeros(c.num_classes, bool) if shifts is None
                else shifts[f"{c.name}/frames"] > 0)[None, :, None]
        has = (oh.sum(0) > 0).astype(f)  # this device has frames of the class
        first = jnp.argmax(oh, axis=0)  # a frame of each class on this device
        x = stacked_x()
        for val, m, v in ((x, "mean", "m2"), (jnp.abs(x), "abs_mean", "abs_m2")):
            # Shift by the running mean (hi part) so that the batch sums are of small numbers: the batch
            # mean is then the exact pair (shift, d) and Chan's delta keeps full precision. Classes seen
            # for the first time are shifted by one of their frames (averaged over devices).
            rep = _psum(jnp.take(val, first, axis=1).astype(f) * has[None, :, None], axis_name)
            rep = rep / jnp.maximum(_psum(has, axis_name), 1)[None, :, None]
            shift = rep if shifts is None else jnp.where(seen, shifts[f"{c.name}/{m}"], rep)
            per_frame = partial(_per_frame, cls=cls)
            xs = val.astype(f) - per_frame(shift)  # ignored frames: zero one-hot row below
            d = _psum(_class_sum(oh, xs, f), axis_name) * inv
            centred = xs - per_frame(d)
            out[f"{c.name}/{m}"] = shift
            out[f"{c.name}/{m}_lo"] = d
            out[f"{c.name}/{v}"] = _psum(_class_sum(oh, centred * centred, f), axis_name)

    # ---- continuous labels: moments and co-moment with every neuron (shifted like the class moments).
    for y in config.continuous:
        if y.name not in labels:
            raise KeyError(f"labels for continuous label {y.name!r} are missing from the batch")
        yv = _frame_labels(jnp.asarray(labels[y.name]), B, T, f"labels {y.name!r}").astype(f)
        m = frame_mask(y.selection) & ~jnp.isnan(yv)
        w = m.reshape(N).astype(f)
        yv = jnp.where(m, yv, 0.0).reshape(N)
        n_b = _psum(jnp.sum(m, dtype=jnp.int32), axis_name)
        nf = n_b.astype(f)
        inv = jnp.where(nf > 0, 1.0 / jnp.where(nf > 0, nf, 1), 0.0)
        has = (nf > 0).astype(f) if axis_name is None else jnp.any(m).astype(f)
        first = jnp.argmax(w)
        x = stacked_x()
        ndev = jnp.maximum(_psum(has, axis_name), 1)
        y_rep = _psum(yv[first] * has, axis_name) / ndev
        h_rep = _psum(x[:, first, :].astype(f) * has, axis_name) / ndev
        seen = jnp.asarray(False) if shifts is None else shifts[f"{y.name}/n"] > 0
        ys = y_rep if shifts is None else jnp.where(seen, shifts[f"{y.name}/y_mean"], y_rep)
        hsh = h_rep if shifts is None else jnp.where(seen, shifts[f"{y.name}/h_mean"], h_rep)
        yv = (yv - ys) * w
        xs = x.astype(f) - hsh[:, None, :]
        y_d = _psum(jnp.sum(yv), axis_name) * inv
        h_d = _psum(_class_sum(w[:, None], xs, f)[:, 0], axis_name) * inv
        dy = (yv - y_d) * w
        dh = xs - h_d[:, None, :]  # ignored frames have weight 0 below
        out[f"{y.name}/n"] = n_b
        out[f"{y.name}/y_mean"], out[f"{y.name}/y_mean_lo"] = ys, y_d
        out[f"{y.name}/h_mean"], out[f"{y.name}/h_mean_lo"] = hsh, h_d
        out[f"{y.name}/y_m2"] = _psum(jnp.sum(dy * dy), axis_name)
        out[f"{y.name}/h_m2"] = _psum(_class_sum(w[:, None], dh * dh, f)[:, 0], axis_name)
        out[f"{y.name}/c"] = _psum(_class_sum(dy[:, None], dh, f)[:, 0], axis_name)
    return NeuronStats(out, config)


def update_stats(
    stats: NeuronStats,
    h: Activations,
    valid: jax.Array,
    labels: Mapping[str, jax.Array],
    selections: Mapping[str, jax.Array] | None = None,
    *,
    axis_name: str | None = None,
    topk_method: str = "auto",
    utt_index: jax.Array | None = None,
) -> NeuronStats:
    """Fold one batch into ``stats`` (pure; jit it, or call it inside a jitted forward step)."""
    part = batch_partials(h, valid, labels, selections, stats.config, axis_name=axis_name,
                          topk_method=topk_method, shifts=stats.arrays, utt_index=utt_index)
    return merge_stats(stats, part)
