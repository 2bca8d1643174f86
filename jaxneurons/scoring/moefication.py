"""MoEfication: split each FFN layer's neurons into equal-size "experts" by balanced k-means.

Study 5 (arXiv 2408.17324) follows MoEfication (Zhang et al. 2022, "MoEfication: Transformer
Feed-forward Layers are Mixtures of Experts"): every intermediate neuron i of a layer is
represented by its row ``W1[i, :]`` of the FFN input weight (shape ``(D, d_model)``, one row per
neuron; a Flax ``Linear`` kernel is ``(d_model, D)``, i.e. its transpose), L2-normalised so that
clustering groups neurons by the *direction* they read from the residual stream, not by their
weight norm. The rows are clustered by balanced k-means into equal-size experts: either
``n_experts`` of them (MoEfication's ``split_num`` is this NUMBER of experts) or experts of
``expert_size`` neurons; the default is expert size 32, MoEfication's setting of 96 experts of 32
neurons for D = 3072 (24 experts at D = 768).

Balanced k-means (our own, JAX, jitted): greedy k-means++ initialisation, then Lloyd iterations
whose assignment step solves the capacity-constrained problem

    min_{labels}  sum_i ||x_i - c_{labels_i}||^2   s.t. every cluster holds exactly n / k points.

Its LP dual has one price per cluster: with the right prices, assigning every point to
``argmin_j cost_ij + price_j`` is optimal. Two solvers, both warm-started from the previous
Lloyd iteration's prices and both returning *exactly* balanced clusters:

* ``method="sinkhorn"`` (default): entropic dual ascent on the prices at temperature
  ``tau * spread`` (Sinkhorn column scaling, stabilised by absorption), then greedy capacity
  rounding: points propose to their best cluster with room (by cost + price), clusters accept
  the proposers with the largest regret. Near-optimal (the tests compare it with the exact
  optimum; benchmarks/balanced_kmeans.md compares the k-means result with k-means-constrained)
  and fast on clustered data.
* ``method="auction"``: the Jacobi auction for the transportation problem (Bertsekas &
  Castanon 1989). eps-optimal (total cost within ``n * eps`` of the exact optimum; tests check
  it against ``scipy.optimize.linear_sum_assignment``), but on clustered data near-identical
  points start price wars that need thousands of rounds, so it is the exact reference, not the
  default.

Why no ``argmax``/``top_k``/``cumsum`` over (k, n) in the loops: on XLA:CPU inside a while loop,
variadic reductions (argmax) and ``lax.top_k`` over a (32, 3072) array were several times slower
than max + min written as single-operand reductions, and a cumsum along n (lowered to a
reduce-window) cost more than sorting n keys; single-operand int32 sorts have a fast path, so the
rounding ranks with those (micro-benchmarks on the 2-core development machine while writing this).
Where time goes at the benchmark's setting (3072 x 768, 96 clusters): the greedy k-means++ init
(95 memory-bound steps of a (6, 768) @ (768, 3072) product, about two thirds of a run on random
data; its rows give the first Lloyd iteration's cost matrix), then per Lloyd iteration the
(96, 768) @ (768, 3072) cost matrix, the Sinkhorn steps and the rounding
(benchmarks/balanced_kmeans.md).

Task-specific neuron sets are related to the experts with :func:`cluster_distribution` (counts
per set, layer and cluster) and :func:`concentration` (share of a set in its top cluster(s)
versus random sets of the same size placed on the same clusters).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BalancedKMeansResult",
    "balanced_assignment",
    "balanced_kmeans",
    "normalize_rows",
    "moefy_layer",
    "moefy",
    "num_experts",
    "DEFAULT_EXPERT_SIZE",
    "cluster_distribution",
    "concentration",
]

METHODS = ("sinkhorn", "auction")


# ----------------------------------------------------------------------------------------------
# Balanced assignment kernels (all jit-traceable; costs laid out (k, n) so reductions over the
# k clusters run along the leading axis and vectorise over points)
# ----------------------------------------------------------------------------------------------


def _top2(net):
    """Best row index and best-minus-second-best gap per column of ``net`` (k, n).

    Written with single-operand reductions (max, min): XLA:CPU's variadic argmax / top_k are
    several times slower inside a while loop.
    """
    k = net.shape[0]
    rows = jnp.arange(k, dtype=jnp.int32)[:, None]
    b1 = jnp.max(net, axis=0)
    best = jnp.min(jnp.where(net == b1[None, :], rows, k), axis=0)
    b2 = jnp.max(jnp.where(rows == best[None, :], -jnp.inf, net), axis=0)
    return best, b1 - b2


def _order_key(x):
    """int32 keys that sort like the float32 ``x`` in ``lax.sort`` (total order, ``-0.0`` equal to ``0.0``)."""
    b = jax.lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.int32)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


def _keep_top(cand, score, room, k):
    """Per cluster, keep the ``room[j]`` candidates with the highest ``score`` (ties: lower index).

    ``cand`` (n,) holds a cluster id in [0, k) or ``k`` for "not competing". Returns the keep
    mask (n,). The candidates are put in (cluster, -score, index) order; a candidate is kept if
    its rank within its cluster is below the cluster's room.

    The order comes from two single-operand int32 sorts, which XLA:CPU runs on a fast path (3072
    keys: 0.13 ms, against 1.1 ms for the same sort with 3 operands, measured on the 2-core
    development machine): one sort of the scores' order keys gives each candidate its score rank
    (``searchsorted``; equal scores share a rank), then one sort of ``(cluster * n + rank) * n +
    index``, which decodes to the cluster and the index. When that key would not fit in int32
    (``(k + 1) * n^2 >= 2^31``, e.g. n > 4,700 at k = 96), one stable 3-operand sort gives the
    same order. (An earlier version ranked tied keys with a (k, n) cumsum, which XLA:CPU lowers to
    a reduce-window and which cost more than the whole rest of a rounding round.)
    """
    n = cand.shape[0]
    idx = jnp.arange(n, dtype=jnp.int32)
    if (k + 1) * n * n < 2**31:
        key = _order_key(-score)
        rank = jnp.searchsorted(jnp.sort(key), key, side="left").astype(jnp.int32)
        packed = jnp.sort((cand.astype(jnp.int32) * n + rank) * n + idx)
        s_cand, s_idx = packed // (n * n), packed % n
        # first sorted position of each cluster (k = not competing)
        starts = jnp.searchsorted(packed, jnp.arange(k + 1, dtype=jnp.int32) * (n * n), side="left")
        starts = starts.astype(jnp.int32)
    else:
        s_cand, _, s_idx = jax.lax.sort((cand, -score, idx), num_keys=2, is_stable=True)
        counts = jnp.zeros((k + 1,), jnp.int32).at[cand].add(1)
        starts = jnp.cumsum(counts) - counts
    room_ext = jnp.concatenate([jnp.maximum(room, 0), jnp.zeros((1,), jnp.int32)])
    keep_sorted = (idx - starts[s_cand]) < room_ext[s_cand]
    return jnp.zeros((n,), bool).at[s_idx].set(keep_sorted)


def _auction_rounds(cost_t, prices, size, eps, max_rounds):
    """One eps-phase of the Jacobi auction on costs ``cost_t`` (k, n), starting from ``prices``.

    Returns (labels with -1 = still unassigned, prices, rounds). The result is within
    ``n * eps`` of the optimal balanced assignment cost.
    """
    k, n = cost_t.shape
    room = jnp.full((k,), size, jnp.int32)

    def cond(state):
        labels, _, _, rounds = state
        return jnp.any(labels < 0) & (rounds < max_rounds)

    def body(state):
        labels, bids, prices, rounds = state
        best, gap = _top2(-cost_t - prices[:, None])
        # Bid the price that makes the point indifferent between its two best clusters, plus eps.
        new_bid = prices[best] + gap + eps
        free = labels < 0
        cand = jnp.where(free, best, labels)
        bid = jnp.where(free, new_bid, bids)
        keep = _keep_top(cand, bid, room, k)
        labels = jnp.where(keep, cand, -1)
        # A full cluster's price becomes the lowest bid it keeps; others keep their price.
        counts = jnp.zeros((k,), jnp.int32).at[cand].add(1)
        lowest = jnp.full((k,), jnp.inf, bid.dtype).at[cand].min(jnp.where(keep, bid, jnp.inf))
        prices = jnp.where(counts >= size, lowest, prices)
        return labels, bid, prices, rounds + 1

    init = (jnp.full((n,), -1, jnp.int32), jnp.zeros((n,), cost_t.dtype), prices, jnp.int32(0))
    labels, _, prices, rounds = jax.lax.while_loop(cond, body, init)
    return labels, prices, rounds


#: Over-relaxation of the Sinkhorn price step (Thibault, Chizat, Dossal & Papadakis 2017,
#: "Overrelaxed Sinkhorn-Knopp algorithm for regularized optimal transport"; converges for values in
#: (0, 2) near the fixed point). 1.8 took ~30 % fewer steps than plain Sinkhorn (1.0) on the benchmark's
#: structured data at the same k-means inertia (benchmarks/balanced_kmeans.md).
SINKHORN_OVERRELAX = 1.8


def _sinkhorn_prices(cost_t, prices, size, tau, max_iter, block=16):
    """Entropic dual ascent on cluster prices until every cluster's soft mass is within half a
    point of ``size`` (or ``max_iter`` steps); returns (prices, steps).

    Each step is the Sinkhorn column scaling written on the prices (rows = points carry mass 1,
    columns = clusters carry ``size``), over-relaxed by :data:`SINKHORN_OVERRELAX`. It runs in
    the scaling domain with absorption (Schmitzer 2019): every ``block`` steps the kernel
    ``exp(-(cost + price - row min) / tau)`` is rebuilt from the current prices, and in between
    a step is two mat-vecs and k exps, so the exp of the (k, n) matrix is paid once per block,
    and the scalings stay in float32 range.
    Converging to a tolerance (rather than a fixed step count) makes the prices, hence the
    assignment, a function of the centres alone, so Lloyd iterations settle.
    """
    log_size = jnp.log(jnp.asarray(size, cost_t.dtype))
    tol = 0.5 / size  # |log(mass / size)| <= tol  <=>  mass within ~half a point of size

    def inner(p0, kern):
        def log_mass(p):
            # Within a block prices move at most block * 5 * tau, so the scalings stay finite.
            logu = -(p - p0) / tau
            u = jnp.exp(logu)
            z = u @ kern  # (n,) row normalisers
            return logu + jnp.log(kern @ (1.0 / z))

        def step(carry, _):
            p, err, i = carry
            # A cluster with (numerically) no mass would get log 0 = -inf: bound the step instead.
            raw = log_mass(p) - log_size
            delta = jnp.clip(raw, -5.0, 5.0)
            done = err <= tol
            p_next = p + SINKHORN_OVERRELAX * tau * delta
            return (jnp.where(done, p, p_next), jnp.where(done, err, jnp.max(jnp.abs(raw))),
                    i + (~done).astype(jnp.int32)), None

        return step

    def cond(state):
        _, err, i = state
        return (err > tol) & (i < max_iter)

    def body(state):
        p0, err, i = state
        adj = cost_t + p0[:, None]
        kern = jnp.exp(-(adj - jnp.min(adj, axis=0, keepdims=True)) / tau)  # (k, n), max 1 per column
        (p, err, i), _ = jax.lax.scan(inner(p0, kern), (p0, err, i), None, length=block)
        return p, err, i

    p, _, steps = jax.lax.while_loop(cond, body, (prices, jnp.asarray(jnp.inf, cost_t.dtype), 0))
    return p, steps


def _greedy_round(cost_t, prices, size):
    """Exactly balanced assignment from prices: free points propose to their best cluster with
    room (by cost + price); each cluster accepts its proposers with the largest regret (gap to
    their next choice) up to its room. Ends after at most k + 1 rounds (each round either
    places every proposer or fills a cluster).

    The first round places most points; when at most n / 8 are left, the later rounds run on
    those points' columns only (gathered once), so they cost an eighth of a full round."""
    k, n = cost_t.shape
    adj = cost_t + prices[:, None]

    def rounds(adj, labels, room, r, last):
        """Rounds on the columns of ``adj`` until no point is free or round ``last`` is done."""

        def cond(state):
            labels, _, r = state
            return jnp.any(labels < 0) & (r < last)

        def body(state):
            labels, room, r = state
            net = jnp.where(room[:, None] > 0, -adj, -jnp.inf)
            best, gap = _top2(net)
            gap = jnp.where(jnp.isfinite(gap), gap, jnp.finfo(adj.dtype).max)  # last cluster with room
            free = labels < 0
            cand = jnp.where(free, best, k)
            keep = _keep_top(cand, gap, room, k)
            labels = jnp.where(keep, cand, labels)
            room = room - jnp.zeros((k + 1,), jnp.int32).at[jnp.where(keep, cand, k)].add(1)[:k]
            return labels, room, r + 1

        return jax.lax.while_loop(cond, body, (labels, room, r))

    max_rounds = k + 2
    labels, room, r = rounds(adj, jnp.full((n,), -1, jnp.int32), jnp.full((k,), size, jnp.int32),
                             jnp.int32(0), 1)
    free = labels < 0
    m = max(n // 8, 1)

    def compact(_):
        idx = jnp.nonzero(free, size=m, fill_value=n)[0]
        valid = idx < n
        sub_labels = jnp.where(valid, -1, k)  # padding columns count as placed (label k)
        sub_labels, _, r2 = rounds(adj[:, jnp.minimum(idx, n - 1)], sub_labels, room, r, max_rounds)
        return labels.at[jnp.where(valid, idx, n)].set(sub_labels, mode="drop"), r2

    def full(_):
        out, _, r2 = rounds(adj, labels, room, r, max_rounds)
        return out, r2

    return jax.lax.cond(jnp.sum(free) <= m, compact, full, None)


def _fill_unassigned(labels, size, k):
    """Give every still-unassigned point a free slot, so clusters are exactly balanced.

    Only does something if an auction hit its round cap (the greedy rounding always finishes):
    free slots are listed cluster by cluster and paired with the unassigned points in index order.
    """
    counts = jnp.zeros((k,), jnp.int32).at[jnp.where(labels >= 0, labels, k)].add(1, mode="drop")
    free_per_cluster = size - counts
    # Slot s (0..n-1) of the virtual list of free slots belongs to the cluster whose cumulative
    # free count first exceeds s.
    cum_free = jnp.cumsum(free_per_cluster)
    unassigned = labels < 0
    order_among_free = jnp.cumsum(unassigned) - 1
    slot_cluster = jnp.searchsorted(cum_free, order_among_free, side="right").astype(jnp.int32)
    return jnp.where(unassigned, jnp.minimum(slot_cluster, k - 1), labels)


def _cost_t(x_t, centroids):
    """Squared distances (k, n) less ||x||^2 (the same for every cluster, so it does not change the
    assignment), from ``x_t`` = ``x.T`` (d, n)."""
    return jnp.sum(centroids**2, axis=1)[:, None] - 2.0 * (centroids @ x_t)


def _spread(cost_t):
    """Typical per-point range of costs: the scale for eps / tau."""
    return jnp.mean(jnp.max(cost_t, axis=0) - jnp.min(cost_t, axis=0))


def _assign(cost_t, prices, size, method, rel, n_inner, max_rounds):
    """Balanced assignment for costs (k, n); returns (labels, prices, steps, converged).

    ``rel`` scales the per-point cost spread into the auction's eps or the Sinkhorn tau.
    ``converged`` is False only if the auction hit ``max_rounds``; leftover points then fill the
    free slots, so the labels are always exactly balanced.
    """
    k = cost_t.shape[0]
    scale = jnp.maximum(_spread(cost_t), jnp.finfo(cost_t.dtype).tiny)
    if method == "auction":
        labels, prices, steps = _auction_rounds(cost_t, prices, size, rel * scale, max_rounds)
    else:
        prices, steps = _sinkhorn_prices(cost_t, prices, size, rel * scale, n_inner)
        labels, _ = _greedy_round(cost_t, prices, size)
    converged = jnp.all(labels >= 0)
    labels = _fill_unassigned(labels, size, k)
    # Prices are defined up to a constant; re-centre them so warm starts never drift.
    return labels, prices - jnp.mean(prices), steps, converged


def _centroids(x, labels, k, size):
    return jax.ops.segment_sum(x, labels, num_segments=k) / size


def _kmeanspp(x, x_t, key, k):
    """Greedy k-means++ (Arthur & Vassilvitskii 2007; 2 + log k local trials, as scikit-learn).

    Returns the centres (k, d) and their cost matrix (k, n) as :func:`_cost_t` defines it: each
    step computes the chosen centre's distances to every point anyway, and keeping that row saves
    the first Lloyd iteration its (k, d) @ (d, n) product.

    ``x_t`` is ``x.T`` materialised once by the caller: the (trials, d) @ (d, n) product per step
    reads it contiguously (a quarter faster on XLA:CPU than contracting ``x`` on its last axis).
    The product is memory-bound (x_t is 9.4 MB at the benchmark's 3072 x 768, more than this
    CPU's L3), so the trials cost little more than one row."""
    n, d = x.shape
    trials = 2 + int(np.log(k))
    key, sub = jax.random.split(key)
    first = jax.random.randint(sub, (), 0, n)

    def next_key(key, _):
        key, sub = jax.random.split(key)
        return key, sub

    # The draws of ``jax.random.choice(sub, n, (trials,), p=closest / sum)`` with a fresh ``sub`` per step
    # (the same numbers), made up front: the key splits and uniforms inside the loop cost 6 % of the init.
    _, subs = jax.lax.scan(next_key, key, None, length=k - 1)
    uniforms = jax.vmap(lambda s: jax.random.uniform(s, (trials,), x.dtype))(subs)
    xsq = jnp.sum(x**2, axis=1)
    row0 = xsq[first] - 2.0 * (x[first] @ x_t)  # ||c||^2 - 2 c.x
    closest = jnp.maximum(xsq + row0, 0.0)
    chosen = jnp.zeros((k,), jnp.int32).at[0].set(first)
    cost = jnp.zeros((k, n), x.dtype).at[0].set(row0)

    def step(i, carry):
        chosen, cost, closest = carry
        cum = jnp.cumsum(closest / jnp.maximum(jnp.sum(closest), 1e-30))
        cand = jnp.minimum(jnp.searchsorted(cum, cum[-1] * (1 - uniforms[i - 1])), n - 1)
        rows = xsq[cand][:, None] - 2.0 * (x[cand] @ x_t)  # (trials, n)
        pot = jnp.minimum(closest[None, :], jnp.maximum(xsq[None, :] + rows, 0.0))
        best = jnp.argmin(jnp.sum(pot, axis=1))
        return chosen.at[i].set(cand[best]), cost.at[i].set(rows[best]), pot[best]

    chosen, cost, _ = jax.lax.fori_loop(1, k, step, (chosen, cost, closest))
    return x[chosen], cost


@functools.partial(jax.jit, static_argnames=("k",))
def _init(x, key, k):
    """x.T (materialised once, read by the init and every cost matrix), the k-means++ centres and their costs."""
    x_t = x.T
    centres, cost = _kmeanspp(x, x_t, key, k)
    return x_t, centres, cost


#: XLA:CPU options for the init alone: without the YNNPACK dot fusion its memory-bound (6, d) @ (d, n) products
#: run on XLA's own (multi-threaded) dot, 83 -> 66 ms for the 95 products at 3072 x 768 and about 20 % less time
#: per run on the benchmark's random data; the Lloyd loop's (96, d) @ (d, n) cost matrices are faster with it, so
#: only the init is compiled this way (benchmarks/balanced_kmeans.md). The option is experimental: a JAX
#: without it compiles the init the default way.
_INIT_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.lru_cache(maxsize=32)
def _compiled_init(shape, dtype, key_shape, key_dtype, k, backend):
    lowered = _init.lower(jax.ShapeDtypeStruct(shape, dtype), jax.ShapeDtypeStruct(key_shape, key_dtype), k=k)
    if backend == "cpu":
        try:
            return lowered.compile(compiler_options=_INIT_CPU_OPTIONS)
        except Exception:  # noqa: BLE001 -- an XLA without the option: its default compile below
            pass
    return lowered.compile()


def _kmeans_single(x, key, n_clusters, max_iter, tol, method, rel_start, rel_final, n_inner, max_rounds):
    init = _compiled_init(x.shape, x.dtype, key.shape, key.dtype, int(n_clusters), jax.default_backend())
    x_t, centres, cost = init(x, key)
    return _lloyd(x, x_t, centres, cost, n_clusters, max_iter, tol, method, rel_start, rel_final, n_inner,
                  max_rounds)


@functools.partial(
    jax.jit, static_argnames=("n_clusters", "max_iter", "method", "n_inner", "max_rounds")
)
def _lloyd(x, x_t, centres, cost, n_clusters, max_iter, tol, method, rel_start, rel_final, n_inner, max_rounds):
    n, d = x.shape
    k = n_clusters
    size = n // k
    tol_abs = tol * jnp.mean(jnp.var(x, axis=0))  # same convention as scikit-learn / k-means-constrained
    prices = jnp.zeros((k,), x.dtype)

    def cond(state):
        it, *_, converged = state
        return (it < max_iter) & ~converged

    def body(state):
        # ``cost`` is the cost matrix of ``centres`` (from the init, then from the previous iteration)
        it, centres, cost, prices, rel, rounds, ok, old, _ = state
        labels, prices, r, conv = _assign(cost, prices, size, method, rel, n_inner, max_rounds)
        new = _centroids(x, labels, k, size)
        shift = jnp.sum((new - centres) ** 2)
        # Unchanged labels at the finest eps/tau: nothing can move any more (strict convergence).
        same = jnp.all(labels == old) & (rel <= rel_final)
        # Coarse eps / tau while centres still move a lot, finer as they settle.
        rel = jnp.maximum(rel * 0.3, rel_final)
        converged = same | ((shift <= tol_abs) & (rel <= rel_final))
        # The next iteration, or the final assignment after max_iter, needs the new centres' costs.
        cost = jax.lax.cond(converged, lambda: cost, lambda: _cost_t(x_t, new))
        return it + 1, new, cost, prices, rel, rounds + r, ok & conv, labels, converged

    init = (jnp.int32(0), centres, cost, prices, jnp.asarray(rel_start, x.dtype), jnp.int32(0),
            jnp.bool_(True), jnp.full((n,), -1, jnp.int32), jnp.bool_(False))
    it, centres, cost, prices, _, rounds, ok, last, converged = jax.lax.while_loop(cond, body, init)

    # Converged: the last labels are the result (their means are the centres). k-means-constrained
    # assigns once more to those centres; after a shift <= tol that changed no label in any of the 20
    # benchmark runs (benchmarks/balanced_kmeans.md) and costs a cost matrix and an assignment. Only
    # when max_iter ends the loop unconverged is there a final assignment to the last centres.
    def final(_):
        labels, _, r, conv = _assign(cost, prices, size, method, rel_final, n_inner, max_rounds)
        return labels, r, conv

    labels, r, conv = jax.lax.cond(converged, lambda _: (last, jnp.int32(0), jnp.bool_(True)), final, None)
    centres = _centroids(x, labels, k, size)
    inertia = jnp.sum((x - centres[labels]) ** 2)
    return labels, centres, inertia, it, rounds + r, ok & conv


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BalancedKMeansResult:
    """Outcome of :func:`balanced_kmeans`: every cluster holds exactly ``n / n_clusters`` points."""

    labels: np.ndarray  # (n,) int32 cluster id per point
    centroids: np.ndarray  # (k, d) float32 mean of each cluster's points
    inertia: float  # sum of squared distances of points to their cluster mean
    n_iter: int  # Lloyd iterations of the best init
    steps: int  # total auction rounds or Sinkhorn steps of the best init
    converged: bool  # False only if an auction hit max_rounds (labels were then repaired)
    seed: int  # seed of the best init


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown balanced-assignment method {method!r}; expected one of {METHODS}")


def balanced_assignment(
    cost: np.ndarray,
    *,
    method: str = "auction",
    rel: float | None = None,
    max_steps: int = 200_000,
) -> np.ndarray:
    """Assign n points to k clusters of exactly ``n / k`` points, minimising the summed cost.

    ``cost`` is (n, k). ``method="auction"`` (default here) is eps-optimal with
    ``eps = rel * mean per-point cost range`` (default rel 1e-6), reached by eps-scaling phases;
    ``"sinkhorn"`` is the fast approximation used inside :func:`balanced_kmeans` (``rel`` is then
    the temperature, default 1e-3). Returns labels (n,) int32.
    """
    _check_method(method)
    cost = np.asarray(cost, dtype=np.float32)
    if cost.ndim != 2:
        raise ValueError(f"cost must be (n_points, n_clusters), got shape {cost.shape}")
    n, k = cost.shape
    if k < 1 or n % k:
        raise ValueError(f"{n} points cannot be split into {k} equal clusters")
    if not np.all(np.isfinite(cost)):
        raise ValueError("cost contains NaN or inf")
    if k == 1:
        return np.zeros(n, np.int32)
    if rel is None:
        rel = 1e-6 if method == "auction" else 1e-3
    cost_t = jnp.asarray(cost.T)
    prices = jnp.zeros((k,), jnp.float32)
    # eps-scaling: coarse phases first (x0.1 each), warm-starting the prices; the last is `rel`.
    phases = [r for r in (0.1, 1e-2, 1e-3, 1e-4, 1e-5) if r > rel] + [rel]
    for r in phases:
        labels, prices, _, ok = _assign_jit(cost_t, prices, n // k, method, float(r), max_steps, max_steps)
    if not bool(ok):
        raise RuntimeError(f"balanced assignment did not converge in {max_steps} steps; raise max_steps or rel")
    return np.asarray(labels)


_assign_jit = jax.jit(_assign, static_argnames=("size", "method", "n_inner", "max_rounds"))


def balanced_kmeans(
    x: np.ndarray,
    n_clusters: int,
    *,
    seed: int = 0,
    n_init: int = 1,
    max_iter: int = 100,
    tol: float = 1e-4,
    method: str = "sinkhorn",
    rel_start: float = 0.1,
    rel_final: float = 0.01,
    max_steps: int = 64,
    max_rounds: int = 100_000,
) -> BalancedKMeansResult:
    """Balanced k-means of the rows of ``x`` (n, d) into ``n_clusters`` clusters of n / k points.

    Stops when the squared centre shift is <= ``tol * mean per-feature variance`` (the
    scikit-learn / k-means-constrained convention) or labels no longer change, once eps/tau has
    decayed (x0.3 per iteration) from ``rel_start`` to ``rel_final`` (relative to the per-point
    cost spread). The labels of the converged iteration are the result (no extra assignment to
    their means). ``max_steps`` bounds Sinkhorn steps per assignment (rounded up to whole blocks
    of 16): the prices are warm-started from the previous iteration, so a few dozen steps per
    iteration are enough; on the benchmark's structured data 64 gave lower inertia than 300 (more,
    cheaper iterations) in 0.7x the time (benchmarks/balanced_kmeans.md). ``max_rounds`` bounds
    auction rounds. ``n_init`` seeded restarts (seeds ``seed .. seed + n_init - 1``), lowest inertia wins.
    Deterministic for a given seed on a given backend.
    """
    _check_method(method)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"x must be (n_points, n_features), got shape {x.shape}")
    n = x.shape[0]
    if not isinstance(n_clusters, int | np.integer) or n_clusters < 1:
        raise ValueError(f"n_clusters must be a positive integer, got {n_clusters!r}")
    if n % n_clusters:
        raise ValueError(f"{n} points cannot be split into {n_clusters} clusters of equal size")
    if n_init < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x contains NaN or inf")
    if n_clusters == 1:  # nothing to choose (and the auction's second-best gap would be infinite)
        centre = x.mean(0, keepdims=True)
        return BalancedKMeansResult(np.zeros(n, np.int32), centre, float(np.sum((x - centre) ** 2)), 0, 0,
                                    True, seed)
    xj = jax.device_put(x)
    best: BalancedKMeansResult | None = None
    for s in range(seed, seed + n_init):
        labels, centres, inertia, it, steps, ok = _kmeans_single(
            xj, jax.random.PRNGKey(s), int(n_clusters), int(max_iter), float(tol), method,
            float(rel_start), float(rel_final), int(max_steps), int(max_rounds))
        res = BalancedKMeansResult(np.asarray(labels), np.asarray(centres), float(inertia), int(it),
                                   int(steps), bool(ok), s)
        if best is None or res.inertia < best.inertia:
            best = res
    assert best is not None
    return best


def normalize_rows(w1: np.ndarray) -> np.ndarray:
    """L2-normalise each neuron's row of ``W1`` (D, d_model); a zero row is an error (no direction)."""
    w1 = np.asarray(w1, dtype=np.float32)
    norms = np.linalg.norm(w1, axis=-1, keepdims=True)
    zero = np.argwhere(norms[..., 0] == 0)
    if zero.size:
        raise ValueError(f"W1 has all-zero neuron rows (no direction to cluster) at {zero[:10].tolist()}"
                         f"{' ...' if len(zero) > 10 else ''}")
    return w1 / norms


#: Neurons per expert: MoEfication's setting for a 3072-wide FFN is split_num = 96 experts of 32 neurons
#: (Zhang et al. 2022, used by arXiv 2408.17324); at D = 768 the same expert size gives 24 experts.
DEFAULT_EXPERT_SIZE = 32


def num_experts(d_ff: int, n_experts: int | None = None, expert_size: int | None = None) -> int:
    """How many experts a layer of ``d_ff`` neurons gets: ``n_experts`` (MoEfication's ``split_num``, the
    NUMBER of experts) or ``d_ff / expert_size``; neither given -> expert size :data:`DEFAULT_EXPERT_SIZE`."""
    for name, v in (("n_experts", n_experts), ("expert_size", expert_size)):
        if v is not None and (not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 1):
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if n_experts is None:
        size = DEFAULT_EXPERT_SIZE if expert_size is None else int(expert_size)
        if d_ff % size:
            raise ValueError(f"expert_size={size} does not divide the number of neurons D={d_ff}")
        return d_ff // size
    if d_ff % n_experts:
        raise ValueError(f"n_experts={n_experts} does not divide the number of neurons D={d_ff}")
    if expert_size is not None and n_experts * expert_size != d_ff:
        raise ValueError(f"n_experts={n_experts} x expert_size={expert_size} != D={d_ff}; give one of them")
    return int(n_experts)


def _check_w1(w1: np.ndarray, k: int) -> None:
    if w1.ndim != 2:
        raise ValueError(f"W1 of one layer must be 2-D (D, d_model), got shape {w1.shape}")
    d_ff, d_model = w1.shape
    if d_ff < k:
        hint = " (W1 may be transposed: pass one row per neuron, i.e. the Flax kernel's transpose)" \
            if d_model >= k else ""
        raise ValueError(f"{k} experts need at least {k} neurons, W1 has D={d_ff}{hint}")


def moefy_layer(w1: np.ndarray, n_experts: int | None = None, *, expert_size: int | None = None,
                **kmeans_kwargs) -> BalancedKMeansResult:
    """MoEfy one FFN layer: balanced k-means of the L2-normalised rows of ``W1`` (D, d_model) into
    ``n_experts`` experts (MoEfication's ``split_num``) or experts of ``expert_size`` neurons (default 32).
    ``kmeans_kwargs`` go to :func:`balanced_kmeans`."""
    w1 = np.asarray(w1)
    if w1.ndim != 2:
        raise ValueError(f"W1 of one layer must be 2-D (D, d_model), got shape {w1.shape}")
    try:
        k = num_experts(w1.shape[0], n_experts, expert_size)
    except ValueError as e:
        try:
            num_experts(w1.shape[1], n_experts, expert_size)
        except ValueError:
            raise e from None
        raise ValueError(f"{e} (W1 may be transposed: its second axis {w1.shape[1]} would fit; pass one row per "
                         "neuron, i.e. the Flax kernel's transpose)") from None
    _check_w1(w1, k)
    return balanced_kmeans(normalize_rows(w1), k, **kmeans_kwargs)


def moefy(w1: np.ndarray, n_experts: int | None = None, *, expert_size: int | None = None,
          **kmeans_kwargs) -> np.ndarray:
    """MoEfy every layer of a stacked ``W1`` (L, D, d_model); returns expert ids (L, D) int32.

    Layers are clustered independently with the same seed (the result is reproducible layer by
    layer). ``kmeans_kwargs`` go to :func:`balanced_kmeans`.
    """
    w1 = np.asarray(w1)
    if w1.ndim != 3:
        raise ValueError(f"stacked W1 must be (L, D, d_model), got shape {w1.shape}")
    return np.stack([moefy_layer(w, n_experts, expert_size=expert_size, **kmeans_kwargs).labels
                     for w in w1]).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# How neuron sets spread over experts
# ----------------------------------------------------------------------------------------------


def _check_ids_masks(cluster_ids: np.ndarray, neuron_masks: Mapping[str, np.ndarray], n_clusters):
    ids = np.asarray(cluster_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"cluster_ids must be an integer (L, D) array, got {ids.dtype} {ids.shape}")
    if ids.size and ids.min() < 0:
        raise ValueError("cluster_ids contains negative ids")
    k = int(ids.max()) + 1 if n_clusters is None else int(n_clusters)
    if ids.size and ids.max() >= k:
        raise ValueError(f"cluster id {int(ids.max())} >= n_clusters={k}")
    masks = {}
    for name, m in neuron_masks.items():
        m = np.asarray(m)
        if m.shape != ids.shape:
            raise ValueError(f"mask {name!r} has shape {m.shape}, cluster_ids has {ids.shape}")
        if m.dtype != bool:
            raise ValueError(f"mask {name!r} must be boolean, got {m.dtype}")
        masks[name] = m
    return ids, masks, k


def cluster_distribution(
    cluster_ids: np.ndarray, neuron_masks: Mapping[str, np.ndarray], n_clusters: int | None = None
) -> dict[str, np.ndarray]:
    """Counts of each set's neurons per layer and expert: name -> (L, K) int64.

    ``cluster_ids`` (L, D) from :func:`moefy`; ``neuron_masks`` name -> (L, D) bool.
    """
    ids, masks, k = _check_ids_masks(cluster_ids, neuron_masks, n_clusters)
    n_layers = ids.shape[0]
    offsets = (np.arange(n_layers) * k)[:, None]
    out = {}
    for name, m in masks.items():
        flat = (ids + offsets)[m]
        out[name] = np.bincount(flat, minlength=n_layers * k).reshape(n_layers, k).astype(np.int64)
    return out


def concentration(
    cluster_ids: np.ndarray,
    neuron_masks: Mapping[str, np.ndarray],
    *,
    top: int = 1,
    n_null: int = 1000,
    seed: int = 0,
    n_clusters: int | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """How concentrated each set is in few experts, per layer, against a random-placement null.

    Statistic: the fraction of a layer's set that falls in its ``top`` most-populated experts.
    Null: ``n_null`` random sets of the same size in the same layer (seeded), i.e. the same
    statistic with the layer's expert labels shuffled. Returns name -> dict of (L,) arrays:
    ``size``, ``top_fraction``, ``null_mean``, ``null_std``, ``ratio`` (observed / null mean),
    ``p_value`` = (1 + #null >= observed) / (1 + n_null). Layers where the set is empty get NaN
    (0/0: no neurons, no distribution) everywhere except ``size``.
    """
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if n_null < 1:
        raise ValueError(f"n_null must be >= 1, got {n_null}")
    ids, masks, k = _check_ids_masks(cluster_ids, neuron_masks, n_clusters)
    counts = cluster_distribution(ids, masks, k)
    n_layers, d = ids.shape
    rng = np.random.default_rng(seed)
    out = {}
    for name, m in masks.items():
        res = {key: np.full(n_layers, np.nan) for key in
               ("top_fraction", "null_mean", "null_std", "ratio", "p_value")}
        res["size"] = m.sum(axis=1).astype(np.int64)
        out[name] = res
    row_offsets = (np.arange(n_null) * k)[:, None]
    for layer in range(n_layers):
        # One set of shuffles per layer, shared by all sets (a random set of size s = the first s
        # neurons of a shuffled layer), so sets are compared on the same draws.
        shuffled = rng.permuted(np.broadcast_to(ids[layer].astype(np.int32), (n_null, d)), axis=1)
        for name in masks:
            res = out[name]
            size = int(res["size"][layer])
            if size == 0:
                continue  # 0/0: no neurons, no distribution -> NaN
            obs = np.sort(counts[name][layer])[::-1][:top].sum() / size
            null_counts = np.bincount((shuffled[:, :size] + row_offsets).ravel(),
                                      minlength=n_null * k).reshape(n_null, k)
            null = np.sort(null_counts, axis=1)[:, ::-1][:, :top].sum(axis=1) / size
            res["top_fraction"][layer] = obs
            res["null_mean"][layer] = null.mean()
            res["null_std"][layer] = null.std()
            res["ratio"][layer] = obs / null.mean()
            res["p_value"][layer] = (1 + np.sum(null >= obs - 1e-12)) / (1 + n_null)
    return out
