"""Helpers shared by the scorers: chance baselines, width masks, JSON-able neuron sets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxneurons.stats.spec import topk_size


def real_neurons(num_layers: int, max_width: int, widths: Sequence[int] | None) -> np.ndarray:
    """(L, D) bool: True for real neurons (all when ``widths`` is None; padding of narrower layers False)."""
    if widths is None:
        return np.ones((num_layers, max_width), bool)
    widths = np.asarray(widths)
    if widths.shape != (num_layers,) or (widths > max_width).any() or (widths < 1).any():
        raise ValueError(f"widths {widths.tolist()} do not fit {num_layers} layers of at most {max_width} neurons")
    return np.arange(max_width)[None, :] < widths[:, None]


def chance_level(widths: Sequence[int], rho: float = 0.01) -> np.ndarray:
    """(L,) top-k chance baseline k_l / D_l with k_l = round(rho * D_l) (arXiv 2409.05910 Sec. 3)."""
    return np.array([topk_size(int(w), rho) / int(w) for w in widths])


def mask_to_sets(mask: np.ndarray, prefix: str = "layers.{i}.ffn") -> dict[str, list[int]]:
    """(L, D) bool -> {"layers.{i}.ffn": sorted neuron indices} (JSON-able; hook-point names)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"neuron mask must be (layers, neurons), got shape {mask.shape}")
    return {prefix.format(i=i): np.flatnonzero(m).tolist() for i, m in enumerate(mask)}


def sets_to_mask(sets: dict[str, list[int]], num_layers: int, max_width: int,
                 prefix: str = "layers.{i}.ffn") -> np.ndarray:
    """Inverse of :func:`mask_to_sets`."""
    out = np.zeros((num_layers, max_width), bool)
    names = {prefix.format(i=i): i for i in range(num_layers)}
    for k, idx in sets.items():
        if k not in names:
            raise ValueError(f"unknown layer key {k!r} (expected {prefix.format(i=0)} ... for {num_layers} layers)")
        idx = np.asarray(idx, int)
        if idx.size and (idx.min() < 0 or idx.max() >= max_width):
            raise ValueError(f"{k}: neuron index out of range [0, {max_width})")
        out[names[k], idx] = True
    return out
