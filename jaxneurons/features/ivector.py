"""i-vectors in JAX: diagonal GMM-UBM, Baum-Welch statistics, total-variability matrix, length norm.

The pipeline of the label-free speaker-neuron study (arXiv 2506.21712): MFCC (+ deltas) frames ->
diagonal-covariance GMM-UBM by EM -> per-utterance zeroth/first-order statistics centred on the UBM means
-> total-variability matrix ``T`` by EM (Dehak et al. 2011 / Kenny 2005) -> i-vector = posterior mean of
the latent ``w`` -> length normalisation (centre, optional whitening, unit length) before k-means.

Model: the supervector of utterance u is ``m + T w_u`` with ``w_u ~ N(0, I)``, ``T`` stored per component
as ``(C, F, R)``, ``Sigma_c`` the UBM's diagonal covariances. With centred statistics
``N_uc = sum_t g_tc``, ``F~_uc = sum_t g_tc (x_t - mu_c)``:

- E-step: ``L_u = I + sum_c N_uc T_c' Sigma_c^-1 T_c``, ``E[w_u] = L_u^-1 sum_c T_c' Sigma_c^-1 F~_uc``,
  ``E[w w'] = L_u^-1 + E[w] E[w]'`` (Cholesky solves, batched over utterances).
- M-step: ``T_c = (sum_u F~_uc E[w_u]') (sum_u N_uc E[w_u w_u'])^-1`` per component.
- Optional minimum-divergence step (on by default): ``T <- T chol(mean_u E[w w'])``, which keeps the
  prior at N(0, I) and speeds convergence.

Numerics: float32 throughout, log-sum-exp posteriors, variance flooring at ``var_floor`` x the global
variance, components whose occupancy vanishes keep their previous parameters, ridge ``1e-6`` on the
M-step systems. Frames are processed in fixed-size chunks (``lax.scan``) and utterances in fixed-size
batches so memory stays bounded and each kernel compiles once per shape.

Measured on the synthetic espeak-ng corpus (40 pseudo-speakers, 399 utterances, 21 min;
``python benchmarks/bench_ivector.py --corpus_dir /tmp/bench_iv_corpus --num_speakers 40 --minutes 20``,
full table in that script's docstring): 64 components, R = 20: speaker EER 3.5 % (R = 100: 16 %, too
many dimensions for 399 utterances); k = 2 clusters vs gender near chance (purity 0.52 / 0.56), with
``--whiten`` 0.63 / 1.00 -- espeak's genders differ mainly in F0, which MFCC i-vectors largely miss.
In the unit tests, on numpy source-filter "speakers" whose genders differ in F0 and formant scale,
k = 2 clusters match gender (>= 0.8 asserted) and the EER is below 0.35.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

_HI = jax.lax.Precision.HIGHEST


class DiagGMM(NamedTuple):
    """Diagonal-covariance GMM: ``weights (C,)``, ``means (C, F)``, ``variances (C, F)``."""

    weights: jax.Array
    means: jax.Array
    variances: jax.Array


class IVectorExtractor(NamedTuple):
    """A trained i-vector extractor: the UBM and the total-variability matrix ``T`` ``(C, F, R)``."""

    ubm: DiagGMM
    T: jax.Array


class LengthNorm(NamedTuple):
    """Length normalisation: ``y = A (x - mean)``, then ``y / ||y||`` (``A`` = identity or whitening)."""

    mean: jax.Array
    transform: jax.Array


# ----------------------------------------------------------------------------------------------- GMM


@jax.jit
def gmm_log_likelihoods(gmm: DiagGMM, x: jax.Array) -> jax.Array:
    """Per-component joint log-likelihoods ``log w_c + log N(x | mu_c, Sigma_c)``: ``(..., F) -> (..., C)``."""
    prec = 1.0 / gmm.variances
    F = gmm.means.shape[-1]
    const = (
        jnp.log(gmm.weights)
        - 0.5 * (F * math.log(2.0 * math.pi) + jnp.log(gmm.variances).sum(-1))
        - 0.5 * (gmm.means**2 * prec).sum(-1)
    )
    lin = jnp.einsum("...f,cf->...c", x, gmm.means * prec, precision=_HI)
    quad = jnp.einsum("...f,cf->...c", x * x, prec, precision=_HI)
    return const + lin - 0.5 * quad


@jax.jit
def gmm_posteriors(gmm: DiagGMM, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Component posteriors ``(..., C)`` and per-frame log-likelihood ``(...)`` (log-sum-exp)."""
    ll = gmm_log_likelihoods(gmm, x)
    total = jax.nn.logsumexp(ll, axis=-1)
    return jnp.exp(ll - total[..., None]), total


def _chunked(frames: np.ndarray, weights: np.ndarray | None, chunk: int) -> tuple[jax.Array, jax.Array]:
    """Pad a frame matrix to a multiple of ``chunk`` rows and reshape to ``(n_chunks, chunk, F)``."""
    n, f = frames.shape
    w = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
    n_chunks = max(1, -(-n // chunk))
    xp = np.zeros((n_chunks * chunk, f), np.float32)
    xp[:n] = frames
    wp = np.zeros(n_chunks * chunk, np.float32)
    wp[:n] = w
    return jnp.asarray(xp.reshape(n_chunks, chunk, f)), jnp.asarray(wp.reshape(n_chunks, chunk))


@jax.jit
def _em_stats(gmm: DiagGMM, xs: jax.Array, ws: jax.Array) -> tuple[jax.Array, ...]:
    """Sufficient statistics (N_c, sum g x, sum g x^2, total log-lik) over chunked frames."""
    C, F = gmm.means.shape

    def step(carry, inp):
        n, f1, f2, ll = carry
        x, w = inp
        post, tot = gmm_posteriors(gmm, x)
        post = post * w[:, None]
        n = n + post.sum(0)
        f1 = f1 + jnp.einsum("tc,tf->cf", post, x, precision=_HI)
        f2 = f2 + jnp.einsum("tc,tf->cf", post, x * x, precision=_HI)
        return (n, f1, f2, ll + (tot * w).sum()), None

    init = (jnp.zeros(C), jnp.zeros((C, F)), jnp.zeros((C, F)), jnp.zeros(()))
    out, _ = jax.lax.scan(step, init, (xs, ws))
    return out


@functools.partial(jax.jit, static_argnames=("min_count",))
def _em_update(
    gmm: DiagGMM, n: jax.Array, f1: jax.Array, f2: jax.Array, var_floor: jax.Array, min_count: float
) -> DiagGMM:
    alive = n > min_count
    safe_n = jnp.where(alive, n, 1.0)[:, None]
    means = f1 / safe_n
    variances = jnp.maximum(f2 / safe_n - means**2, var_floor[None, :])
    weights = jnp.where(alive, n, min_count) / jnp.maximum(n.sum(), 1e-10)
    weights = weights / weights.sum()
    means = jnp.where(alive[:, None], means, gmm.means)
    variances = jnp.where(alive[:, None], variances, gmm.variances)
    return DiagGMM(weights, means, variances)


def _kmeans_pp(key: jax.Array, x: jax.Array, num_components: int, num_iters: int) -> tuple[jax.Array, ...]:
    """k-means++ seeding followed by Lloyd iterations; returns centres and hard assignments (traceable)."""
    M = x.shape[0]
    k0, key = jax.random.split(key)
    first = jax.random.randint(k0, (), 0, M)
    centres = jnp.zeros((num_components, x.shape[1])).at[0].set(x[first])
    d2 = ((x - x[first]) ** 2).sum(-1)

    def seed(i, carry):
        centres, d2, key = carry
        key, sub = jax.random.split(key)
        idx = jax.random.categorical(sub, jnp.log(jnp.maximum(d2, 1e-30)))
        centres = centres.at[i].set(x[idx])
        d2 = jnp.minimum(d2, ((x - x[idx]) ** 2).sum(-1))
        return centres, d2, key

    centres, _, _ = jax.lax.fori_loop(1, num_components, seed, (centres, d2, key))

    def dist(c):
        return (x * x).sum(-1)[:, None] - 2.0 * jnp.dot(x, c.T, precision=_HI) + (c * c).sum(-1)[None, :]

    def lloyd(_, c):
        assign = jnp.argmin(dist(c), axis=-1)
        onehot = jax.nn.one_hot(assign, num_components, dtype=x.dtype)
        counts = onehot.sum(0)
        sums = jnp.dot(onehot.T, x, precision=_HI)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], c)

    centres = jax.lax.fori_loop(0, num_iters, lloyd, centres)
    return centres, jnp.argmin(dist(centres), axis=-1)


@functools.partial(jax.jit, static_argnames=("num_components", "num_iters"))
def _init_gmm(
    seed: jax.Array, x: jax.Array, floor: jax.Array, gvar: jax.Array, num_components: int, num_iters: int
) -> DiagGMM:
    """GMM from k-means++/Lloyd clusters of ``x``: cluster means, floored variances, occupancy weights."""
    centres, assign = _kmeans_pp(jax.random.PRNGKey(seed), x, num_components, num_iters)
    onehot = jax.nn.one_hot(assign, num_components, dtype=x.dtype)
    counts = onehot.sum(0)
    sq = jnp.dot(onehot.T, x * x, precision=_HI) / jnp.maximum(counts, 1.0)[:, None] - centres**2
    variances = jnp.where(counts[:, None] > 1, sq, gvar[None, :])
    weights = jnp.maximum(counts, 1.0) / jnp.maximum(counts, 1.0).sum()
    return DiagGMM(weights, centres, jnp.maximum(variances, floor[None, :]))


def _check_frames(frames: np.ndarray, what: str) -> np.ndarray:
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 2 or frames.shape[0] == 0:
        raise ValueError(f"{what}: frames must be a non-empty (num_frames, dim) array, got {frames.shape}")
    if not np.isfinite(frames).all():
        raise ValueError(f"{what}: frames contain NaN or inf")
    return frames


def train_ubm(
    frames: np.ndarray,
    num_components: int = 64,
    *,
    num_iters: int = 20,
    seed: int = 0,
    var_floor: float = 0.01,
    kmeans_iters: int = 10,
    max_init_frames: int = 20000,
    chunk: int = 4096,
    weights: np.ndarray | None = None,
) -> tuple[DiagGMM, list[float]]:
    """Train a diagonal GMM-UBM by EM on ``(num_frames, F)`` frames.

    Initialised by k-means++ and Lloyd iterations on at most ``max_init_frames`` random frames; variances
    floored at ``var_floor`` x the global per-dimension variance. ``weights`` (0/1 or soft) select frames.
    Returns the GMM and the average per-frame log-likelihood after each EM iteration's E-step.
    """
    frames = _check_frames(frames, "train_ubm")
    n = frames.shape[0]
    if n < num_components:
        raise ValueError(f"train_ubm: {n} frames is fewer than {num_components} components")
    w_all = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
    total_w = float(w_all.sum())
    if w_all.shape != (n,) or total_w <= 0 or (w_all < 0).any():
        raise ValueError(f"train_ubm: frame weights must be ({n},), non-negative, with a positive sum")
    candidates = np.flatnonzero(w_all > 0)
    if candidates.size < num_components:
        raise ValueError(f"train_ubm: {candidates.size} weighted frames is fewer than {num_components} components")
    rng = np.random.default_rng(seed)
    sub = frames[np.sort(rng.permutation(candidates)[: min(candidates.size, max_init_frames)])]
    gmean = (frames * w_all[:, None]).sum(0) / total_w
    gvar = ((frames - gmean) ** 2 * w_all[:, None]).sum(0) / total_w
    floor = np.maximum(var_floor * gvar, 1e-8).astype(np.float32)
    gmm = _init_gmm(np.uint32(seed), jnp.asarray(sub), jnp.asarray(floor), jnp.asarray(gvar, jnp.float32),
                    num_components, kmeans_iters)
    floor = jnp.asarray(floor)

    xs, ws = _chunked(frames, w_all, chunk)
    history = []
    for _ in range(num_iters):
        nc, f1, f2, ll = _em_stats(gmm, xs, ws)
        history.append(float(ll) / total_w)
        gmm = _em_update(gmm, nc, f1, f2, floor, 1e-3)
    return gmm, history


# ---------------------------------------------------------------------------------- Baum-Welch stats


@jax.jit
def baum_welch_stats(gmm: DiagGMM, feats: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Zeroth- and centred first-order statistics of a padded batch.

    ``feats`` ``(B, T, F)``, ``lengths`` ``(B,)`` frame counts -> ``N`` ``(B, C)`` and
    ``F~`` ``(B, C, F)`` with ``F~_c = sum_t g_tc (x_t - mu_c)`` over valid frames only.
    """
    post, _ = gmm_posteriors(gmm, feats)
    valid = (jnp.arange(feats.shape[1])[None, :] < lengths[:, None]).astype(feats.dtype)
    post = post * valid[..., None]
    n = post.sum(1)
    f1 = jnp.einsum("btc,btf->bcf", post, feats, precision=_HI)
    return n, f1 - n[..., None] * gmm.means[None]


def _padded_length(t: int, bucket: int) -> int:
    """Round ``t`` up to a multiple of ``max(bucket, 2^(floor(log2 t) - 2))``: at most 4 distinct padded
    lengths per octave (few compilations) and at most 25 % padding."""
    step = max(bucket, 1 << max(0, t.bit_length() - 3))
    return -(-t // step) * step


def collect_stats(
    gmm: DiagGMM, utterances: Sequence[np.ndarray], *, batch_size: int = 32, bucket: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Baum-Welch statistics for a list of ``(T_u, F)`` feature matrices -> ``N (U, C)``, ``F~ (U, C, F)``.

    Utterances are sorted by length and padded (to multiples of ``bucket`` frames, coarser for long
    utterances: at most four padded lengths per octave) in batches of ``batch_size``; a short Python loop
    over batches, the kernel compiles once per padded length.
    """
    if len(utterances) == 0:
        raise ValueError("collect_stats: no utterances")
    F = gmm.means.shape[1]
    for i, u in enumerate(utterances):
        if u.ndim != 2 or u.shape[1] != F or u.shape[0] == 0:
            raise ValueError(f"collect_stats: utterance {i} has shape {u.shape}, expected (T > 0, {F})")
    lens = np.array([u.shape[0] for u in utterances])
    order = np.argsort(lens, kind="stable")
    C = gmm.means.shape[0]
    N_all = np.zeros((len(utterances), C), np.float32)
    F_all = np.zeros((len(utterances), C, F), np.float32)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        t_pad = _padded_length(int(lens[idx].max()), bucket)
        x = np.zeros((batch_size, t_pad, F), np.float32)
        ln = np.zeros(batch_size, np.int32)
        for j, u in enumerate(idx):
            x[j, : lens[u]] = utterances[u]
            ln[j] = lens[u]
        n, f = baum_welch_stats(gmm, jnp.asarray(x), jnp.asarray(ln))
        N_all[idx] = np.asarray(n)[: len(idx)]
        F_all[idx] = np.asarray(f)[: len(idx)]
    return N_all, F_all


# ------------------------------------------------------------------------ total variability and w


@jax.jit
def _posterior(T: jax.Array, variances: jax.Array, n: jax.Array, f: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Posterior mean ``(U, R)`` and covariance ``(U, R, R)`` of ``w`` for a batch of statistics."""
    R = T.shape[-1]
    Tp = T / variances[..., None]  # Sigma^-1 T, (C, F, R)
    TtSiT = jnp.einsum("cfr,cfs->crs", T, Tp, precision=_HI)
    L = jnp.eye(R, dtype=T.dtype)[None] + jnp.einsum("uc,crs->urs", n, TtSiT, precision=_HI)
    b = jnp.einsum("ucf,cfr->ur", f, Tp, precision=_HI)
    chol = jnp.linalg.cholesky(L)  # L = K K'
    eye = jnp.broadcast_to(jnp.eye(R, dtype=T.dtype), L.shape)
    k_inv = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)  # K^-1
    cov = jnp.einsum("urs,urt->ust", k_inv, k_inv, precision=_HI)  # L^-1 = K^-T K^-1
    w = jnp.einsum("urs,us->ur", cov, b, precision=_HI)
    return w, cov


def _batch_utts(n: np.ndarray, f: np.ndarray, batch: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    U = n.shape[0]
    nb = max(1, -(-U // batch))
    n_p = np.zeros((nb * batch,) + n.shape[1:], np.float32)
    f_p = np.zeros((nb * batch,) + f.shape[1:], np.float32)
    m = np.zeros(nb * batch, np.float32)
    n_p[:U], f_p[:U], m[:U] = n, f, 1.0
    return (
        jnp.asarray(n_p.reshape((nb, batch) + n.shape[1:])),
        jnp.asarray(f_p.reshape((nb, batch) + f.shape[1:])),
        jnp.asarray(m.reshape(nb, batch)),
    )


@functools.partial(jax.jit, static_argnames=("min_div",))
def _tv_em_step(
    T: jax.Array, variances: jax.Array, ns: jax.Array, fs: jax.Array, ms: jax.Array, min_div: bool
) -> jax.Array:
    C, F, R = T.shape

    def step(carry, inp):
        A, Cacc, S = carry
        n, f, m = inp
        w, cov = _posterior(T, variances, n, f)
        w = w * m[:, None]
        eww = (cov + w[:, :, None] * w[:, None, :]) * m[:, None, None]
        A = A + jnp.einsum("uc,urs->crs", n, eww, precision=_HI)
        Cacc = Cacc + jnp.einsum("ucf,ur->cfr", f, w, precision=_HI)
        return (A, Cacc, S + eww.sum(0)), None

    init = (jnp.zeros((C, R, R)), jnp.zeros((C, F, R)), jnp.zeros((R, R)))
    (A, Cacc, S), _ = jax.lax.scan(step, init, (ns, fs, ms))
    A = A + 1e-6 * jnp.eye(R)[None] * (jnp.trace(A, axis1=1, axis2=2)[:, None, None] / R + 1e-6)
    # T_c = Cacc_c A_c^-1  <=>  A_c T_c' = Cacc_c'  (A_c symmetric positive definite).
    T_new = jnp.swapaxes(jnp.linalg.solve(A, jnp.swapaxes(Cacc, 1, 2)), 1, 2)
    if min_div:
        count = jnp.maximum(ms.sum(), 1.0)
        chol = jnp.linalg.cholesky(S / count + 1e-6 * jnp.eye(R))
        T_new = jnp.einsum("cfr,rs->cfs", T_new, chol, precision=_HI)
    return T_new


def train_ivector_extractor(
    ubm: DiagGMM,
    N: np.ndarray,
    F: np.ndarray,
    ivector_dim: int = 100,
    *,
    num_iters: int = 10,
    seed: int = 1,
    init_scale: float = 0.1,
    min_div: bool = True,
    batch: int = 256,
) -> IVectorExtractor:
    """Train the total-variability matrix by EM from centred statistics ``N (U, C)``, ``F~ (U, C, F)``.

    ``T`` starts as ``init_scale * sqrt(Sigma_c) * N(0, 1)``; utterances are processed in fixed-size
    batches of ``batch`` inside one compiled scan per iteration.
    """
    N = np.asarray(N, np.float32)
    F = np.asarray(F, np.float32)
    C, D = ubm.means.shape
    if N.ndim != 2 or N.shape[1] != C or F.shape != (N.shape[0], C, D):
        raise ValueError(f"train_ivector_extractor: stats shapes N {N.shape}, F {F.shape} do not fit a UBM "
                         f"with {C} components of dim {D}")
    if not (np.isfinite(N).all() and np.isfinite(F).all()):
        raise ValueError("train_ivector_extractor: statistics contain NaN or inf")
    rng = np.random.default_rng(seed)
    T0 = init_scale * np.sqrt(np.asarray(ubm.variances))[..., None] * rng.standard_normal((C, D, ivector_dim))
    T = jnp.asarray(T0, jnp.float32)
    ns, fs, ms = _batch_utts(N, F, batch)
    for _ in range(num_iters):
        T = _tv_em_step(T, ubm.variances, ns, fs, ms, min_div)
    return IVectorExtractor(ubm, T)


@jax.jit
def _extract(T: jax.Array, variances: jax.Array, ns: jax.Array, fs: jax.Array) -> jax.Array:
    return jax.lax.map(lambda nf: _posterior(T, variances, nf[0], nf[1])[0], (ns, fs))


def extract_ivectors(extractor: IVectorExtractor, N: np.ndarray, F: np.ndarray, *, batch: int = 256) -> np.ndarray:
    """i-vectors (posterior means of ``w``), ``(U, R)``, from centred statistics."""
    N = np.asarray(N, np.float32)
    F = np.asarray(F, np.float32)
    U = N.shape[0]
    C, D, _ = extractor.T.shape
    if N.shape != (U, C) or F.shape != (U, C, D):
        raise ValueError(f"extract_ivectors: stats shapes N {N.shape}, F {F.shape} do not fit T {extractor.T.shape}")
    ns, fs, _ = _batch_utts(N, F, batch)
    w = _extract(extractor.T, extractor.ubm.variances, ns, fs)
    return np.asarray(w.reshape(-1, w.shape[-1])[:U])


# ------------------------------------------------------------------------------ length normalisation


def fit_length_norm(ivectors: np.ndarray | jax.Array, whiten: bool = False, eps: float = 1e-6) -> LengthNorm:
    """Centre (and optionally ZCA-whiten) estimated on a set of i-vectors ``(U, R)``."""
    x = np.asarray(ivectors, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"fit_length_norm: need (U >= 2, R) i-vectors, got {x.shape}")
    mean = x.mean(0)
    if whiten:
        cov = np.cov(x - mean, rowvar=False, bias=True)
        evals, evecs = np.linalg.eigh(cov)
        transform = evecs @ np.diag(1.0 / np.sqrt(np.maximum(evals, 0.0) + eps)) @ evecs.T
    else:
        transform = np.eye(x.shape[1])
    return LengthNorm(jnp.asarray(mean, jnp.float32), jnp.asarray(transform, jnp.float32))


@jax.jit
def apply_length_norm(norm: LengthNorm, ivectors: jax.Array) -> jax.Array:
    """``A (x - mean)`` scaled to unit Euclidean length (a zero vector stays zero)."""
    y = jnp.einsum("rs,us->ur", norm.transform, ivectors - norm.mean, precision=_HI)
    return y / jnp.maximum(jnp.linalg.norm(y, axis=-1, keepdims=True), 1e-12)


def length_normalize(ivectors: np.ndarray | jax.Array, whiten: bool = False) -> np.ndarray:
    """Fit :func:`fit_length_norm` on ``ivectors`` and apply it."""
    norm = fit_length_norm(ivectors, whiten=whiten)
    return np.asarray(apply_length_norm(norm, jnp.asarray(ivectors, jnp.float32)))


# ---------------------------------------------------------------------------------------- metrics


def pairwise_eer(embeddings: np.ndarray, speakers: Sequence[int] | np.ndarray) -> float:
    """Equal error rate of cosine scoring over all pairs of distinct utterances (same vs different speaker)."""
    x = np.asarray(embeddings, np.float64)
    spk = np.asarray(speakers)
    if x.ndim != 2 or spk.shape != (x.shape[0],):
        raise ValueError(f"pairwise_eer: embeddings {x.shape} and speakers {spk.shape} do not match")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    iu = np.triu_indices(x.shape[0], k=1)
    scores = (x @ x.T)[iu]
    target = (spk[:, None] == spk[None, :])[iu]
    if target.all() or not target.any():
        raise ValueError("pairwise_eer: need both same-speaker and different-speaker pairs")
    order = np.argsort(-scores, kind="stable")
    t = target[order]
    # Threshold after position k accepts the top k+1 pairs.
    fa = np.cumsum(~t) / (~t).sum()  # false-accept rate
    fr = 1.0 - np.cumsum(t) / t.sum()  # false-reject rate
    k = int(np.argmin(np.abs(fa - fr)))
    return float(0.5 * (fa[k] + fr[k]))


def ivector_pipeline(
    utterances: Sequence[np.ndarray],
    *,
    num_components: int = 64,
    ivector_dim: int = 100,
    ubm_iters: int = 20,
    tv_iters: int = 10,
    seed: int = 0,
    var_floor: float = 0.01,
    whiten: bool = False,
) -> tuple[np.ndarray, IVectorExtractor]:
    """Train a UBM and ``T`` on ``utterances`` (list of ``(T_u, F)`` features) and return their
    length-normalised i-vectors ``(U, R)`` with the extractor."""
    frames = np.concatenate([np.asarray(u, np.float32) for u in utterances], axis=0)
    ubm, _ = train_ubm(frames, num_components, num_iters=ubm_iters, seed=seed, var_floor=var_floor)
    N, F = collect_stats(ubm, utterances)
    extractor = train_ivector_extractor(ubm, N, F, ivector_dim, num_iters=tv_iters, seed=seed + 1)
    ivecs = extract_ivectors(extractor, N, F)
    return length_normalize(ivecs, whiten=whiten), extractor
