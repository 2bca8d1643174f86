"""Neuron and head sets -> the mask arrays the forward pass takes.

Conventions (shared with :mod:`jaxneurons.models`):

- A *selection* is a boolean array ``(L, D)`` (neurons) or ``(L, H)`` (heads): True = in the set.
- The forward takes ``neuron_mask`` / ``neuron_offset`` ``(L, D)`` float arrays, FFN ``h -> h * mask + offset``,
  and ``head_mask`` ``(L, H)`` multiplying attention probabilities after the softmax.
- Zero ablation of neuron ``i`` (``h[..., i] = 0``) equals zeroing column ``W2[:, i]`` and keeping ``b2``.
  Mean ablation replaces ``h[..., i]`` by its mean activation ``m_i`` (from the statistics):
  mask 0, offset ``m_i``.
- Neuron-set JSON written by a scan (``neurons.json``): ``{property: {group: {layer: [indices]}}}``; a layer
  key is an integer (``3`` or ``"3"``) or the hook-point name ``"layers.3.ffn"``.

Everything here is NumPy (I/O boundary); the arrays go into the jitted forward as data, so changing a set
never recompiles.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

LayerIndices = Mapping[int | str, Sequence[int]] | Sequence[Sequence[int]]

_HOOK = re.compile(r"^layers\.(\d+)\.(ffn|attn)$")


class InterventionError(ValueError):
    """An ablation or control that cannot be built as asked (bad set, too small a pool for a control)."""


def _layer_id(key: int | str, num_layers: int) -> int:
    """``3``, ``"3"`` or ``"layers.3.ffn"`` -> 3 (checked against ``num_layers``)."""
    hook = _HOOK.match(key) if isinstance(key, str) else None
    if isinstance(key, (int, np.integer, str)) and not isinstance(key, bool) and str(key).strip().lstrip("-").isdigit():
        layer = int(key)
    elif hook:
        layer = int(hook.group(1))
    else:
        raise ValueError(f"layer key {key!r} is neither an integer nor a hook name like 'layers.3.ffn'")
    if not 0 <= layer < num_layers:
        raise ValueError(f"layer {layer} (key {key!r}) out of range for {num_layers} layers")
    return layer


def selection_from_indices(indices: LayerIndices, shape: tuple[int, int]) -> np.ndarray:
    """Per-layer index lists -> boolean selection ``(L, D)``.

    ``indices`` is ``{layer: [i, ...]}`` (layers not named select nothing) or a sequence of L lists.
    Out-of-range or negative indices are an error (a silent wrap-around would ablate the wrong neuron).
    """
    num_layers, width = shape
    sel = np.zeros(shape, dtype=bool)
    if isinstance(indices, Mapping):
        items: Iterable = ((_layer_id(k, num_layers), v) for k, v in indices.items())
    else:
        if len(indices) != num_layers:
            raise ValueError(f"got index lists for {len(indices)} layers, expected {num_layers}")
        items = enumerate(indices)
    for layer, idx in items:
        idx = np.asarray(list(idx), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= width):
            raise ValueError(f"layer {layer}: neuron indices must lie in [0, {width}), got {idx.min()}..{idx.max()}")
        sel[layer, idx] = True
    return sel


def indices_from_selection(selection: np.ndarray) -> dict[int, list[int]]:
    """Boolean ``(L, D)`` -> ``{layer: sorted indices}`` (JSON-able; every layer present, possibly empty)."""
    sel = _as_selection(selection)
    return {layer: np.flatnonzero(row).tolist() for layer, row in enumerate(sel)}


def selections_from_json(
    data: Mapping[str, Any], shape: tuple[int, int], *, properties: Sequence[str] | None = None
) -> dict[tuple[str, str], np.ndarray]:
    """Neuron-set JSON ``{property: {group: {layer: [indices]}}}`` -> ``{(property, group): (L, D) bool}``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"neuron-set JSON must map property -> group -> layer -> indices, got {type(data).__name__}")
    if properties is not None:
        missing = sorted(set(properties) - set(data))
        if missing:
            raise ValueError(f"properties {missing} not in the neuron sets (have {sorted(data)})")
    out = {}
    for prop, groups in data.items():
        if properties is not None and prop not in properties:
            continue
        if not isinstance(groups, Mapping):
            raise ValueError(f"property {prop!r}: expected group -> layer -> indices, got {type(groups).__name__}")
        for group, layers in groups.items():
            if not isinstance(layers, Mapping):
                raise ValueError(f"{prop}/{group}: expected layer -> indices, got {type(layers).__name__}")
            try:
                out[(prop, group)] = selection_from_indices(layers, shape)
            except ValueError as e:
                raise ValueError(f"{prop}/{group}: {e}") from e
    return out


def union(selections: Iterable[np.ndarray]) -> np.ndarray:
    """Union of selections of equal shape (e.g. all groups of a property = the protected set)."""
    sels = [_as_selection(s) for s in selections]
    if not sels:
        raise ValueError("union of no selections")
    return np.logical_or.reduce(sels)


def protected_from_json(data: Mapping[str, Any], shape: tuple[int, int], properties: Sequence[str]) -> np.ndarray:
    """Union over every group of ``properties``: the neurons pruning must keep."""
    return union(selections_from_json(data, shape, properties=properties).values())


def _as_selection(selection: np.ndarray) -> np.ndarray:
    sel = np.asarray(selection)
    if sel.ndim != 2:
        raise ValueError(f"a selection must be 2-D (layers, units), got shape {sel.shape}")
    if sel.dtype != bool:
        if not np.isin(sel, (0, 1)).all():
            raise ValueError("a selection must be boolean (or 0/1)")
        sel = sel.astype(bool)
    return sel


def zero_ablation(selection: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(neuron_mask, neuron_offset) that set the selected neurons to 0 after the activation."""
    sel = _as_selection(selection)
    return (~sel).astype(np.float32), np.zeros(sel.shape, np.float32)


def mean_ablation(selection: np.ndarray, mean_activation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(neuron_mask, neuron_offset) that replace each selected neuron by its mean activation.

    ``mean_activation`` ``(L, D)`` comes from the statistics of a scan (mean of ``h``, not of ``|h|``).
    """
    sel = _as_selection(selection)
    mean = np.asarray(mean_activation, dtype=np.float32)
    if mean.shape != sel.shape:
        raise ValueError(f"mean_activation has shape {mean.shape}, selection {sel.shape}")
    if not np.isfinite(mean[sel]).all():
        raise ValueError("mean_activation is not finite for some selected neurons (no frames counted?)")
    return (~sel).astype(np.float32), np.where(sel, mean, 0.0).astype(np.float32)


def head_selection(heads: Iterable[tuple[int, int]], shape: tuple[int, int]) -> np.ndarray:
    """``[(layer, head), ...]`` pairs -> boolean ``(L, H)`` (per-layer lists: :func:`selection_from_indices`)."""
    sel = np.zeros(shape, bool)
    for pair in heads:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"expected (layer, head) pairs, got {pair!r}")
        layer, head = (int(x) for x in pair)
        if not (0 <= layer < shape[0] and 0 <= head < shape[1]):
            raise ValueError(f"head ({layer}, {head}) out of range for shape {shape}")
        sel[layer, head] = True
    return sel


def head_mask_remove(selection: np.ndarray) -> np.ndarray:
    """Head mask ``(L, H)`` that removes (zeroes the attention of) every selected head."""
    return (~_as_selection(selection)).astype(np.float32)


def head_mask_keep_only(selection: np.ndarray) -> np.ndarray:
    """Head mask ``(L, H)`` that keeps only the selected heads (all others removed)."""
    return _as_selection(selection).astype(np.float32)


def random_controls(
    selection: np.ndarray,
    num_sets: int = 1,
    *,
    seed: int = 0,
    exclude: np.ndarray | bool = True,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Random control sets with the same number of units per layer as ``selection``: ``(num_sets, L, D)`` bool.

    ``exclude=True`` draws only outside ``selection`` (the usual control: "as many other neurons");
    ``exclude=False`` draws from all units; an array excludes that selection instead. ``valid`` ``(L, D)``
    limits draws to existing units (padded layers of a pruned model). Seeded and independent of call order.
    """
    sel = _as_selection(selection)
    if num_sets < 1:
        raise ValueError(f"num_sets must be >= 1, got {num_sets}")
    if isinstance(exclude, (bool, np.bool_)):
        excluded = sel if exclude else np.zeros_like(sel)
    else:
        excluded = _as_selection(exclude)
        if excluded.shape != sel.shape:
            raise ValueError(f"exclude has shape {excluded.shape}, selection {sel.shape}")
    pool = ~excluded
    if valid is not None:
        valid = _as_selection(valid)
        if valid.shape != sel.shape:
            raise ValueError(f"valid has shape {valid.shape}, selection {sel.shape}")
        pool &= valid
    counts = sel.sum(axis=1)
    for layer, (need, have) in enumerate(zip(counts, pool.sum(axis=1), strict=True)):
        if need > have:
            raise InterventionError(
                f"layer {layer}: a random control needs {need} units but only {have} are outside the excluded "
                "set; a control drawn from the set itself would not control for it")
    rng = np.random.default_rng(seed)
    out = np.zeros((num_sets, *sel.shape), bool)
    for s in range(num_sets):
        for layer in range(sel.shape[0]):
            cand = np.flatnonzero(pool[layer])
            out[s, layer, rng.choice(cand, size=int(counts[layer]), replace=False)] = True
    return out
