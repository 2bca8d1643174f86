"""Overlap between neuron sets, and a shuffled-set null for it.

Sets are boolean masks ``(L, D)`` (layer x neuron), or index sets that :func:`as_mask` turns into
masks. Two overlap measures (study 5, after arXiv 2408.17324):

* IoU ``|A ∩ B| / |A ∪ B|`` (symmetric);
* containment ``|A ∩ B| / |A|`` (asymmetric: the share of A that is also in B).

Both are given per layer and pooled over layers (pooled = ratio of the summed counts, not the
mean of per-layer ratios, so big layers weigh by their size). **0/0 is NaN**: the IoU of two
empty sets and the containment of an empty A are undefined, and NaN keeps them from being
averaged in as 0 or 1 by accident (use ``np.nanmean`` knowingly).

Null: random sets with the same number of neurons per layer as the observed ones. Under that
null, ``|A ∩ B'|`` for a uniformly random ``B'`` of size ``|B|`` in a layer of D neurons is
hypergeometric(D, |A|, |B|), and the union follows as ``|A| + |B| - |A ∩ B'|``; so the default
draws the intersections directly from numpy's hypergeometric sampler (exactly the distribution
of shuffling, vectorised over draws and layers). ``method="permute"`` literally shuffles each
layer's mask of B instead (slower; the tests check both agree).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "as_mask",
    "set_overlap",
    "overlap_matrix",
    "overlap_null",
    "overlap_matrix_null",
]

METRICS = ("iou", "containment")


def as_mask(s, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A neuron set as an (L, D) bool mask.

    Accepts an (L, D) bool array; or, with ``shape=(L, D)``, a mapping ``layer -> indices`` or a
    sequence of L index collections. Out-of-range or negative indices are errors (never dropped).
    """
    if isinstance(s, np.ndarray) or (hasattr(s, "shape") and hasattr(s, "dtype")):
        m = np.asarray(s)
        if m.dtype != bool:
            raise ValueError(f"a mask must be boolean, got dtype {m.dtype} (pass indices with shape=)")
        if m.ndim != 2:
            raise ValueError(f"a mask must be (L, D), got shape {m.shape}")
        if shape is not None and m.shape != tuple(shape):
            raise ValueError(f"mask shape {m.shape} != expected {tuple(shape)}")
        return m
    if shape is None:
        raise ValueError("index sets need shape=(L, D) to become masks")
    n_layers, d = shape
    if isinstance(s, Mapping):
        items: Iterable = s.items()
    elif isinstance(s, Sequence):
        if len(s) != n_layers:
            raise ValueError(f"got index sets for {len(s)} layers, expected {n_layers}")
        items = enumerate(s)
    else:
        raise TypeError(f"cannot read a neuron set from {type(s).__name__}")
    m = np.zeros((n_layers, d), bool)
    for layer, idx in items:
        layer = int(layer)
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} out of range [0, {n_layers})")
        idx = np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx, dtype=np.int64).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= d):
            raise ValueError(f"layer {layer}: neuron index out of range [0, {d}): "
                             f"{idx[(idx < 0) | (idx >= d)][:5].tolist()}")
        m[layer, idx] = True
    return m


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _metric(inter, size_a, size_b, metric: str) -> np.ndarray:
    if metric == "iou":
        return _ratio(inter, size_a + size_b - inter)
    if metric == "containment":
        return _ratio(inter, size_a)
    raise ValueError(f"unknown overlap metric {metric!r}; expected one of {METRICS}")


def set_overlap(a, b, shape: tuple[int, int] | None = None) -> dict[str, np.ndarray | float]:
    """Overlap of two neuron sets, per layer (L,) and pooled (scalars).

    Returns ``size_a, size_b, intersection, union`` (per layer, int64), ``iou``,
    ``containment`` (= |A∩B|/|A|, per layer, float, NaN for 0/0) and ``pooled_iou``,
    ``pooled_containment`` (floats, NaN for 0/0).
    """
    a = as_mask(a, shape)
    b = as_mask(b, a.shape)
    if a.shape != b.shape:
        raise ValueError(f"sets have different shapes {a.shape} and {b.shape}")
    size_a = a.sum(1).astype(np.int64)
    size_b = b.sum(1).astype(np.int64)
    inter = (a & b).sum(1).astype(np.int64)
    union = size_a + size_b - inter
    return {
        "size_a": size_a,
        "size_b": size_b,
        "intersection": inter,
        "union": union,
        "iou": _ratio(inter, union),
        "containment": _ratio(inter, size_a),
        "pooled_iou": float(_ratio(inter.sum(), union.sum())),
        "pooled_containment": float(_ratio(inter.sum(), size_a.sum())),
    }


def _stack(sets: Mapping[str, object], shape) -> tuple[list[str], np.ndarray]:
    if not sets:
        raise ValueError("no sets given")
    names = list(sets)
    first = as_mask(sets[names[0]], shape)
    masks = np.stack([first] + [as_mask(sets[n], first.shape) for n in names[1:]])
    return names, masks


def overlap_matrix(
    sets: Mapping[str, object], metric: str = "iou", *, per_layer: bool = False,
    shape: tuple[int, int] | None = None,
) -> tuple[list[str], np.ndarray]:
    """Pairwise overlap of many named sets: ``(names, M)`` with ``M[i, j]`` = metric(set_i, set_j).

    ``metric="containment"`` gives ``|S_i ∩ S_j| / |S_i|`` (rows = the set being contained).
    Pooled over layers by default (``M`` is (S, S)); ``per_layer=True`` gives (S, S, L).
    Computed with one matrix product of the float masks.
    """
    names, masks = _stack(sets, shape)
    f = masks.astype(np.float32)  # (S, L, D)
    inter = np.einsum("ild,jld->ijl", f, f).round().astype(np.int64)  # exact: counts < 2**24
    sizes = masks.sum(2).astype(np.int64)  # (S, L)
    size_a, size_b = sizes[:, None, :], sizes[None, :, :]
    if not per_layer:
        inter, size_a, size_b = inter.sum(2), size_a.sum(2), size_b.sum(2)
    return names, _metric(inter, size_a, size_b, metric)


def _null_intersections(a: np.ndarray, size_b: np.ndarray, n_draws: int, rng, method: str) -> np.ndarray:
    """Intersections (n_draws, L) of fixed A with random sets of sizes ``size_b`` per layer."""
    n_layers, d = a.shape
    size_a = a.sum(1)
    if method == "hypergeometric":
        return rng.hypergeometric(size_a, d - size_a, size_b, size=(n_draws, n_layers)).astype(np.int64)
    if method == "permute":
        out = np.empty((n_draws, n_layers), np.int64)
        for layer in range(n_layers):
            base = np.zeros(d, bool)
            base[: size_b[layer]] = True
            shuffled = rng.permuted(np.broadcast_to(base, (n_draws, d)), axis=1)
            out[:, layer] = (shuffled & a[layer]).sum(1)
        return out
    raise ValueError(f"unknown null method {method!r}; expected 'hypergeometric' or 'permute'")


def _summarise(observed, null, percentiles) -> dict[str, np.ndarray]:
    """Null mean/std/percentiles over axis 0 and the exceedance p-value of ``observed``."""
    # All-NaN columns (every draw 0/0) legitimately give NaN statistics: silence numpy's warning.
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        valid = ~np.isnan(null)
        n_valid = valid.sum(0)
        ge = (np.where(valid, null, -np.inf) >= np.asarray(observed)[None] - 1e-12).sum(0)
        p = np.where(np.isnan(observed) | (n_valid == 0), np.nan, (1 + ge) / np.maximum(1 + n_valid, 1))
        out = {
            "observed": np.asarray(observed, np.float64),
            "null_mean": np.nanmean(null, 0),
            "null_std": np.nanstd(null, 0),
            "p_value": p,
        }
        pct = np.nanpercentile(null, percentiles, axis=0)
    for q, v in zip(percentiles, pct, strict=True):
        out[f"null_p{q:g}"] = v
    return out


def overlap_null(
    a, b, *, n_draws: int = 1000, seed: int | np.random.SeedSequence = 0, method: str = "hypergeometric",
    percentiles: Sequence[float] = (2.5, 50, 97.5), shape: tuple[int, int] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Shuffled-set null for the overlap of A and B.

    B is replaced by ``n_draws`` random sets with B's size in every layer (seeded); A stays.
    Returns, for each of ``iou``, ``containment``, ``pooled_iou``, ``pooled_containment``:
    ``observed``, ``null_mean``, ``null_std``, ``null_p{q}`` for each percentile, and
    ``p_value`` = (1 + #draws with null >= observed) / (1 + #draws) (one-sided: is the overlap
    larger than chance?). Draws whose null overlap is 0/0 (NaN) are left out of that layer's
    statistics; a NaN observed overlap gets a NaN p-value.
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    a = as_mask(a, shape)
    b = as_mask(b, a.shape)
    obs = set_overlap(a, b)
    rng = np.random.default_rng(seed)
    size_a = obs["size_a"]
    size_b = obs["size_b"]
    inter = _null_intersections(a, size_b, n_draws, rng, method)  # (N, L)
    res = {}
    for metric in METRICS:
        null = _metric(inter, size_a[None], size_b[None], metric)
        res[metric] = _summarise(obs[metric], null, percentiles)
        pooled = _metric(inter.sum(1), size_a.sum(), size_b.sum(), metric)
        res[f"pooled_{metric}"] = _summarise(np.float64(obs[f"pooled_{metric}"]), pooled, percentiles)
    return res


def overlap_matrix_null(
    sets: Mapping[str, object], metric: str = "iou", *, n_draws: int = 1000, seed: int = 0,
    shape: tuple[int, int] | None = None,
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Pooled overlap matrix of many sets with a shuffled-set null for every ordered pair.

    Returns ``(names, {"observed", "null_mean", "null_std", "z", "p_value"})``, each (S, S):
    for pair (i, j) set j is re-drawn at random with its per-layer sizes (hypergeometric draws,
    seeded per pair from ``seed``); ``z = (observed - null_mean) / null_std`` (NaN if the null
    has no spread). The diagonal compares a set with random sets of its own size.
    """
    names, masks = _stack(sets, shape)
    _, observed = overlap_matrix(dict(zip(names, masks, strict=True)), metric)
    s = len(names)
    out = {key: np.full((s, s), np.nan) for key in ("null_mean", "null_std", "z", "p_value")}
    out["observed"] = observed
    seeds = np.random.SeedSequence(seed).spawn(s * s)
    for i in range(s):
        for j in range(s):
            r = overlap_null(masks[i], masks[j], n_draws=n_draws, seed=seeds[i * s + j],
                             percentiles=(50,))[f"pooled_{metric}"]
            out["null_mean"][i, j] = r["null_mean"]
            out["null_std"][i, j] = r["null_std"]
            out["p_value"][i, j] = r["p_value"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["z"] = np.where(out["null_std"] > 0, (observed - out["null_mean"]) / out["null_std"], np.nan)
    return names, out
