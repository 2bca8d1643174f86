"""Whisper's log-mel front end in JAX, as HF ``WhisperFeatureExtractor`` computes it (batched, jit-compiled).

The convention (``transformers.WhisperFeatureExtractor``, the front end of every Whisper checkpoint; Radford
et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision", section 2.2):

1. Each utterance is zero-padded, or truncated, to the model's window of ``n_samples`` samples (30 s at
   16 kHz: HF ``chunk_length * sampling_rate``; ``padding="max_length", truncation=True``). Padding comes
   first: the spectrum, its maximum and therefore the clamp below see the whole window, silence included.
2. STFT like ``torch.stft(n_fft=400, hop_length=160, window=hann_window(400), center=True,
   pad_mode="reflect")``: the window is reflect-padded by ``n_fft // 2`` = 200 samples on both sides, frame
   ``i`` covers padded samples ``[160 i, 160 i + 400)`` (centred on original sample ``160 i``), periodic
   Hann window, power spectrum ``|rfft|^2`` (201 bins). The last frame is dropped: ``n_samples // 160``
   frames (3000 for 30 s).
3. Slaney mel filterbank (``mel_filter_bank(201, num_mel_bins, 0 Hz, 8 kHz, 16 kHz, norm="slaney",
   mel_scale="slaney")``; 80 bins for Whisper v1/v2, 128 for large-v3).
4. ``log10(max(mel, 1e-10))``, clamped from below at the utterance's maximum minus 8, then ``(x + 4) / 4``.

Output layout is time-major ``(B, frames, num_mel_bins)`` (HF's ``input_features`` is its transpose).
Audio samples at or beyond ``lengths`` are zeroed first, so a padded batch gives each utterance exactly the
features it gets alone (the window padding is zeros anyway). Dither (HF default 0) is not supported.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

N_FFT = 400
HOP_LENGTH = 160
SAMPLE_RATE = 16000
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units kept below the utterance's maximum (80 dB)


def _hertz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(freq, 1e-30) / 1000.0) * (27.0 / np.log(6.4)), mels)


def _mel_to_hertz_slaney(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    freq = 200.0 * mels / 3.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels - 15.0)), freq)


@functools.lru_cache(maxsize=8)
def whisper_mel_filters(num_mel_bins: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_fft // 2 + 1, num_mel_bins) float32 Slaney filterbank, 0 Hz to 8 kHz, area-normalised (HF's).

    HF ``mel_filter_bank(..., norm="slaney", mel_scale="slaney")``: triangles computed in float64 on the
    linear frequency axis between mel-spaced edges, each scaled by ``2 / (upper edge - lower edge)``.
    """
    num_bins = 1 + n_fft // 2
    mel_edges = np.linspace(_hertz_to_mel_slaney(0.0), _hertz_to_mel_slaney(8000.0), num_mel_bins + 2)
    edges = _mel_to_hertz_slaney(mel_edges)
    fft_freqs = np.linspace(0, sample_rate // 2, num_bins)
    slopes = edges[None, :] - fft_freqs[:, None]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[None, :]
    return filters.astype(np.float32)


def num_mel_frames(n_samples: int, hop_length: int = HOP_LENGTH) -> int:
    """Log-mel frames of a window of ``n_samples`` samples (HF ``nb_max_frames``: 3000 for 30 s)."""
    return n_samples // hop_length


@functools.partial(jax.jit, static_argnames=("num_mel_bins", "n_samples"))
def whisper_log_mel(audio: jax.Array, lengths: jax.Array | None, *, num_mel_bins: int, n_samples: int) -> jax.Array:
    """Whisper log-mel input ``(B, n_samples // 160, num_mel_bins)`` of zero-padded audio ``(B, S)``.

    ``lengths`` (B,) valid samples per row (None: all ``S``); ``n_samples`` the model's window (480000 for
    the 30 s of every released Whisper). See the module docstring for the exact convention.
    """
    audio = jnp.asarray(audio, jnp.float32)
    batch, width = audio.shape
    if lengths is not None:
        audio = jnp.where(jnp.arange(width)[None, :] < jnp.asarray(lengths)[:, None], audio, 0.0)
    # HF truncation=True / padding="max_length" with padding_value 0.
    audio = audio[:, :n_samples] if width >= n_samples else jnp.pad(audio, ((0, 0), (0, n_samples - width)))
    half = N_FFT // 2
    padded = jnp.pad(audio, ((0, 0), (half, half)), mode="reflect")  # torch.stft(center=True, "reflect")
    frames = num_mel_frames(n_samples)  # the (frames + 1)-th STFT frame is dropped, as HF does
    index = jnp.arange(frames)[:, None] * HOP_LENGTH + jnp.arange(N_FFT)[None, :]
    window = 0.5 - 0.5 * jnp.cos(2.0 * jnp.pi * jnp.arange(N_FFT) / N_FFT)  # periodic Hann
    spectrum = jnp.fft.rfft(padded[:, index] * window, axis=-1)
    power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)  # (B, frames, 201)
    mel = jnp.einsum("btf,fm->btm", power, jnp.asarray(whisper_mel_filters(num_mel_bins)),
                     precision=jax.lax.Precision.HIGHEST)
    log_spec = jnp.log10(jnp.maximum(mel, LOG_FLOOR))
    peak = jnp.max(log_spec, axis=(1, 2), keepdims=True)
    log_spec = jnp.maximum(log_spec, peak - DYNAMIC_RANGE)
    return (log_spec + 4.0) / 4.0


__all__ = ["HOP_LENGTH", "N_FFT", "num_mel_frames", "whisper_log_mel", "whisper_mel_filters"]
