"""Which neurons to keep: the lowest-scoring unprotected neurons are pruned to an exact target count.

- ``scope="layer"`` (default): every layer keeps ``round(density * D_l)`` neurons.
- ``scope="global"``: the model keeps ``round(density * Σ_l D_l)`` neurons in all, wherever they score best
  (a layer may lose many or none; scores must then be comparable across layers).
- ``protected`` neurons (property / speaker / class neurons) are removed from the candidate list, so they are
  never pruned. If a layer (or the model, for global scope) has more protected neurons than the target keeps,
  the target is unreachable: an error, or with ``clamp=True`` all protected neurons are kept and that layer
  ends above the target density (the only deviation ``clamp`` allows).
- ``alive`` marks neurons that still exist (masked iterative pruning): dead neurons are neither counted as
  candidates nor kept.

``round`` is round-half-up (``floor(x + 0.5)``), not Python's banker's rounding. Ties in score are broken by
(layer, index): of equal scores the lower layer, then the lower index, is pruned first, so results are
deterministic (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from jaxneurons.pruning.scores import LayerValues, as_bool_rows, as_rows, pack_rows


class PruningError(ValueError):
    """A pruning target that cannot be met (too many protected neurons, too few alive ones, bad density)."""


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def keep_count(width: int, density: float) -> int:
    """Neurons kept out of ``width`` at ``density``: ``round(density * width)``."""
    if not 0.0 <= density <= 1.0:
        raise PruningError(f"density must be in [0, 1], got {density}")
    return round_half_up(density * width)


def _inputs(
    scores: LayerValues, protected: LayerValues | None, alive: LayerValues | None
) -> tuple[list[np.ndarray], list[int], list[np.ndarray], list[np.ndarray]]:
    rows = [r.astype(np.float64) for r in as_rows(scores, name="scores")]
    widths = [r.shape[0] for r in rows]
    for layer, r in enumerate(rows):
        if np.isnan(r).any():
            raise PruningError(f"scores of layer {layer} contain NaN")
    prot = as_bool_rows(protected, widths, "protected") if protected is not None else [np.zeros(w, bool)
                                                                                       for w in widths]
    live = as_bool_rows(alive, widths, "alive") if alive is not None else [np.ones(w, bool) for w in widths]
    return rows, widths, [p & a for p, a in zip(prot, live, strict=True)], live


def _prune_lowest(score: np.ndarray, candidates: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` lowest-scoring candidates (ties: lower index first)."""
    idx = np.flatnonzero(candidates)
    order = np.lexsort((idx, score[idx]))
    return idx[order[:count]]


def select_layer(
    score: np.ndarray,
    target: int,
    *,
    protected: np.ndarray,
    alive: np.ndarray,
    clamp: bool = False,
    layer: int = 0,
) -> np.ndarray:
    """Keep mask of one layer with exactly ``target`` kept neurons (see module docstring)."""
    n_alive, n_prot = int(alive.sum()), int((protected & alive).sum())
    if target > n_alive:
        raise PruningError(f"layer {layer}: asked to keep {target} neurons but only {n_alive} are left")
    if n_prot > target:
        if not clamp:
            raise PruningError(
                f"layer {layer}: {n_prot} protected neurons but the target keeps only {target}; shrink the "
                "protected set, raise the density, or pass clamp=True to keep every protected neuron"
            )
        target = n_prot
    keep = alive.copy()
    keep[_prune_lowest(score, alive & ~protected, n_alive - target)] = False
    return keep


def select_keep(
    scores: LayerValues,
    n_keep: int | Sequence[int],
    *,
    scope: str = "layer",
    protected: LayerValues | None = None,
    alive: LayerValues | None = None,
    clamp: bool = False,
) -> LayerValues:
    """Keep masks (bool, same layout as ``scores``) with ``n_keep`` neurons per layer, or in all (``global``)."""
    rows, widths, prot, live = _inputs(scores, protected, alive)
    if scope == "layer":
        targets = [int(n_keep)] * len(rows) if np.isscalar(n_keep) else [int(n) for n in n_keep]
        if len(targets) != len(rows):
            raise PruningError(f"n_keep has {len(targets)} entries for {len(rows)} layers")
        return pack_rows([
            select_layer(s, t, protected=p, alive=a, clamp=clamp, layer=i)
            for i, (s, t, p, a) in enumerate(zip(rows, targets, prot, live, strict=True))
        ])
    if scope != "global":
        raise PruningError(f"scope must be 'layer' or 'global', got {scope!r}")
    if not np.isscalar(n_keep):
        raise PruningError("global scope takes one total n_keep")
    target = int(n_keep)
    offsets = np.cumsum([0, *widths])
    flat_score, flat_prot, flat_alive = (np.concatenate(x) for x in (rows, prot, live))
    n_alive, n_prot = int(flat_alive.sum()), int(flat_prot.sum())
    if target > n_alive:
        raise PruningError(f"asked to keep {target} neurons but only {n_alive} are left")
    if n_prot > target:
        if not clamp:
            raise PruningError(
                f"{n_prot} protected neurons but the global target keeps only {target}; shrink the protected set, "
                "raise the density, or pass clamp=True to keep every protected neuron"
            )
        target = n_prot
    keep = flat_alive.copy()
    keep[_prune_lowest(flat_score, flat_alive & ~flat_prot, n_alive - target)] = False
    return pack_rows([keep[offsets[i]:offsets[i + 1]] for i in range(len(rows))])


def prune_to_density(
    scores: LayerValues,
    density: float,
    *,
    scope: str = "layer",
    protected: LayerValues | None = None,
    alive: LayerValues | None = None,
    clamp: bool = False,
) -> LayerValues:
    """Keep masks at ``density`` of each layer's full width (``layer``) or of all neurons (``global``)."""
    widths = [r.shape[0] for r in as_rows(scores, name="scores")]
    if scope == "layer":
        n_keep: int | list[int] = [keep_count(w, density) for w in widths]
    else:
        n_keep = keep_count(sum(widths), density)
    return select_keep(scores, n_keep, scope=scope, protected=protected, alive=alive, clamp=clamp)
