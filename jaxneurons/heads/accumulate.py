"""Streaming statistics of head metrics over a dataset, without storing attention maps.

Per batch, :func:`jaxneurons.heads.metrics.head_metrics` turns attention (L, B, H, T, T) into
per-utterance metrics (L, B, H, 3); :func:`update_head_stats` folds them into a
:class:`HeadStats` pytree holding, per layer x head x metric, the number of finite values, their
sum and sum of squares, and a fixed-bin histogram (the distribution over utterances). States
from different shards/processes combine with :func:`merge_head_stats` (all fields add), so a
``psum`` over the data axis works too.

Nothing is dropped silently: NaN metrics (undefined: utterances shorter than 2 frames) are
counted in ``n_nan``; values outside the histogram range go to the edge bins and are counted in
``n_out_of_range``. Batch-padding utterances (``valid=False``, by default ``length == 0``) are
not data and are not counted anywhere.

Sums are float32 (JAX default, no x64); each batch is summed first and then added to the running
total, which limits rounding growth to one addition per batch.

:class:`HeadTopUtterances` keeps, per layer x head x metric, the ``n`` utterances with the largest metric
(the most diagonal / vertical / global utterances of each head, for the explorer), exactly and in O(L * H *
3 * n) memory: :func:`update_head_top` merges each batch's valid, finite values into it on the host (a few
hundred numbers per utterance, negligible next to the forward).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxneurons.heads.metrics import METRIC_NAMES

__all__ = ["HeadStats", "HeadTopUtterances", "finalize_head_stats", "init_head_stats", "init_head_top",
           "merge_head_stats", "merge_head_top", "reference_head_top", "update_head_stats", "update_head_top"]


class HeadStats(NamedTuple):
    """Accumulated per (layer, head, metric) statistics; a pytree of arrays."""

    count: jax.Array  # (L, H, 3) int32 finite values seen
    total: jax.Array  # (L, H, 3) float32 sum
    total_sq: jax.Array  # (L, H, 3) float32 sum of squares
    hist: jax.Array  # (L, H, 3, n_bins) int32
    n_nan: jax.Array  # (L, H, 3) int32 undefined values (counted, not in the sums)
    n_out_of_range: jax.Array  # (L, H, 3) int32 values clipped into the edge bins
    lo: jax.Array  # (3,) histogram lower edge per metric
    hi: jax.Array  # (3,) histogram upper edge per metric


def init_head_stats(
    n_layers: int, n_heads: int, *, n_bins: int = 50,
    ranges: tuple[tuple[float, float], ...] = ((0.0, 1.0),) * 3,
) -> HeadStats:
    """Empty statistics. ``ranges`` = histogram (lo, hi) per metric, in :data:`METRIC_NAMES`
    order; the default (0, 1) fits the normalised metric kinds (the raw kinds need their own)."""
    if n_layers < 1 or n_heads < 1 or n_bins < 1:
        raise ValueError(f"need n_layers, n_heads, n_bins >= 1, got {n_layers}, {n_heads}, {n_bins}")
    if len(ranges) != len(METRIC_NAMES) or any(not hi > lo for lo, hi in ranges):
        raise ValueError(f"ranges must be {len(METRIC_NAMES)} pairs (lo, hi) with hi > lo, got {ranges}")
    z = jnp.zeros((n_layers, n_heads, 3), jnp.int32)
    return HeadStats(
        count=z, total=z.astype(jnp.float32), total_sq=z.astype(jnp.float32),
        hist=jnp.zeros((n_layers, n_heads, 3, n_bins), jnp.int32), n_nan=z, n_out_of_range=z,
        lo=jnp.asarray([r[0] for r in ranges], jnp.float32), hi=jnp.asarray([r[1] for r in ranges], jnp.float32),
    )


@jax.jit
def _update(stats: HeadStats, metrics: jax.Array, valid: jax.Array) -> HeadStats:
    n_bins = stats.hist.shape[-1]
    m = metrics.astype(jnp.float32)  # (L, B, H, 3)
    use = valid[None, :, None, None]
    finite = jnp.isfinite(m) & use
    x = jnp.where(finite, m, 0.0)
    pos = (x - stats.lo) / (stats.hi - stats.lo) * n_bins
    out = finite & ((x < stats.lo) | (x > stats.hi))
    bins = jnp.clip(jnp.floor(pos), 0, n_bins - 1).astype(jnp.int32)  # x == hi falls in the last bin
    onehot = (bins[..., None] == jnp.arange(n_bins)) & finite[..., None]
    return stats._replace(
        count=stats.count + jnp.sum(finite, axis=1, dtype=jnp.int32),
        total=stats.total + jnp.sum(x, axis=1),
        total_sq=stats.total_sq + jnp.sum(x * x, axis=1),
        hist=stats.hist + jnp.sum(onehot, axis=1, dtype=jnp.int32),
        n_nan=stats.n_nan + jnp.sum(jnp.isnan(m) & use, axis=1, dtype=jnp.int32),
        n_out_of_range=stats.n_out_of_range + jnp.sum(out, axis=1, dtype=jnp.int32),
    )


def update_head_stats(stats: HeadStats, metrics, valid=None, lengths=None) -> HeadStats:
    """Fold per-utterance metrics (L, B, H, 3) into ``stats``.

    ``valid`` (B,) bool marks real utterances; if omitted it is ``lengths > 0`` when ``lengths``
    is given, else every utterance. Infinite metric values are an error (no metric kind yields
    them); NaN is counted in ``n_nan``.
    """
    n_layers, n_heads = stats.count.shape[:2]
    if metrics.ndim != 4 or metrics.shape[0] != n_layers or metrics.shape[2] != n_heads or metrics.shape[3] != 3:
        raise ValueError(f"metrics must be (L={n_layers}, B, H={n_heads}, 3), got {metrics.shape}")
    b = metrics.shape[1]
    if valid is None:
        valid = jnp.asarray(lengths) > 0 if lengths is not None else jnp.ones((b,), bool)
    valid = jnp.asarray(valid)
    if valid.shape != (b,) or valid.dtype != jnp.bool_:
        raise ValueError(f"valid must be a (B={b},) bool array, got {valid.dtype} {valid.shape}")
    if not isinstance(metrics, jax.core.Tracer) and bool(jnp.any(jnp.isinf(jnp.asarray(metrics)))):
        raise ValueError("metrics contain inf")
    return _update(stats, jnp.asarray(metrics), valid)


def merge_head_stats(a: HeadStats, b: HeadStats) -> HeadStats:
    """Combine two states over disjoint data (e.g. two shards)."""
    if a.hist.shape != b.hist.shape or not (np.array_equal(a.lo, b.lo) and np.array_equal(a.hi, b.hi)):
        raise ValueError("cannot merge head statistics with different shapes or histogram ranges")
    return HeadStats(a.count + b.count, a.total + b.total, a.total_sq + b.total_sq, a.hist + b.hist,
                     a.n_nan + b.n_nan, a.n_out_of_range + b.n_out_of_range, a.lo, a.hi)


def finalize_head_stats(stats: HeadStats) -> dict[str, np.ndarray]:
    """Means, standard deviations (population) and histograms as numpy.

    Returns ``mean``, ``std`` (L, H, 3; NaN where no finite value was seen), ``count``,
    ``n_nan``, ``n_out_of_range`` (L, H, 3), ``hist`` (L, H, 3, n_bins) and ``bin_edges``
    (3, n_bins + 1).
    """
    count = np.asarray(stats.count).astype(np.float64)
    total = np.asarray(stats.total, np.float64)
    total_sq = np.asarray(stats.total_sq, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / count, np.nan)
        var = np.where(count > 0, np.maximum(total_sq / count - mean**2, 0.0), np.nan)
    n_bins = stats.hist.shape[-1]
    edges = np.stack([np.linspace(lo, hi, n_bins + 1) for lo, hi in zip(np.asarray(stats.lo),
                                                                         np.asarray(stats.hi), strict=True)])
    return {
        "mean": mean, "std": np.sqrt(var), "count": np.asarray(stats.count),
        "n_nan": np.asarray(stats.n_nan), "n_out_of_range": np.asarray(stats.n_out_of_range),
        "hist": np.asarray(stats.hist), "bin_edges": edges,
    }


# ---------------------------------------------------------------- top utterances per head and metric

_NO_UTT = np.iinfo(np.int64).max  # empty slots sort after every real utterance


class HeadTopUtterances(NamedTuple):
    """Per (layer, head, metric) the ``n`` utterances with the largest metric, best first.

    Tie rule: larger value first, then the lower utterance index (manifest order), so every merge order
    gives the same arrays. Empty slots (fewer than ``n`` utterances with a finite value): value NaN, utt -1.
    """

    value: np.ndarray  # (L, H, 3, n) float32
    utt: np.ndarray  # (L, H, 3, n) int64 manifest index


def init_head_top(n_layers: int, n_heads: int, n: int) -> HeadTopUtterances:
    """Empty top lists (``n`` >= 1 slots per layer x head x metric)."""
    if n < 1:
        raise ValueError(f"top utterances per head: n must be >= 1, got {n}")
    shape = (n_layers, n_heads, len(METRIC_NAMES), n)
    return HeadTopUtterances(np.full(shape, np.nan, np.float32), np.full(shape, -1, np.int64))


def _select_top(value: np.ndarray, utt: np.ndarray, n: int) -> HeadTopUtterances:
    """First ``n`` along the last axis in the tie rule order; NaN values (undefined or empty) never rank."""
    empty = np.isnan(value) | (utt < 0)
    key_v = np.where(empty, np.inf, -value.astype(np.float64))
    key_u = np.where(empty, _NO_UTT, utt)
    order = np.lexsort((key_u, key_v), axis=-1)[..., :n]
    v = np.take_along_axis(value, order, -1)
    u = np.take_along_axis(utt, order, -1)
    gone = np.take_along_axis(empty, order, -1)
    return HeadTopUtterances(np.where(gone, np.nan, v).astype(np.float32), np.where(gone, -1, u).astype(np.int64))


def update_head_top(top: HeadTopUtterances, metrics: Any, utt_index: Any, valid: Any | None = None
                    ) -> HeadTopUtterances:
    """Merge one batch: ``metrics`` (L, B, H, 3), ``utt_index`` (B,) manifest index of each row, ``valid``
    (B,) bool real rows (default: every row with ``utt_index >= 0``). NaN metrics are skipped."""
    m = np.asarray(metrics, np.float32)
    utt = np.asarray(utt_index, np.int64)
    if m.ndim != 4 or m.shape[1] != utt.shape[0] or m.shape[0] != top.value.shape[0] \
            or m.shape[2] != top.value.shape[1] or m.shape[3] != top.value.shape[2]:
        raise ValueError(f"metrics {m.shape} do not match the top lists {top.value.shape[:3]} and utt_index "
                         f"{utt.shape}")
    keep = (utt >= 0) if valid is None else (np.asarray(valid, bool) & (utt >= 0))
    m, utt = m[:, keep], utt[keep]
    cand_v = np.moveaxis(m, 1, -1)  # (L, H, 3, B')
    cand_u = np.broadcast_to(utt, cand_v.shape)
    return _select_top(np.concatenate([top.value, cand_v], -1), np.concatenate([top.utt, cand_u], -1),
                       top.value.shape[-1])


def merge_head_top(a: HeadTopUtterances, b: HeadTopUtterances) -> HeadTopUtterances:
    """Combine the top lists of two disjoint sets of utterances (e.g. two shards)."""
    if a.value.shape != b.value.shape:
        raise ValueError(f"cannot merge top utterances of shapes {a.value.shape} and {b.value.shape}")
    return _select_top(np.concatenate([a.value, b.value], -1), np.concatenate([a.utt, b.utt], -1),
                       a.value.shape[-1])


def reference_head_top(per_utt: np.ndarray, n: int) -> HeadTopUtterances:
    """Plain-Python reference of the top lists from all per-utterance metrics (N, L, H, 3) (tests)."""
    N, L, H, M = per_utt.shape
    out = init_head_top(L, H, n)
    for l, h, k in np.ndindex(L, H, M):
        ranked = sorted((u for u in range(N) if not np.isnan(per_utt[u, l, h, k])),
                        key=lambda u: (-float(per_utt[u, l, h, k]), u))[:n]
        out.value[l, h, k, :len(ranked)] = per_utt[ranked, l, h, k]
        out.utt[l, h, k, :len(ranked)] = ranked
    return out
