"""Class-specific neurons by activation entropy: LAPE (arXiv 2402.16438) as used by AAPE (arXiv 2602.15307).

A faithful NumPy port of ``activation()`` in RUCAIBox/Language-Specific-Neurons ``identify.py``:
  p = over_zero / n                                  (L, D, C) probability that h > 0 per class
  p_hat = p / sum_c p  (NaN -> 0);  H = -sum_c p_hat log p_hat  (0 log 0 = 0)
  bar = kthvalue(flat(p), round(len * filter_rate))  (1-based k-th smallest of ALL entries of p)
  H = +inf for neurons with no class p > bar
  selected = the round(L * D * top_rate) neurons of lowest H, pooled over layers
  activation_bar = kthvalue(flat(p), round(len * activation_bar_ratio))
  neuron n belongs to class c if selected and p[n, c] > activation_bar (a neuron may serve several classes)

Reading notes: the activation bar is a quantile of ALL entries of p (``flattened_probs``), not of the
selected neurons' probabilities; with the defaults (both 0.95) it equals ``bar``. ``round`` is Python's
(half to even), as in the original. The original's ``topk(largest=False)`` leaves the order of equal
entropies unspecified; here ties go to the lower flat (layer, neuron) index. The original splits the
result with ``bincount(lang)``, which silently drops trailing classes that got no neuron; we return one
mask per class. Padded neurons of narrower layers (``widths``) are excluded from every quantile and count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxneurons.scoring.common import real_neurons


def _kthvalue(flat: np.ndarray, ratio: float) -> float:
    k = round(len(flat) * ratio)
    if not 1 <= k <= len(flat):
        raise ValueError(f"quantile ratio {ratio} gives k={k} outside [1, {len(flat)}]")
    return float(np.partition(flat, k - 1)[k - 1])


def lape_neurons(
    positive_counts: np.ndarray,
    frames: np.ndarray,
    *,
    top_rate: float = 0.01,
    filter_rate: float = 0.95,
    activation_bar_ratio: float = 0.95,
    widths: Sequence[int] | None = None,
) -> dict:
    """LAPE/AAPE selection from ``h > 0`` counts.

    Args:
      positive_counts: (L, C, D) counts of h > 0 per class (our stats layout; LAPE's over_zero is (L, D, C)).
      frames: (C,) frames per class; all must be > 0.
      top_rate: fraction of all neurons kept, default 0.01 (identify.py; AAPE uses the same 1 %).
      filter_rate: quantile of p below which a neuron is dismissed, default 0.95 (identify.py).
      activation_bar_ratio: quantile of p a kept neuron's class probability must exceed, default 0.95.
      widths: real layer widths when layers were zero-padded.

    Returns dict: ``entropy`` (L, D) (inf = dismissed; NaN on padding), ``p`` (L, C, D), ``bar``,
    ``activation_bar``, ``selected`` (L, D) bool, ``class_masks`` (C, L, D) bool.
    """
    over_zero = np.asarray(positive_counts, np.float64)
    n = np.asarray(frames, np.float64)
    if over_zero.ndim != 3 or n.shape != (over_zero.shape[1],):
        raise ValueError(f"positive counts (L, C, D) {over_zero.shape} and frames (C,) {n.shape} do not match")
    if (n <= 0).any():
        raise ValueError(f"classes {np.flatnonzero(n <= 0).tolist()} have no frames; LAPE needs every class")
    L, C, D = over_zero.shape
    real = real_neurons(L, D, widths)
    p = over_zero / n[None, :, None]                       # (L, C, D)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_hat = p / p.sum(axis=1, keepdims=True)
        p_hat = np.nan_to_num(p_hat, nan=0.0)
        logp = np.where(p_hat > 0, np.log(np.where(p_hat > 0, p_hat, 1.0)), 0.0)
    H = -(p_hat * logp).sum(axis=1)                          # (L, D)
    flat = p.transpose(0, 2, 1)[real].ravel()                # all entries of real neurons
    bar = _kthvalue(flat, filter_rate)
    H = np.where((p > bar).sum(axis=1) == 0, np.inf, H)
    n_sel = round(int(real.sum()) * top_rate)
    Hf = np.where(real, H, np.nan).ravel()
    order = np.argsort(np.where(np.isnan(Hf), np.inf, Hf), kind="stable")
    order = order[real.ravel()[order]][:n_sel]               # padded neurons never selected
    selected = np.zeros(L * D, bool)
    selected[order] = True
    selected = selected.reshape(L, D)
    act_bar = _kthvalue(flat, activation_bar_ratio)
    class_masks = selected[None] & (p.transpose(1, 0, 2) > act_bar)  # (C, L, D)
    return {"entropy": np.where(real, H, np.nan), "p": p, "bar": bar, "activation_bar": act_bar,
            "selected": selected, "class_masks": class_masks}


def class_coverage(class_masks: np.ndarray) -> float:
    """Fraction of classes with at least one specific neuron (AAPE analysis)."""
    m = np.asarray(class_masks, bool)
    return float(m.reshape(m.shape[0], -1).any(axis=1).mean())
