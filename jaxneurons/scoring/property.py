"""Property neurons (study 1, arXiv 2409.05910): neurons that fire (top-1% |h|) for one group's cells only.

P(n | cell) = topk_count / frame_count. Neuron n is *meaningful* for a cell if P > k/D (the chance level
of being among the top k of D). score(n, g) = fraction of group g's cells where n is meaningful. n is kept
for g if score >= sigma; the property neurons of g are those kept for g and for no other group of the same
property (exclusive). A "cell" is a class of a condition set, e.g. a phone, or a (gender, phone) pair
encoded by :func:`cross_labels`; a property is a mapping group -> list of cell ids, so any property works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from jaxneurons.scoring.common import chance_level, real_neurons


def cross_labels(a: np.ndarray, b: np.ndarray, num_b: int) -> np.ndarray:
    """Cell id ``a * num_b + b`` of two label arrays (broadcast); -1 where either is -1 (ignored)."""
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    if (b >= num_b).any():
        raise ValueError(f"cross_labels: second label has values >= num_b={num_b}")
    return np.where((a < 0) | (b < 0), -1, a * num_b + b).astype(np.int32)


def cross_groups(group_names: Sequence[str], num_b: int, members: Sequence[int] | None = None) -> dict[str, list[int]]:
    """Groups of crossed cells: group i -> cells (i, m) for m in ``members`` (default all of range(num_b)).

    E.g. gender x phone: ``cross_groups(["male", "female"], 41)``; pitch x voiced phone:
    ``cross_groups(["low", "mid", "high"], 41, voiced_phone_ids)`` (METHODS: pitch uses voiced phones only).
    """
    members = list(range(num_b)) if members is None else [int(m) for m in members]
    return {g: [i * num_b + m for m in members] for i, g in enumerate(group_names)}


def activation_probability(topk_counts: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(L, C, D) P(n | cell); NaN for cells without frames."""
    counts = np.asarray(topk_counts, np.float64)
    frames = np.asarray(frames, np.float64)
    if counts.ndim != 3 or frames.shape != (counts.shape[1],):
        raise ValueError(f"topk counts (L, C, D) {counts.shape} and frames (C,) {frames.shape} do not match")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(frames[None, :, None] > 0, counts / frames[None, :, None], np.nan)


def property_neurons(
    topk_counts: np.ndarray,
    frames: np.ndarray,
    groups: Mapping[str, Sequence[int]],
    *,
    rho: float = 0.01,
    sigma: float = 0.8,
    widths: Sequence[int] | None = None,
    empty_cells: str = "exclude",
) -> dict:
    """Score and select property neurons of one property.

    Args:
      topk_counts: (L, C, D) top-k membership counts per cell; frames: (C,) frames per cell.
      groups: group name -> cell ids (a cell may belong to one group only).
      rho: top-k fraction, default 0.01 = top 1% (arXiv 2409.05910); sets the chance level k/D.
      sigma: keep threshold on the score, default 0.8 (arXiv 2409.05910).
      widths: real width of each layer when layers were zero-padded to D (pruned models); default all D.
      empty_cells: cells of a group with no frames are "exclude"d from its denominator (default; reported
        in the result) or count as "zero" (never meaningful).

    Returns dict: ``scores`` {g: (L, D) float}, ``kept`` {g: (L, D) bool}, ``exclusive`` {g: (L, D) bool}
    (the property neurons), ``chance`` (L,), ``empty_cells`` {g: [cell ids without frames]}.
    """
    if empty_cells not in ("exclude", "zero"):
        raise ValueError(f"empty_cells must be 'exclude' or 'zero', got {empty_cells!r}")
    if not 0.0 < sigma <= 1.0:
        raise ValueError(f"sigma must be in (0, 1], got {sigma}")
    P = activation_probability(topk_counts, frames)
    L, C, D = P.shape
    real = real_neurons(L, D, widths)
    chance = chance_level(widths if widths is not None else [D] * L, rho)
    seen: dict[int, str] = {}
    for g, cells in groups.items():
        for c in cells:
            if not 0 <= int(c) < C:
                raise ValueError(f"group {g!r}: cell id {c} outside [0, {C})")
            if int(c) in seen:
                raise ValueError(f"cell {c} is in groups {seen[int(c)]!r} and {g!r}")
            seen[int(c)] = g
    frames = np.asarray(frames)
    meaningful = np.nan_to_num(P, nan=0.0) > chance[:, None, None]  # (L, C, D)
    scores, kept, empty = {}, {}, {}
    for g, cells in groups.items():
        cells = np.asarray(cells, int)
        empty[g] = [int(c) for c in cells if frames[c] == 0]
        use = cells[frames[cells] > 0] if empty_cells == "exclude" else cells
        if use.size == 0:
            raise ValueError(f"group {g!r} has no cell with frames")
        scores[g] = np.where(real, meaningful[:, use, :].mean(axis=1), 0.0)
        kept[g] = real & (scores[g] >= sigma)
    n_kept = sum(k.astype(int) for k in kept.values())
    exclusive = {g: kept[g] & (n_kept == 1) for g in groups}
    return {"scores": scores, "kept": kept, "exclusive": exclusive, "chance": chance, "empty_cells": empty}
