"""Kaldi-convention log-mel filterbank in JAX (batched, padded, jit-compiled).

The convention is Kaldi's ``compute-fbank-feats`` as re-implemented by
``torchaudio.compliance.kaldi.fbank`` (the front end of MelHuBERT, 40 bins, and AST, 128 bins):

1. Framing with ``snip_edges=True``: window ``int(sr * 0.025)`` = 400 samples, shift
   ``int(sr * 0.010)`` = 160 samples; frame ``t`` covers samples ``[160 t, 160 t + 400)``; an utterance of
   ``N >= 400`` samples has ``1 + (N - 400) // 160`` frames (0 frames when ``N < 400``).
2. Optional dither: ``x += dither * N(0, 1)`` (default 0, i.e. off, as in torchaudio; Kaldi's binary
   defaults to 1.0 on int16-scale audio).
3. DC removal: subtract the frame mean.
4. Pre-emphasis 0.97: ``y[i] = x[i] - 0.97 x[i-1]`` with ``x[-1] := x[0]`` (Kaldi replicates the first
   sample).
5. Window: Povey (``hann(400, symmetric) ** 0.85``) by default; ``hanning`` (AST), ``hamming`` or
   ``rectangular`` on request.
6. Zero-pad to the next power of two (512) and take the power spectrum ``|rfft|^2`` (257 bins).
7. Mel filterbank: mel(f) = 1127 ln(1 + f / 700); ``num_mel_bins`` triangles equally spaced *in the mel
   domain* between ``low_freq`` = 20 Hz and ``high_freq`` (0 or negative means Nyquist + high_freq);
   the weight of FFT bin k (frequency ``k * sr / 512``) is the triangle evaluated at ``mel(k sr/512)``;
   the Nyquist bin gets weight 0 (Kaldi builds 256 columns and torchaudio pads a zero one).
8. ``log(max(energy, eps))`` with eps = float32 epsilon (1.1920929e-07).

The scale of the input is kept as given: Kaldi tools read int16 samples (range +-32768); torchaudio
callers usually pass [-1, 1] floats. Multiply by 32768 yourself if a model was trained on the int16 scale
(the log output differs by the constant ``2 ln 32768`` except where the floor is hit).

Padding: ``waveforms`` is ``(B, N)`` zero-padded with true lengths ``lengths``; frames at or beyond an
utterance's frame count are set to 0 and the frame counts are returned, so the output is exactly the
per-utterance result stacked and padded.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)  # Kaldi's log floor (std::numeric_limits<float>::epsilon)
WINDOW_TYPES = ("povey", "hanning", "hamming", "rectangular")


def mel_scale(freq: np.ndarray | float) -> np.ndarray:
    """Kaldi / HTK mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(freq, dtype=np.float64) / 700.0)


def inverse_mel_scale(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`mel_scale`."""
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


def frame_params(sample_rate: int, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0) -> tuple[
    int, int, int
]:
    """(window size, window shift, padded FFT size) in samples, computed as Kaldi/torchaudio do."""
    win = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if win < 2 or shift < 1:
        raise ValueError(f"fbank: window {win} / shift {shift} samples too small at {sample_rate} Hz")
    n_fft = 1 << (win - 1).bit_length()  # next power of two >= win
    return win, shift, n_fft


def num_frames(num_samples: np.ndarray | int, window: int = 400, shift: int = 160) -> np.ndarray:
    """Kaldi ``snip_edges=True`` frame count: ``1 + (N - window) // shift``, or 0 when ``N < window``."""
    n = np.asarray(num_samples, dtype=np.int64)
    return np.where(n >= window, 1 + (n - window) // shift, 0)


def window_function(window_type: str, size: int) -> np.ndarray:
    """The analysis window, symmetric as Kaldi builds it (float64)."""
    if window_type not in WINDOW_TYPES:
        raise ValueError(f"fbank: unknown window_type {window_type!r}; expected one of {WINDOW_TYPES}")
    if window_type == "rectangular":
        return np.ones(size)
    n = np.arange(size)
    if window_type == "hamming":
        return 0.54 - 0.46 * np.cos(2.0 * math.pi * n / (size - 1))
    hann = 0.5 - 0.5 * np.cos(2.0 * math.pi * n / (size - 1))
    return hann**0.85 if window_type == "povey" else hann


@functools.lru_cache(maxsize=32)
def mel_banks(
    num_mel_bins: int, n_fft: int, sample_rate: float, low_freq: float = 20.0, high_freq: float = 0.0
) -> np.ndarray:
    """Kaldi triangular mel filters, shape ``(n_fft // 2 + 1, num_mel_bins)`` (float32, Nyquist row 0)."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < nyquist and low_freq < high_freq <= nyquist):
        raise ValueError(
            f"fbank: need 0 <= low_freq < high_freq <= Nyquist, got low_freq={low_freq}, "
            f"high_freq={high_freq}, Nyquist={nyquist}"
        )
    if num_mel_bins < 3:
        raise ValueError(f"fbank: num_mel_bins must be >= 3, got {num_mel_bins}")
    num_fft_bins = n_fft // 2
    fft_bin_width = sample_rate / n_fft
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high_freq)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    b = np.arange(num_mel_bins, dtype=np.float64)[:, None]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = mel_scale(fft_bin_width * np.arange(num_fft_bins, dtype=np.float64))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))  # (num_mel_bins, num_fft_bins)
    banks = np.concatenate([banks, np.zeros((num_mel_bins, 1))], axis=1)  # Nyquist bin weight 0
    return np.ascontiguousarray(banks.T.astype(np.float32))


def as_batch(
    waveforms: jax.Array | np.ndarray, lengths: jax.Array | np.ndarray | None, what: str
) -> tuple[jax.Array, jax.Array, bool]:
    """``(B, N)`` waveforms, ``(B,)`` int32 lengths (default N) and whether the input was a single ``(N,)``.

    Shared by the feature functions so they accept and check batches the same way; ``what`` names the caller
    in errors.
    """
    waveforms = jnp.asarray(waveforms)
    squeeze = waveforms.ndim == 1
    if squeeze:
        waveforms = waveforms[None]
        lengths = None if lengths is None else jnp.reshape(jnp.asarray(lengths), (1,))
    if waveforms.ndim != 2:
        raise ValueError(f"{what}: waveforms must be (batch, samples), got shape {waveforms.shape}")
    if lengths is None:
        lengths = jnp.full((waveforms.shape[0],), waveforms.shape[1], jnp.int32)
    lengths = jnp.asarray(lengths, jnp.int32)
    if lengths.shape != (waveforms.shape[0],):
        raise ValueError(f"{what}: lengths must have shape ({waveforms.shape[0]},), got {lengths.shape}")
    return waveforms, lengths, squeeze


def power_spectrum_frames(
    waveforms: jax.Array,
    *,
    sample_rate: int = 16000,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    window_type: str = "povey",
    dither: float = 0.0,
    key: jax.Array | None = None,
) -> jax.Array:
    """Kaldi framing + DC removal + pre-emphasis + window + ``|rfft|^2``: ``(B, T_max, n_fft//2+1)``.

    Traceable building block of :func:`fbank` (call it inside your own jit).
    """
    win, shift, n_fft = frame_params(sample_rate, frame_length_ms, frame_shift_ms)
    n_samples = waveforms.shape[1]
    t_max = int(num_frames(n_samples, win, shift))
    x = waveforms.astype(jnp.float32)
    idx = np.arange(t_max)[:, None] * shift + np.arange(win)[None, :]  # (T, win) static gather
    frames = x[:, idx]  # (B, T, win)
    if dither != 0.0:
        if key is None:
            raise ValueError("fbank: dither != 0 needs a PRNG key")
        frames = frames + dither * jax.random.normal(key, frames.shape, frames.dtype)
    if remove_dc_offset:
        frames = frames - frames.mean(axis=-1, keepdims=True)
    if preemphasis != 0.0:
        prev = jnp.concatenate([frames[..., :1], frames[..., :-1]], axis=-1)
        frames = frames - preemphasis * prev
    frames = frames * jnp.asarray(window_function(window_type, win), jnp.float32)
    spec = jnp.fft.rfft(frames, n=n_fft, axis=-1)
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


@functools.partial(
    jax.jit,
    static_argnames=(
        "sample_rate",
        "num_mel_bins",
        "frame_length_ms",
        "frame_shift_ms",
        "preemphasis",
        "remove_dc_offset",
        "window_type",
        "low_freq",
        "high_freq",
        "dither",
        "use_log",
    ),
)
def _fbank(
    waveforms: jax.Array,
    lengths: jax.Array,
    key: jax.Array | None,
    *,
    sample_rate: int,
    num_mel_bins: int,
    frame_length_ms: float,
    frame_shift_ms: float,
    preemphasis: float,
    remove_dc_offset: bool,
    window_type: str,
    low_freq: float,
    high_freq: float,
    dither: float,
    use_log: bool,
) -> tuple[jax.Array, jax.Array]:
    win, shift, n_fft = frame_params(sample_rate, frame_length_ms, frame_shift_ms)
    power = power_spectrum_frames(
        waveforms,
        sample_rate=sample_rate,
        frame_length_ms=frame_length_ms,
        frame_shift_ms=frame_shift_ms,
        preemphasis=preemphasis,
        remove_dc_offset=remove_dc_offset,
        window_type=window_type,
        dither=dither,
        key=key,
    )
    banks = jnp.asarray(mel_banks(num_mel_bins, n_fft, float(sample_rate), low_freq, high_freq))
    energies = jnp.einsum("btk,km->btm", power, banks, precision=jax.lax.Precision.HIGHEST)
    feats = jnp.log(jnp.maximum(energies, FLOAT32_EPS)) if use_log else energies
    lengths = lengths.astype(jnp.int32)
    n_frames = jnp.where(lengths >= win, 1 + (lengths - win) // shift, 0)
    valid = jnp.arange(feats.shape[1])[None, :] < n_frames[:, None]
    return jnp.where(valid[..., None], feats, 0.0), n_frames


def fbank(
    waveforms: jax.Array | np.ndarray,
    lengths: jax.Array | np.ndarray | None = None,
    *,
    sample_rate: int = 16000,
    num_mel_bins: int = 40,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    window_type: str = "povey",
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    dither: float = 0.0,
    use_log: bool = True,
    key: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Kaldi log-mel filterbank of a padded batch (see the module docstring for the exact convention).

    Args:
      waveforms: ``(B, N)`` (or ``(N,)``) float samples, zero-padded after each utterance's end.
      lengths: ``(B,)`` true sample counts (default: all ``N``).
      num_mel_bins: 40 for MelHuBERT (the default), 128 for AST, 23 is Kaldi's own default.
      dither: Gaussian dither amplitude (0 = off); needs ``key`` when non-zero.
    Returns:
      ``feats`` ``(B, T_max, num_mel_bins)`` float32 (0 beyond each utterance's frames) and ``n_frames``
      ``(B,)`` int32 with ``T_max = 1 + (N - 400) // 160`` at 16 kHz.
    """
    waveforms, lengths, squeeze = as_batch(waveforms, lengths, "fbank")
    win, _, _ = frame_params(sample_rate, frame_length_ms, frame_shift_ms)
    if waveforms.shape[1] < win:
        raise ValueError(f"fbank: {waveforms.shape[1]} samples is shorter than one {win}-sample window")
    feats, n = _fbank(
        waveforms,
        lengths,
        key,
        sample_rate=sample_rate,
        num_mel_bins=num_mel_bins,
        frame_length_ms=frame_length_ms,
        frame_shift_ms=frame_shift_ms,
        preemphasis=preemphasis,
        remove_dc_offset=remove_dc_offset,
        window_type=window_type,
        low_freq=float(low_freq),
        high_freq=float(high_freq),
        dither=float(dither),
        use_log=use_log,
    )
    return (feats[0], n[0]) if squeeze else (feats, n)


@functools.partial(jax.jit, static_argnames=("variance", "eps"))
def utterance_mvn(
    feats: jax.Array, lengths: jax.Array, variance: bool = True, eps: float = 1e-5
) -> jax.Array:
    """Per-utterance mean (and variance) normalisation over the valid frames of a padded batch.

    ``feats`` is ``(B, T, D)``, ``lengths`` ``(B,)`` frame counts. Padded frames stay 0. The variance is the
    biased (population) one; ``eps`` is added to it before the square root so constant bins do not blow up.
    """
    valid = (jnp.arange(feats.shape[1])[None, :] < lengths[:, None]).astype(feats.dtype)[..., None]
    count = jnp.maximum(valid.sum(axis=1, keepdims=True), 1.0)
    mean = (feats * valid).sum(axis=1, keepdims=True) / count
    out = (feats - mean) * valid
    if variance:
        var = (out**2).sum(axis=1, keepdims=True) / count
        out = out * jax.lax.rsqrt(var + eps)
    return out
