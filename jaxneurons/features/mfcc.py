"""Kaldi-style MFCC, deltas, cepstral mean normalisation and a simple energy VAD, in JAX.

MFCC = orthonormal DCT-II of the Kaldi log-mel filterbank (:mod:`jaxneurons.features.fbank`, 23 bins by
default as in Kaldi), first ``num_ceps`` (13) coefficients, times Kaldi's cepstral lifter
``1 + (Q / 2) sin(pi i / Q)``, Q = 22 — the same as ``torchaudio.compliance.kaldi.mfcc``. With
``use_energy=True`` C0 is replaced by the frame log energy (sum of squares after DC removal, before
pre-emphasis and window, floored at float32 eps), which is Kaldi's own default; the default here is False,
i.e. C0 is the DCT term.

Deltas follow Kaldi ``add-deltas`` / HTK: order-1 regression window ``N = 2``,
``d_t = sum_n n (c_{t+n} - c_{t-n}) / (2 sum_n n^2)``; the order-2 filter is the order-1 filter convolved
with itself and is applied to the static features, with frame indices clamped to each utterance's
``[0, length - 1]`` (edge frames are replicated at the true end, not at the padded end).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxneurons.features.fbank import FLOAT32_EPS, as_batch, fbank, frame_params, utterance_mvn


def dct_matrix(num_mel_bins: int, num_ceps: int) -> np.ndarray:
    """Orthonormal DCT-II basis, ``(num_mel_bins, num_ceps)``: ``mfcc = logmel @ dct_matrix``."""
    if not 1 <= num_ceps <= num_mel_bins:
        raise ValueError(f"mfcc: need 1 <= num_ceps <= num_mel_bins, got {num_ceps} > {num_mel_bins}")
    n = np.arange(num_mel_bins)[:, None]
    k = np.arange(num_ceps)[None, :]
    basis = np.cos(np.pi / num_mel_bins * (n + 0.5) * k) * np.sqrt(2.0 / num_mel_bins)
    basis[:, 0] = np.sqrt(1.0 / num_mel_bins)
    return basis.astype(np.float32)


def lifter_coeffs(num_ceps: int, cepstral_lifter: float = 22.0) -> np.ndarray:
    """Kaldi cepstral lifter ``1 + (Q/2) sin(pi i / Q)``; all ones when Q == 0."""
    i = np.arange(num_ceps, dtype=np.float64)
    if cepstral_lifter == 0.0:
        return np.ones(num_ceps, np.float32)
    return (1.0 + 0.5 * cepstral_lifter * np.sin(np.pi * i / cepstral_lifter)).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("sample_rate", "frame_length_ms", "frame_shift_ms"))
def frame_log_energy(
    waveforms: jax.Array,
    lengths: jax.Array,
    *,
    sample_rate: int = 16000,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
) -> jax.Array:
    """Kaldi raw log energy per frame (DC removed, no pre-emphasis/window), ``(B, T_max)``; 0 when padded."""
    win, shift, _ = frame_params(sample_rate, frame_length_ms, frame_shift_ms)
    t_max = 1 + (waveforms.shape[1] - win) // shift
    idx = np.arange(t_max)[:, None] * shift + np.arange(win)[None, :]
    frames = waveforms.astype(jnp.float32)[:, idx]
    frames = frames - frames.mean(axis=-1, keepdims=True)
    energy = jnp.log(jnp.maximum((frames**2).sum(-1), FLOAT32_EPS))
    n_frames = jnp.where(lengths >= win, 1 + (lengths - win) // shift, 0)
    return jnp.where(jnp.arange(t_max)[None, :] < n_frames[:, None], energy, 0.0)


def mfcc(
    waveforms: jax.Array | np.ndarray,
    lengths: jax.Array | np.ndarray | None = None,
    *,
    sample_rate: int = 16000,
    num_ceps: int = 13,
    num_mel_bins: int = 23,
    cepstral_lifter: float = 22.0,
    use_energy: bool = False,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    window_type: str = "povey",
    dither: float = 0.0,
    key: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Kaldi MFCC of a padded batch ``(B, N)`` -> ``(feats (B, T_max, num_ceps), n_frames (B,))``.

    Frames beyond an utterance's ``n_frames`` are 0. See the module docstring for the convention.
    """
    waveforms, lengths, squeeze = as_batch(waveforms, lengths, "mfcc")
    logmel, n_frames = fbank(
        waveforms,
        lengths,
        sample_rate=sample_rate,
        num_mel_bins=num_mel_bins,
        low_freq=low_freq,
        high_freq=high_freq,
        window_type=window_type,
        dither=dither,
        key=key,
    )
    energy = frame_log_energy(waveforms, lengths, sample_rate=sample_rate) if use_energy else None
    feats = _cepstra(logmel, energy, n_frames, num_ceps=num_ceps, cepstral_lifter=cepstral_lifter)
    return (feats[0], n_frames[0]) if squeeze else (feats, n_frames)


@functools.partial(jax.jit, static_argnames=("num_ceps", "cepstral_lifter"))
def _cepstra(
    logmel: jax.Array, energy: jax.Array | None, n_frames: jax.Array, *, num_ceps: int, cepstral_lifter: float
) -> jax.Array:
    basis = jnp.asarray(dct_matrix(logmel.shape[-1], num_ceps))
    ceps = jnp.einsum("btm,mc->btc", logmel, basis, precision=jax.lax.Precision.HIGHEST)
    if energy is not None:
        ceps = ceps.at[..., 0].set(energy)
    ceps = ceps * jnp.asarray(lifter_coeffs(num_ceps, cepstral_lifter))
    valid = jnp.arange(ceps.shape[1])[None, :] < n_frames[:, None]
    return jnp.where(valid[..., None], ceps, 0.0)


def delta_filters(order: int = 2, window: int = 2) -> np.ndarray:
    """Kaldi ``DeltaFeatures`` scales, ``(order + 1, 2 * order * window + 1)``, centred (zero padded)."""
    if order < 0 or window < 1:
        raise ValueError(f"deltas: need order >= 0 and window >= 1, got order={order}, window={window}")
    base = np.arange(-window, window + 1, dtype=np.float64)
    norm = float((base**2).sum())
    width = 2 * order * window + 1
    out = np.zeros((order + 1, width))
    cur = np.array([1.0])
    for i in range(order + 1):
        pad = (width - cur.size) // 2
        out[i, pad : pad + cur.size] = cur
        cur = np.convolve(cur, base) / norm  # Kaldi: cur[j + k] += j * prev[k]
    return out.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("order", "window"))
def add_deltas(feats: jax.Array, lengths: jax.Array, order: int = 2, window: int = 2) -> jax.Array:
    """Append Kaldi/HTK deltas: ``(B, T, D) -> (B, T, D * (order + 1))``, edges clamped per utterance.

    ``lengths`` are frame counts; padded frames of the output are 0.
    """
    scales = delta_filters(order, window)
    half = scales.shape[1] // 2
    t = jnp.arange(feats.shape[1])
    last = jnp.maximum(lengths - 1, 0)[:, None]  # (B, 1)
    outs = [jnp.zeros_like(feats) for _ in range(order + 1)]
    for j in range(scales.shape[1]):  # static unrolled loop over the (few) filter taps
        idx = jnp.clip(t[None, :] + (j - half), 0, last)  # (B, T)
        shifted = jnp.take_along_axis(feats, idx[..., None], axis=1)
        for o in range(order + 1):
            if scales[o, j] != 0.0:
                outs[o] = outs[o] + float(scales[o, j]) * shifted
    out = jnp.concatenate(outs, axis=-1)
    valid = t[None, :] < lengths[:, None]
    return jnp.where(valid[..., None], out, 0.0)


def cmn(feats: jax.Array, lengths: jax.Array, variance: bool = False) -> jax.Array:
    """Cepstral mean (and optionally variance) normalisation per utterance over valid frames."""
    return utterance_mvn(feats, lengths, variance=variance)


@functools.partial(jax.jit, static_argnames=("threshold_db", "context", "proportion"))
def energy_vad(
    log_energy: jax.Array,
    lengths: jax.Array,
    threshold_db: float = 30.0,
    context: int = 5,
    proportion: float = 0.6,
) -> jax.Array:
    """Speech frames by energy: ``(B, T)`` bool.

    A frame is speech when at least ``proportion`` of the frames within ``+-context`` of it (inside the
    utterance) have a natural-log energy above ``max(log_energy) - threshold_db * ln(10) / 10``. Relative to
    the utterance maximum so that it does not depend on the waveform scale (Kaldi's ``compute-vad`` uses an
    absolute threshold on int16-scale energies with the same smoothing).
    """
    t = jnp.arange(log_energy.shape[1])
    valid = t[None, :] < lengths[:, None]
    peak = jnp.max(jnp.where(valid, log_energy, -jnp.inf), axis=1, keepdims=True)
    loud = (log_energy > peak - threshold_db * np.log(10.0) / 10.0) & valid
    c = jnp.cumsum(jnp.pad(loud.astype(jnp.float32), ((0, 0), (1, 0))), axis=1)  # (B, T+1)
    cv = jnp.cumsum(jnp.pad(valid.astype(jnp.float32), ((0, 0), (1, 0))), axis=1)
    lo = jnp.clip(t - context, 0, log_energy.shape[1])
    hi = jnp.clip(t + context + 1, 0, log_energy.shape[1])
    n_loud = c[:, hi] - c[:, lo]
    n_valid = jnp.maximum(cv[:, hi] - cv[:, lo], 1.0)
    return (n_loud >= proportion * n_valid) & valid
