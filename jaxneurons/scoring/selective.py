"""Selective pruning scores (study 5, arXiv 2408.17324; Pochinkov & Schoots' 'abs' taker).

score = mean|h| on the dataset to forget / (mean|h| on the retained dataset + eps); the neurons with the
highest scores, taken globally over all layers x neurons, are pruned (``h * mask``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxneurons.scoring.common import real_neurons

#: Prune fractions of arXiv 2408.17324 (1, 2, 5, 10, 20 % of all FFN neurons).
DEFAULT_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2)


def selective_scores(forget_mean_abs: np.ndarray, retain_mean_abs: np.ndarray, *, eps: float = 1e-3) -> np.ndarray:
    """(L, D) ``forget / (retain + eps)``; eps = 1e-3 as in the 'abs' scoring of the taker library."""
    f, r = np.asarray(forget_mean_abs, np.float64), np.asarray(retain_mean_abs, np.float64)
    if f.shape != r.shape or f.ndim != 2:
        raise ValueError(f"forget {f.shape} and retain {r.shape} mean |h| must both be (L, D)")
    if (f < 0).any() or (r < 0).any():
        raise ValueError("mean |h| values must be non-negative")
    return f / (r + eps)


def selective_prune_masks(
    scores: np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    *,
    widths: Sequence[int] | None = None,
) -> dict[float, np.ndarray]:
    """{fraction: (L, D) bool, True = prune}: the top ``int(fraction * n)`` scores over all real neurons.

    Global ranking over layers x neurons (arXiv 2408.17324); ties -> lower (layer, neuron) index first.
    Masks are nested: a larger fraction prunes a superset.
    """
    s = np.asarray(scores, np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be (L, D), got {s.shape}")
    real = real_neurons(*s.shape, widths)
    flat = np.where(real, s, -np.inf).ravel()
    n = int(real.sum())
    order = np.argsort(-flat, kind="stable")
    out = {}
    for fr in fractions:
        if not 0.0 <= fr <= 1.0:
            raise ValueError(f"prune fraction must be in [0, 1], got {fr}")
        m = np.zeros(flat.size, bool)
        m[order[: int(fr * n)]] = True
        out[float(fr)] = m.reshape(s.shape)
    return out


def selective_from_stats(stats, condition: str, forget: int, retain: int, *, eps: float = 1e-3,
                         fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict:
    """Scores and masks from a scan's per-class mean |h| (``condition`` collected with "moments").

    ``forget`` / ``retain`` are class ids of the condition (e.g. dataset id). Returns
    {"scores": (L, D), "masks": {fraction: (L, D) bool}}.
    """
    frames = np.asarray(stats.frames(condition))
    for name, c in (("forget", forget), ("retain", retain)):
        if not 0 <= c < frames.size or frames[c] == 0:
            raise ValueError(f"{name} class {c} of condition {condition!r} has no frames")
    arr = stats.to_numpy()
    mean_abs = arr[f"{condition}/abs_mean"].astype(np.float64) + arr[f"{condition}/abs_mean_lo"]
    sc = selective_scores(mean_abs[:, forget], mean_abs[:, retain], eps=eps)
    widths = stats.config.widths
    return {"scores": sc, "masks": selective_prune_masks(sc, fractions, widths=widths)}
