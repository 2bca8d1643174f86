"""Per-neuron correlation with a label, from the same single-pass moments.

Point-biserial r between h and a binary label (one class vs another, or vs all other classes) from the
per-class moments of a condition collected with "moments"; Pearson r with a continuous label from its
streaming co-moments (``ContinuousSpec``).
"""

from __future__ import annotations

import numpy as np


def _pool(n, mean, m2):
    """Merge class moments along axis 1 (Chan): (n_tot, mean, m2) with shapes (), (L, D), (L, D)."""
    n_tot = n.sum()
    mu = (n[None, :, None] * mean).sum(1) / n_tot
    m2_tot = m2.sum(1) + (n[None, :, None] * (mean - mu[:, None, :]) ** 2).sum(1)
    return n_tot, mu, m2_tot


def point_biserial(n1, mean1, m2_1, n0, mean0, m2_0) -> np.ndarray:
    """r_pb = (mean1 - mean0) sqrt(n1 n0) / sqrt(n M2_total) (population form); 0 where h is constant."""
    n1, n0 = float(n1), float(n0)
    if n1 <= 0 or n0 <= 0:
        raise ValueError(f"point-biserial needs frames in both groups, got n1={n1}, n0={n0}")
    n = n1 + n0
    d = np.asarray(mean1, np.float64) - np.asarray(mean0, np.float64)
    m2 = np.asarray(m2_1, np.float64) + np.asarray(m2_0, np.float64) + d * d * n1 * n0 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        r = d * np.sqrt(n1 * n0) / np.sqrt(n * m2)
    return np.where(m2 > 0, r, 0.0)


def point_biserial_from_stats(stats, condition: str, positive: int, negative: int | None = None,
                              *, absolute: bool = False) -> np.ndarray:
    """(L, D) r between h (or |h|) and [class == positive], vs class ``negative`` or vs all other classes."""
    a = stats.to_numpy()
    key = "abs_" if absolute else ""
    n = np.asarray(stats.frames(condition), np.float64)
    mean = a[f"{condition}/{key}mean"].astype(np.float64) + a[f"{condition}/{key}mean_lo"]
    m2 = a[f"{condition}/{key}m2"].astype(np.float64) + a[f"{condition}/{key}m2_lo"]
    rest = [c for c in range(n.size) if c != positive] if negative is None else [negative]
    rest = [c for c in rest if n[c] > 0]
    if not rest:
        raise ValueError(f"condition {condition!r}: no frames outside class {positive}")
    n0, mean0, m2_0 = _pool(n[rest], mean[:, rest], m2[:, rest])
    return point_biserial(n[positive], mean[:, positive], m2[:, positive], n0, mean0, m2_0)


def pearson_from_stats(stats, name: str) -> np.ndarray:
    """(L, D) Pearson r between h and a continuous label; 0 where either is constant."""
    a = stats.to_numpy()
    get = lambda k: a[f"{name}/{k}"].astype(np.float64) + a[f"{name}/{k}_lo"]  # noqa: E731
    c, hm2, ym2 = get("c"), get("h_m2"), get("y_m2")
    den = np.sqrt(hm2 * ym2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, c / den, 0.0)
