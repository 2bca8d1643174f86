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

Optional, label-free additions (off by default, ``IVectorConfig.pitch_weight`` / ``space``;
options of :func:`jaxneurons.pipeline.labels.ivector_clusters`):

- Auxiliary stream (``align_dims``, :func:`extend_gmm`, ``precision_scale``): the UBM and the frame
  posteriors use the first ``align_dims`` dimensions (the MFCCs); further dimensions (a log-F0 stream) get
  per-component means and variances under that alignment and enter only the statistics, with a stream
  weight that scales their precision in the ``T`` model. If the UBM were trained on the stream too, its
  components would split by pitch and a speaker's pitch would move occupancies, which i-vectors ignore.
- Supervector coordinates (:func:`supervector_coordinates`): ``w M^(1/2)`` with ``M = sum_c w_c T_c'
  Sigma_c^-1 T_c``, the GMM-supervector (KL) metric. A trained extractor's i-vectors are near-isotropic
  (prior N(0, I); covariance eigenvalues ~1.0 in every well-determined direction), so k-means on them
  treats a direction that barely changes the model like the dominant one.

Settings live in :class:`IVectorConfig` (defaults = the study's front end). Sizes: a ``T`` of rank R fitted
by maximum likelihood whitens the i-vectors (their covariance is ~I in every fitted direction, the N(0, I)
prior, enforced by the minimum-divergence step), so k-means can only follow a direction that is strongly
bimodal, like gender on real speech, if few noise directions compete with it. With R = 100 on a few
hundred utterances (supervectors of 64 x 39 = 2496 dims) most fitted directions are sampling noise and
k = 2 is at chance (gender purity 0.53-0.66 on 100-251 real LibriSpeech utterances, while the first
principal component of the normalised supervectors alone correlates 0.84 with gender). ``dims="auto"``
therefore caps R at ``utterances // 20`` (and the components at ``frames // 200``): 0.91-0.97 on the same
subsets (``benchmarks/ivector.md``). Alternatively fit the extractor once on a large background corpus
(:func:`fit_ivector_extractor`, :func:`save_ivector_extractor`) and extract on the scanned set
(:func:`utterance_ivectors`).

On the synthetic espeak-ng corpus the genders differ mainly in F0 (per-speaker median 76-130 Hz male,
149-305 Hz female) and k = 2 on plain MFCC i-vectors follows the espeak variant family instead; the
label-free options (log-F0 stream at weight 4, supervector coordinates) give purity 0.997-1.00 there.
They stay options: the study's front end is MFCC-only.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxneurons.progress import progress

_HI = jax.lax.Precision.HIGHEST
log = logging.getLogger(__name__)

SPACES = ("ivector", "supervector")
DIMS_POLICIES = ("auto", "fixed")


@dataclasses.dataclass(frozen=True)
class IVectorConfig:
    """Every setting of the MFCC i-vector front end; defaults = the label-free speaker-neuron study's.

    arXiv 2506.21712 (METHODS.md section 2): diagonal GMM-UBM on MFCC + deltas, Baum-Welch statistics, the
    total-variability matrix ``T`` by EM, i-vector = posterior mean, length-normalised, then k-means with
    k = 2; ``num_components=64`` and ``ivector_dim=100`` are the study's sizes. The EM iteration counts, the
    variance floor and the minimum-divergence step are not given by the study: they follow Kaldi's
    ``train_ivector_extractor.sh`` (10 EM iterations of ``T``, minimum divergence on) and common UBM
    practice (20 EM iterations, variances floored at 1 % of the global variance).

    ``dims="auto"`` (default) keeps the study's sizes as upper bounds and lowers them when the corpus is
    too small for them (:meth:`sizes`): ``R <= utterances // utterances_per_dim`` and ``C <= frames //
    frames_per_component``. Why: a ``T`` of rank R fitted by maximum likelihood on U utterances whitens
    the i-vectors (their covariance is ~I in every fitted direction); with R close to U the fitted
    directions are mostly sampling noise, so k-means on the (isotropic) i-vectors splits along noise.
    Measured on 251 real LibriSpeech utterances (``benchmarks/ivector.md``): 64 components, R = 100 gave
    gender purity 0.53-0.66 on 100-251 utterances; R = 20 failed (0.52-0.80) on 100-160 utterances but
    not on 251; R = 4-8 gave 0.91-0.97 on every subset. ``dims="fixed"`` uses the sizes as given
    (what a large background corpus, e.g. all of LibriSpeech as in the study, supports).

    ``pitch_weight`` / ``space`` are label-free options, off by default (the study's front end is
    MFCC-only): ``pitch_weight`` > 0 adds a corpus-normalised log-F0 stream with that stream weight
    (MFCC-aligned, :func:`extend_gmm`); ``space="supervector"`` maps the i-vectors by ``M^(1/2)``
    (:func:`supervector_coordinates`) before the length normalisation. ``whiten``: ZCA whitening inside
    the length normalisation. ``n_init``: k-means restarts for the clusters.
    """

    num_components: int = 64
    ivector_dim: int = 100
    dims: str = "auto"
    utterances_per_dim: int = 20
    frames_per_component: int = 200
    ubm_iters: int = 20
    tv_iters: int = 10
    var_floor: float = 0.01
    min_divergence: bool = True
    pitch_weight: float = 0.0
    space: str = "ivector"
    whiten: bool = False
    n_init: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_components", "ivector_dim", "utterances_per_dim", "frames_per_component", "ubm_iters",
                     "tv_iters", "n_init"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"IVectorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_components < 2:
            raise ValueError(f"IVectorConfig.num_components must be >= 2, got {self.num_components}")
        if self.dims not in DIMS_POLICIES:
            raise ValueError(f"IVectorConfig.dims must be one of {DIMS_POLICIES}, got {self.dims!r}")
        if self.space not in SPACES:
            raise ValueError(f"IVectorConfig.space must be one of {SPACES}, got {self.space!r}")
        if not self.pitch_weight >= 0:
            raise ValueError(f"IVectorConfig.pitch_weight must be >= 0, got {self.pitch_weight}")
        if not 0 < self.var_floor < 1:
            raise ValueError(f"IVectorConfig.var_floor must be in (0, 1), got {self.var_floor}")

    def sizes(self, num_utterances: int, num_frames: int) -> tuple[int, int, str]:
        """(components, ivector_dim, why) for a corpus of ``num_utterances`` / ``num_frames`` (see class doc)."""
        if self.dims == "fixed":
            return self.num_components, self.ivector_dim, "dims='fixed'"
        comps = min(self.num_components, max(2, num_frames // self.frames_per_component))
        dim = min(self.ivector_dim, max(2, num_utterances // self.utterances_per_dim))
        why = []
        if comps < self.num_components:
            why.append(f"{num_frames} frames < {self.frames_per_component} per component x {self.num_components}")
        if dim < self.ivector_dim:
            why.append(f"{num_utterances} utterances < {self.utterances_per_dim} per dimension x "
                       f"{self.ivector_dim}")
        return comps, dim, "; ".join(why) or "the corpus supports the configured sizes"


class DiagGMM(NamedTuple):
    """Diagonal-covariance GMM: ``weights (C,)``, ``means (C, F)``, ``variances (C, F)``."""

    weights: jax.Array
    means: jax.Array
    variances: jax.Array


class IVectorExtractor(NamedTuple):
    """A trained i-vector extractor: the UBM, the total-variability matrix ``T`` ``(C, F, R)`` and the
    per-dimension precision scale ``(F,)`` of the ``T`` model (stream weights; ``None`` = all ones).

    ``align_dims``: the frame posteriors use the first ``align_dims`` feature dimensions (the MFCCs; the
    rest is an auxiliary stream, :func:`extend_gmm`), ``None`` = all. ``stream_norm``: (mean, std) the
    auxiliary stream was normalised with when the extractor was fitted (the corpus log-F0 of
    :func:`jaxneurons.pipeline.labels.log_f0_stream`), reused when extracting on another corpus.
    """

    ubm: DiagGMM
    T: jax.Array
    precision_scale: jax.Array | None = None
    align_dims: int | None = None
    stream_norm: tuple[float, float] | None = None

    @property
    def num_components(self) -> int:
        return int(self.T.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.T.shape[1])

    @property
    def ivector_dim(self) -> int:
        return int(self.T.shape[2])

    @property
    def model_variances(self) -> jax.Array:
        """``Sigma_c`` as the ``T`` model sees it: the UBM variances divided by the precision scale."""
        if self.precision_scale is None:
            return self.ubm.variances
        return self.ubm.variances / self.precision_scale[None, :]


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
    for _ in progress(range(num_iters), desc="UBM EM", unit="iter", leave=False):
        nc, f1, f2, ll = _em_stats(gmm, xs, ws)
        history.append(float(ll) / total_w)
        gmm = _em_update(gmm, nc, f1, f2, floor, 1e-3)
    return gmm, history


@jax.jit
def _aux_stats(gmm: DiagGMM, xs: jax.Array, aux: jax.Array, ws: jax.Array) -> tuple[jax.Array, ...]:
    """Occupancies and first/second-order sums of ``aux`` under the posteriors of ``gmm`` on ``xs``."""
    C, A = gmm.means.shape[0], aux.shape[-1]

    def step(carry, inp):
        n, f1, f2 = carry
        x, a, w = inp
        post = gmm_posteriors(gmm, x)[0] * w[:, None]
        return (n + post.sum(0), f1 + jnp.einsum("tc,ta->ca", post, a, precision=_HI),
                f2 + jnp.einsum("tc,ta->ca", post, a * a, precision=_HI)), None

    init = (jnp.zeros(C), jnp.zeros((C, A)), jnp.zeros((C, A)))
    out, _ = jax.lax.scan(step, init, (xs, aux, ws))
    return out


def extend_gmm(gmm: DiagGMM, frames: np.ndarray, *, var_floor: float = 0.01, chunk: int = 4096) -> DiagGMM:
    """Append auxiliary dimensions to a trained GMM without changing its frame alignment.

    ``frames`` ``(num_frames, D + A)``: the GMM's own ``D`` dimensions first, then ``A`` auxiliary ones
    (e.g. a log-F0 stream). The auxiliary means and variances (floored at ``var_floor`` x their global
    variance) come from one M-step under the posteriors of ``gmm`` on the first ``D`` dimensions, so the
    returned ``(D + A)``-dim GMM used with ``align_dims=D`` (:func:`collect_stats`) aligns frames exactly
    as ``gmm`` does and only adds the auxiliary dimensions to the statistics: a speaker's offset in them
    shows up as a mean shift within components (which the i-vector models), not as a change of which
    components are occupied (which it does not).
    """
    frames = _check_frames(frames, "extend_gmm")
    C, D = gmm.means.shape
    if frames.shape[1] <= D:
        raise ValueError(f"extend_gmm: frames have {frames.shape[1]} dims, need more than the GMM's {D}")
    xs, ws = _chunked(frames[:, :D], None, chunk)
    aux, _ = _chunked(frames[:, D:], None, chunk)
    n, f1, f2 = (np.asarray(a, np.float64) for a in _aux_stats(gmm, xs, aux, ws))
    safe = np.maximum(n, 1e-3)[:, None]
    gvar = frames[:, D:].astype(np.float64).var(0)
    mean = f1 / safe
    var = np.maximum(f2 / safe - mean**2, np.maximum(var_floor * gvar, 1e-8))
    # A component that no frame reaches gets the global statistics of the auxiliary stream.
    dead = n < 1e-3
    mean[dead], var[dead] = frames[:, D:].mean(0), np.maximum(gvar, 1e-8)
    return DiagGMM(gmm.weights, jnp.concatenate([gmm.means, jnp.asarray(mean, jnp.float32)], 1),
                   jnp.concatenate([gmm.variances, jnp.asarray(var, jnp.float32)], 1))


# ---------------------------------------------------------------------------------- Baum-Welch stats


def _align_part(gmm: DiagGMM, align_dims: int | None) -> DiagGMM:
    """The GMM restricted to its first ``align_dims`` dimensions (the ones that set the frame posteriors)."""
    if align_dims is None:
        return gmm
    return DiagGMM(gmm.weights, gmm.means[:, :align_dims], gmm.variances[:, :align_dims])


@functools.partial(jax.jit, static_argnames=("align_dims",))
def baum_welch_stats(
    gmm: DiagGMM, feats: jax.Array, lengths: jax.Array, align_dims: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """Zeroth- and centred first-order statistics of a padded batch.

    ``feats`` ``(B, T, F)``, ``lengths`` ``(B,)`` frame counts -> ``N`` ``(B, C)`` and
    ``F~`` ``(B, C, F)`` with ``F~_c = sum_t g_tc (x_t - mu_c)`` over valid frames only. With
    ``align_dims`` the posteriors ``g_tc`` come from the first ``align_dims`` dimensions only (see
    :func:`extend_gmm`); the statistics cover all ``F``.
    """
    align = _align_part(gmm, align_dims)
    post, _ = gmm_posteriors(align, feats[..., : align.means.shape[1]])
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
    gmm: DiagGMM, utterances: Sequence[np.ndarray], *, batch_size: int = 32, bucket: int = 64,
    align_dims: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Baum-Welch statistics for a list of ``(T_u, F)`` feature matrices -> ``N (U, C)``, ``F~ (U, C, F)``.

    Utterances are sorted by length and padded (to multiples of ``bucket`` frames, coarser for long
    utterances: at most four padded lengths per octave) in batches of ``batch_size``; a short Python loop
    over batches, the kernel compiles once per padded length. ``align_dims``: frame posteriors from the
    first ``align_dims`` dimensions only (:func:`extend_gmm`).
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
    for s in progress(range(0, len(order), batch_size), desc="Baum-Welch stats", unit="batch", leave=False):
        idx = order[s : s + batch_size]
        t_pad = _padded_length(int(lens[idx].max()), bucket)
        x = np.zeros((batch_size, t_pad, F), np.float32)
        ln = np.zeros(batch_size, np.int32)
        for j, u in enumerate(idx):
            x[j, : lens[u]] = utterances[u]
            ln[j] = lens[u]
        n, f = baum_welch_stats(gmm, jnp.asarray(x), jnp.asarray(ln), align_dims)
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
    precision_scale: np.ndarray | None = None,
) -> IVectorExtractor:
    """Train the total-variability matrix by EM from centred statistics ``N (U, C)``, ``F~ (U, C, F)``.

    ``T`` starts as ``init_scale * sqrt(Sigma_c) * N(0, 1)``; utterances are processed in fixed-size
    batches of ``batch`` inside one compiled scan per iteration. ``precision_scale`` ``(F,)`` (positive)
    multiplies the UBM precisions in the ``T`` model: a stream weight, as in multi-stream HMMs, e.g. > 1 on
    a one-dimensional log-F0 stream that would otherwise weigh 1/40 of the MFCC frame.
    """
    N = np.asarray(N, np.float32)
    F = np.asarray(F, np.float32)
    C, D = ubm.means.shape
    if N.ndim != 2 or N.shape[1] != C or F.shape != (N.shape[0], C, D):
        raise ValueError(f"train_ivector_extractor: stats shapes N {N.shape}, F {F.shape} do not fit a UBM "
                         f"with {C} components of dim {D}")
    if not (np.isfinite(N).all() and np.isfinite(F).all()):
        raise ValueError("train_ivector_extractor: statistics contain NaN or inf")
    scale = None
    if precision_scale is not None:
        scale = np.asarray(precision_scale, np.float32)
        if scale.shape != (D,) or not (np.isfinite(scale).all() and (scale > 0).all()):
            raise ValueError(f"train_ivector_extractor: precision_scale must be ({D},), finite and positive")
        scale = jnp.asarray(scale)
    model = IVectorExtractor(ubm, jnp.zeros((C, D, ivector_dim), jnp.float32), scale)
    rng = np.random.default_rng(seed)
    T0 = init_scale * np.sqrt(np.asarray(model.model_variances))[..., None] * rng.standard_normal((C, D, ivector_dim))
    T = jnp.asarray(T0, jnp.float32)
    ns, fs, ms = _batch_utts(N, F, batch)
    for _ in progress(range(num_iters), desc="T-matrix EM", unit="iter", leave=False):
        T = _tv_em_step(T, model.model_variances, ns, fs, ms, min_div)
    return model._replace(T=T)


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
    w = _extract(extractor.T, extractor.model_variances, ns, fs)
    return np.asarray(w.reshape(-1, w.shape[-1])[:U])


def supervector_metric(extractor: IVectorExtractor) -> np.ndarray:
    """``M = sum_c w_c T_c' Sigma_c^-1 T_c`` ``(R, R)`` (UBM weights ``w_c``, the ``T`` model's variances).

    For two utterances, ``(w_a - w_b)' M (w_a - w_b) / 2`` is the bound on the KL divergence between the
    GMMs with means ``m + T w_a`` and ``m + T w_b`` that underlies the GMM-supervector kernel (Campbell,
    Sturim & Reynolds 2006): how much the two i-vectors change the model, in the UBM's own units.
    """
    T = np.asarray(extractor.T, np.float64)
    prec = 1.0 / np.asarray(extractor.model_variances, np.float64)
    return np.einsum("c,cfr,cf,cfs->rs", np.asarray(extractor.ubm.weights, np.float64), T, prec, T)


def supervector_coordinates(extractor: IVectorExtractor, ivectors: np.ndarray | jax.Array) -> np.ndarray:
    """i-vectors mapped by ``M^(1/2)`` (:func:`supervector_metric`): Euclidean geometry = supervector geometry.

    Why: the i-vector prior is ``N(0, I)`` (and the minimum-divergence step enforces it), so the i-vectors
    of a trained extractor are close to isotropic: a direction that barely moves the supervector (one
    voice-quality detail) has the same spread as the direction that moves it most. k-means on plain
    i-vectors therefore picks whichever split is most clustered, not the largest acoustic difference. In
    these coordinates each direction is scaled by how much it changes the GMM (a linear map, no labels).
    """
    ev, U = np.linalg.eigh(supervector_metric(extractor))
    root = (U * np.sqrt(np.maximum(ev, 0.0))) @ U.T
    return (np.asarray(ivectors, np.float64) @ root).astype(np.float32)


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


# ----------------------------------------------------------------- fit / extract / save / load


def _check_utterances(utterances: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    feats = [np.asarray(u, np.float32) for u in utterances]
    if len(feats) < 2:
        raise ValueError(f"{what}: need at least 2 utterances, got {len(feats)}")
    dims = {f.shape[1] if f.ndim == 2 else None for f in feats}
    if len(dims) != 1 or None in dims:
        raise ValueError(f"{what}: utterances must be (T_u, F) arrays of one width F, got widths "
                         f"{sorted(map(str, dims))}")
    return feats


def _fit(
    utterances: Sequence[np.ndarray], config: IVectorConfig, align_dims: int | None,
    stream_norm: tuple[float, float] | None,
) -> tuple[IVectorExtractor, np.ndarray, np.ndarray]:
    feats = _check_utterances(utterances, "fit_ivector_extractor")
    frames = np.concatenate(feats, axis=0)
    F_dim = frames.shape[1]
    if align_dims is not None and not 0 < align_dims < F_dim:
        raise ValueError(f"fit_ivector_extractor: align_dims must be in [1, {F_dim}), got {align_dims}")
    if align_dims is not None and not config.pitch_weight > 0:
        raise ValueError("fit_ivector_extractor: an auxiliary stream (align_dims) needs pitch_weight > 0")
    comps, dim, why = config.sizes(len(feats), frames.shape[0])
    log.info("i-vector extractor: %d components, %d dims (configured %d / %d) from %d utterances, %d frames: %s",
             comps, dim, config.num_components, config.ivector_dim, len(feats), frames.shape[0], why)
    train = frames if align_dims is None else frames[:, :align_dims]
    ubm, _ = train_ubm(train, comps, num_iters=config.ubm_iters, seed=config.seed, var_floor=config.var_floor)
    scale = None
    if align_dims is not None:
        ubm = extend_gmm(ubm, frames, var_floor=config.var_floor)
        scale = np.ones(F_dim, np.float32)
        scale[align_dims:] = config.pitch_weight
    N, F = collect_stats(ubm, feats, align_dims=align_dims)
    extractor = train_ivector_extractor(ubm, N, F, dim, num_iters=config.tv_iters, seed=config.seed + 1,
                                        min_div=config.min_divergence, precision_scale=scale)
    return extractor._replace(align_dims=align_dims, stream_norm=stream_norm), N, F


def fit_ivector_extractor(
    utterances: Sequence[np.ndarray], config: IVectorConfig = IVectorConfig(), *, align_dims: int | None = None,
    stream_norm: tuple[float, float] | None = None,
) -> IVectorExtractor:
    """Fit the UBM and ``T`` on a (background) corpus of ``(T_u, F)`` feature matrices.

    Sizes from :meth:`IVectorConfig.sizes` (one INFO log line with the chosen sizes and why).
    ``align_dims``: the UBM is trained on the first ``align_dims`` dims (the MFCCs), the rest is an
    auxiliary stream (:func:`extend_gmm`) weighted by ``config.pitch_weight``; ``stream_norm`` is stored
    with the extractor so another corpus's stream is normalised the same way.
    """
    return _fit(utterances, config, align_dims, stream_norm)[0]


def _vectors(extractor: IVectorExtractor, N: np.ndarray, F: np.ndarray, config: IVectorConfig) -> np.ndarray:
    ivecs = extract_ivectors(extractor, N, F)
    if config.space == "supervector":
        ivecs = supervector_coordinates(extractor, ivecs)
    return length_normalize(ivecs, whiten=config.whiten)


def utterance_ivectors(
    extractor: IVectorExtractor, utterances: Sequence[np.ndarray], config: IVectorConfig = IVectorConfig()
) -> np.ndarray:
    """Length-normalised i-vectors ``(U, R)`` of ``utterances`` under a fitted extractor.

    ``config.space`` / ``config.whiten`` pick the coordinates and the length normalisation; the centring
    (and whitening) is estimated on these utterances (label-free, what k-means on them needs).
    """
    feats = _check_utterances(utterances, "utterance_ivectors")
    if feats[0].shape[1] != extractor.feature_dim:
        raise ValueError(f"utterance_ivectors: features have {feats[0].shape[1]} dims, the extractor expects "
                         f"{extractor.feature_dim}" + (" (MFCCs + a log-F0 stream)" if extractor.align_dims else ""))
    N, F = collect_stats(extractor.ubm, feats, align_dims=extractor.align_dims)
    return _vectors(extractor, N, F, config)


class IVectorExtractorError(ValueError):
    """A saved i-vector extractor that cannot be used (missing, corrupt or inconsistent files)."""


EXTRACTOR_FORMAT = "jaxneurons.ivector_extractor"
EXTRACTOR_VERSION = 1
EXTRACTOR_ARRAYS = "ivector_extractor.safetensors"
EXTRACTOR_META = "ivector_extractor.json"


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def save_ivector_extractor(
    extractor: IVectorExtractor, directory: str, *, config: IVectorConfig | None = None,
    info: Mapping[str, Any] | None = None,
) -> str:
    """Write ``extractor`` as a directory: arrays in ``ivector_extractor.safetensors``, sizes, stream
    settings, the fitting config and ``info`` (e.g. the background corpus) in ``ivector_extractor.json``.
    Files are written atomically; returns ``directory``."""
    from safetensors.numpy import save as save_tensors

    os.makedirs(directory, exist_ok=True)
    arrays = {"ubm_weights": extractor.ubm.weights, "ubm_means": extractor.ubm.means,
              "ubm_variances": extractor.ubm.variances, "T": extractor.T}
    if extractor.precision_scale is not None:
        arrays["precision_scale"] = extractor.precision_scale
    arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in arrays.items()}
    meta = {"format": EXTRACTOR_FORMAT, "version": EXTRACTOR_VERSION,
            "num_components": extractor.num_components, "feature_dim": extractor.feature_dim,
            "ivector_dim": extractor.ivector_dim, "align_dims": extractor.align_dims,
            "stream_norm": None if extractor.stream_norm is None else [float(v) for v in extractor.stream_norm],
            "config": None if config is None else dataclasses.asdict(config), "info": dict(info or {})}
    _write_atomic(os.path.join(directory, EXTRACTOR_ARRAYS), save_tensors(arrays))
    _write_atomic(os.path.join(directory, EXTRACTOR_META), (json.dumps(meta, indent=1) + "\n").encode())
    return directory


def _load_meta(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise IVectorExtractorError(f"{path}: missing (not an i-vector extractor directory)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IVectorExtractorError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXTRACTOR_FORMAT:
        raise IVectorExtractorError(f"{path}: not an i-vector extractor description (format != {EXTRACTOR_FORMAT!r})")
    if meta.get("version") != EXTRACTOR_VERSION:
        raise IVectorExtractorError(f"{path}: version {meta.get('version')!r}, this code reads {EXTRACTOR_VERSION}")
    for key in ("num_components", "feature_dim", "ivector_dim"):
        if not isinstance(meta.get(key), int) or meta[key] < 1:
            raise IVectorExtractorError(f"{path}: {key} must be a positive integer, got {meta.get(key)!r}")
    return meta


def load_ivector_extractor(directory: str) -> IVectorExtractor:
    """Read a directory written by :func:`save_ivector_extractor`; every shape and value is checked
    against the JSON description (:class:`IVectorExtractorError` naming the file otherwise)."""
    from safetensors.numpy import load as load_tensors

    meta_path = os.path.join(directory, EXTRACTOR_META)
    arrays_path = os.path.join(directory, EXTRACTOR_ARRAYS)
    if not os.path.isdir(directory):
        raise IVectorExtractorError(f"{directory}: no such i-vector extractor directory")
    meta = _load_meta(meta_path)
    C, F, R = meta["num_components"], meta["feature_dim"], meta["ivector_dim"]
    try:
        with open(arrays_path, "rb") as f:
            arrays = load_tensors(f.read())
    except FileNotFoundError:
        raise IVectorExtractorError(f"{arrays_path}: missing") from None
    except Exception as exc:  # safetensors raises its own error types for corrupt headers / data
        raise IVectorExtractorError(f"{arrays_path}: not a readable safetensors file ({exc})") from None
    align, norm = meta.get("align_dims"), meta.get("stream_norm")
    expected = {"ubm_weights": (C,), "ubm_means": (C, F), "ubm_variances": (C, F), "T": (C, F, R)}
    if align is not None:
        expected["precision_scale"] = (F,)
    for name, shape in expected.items():
        if name not in arrays:
            raise IVectorExtractorError(f"{arrays_path}: array {name!r} missing")
        if arrays[name].shape != shape:
            raise IVectorExtractorError(f"{arrays_path}: {name} has shape {arrays[name].shape}, {meta_path} says "
                                        f"{shape}")
        if not np.isfinite(arrays[name]).all():
            raise IVectorExtractorError(f"{arrays_path}: {name} contains NaN or inf")
    if (arrays["ubm_variances"] <= 0).any() or (arrays["ubm_weights"] <= 0).any():
        raise IVectorExtractorError(f"{arrays_path}: UBM weights and variances must be positive")
    if abs(float(arrays["ubm_weights"].sum()) - 1.0) > 1e-3:
        raise IVectorExtractorError(f"{arrays_path}: UBM weights sum to {arrays['ubm_weights'].sum():.4f}, not 1")
    if align is not None and not (isinstance(align, int) and 0 < align < F):
        raise IVectorExtractorError(f"{meta_path}: align_dims must be null or an integer in [1, {F}), got {align!r}")
    if norm is not None and not (isinstance(norm, list) and len(norm) == 2 and float(norm[1]) > 0):
        raise IVectorExtractorError(f"{meta_path}: stream_norm must be null or [mean, std > 0], got {norm!r}")
    if (align is None) != (norm is None):
        raise IVectorExtractorError(f"{meta_path}: align_dims and stream_norm must be both set or both null")
    scale = arrays.get("precision_scale") if align is not None else None
    if scale is not None and (scale <= 0).any():
        raise IVectorExtractorError(f"{arrays_path}: precision_scale must be positive")
    ubm = DiagGMM(*(jnp.asarray(arrays[k]) for k in ("ubm_weights", "ubm_means", "ubm_variances")))
    return IVectorExtractor(ubm, jnp.asarray(arrays["T"]), None if scale is None else jnp.asarray(scale), align,
                            None if norm is None else (float(norm[0]), float(norm[1])))


def ivector_pipeline(
    utterances: Sequence[np.ndarray],
    config: IVectorConfig | None = None,
    *,
    align_dims: int | None = None,
    **overrides: Any,
) -> tuple[np.ndarray, IVectorExtractor]:
    """Fit an extractor on ``utterances`` (list of ``(T_u, F)`` features) and return their
    length-normalised i-vectors ``(U, R)`` with the extractor.

    ``config`` (default :class:`IVectorConfig`, the study's front end) with ``overrides`` of its fields
    (e.g. ``num_components=16``). ``align_dims``: the last dims are an auxiliary stream (needs
    ``pitch_weight`` > 0, :func:`fit_ivector_extractor`).
    """
    config = dataclasses.replace(config or IVectorConfig(), **overrides)
    extractor, N, F = _fit(utterances, config, align_dims, None)
    return _vectors(extractor, N, F, config), extractor
