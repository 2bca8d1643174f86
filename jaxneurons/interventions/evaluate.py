"""Evaluate many ablations with one compiled function.

An ablation sweep (every property group, every head type, N random controls ...) is a stack of masks
``(M, L, D)`` / ``(M, L, H)``. Masks are data to the forward, so the metric function is traced once and
mapped over the mask axis: ``jax.vmap`` (fastest; memory grows with M because every activation gets an M
axis) or ``lax.map`` (one mask, or ``chunk_size`` masks, at a time: memory of one/``chunk_size`` forward(s)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

Array = jax.Array
MetricFn = Callable[..., Any]


def make_mask_evaluator(
    f: MetricFn, *, mode: str = "vmap", chunk_size: int | None = None
) -> Callable[..., Any]:
    """Wrap ``f(state, batch, neuron_mask, head_mask[, neuron_offset]) -> metric`` to run over stacked masks.

    Returns a jitted ``g(state, batch, neuron_masks, head_masks=None, neuron_offsets=None)`` where each given
    mask argument has a leading axis M; ``g`` returns ``f``'s pytree with a leading M axis. A ``None`` mask
    argument is passed to ``f`` as ``None`` for every M (no masking); ``neuron_offset`` is passed only when
    ``neuron_offsets`` is given, so ``f`` may take four arguments. ``g`` is built once: keep it and call it
    for every sweep of the same shapes (one trace and one compile for all of them).

    ``mode="vmap"`` maps all M masks at once; ``mode="map"`` uses ``lax.map`` (``chunk_size`` masks per
    iteration, default 1) when M forwards do not fit in memory.
    """
    if mode not in ("vmap", "map"):
        raise ValueError(f"mode must be 'vmap' or 'map', got {mode!r}")
    if chunk_size is not None and (mode != "map" or chunk_size < 1):
        raise ValueError("chunk_size must be a positive integer and needs mode='map'")

    def run(state, batch, neuron_masks, head_masks, neuron_offsets):
        def one(masks):
            nm, hm, no = masks
            if no is None:
                return f(state, batch, nm, hm)
            return f(state, batch, nm, hm, no)

        masks = (neuron_masks, head_masks, neuron_offsets)
        if mode == "vmap":
            return jax.vmap(one)(masks)
        return jax.lax.map(one, masks, batch_size=chunk_size)

    jitted = jax.jit(run)

    def evaluator(state, batch, neuron_masks=None, head_masks=None, neuron_offsets=None):
        sizes = {name: np.shape(x)[0] for name, x in
                 (("neuron_masks", neuron_masks), ("head_masks", head_masks), ("neuron_offsets", neuron_offsets))
                 if x is not None}
        if not sizes:
            raise ValueError("give at least one stacked mask argument (neuron_masks, head_masks, neuron_offsets)")
        if len(set(sizes.values())) != 1:
            raise ValueError(f"stacked masks disagree on the number of masks M: {sizes}")
        return jitted(state, batch, neuron_masks, head_masks, neuron_offsets)

    evaluator.jitted = jitted  # exposed for cache inspection (``jitted._cache_size()``)
    return evaluator


def evaluate_masks(
    f: MetricFn,
    state: Any,
    batch: Any,
    neuron_masks: Array | np.ndarray | None = None,
    head_masks: Array | np.ndarray | None = None,
    neuron_offsets: Array | np.ndarray | None = None,
    *,
    mode: str = "vmap",
    chunk_size: int | None = None,
) -> Any:
    """One-off convenience around :func:`make_mask_evaluator` (builds a new jitted function every call)."""
    return make_mask_evaluator(f, mode=mode, chunk_size=chunk_size)(
        state, batch, neuron_masks, head_masks, neuron_offsets
    )


def model_metric_fn(graphdef: nnx.GraphDef, metric: Callable[[Any, Any], Any]) -> MetricFn:
    """``f(state, batch, neuron_mask, head_mask, neuron_offset=None)`` for :func:`make_mask_evaluator`.

    Runs the model (``graphdef`` from ``nnx.split(model)``) on ``batch["audio"]``, ``batch["lengths"]`` with
    the masks and returns ``metric(output, batch)`` (e.g. a probe's accuracy on ``output.hidden_states``).
    """

    def f(state, batch, neuron_mask, head_mask, neuron_offset=None):
        model = nnx.merge(graphdef, state)
        out = model(
            batch["audio"], batch["lengths"], neuron_mask=neuron_mask, neuron_offset=neuron_offset,
            head_mask=head_mask,
        )
        return metric(out, batch)

    return f
