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
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxneurons.heads.metrics import METRIC_NAMES

__all__ = ["HeadStats", "init_head_stats", "update_head_stats", "merge_head_stats", "finalize_head_stats"]


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
