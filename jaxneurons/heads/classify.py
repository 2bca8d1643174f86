"""Head typing: diagonal / vertical / global, and head masks by type for ablation.

A head's type is its largest metric. By default (``normalize="none"``, METHODS section 4, arXiv
2409.03115) the metrics are compared as they are: the normalised kinds of diagonality, verticality
and globalness all lie in [0, 1], so a head whose attention is spread is global whatever the other
heads do, and a model whose heads are all global has only global heads. ``"zscore"`` / ``"minmax"``
(options only) first normalise each metric across the model's L x H heads, i.e. type a head by the
metric on which it stands out *relative to the other heads*; that gives every model all three types
by construction, so it is not the default. Optional absolute thresholds (metric name -> minimum raw
value) restrict which types a head may take; a head that meets none is untyped (-1). Ties: the
earlier type in :data:`HEAD_TYPES`. Heads with NaN metrics (no data) are untyped.

Ablation (study 4): multiply a head's attention probabilities by 0 after the softmax;
:func:`type_head_mask` builds the (L, H) multiplier for "all heads of one type" or "all but one
type".
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxneurons.heads.metrics import METRIC_NAMES

__all__ = ["HEAD_TYPES", "UNTYPED", "normalize_metrics", "head_types", "type_masks", "type_head_mask"]

HEAD_TYPES = ("diagonal", "vertical", "global")  # one per metric, in METRIC_NAMES order
UNTYPED = -1
NORMALIZATIONS = ("zscore", "minmax", "none")


def normalize_metrics(mean_metrics, normalize: str = "none") -> np.ndarray:
    """Normalise each metric across all heads of the model: (L, H, 3) -> (L, H, 3).

    NaN heads are ignored in the statistics and stay NaN. A metric with no spread across heads
    normalises to 0 for every head (it cannot tell heads apart).
    """
    m = np.asarray(mean_metrics, np.float64)
    if m.ndim != 3 or m.shape[-1] != len(METRIC_NAMES):
        raise ValueError(f"mean_metrics must be (L, H, {len(METRIC_NAMES)}), got {m.shape}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize={normalize!r} is not one of {NORMALIZATIONS}")
    if normalize == "none":
        return m.copy()
    flat = m.reshape(-1, m.shape[-1])
    if np.all(np.isnan(flat)):
        return m.copy()
    with np.errstate(invalid="ignore"):
        if normalize == "zscore":
            centre, scale = np.nanmean(flat, 0), np.nanstd(flat, 0)
        else:
            centre = np.nanmin(flat, 0)
            scale = np.nanmax(flat, 0) - centre
    scale = np.where(scale > 0, scale, np.inf)  # no spread -> (x - centre) / inf = 0
    return (m - centre) / scale


def head_types(
    mean_metrics,
    *,
    normalize: str = "none",
    thresholds: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Type of every head, (L, H) int8: index into :data:`HEAD_TYPES`, or -1 (untyped).

    ``mean_metrics`` (L, H, 3) in :data:`METRIC_NAMES` order (e.g. ``finalize_head_stats(...)
    ["mean"]``). ``thresholds``: metric name -> minimum *raw* value for a head to take that
    metric's type (e.g. ``{"diagonality": 0.8}``).
    """
    m = np.asarray(mean_metrics, np.float64)
    z = normalize_metrics(m, normalize)
    allowed = np.ones(m.shape, bool)
    for name, thr in (thresholds or {}).items():
        if name not in METRIC_NAMES:
            raise ValueError(f"unknown metric {name!r} in thresholds; expected one of {METRIC_NAMES}")
        allowed[..., METRIC_NAMES.index(name)] = m[..., METRIC_NAMES.index(name)] >= thr
    bad = np.any(np.isnan(m), axis=-1)
    score = np.where(allowed, z, -np.inf)
    types = np.argmax(score, axis=-1).astype(np.int8)
    untyped = bad | ~np.any(allowed, axis=-1)
    return np.where(untyped, UNTYPED, types).astype(np.int8)


def type_masks(types) -> dict[str, np.ndarray]:
    """Type name -> (L, H) bool mask of the heads of that type (plus ``"untyped"``)."""
    t = np.asarray(types)
    out = {name: t == i for i, name in enumerate(HEAD_TYPES)}
    out["untyped"] = t == UNTYPED
    return out


def type_head_mask(types, head_type: str, *, keep_only: bool = False) -> np.ndarray:
    """(L, H) float32 multiplier for attention probabilities (1 keep, 0 ablate).

    ``keep_only=False``: ablate every head of ``head_type``. ``keep_only=True``: ablate every
    head *not* of ``head_type`` ("all but one type"; untyped heads are ablated too).
    """
    if head_type not in HEAD_TYPES:
        raise ValueError(f"unknown head type {head_type!r}; expected one of {HEAD_TYPES}")
    of_type = np.asarray(types) == HEAD_TYPES.index(head_type)
    return (of_type if keep_only else ~of_type).astype(np.float32)
