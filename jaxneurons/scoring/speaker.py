"""Label-free speaker neurons (study 2, arXiv 2506.21712), k-means in JAX, and cluster purity.

Cells are (g, c) pairs, g = i-vector cluster (k = 2), c = SSL k-means cluster (k = 3) of one layer's
frame features, encoded as cell id ``g * S + c`` (``cross_labels(g, c, S)``). For each g, neuron n counts
in SSL cluster c if P(n | g, c) > k/D; n is kept for g if it counts in at least sigma of the S clusters;
speaker neurons are kept for exactly one g. SSL-cluster neurons are the same rule with the roles swapped.
Both are :func:`property_neurons` with the matching groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxneurons.scoring.property import property_neurons


def speaker_neurons(
    topk_counts: np.ndarray,
    frames: np.ndarray,
    num_groups: int,
    num_ssl: int,
    *,
    rho: float = 0.01,
    sigma: float = 1.0,
    widths: Sequence[int] | None = None,
) -> dict:
    """Speaker (i-vector group) neurons and SSL-cluster neurons from (g, c) cell counts.

    Args:
      topk_counts: (L, G*S, D) top-k counts per cell g * S + c; frames: (G*S,).
      rho: top-k fraction, default 0.01 (arXiv 2506.21712).
      sigma: fraction of the other factor's clusters required, default 1.0 = the strict intersection the
        paper describes (its released code defaulted to 0.8).

    Returns {"speaker": property_neurons(...) over groups g, "ssl": property_neurons(...) over clusters c}.
    """
    G, S = int(num_groups), int(num_ssl)
    if np.asarray(topk_counts).shape[1] != G * S:
        raise ValueError(f"expected {G}*{S}={G * S} cells, counts have {np.asarray(topk_counts).shape[1]}")
    by_g = {f"group{g}": [g * S + c for c in range(S)] for g in range(G)}
    by_c = {f"ssl{c}": [g * S + c for g in range(G)] for c in range(S)}
    kw = dict(rho=rho, sigma=sigma, widths=widths)
    return {"speaker": property_neurons(topk_counts, frames, by_g, **kw),
            "ssl": property_neurons(topk_counts, frames, by_c, **kw)}


# ---------------------------------------------------------------- k-means

def _sqdist(x: jax.Array, c: jax.Array) -> jax.Array:
    return jnp.maximum((x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :], 0.0)


@partial(jax.jit, static_argnames=("k", "iters"))
def _kmeans(x: jax.Array, key: jax.Array, k: int, iters: int) -> tuple[jax.Array, jax.Array]:
    n = x.shape[0]
    # k-means++ seeding: each next centre drawn with probability proportional to D(x)^2.
    k0, key = jax.random.split(key)
    c = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[jax.random.randint(k0, (), 0, n)])

    def seed(i, state):
        c, key = state
        key, sub = jax.random.split(key)
        d = jnp.where(jnp.arange(k)[None, :] < i, _sqdist(x, c), jnp.inf).min(1)
        logits = jnp.where(d > 0, jnp.log(jnp.where(d > 0, d, 1.0)), -jnp.inf)
        # all points on existing centres (d = 0 everywhere): fall back to a uniform draw
        logits = jnp.where(jnp.isfinite(logits).any(), logits, jnp.zeros_like(logits))
        return c.at[i].set(x[jax.random.categorical(sub, logits)]), key

    c, _ = lax.fori_loop(1, k, seed, (c, key))

    def lloyd(_, c):
        lab = jnp.argmin(_sqdist(x, c), axis=1)
        oh = jax.nn.one_hot(lab, k, dtype=x.dtype)
        cnt = oh.sum(0)
        new = (oh.T @ x) / jnp.maximum(cnt, 1)[:, None]
        return jnp.where(cnt[:, None] > 0, new, c)  # empty cluster keeps its centre

    c = lax.fori_loop(0, iters, lloyd, c)
    return c, jnp.argmin(_sqdist(x, c), axis=1)


def kmeans(x: np.ndarray, k: int, *, iters: int = 100, seed: int = 0, max_points: int | None = None,
           n_init: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """k-means (k-means++ init, ``iters`` Lloyd steps, seeded) -> (centroids (k, F), labels (N,)).

    ``max_points``: fit on a seeded random subsample of the rows (frames), then assign every row.
    ``n_init``: seeded restarts (seeds ``seed .. seed + n_init - 1``), the lowest inertia over all rows wins
    (one start often lands in a poor local optimum on a few hundred i-vectors).
    Default k for SSL frame clusters is 3 and for i-vector clusters 2 (arXiv 2506.21712); pass it.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.shape[0] < k or k < 1:
        raise ValueError(f"kmeans needs (N >= k, F) data and k >= 1; got shape {x.shape}, k={k}")
    if not np.isfinite(x).all():
        raise ValueError("kmeans: data contains NaN or inf")
    if n_init < 1:
        raise ValueError(f"kmeans: n_init must be >= 1, got {n_init}")
    best, best_inertia = None, np.inf
    for s in range(seed, seed + n_init):
        rng = np.random.default_rng(s)
        fit = x if max_points is None or max_points >= len(x) else x[rng.choice(len(x), max_points, replace=False)]
        c, _ = _kmeans(jnp.asarray(fit), jax.random.PRNGKey(s), k, iters)
        c = np.asarray(c)
        labels = kmeans_assign(x, c)
        inertia = float(((x - c[labels]) ** 2).sum())
        if best is None or inertia < best_inertia:
            best, best_inertia = (c, labels), inertia
    return best


def kmeans_assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest-centroid labels (N,) (ties -> lower centroid id)."""
    return np.asarray(jax.jit(lambda a, b: jnp.argmin(_sqdist(a, b), axis=1))(
        jnp.asarray(x, jnp.float32), jnp.asarray(centroids, jnp.float32))).astype(np.int32)


def cluster_purity(clusters: np.ndarray, labels: np.ndarray) -> dict:
    """Purity of clusters vs a reference label (e.g. i-vector clusters vs gender).

    Returns {"purity": sum of majority counts / N, "clusters": {cluster: {"majority": label,
    "fraction": majority share, "size": n}}}. Rows with label -1 are ignored.
    """
    clusters, labels = np.asarray(clusters).ravel(), np.asarray(labels).ravel()
    if clusters.shape != labels.shape:
        raise ValueError(f"clusters {clusters.shape} and labels {labels.shape} differ in length")
    keep = labels >= 0
    clusters, labels = clusters[keep], labels[keep]
    if clusters.size == 0:
        raise ValueError("cluster_purity: no labelled rows")
    out, total = {}, 0
    for c in np.unique(clusters):
        lab = labels[clusters == c]
        vals, cnt = np.unique(lab, return_counts=True)
        j = int(np.argmax(cnt))
        total += int(cnt[j])
        out[int(c)] = {"majority": int(vals[j]), "fraction": float(cnt[j] / lab.size), "size": int(lab.size)}
    return {"purity": total / clusters.size, "clusters": out}
