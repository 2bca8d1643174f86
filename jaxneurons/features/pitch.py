"""F0 tracking (YIN) and pitch bins, vectorised in JAX.

YIN (de Cheveigne & Kawahara 2002), every frame at once (no Python loop over frames):

- Frames every ``hop`` = 20 ms (320 samples at 16 kHz, the model frame rate); frame ``t`` is centred on
  sample ``t * hop + centre_offset``; by default ``centre_offset = hop // 2`` (the centre of
  ``[t hop, (t + 1) hop)``) and a batch of ``N`` samples gives ``N // hop`` frames. To align with a model's
  frames pass its centre and count, e.g. ``centre_offset=200`` for wav2vec 2.0-style conv front ends
  (centre ``320 t + 200``) or ``280`` for MelHuBERT's stacked fbank frames (``jaxneurons.data.frames.
  frame_centres``), and ``num_frames=T_model``. A frame is valid when its centre lies inside its
  utterance; the signal is zero outside ``[0, length)``.
- Search range 71-800 Hz by default, the range the property-neuron study gave YAAPT: lags
  ``tau_min = floor(sr / f0_max)`` .. ``tau_max = ceil(sr / f0_min)`` (20 .. 226 samples).
- Difference function over an integration window of ``window_ms`` (25 ms = 400 samples):
  ``d(tau) = sum_{j<W} (x_j - x_{j+tau})^2 = e(0) + e(tau) - 2 r(tau)``, with ``r`` from one real FFT per
  frame and the energies ``e`` from a cumulative sum.
- Cumulative mean normalised difference ``d'(tau) = d(tau) tau / sum_{1<=j<=tau} d(j)``, ``d'(0) = 1``.
- Absolute threshold (``threshold``, default 0.1 as in the YIN paper; 0.1-0.15 are usual): the first lag in
  range with ``d' < threshold``, then followed down to its local minimum; parabolic interpolation of ``d'``
  around it; ``f0 = sr / tau``.
- Voicing: voiced iff such a dip exists and the frame's energy is within ``silence_db`` (default 40 dB) of
  the loudest frame of the utterance and above an absolute floor. Unvoiced frames get ``f0 = 0``.

Against pYAAPT (the study's tracker) on espeak-ng speech, ``benchmarks/bench_pitch_yaapt.py``: where both
call a frame voiced the median F0 difference is 1.3 % (93 % of frames within 5 %); YIN at threshold 0.1
voices 36 % of frames vs YAAPT's 71 % (0.15: 48 %, 0.3: 66 %), so raise ``threshold`` for more coverage.

Pitch bins as in the property-neuron study (arXiv 2409.05910): low / mid / high split at the 33rd and 66th
percentiles of the voiced frames' F0. Their LibriSpeech dev-clean edges (YAAPT) were 129.03 and 179.78 Hz:
:data:`LIBRISPEECH_DEV_CLEAN_PITCH_EDGES`.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxneurons.features.fbank import as_batch

LIBRISPEECH_DEV_CLEAN_PITCH_EDGES: tuple[float, float] = (129.03, 179.78)
"""33rd / 66th percentile F0 (Hz) of voiced frames of LibriSpeech dev-clean, from the property-neuron study."""


def yin_lags(sample_rate: int, f0_min: float, f0_max: float) -> tuple[int, int]:
    """Lag search range ``(tau_min, tau_max)`` in samples for an F0 range."""
    if not 0 < f0_min < f0_max < sample_rate / 2:
        raise ValueError(f"yin: need 0 < f0_min < f0_max < Nyquist, got {f0_min}, {f0_max} at {sample_rate} Hz")
    tau_min = max(2, int(math.floor(sample_rate / f0_max)))
    tau_max = int(math.ceil(sample_rate / f0_min))
    return tau_min, tau_max


@functools.partial(
    jax.jit,
    static_argnames=(
        "sample_rate",
        "hop",
        "f0_min",
        "f0_max",
        "window_ms",
        "threshold",
        "silence_db",
        "energy_floor",
        "centre_offset",
        "num_frames",
    ),
)
def _yin(
    waveforms: jax.Array,
    lengths: jax.Array,
    *,
    sample_rate: int,
    hop: int,
    f0_min: float,
    f0_max: float,
    window_ms: float,
    threshold: float,
    silence_db: float,
    energy_floor: float,
    centre_offset: int,
    num_frames: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    tau_min, tau_max = yin_lags(sample_rate, f0_min, f0_max)
    W = int(round(sample_rate * window_ms * 1e-3))
    n_lag = tau_max + 2  # lags 0 .. tau_max + 1 (the +1 serves local-minimum search and interpolation)
    span = W + n_lag
    n_fft = 1 << (span - 1).bit_length()
    B, N = waveforms.shape
    T = num_frames
    x = waveforms.astype(jnp.float32)
    sample = jnp.arange(N)
    x = jnp.where(sample[None, :] < lengths[:, None], x, 0.0)  # never read past an utterance's end
    # The analysed span (W + n_lag samples) is centred on the frame centre.
    centres = np.arange(T) * hop + centre_offset
    start = centres - span // 2
    pad = span + max(0, int(start[-1]) + span - N)
    xp = jnp.pad(x, ((0, 0), (pad, pad)))
    seg = xp[:, (start + pad)[:, None] + np.arange(span)[None, :]]  # (B, T, span)
    seg = seg - seg.mean(axis=-1, keepdims=True)
    # r(tau) = sum_{j<W} s_j s_{j+tau}: correlation of the first W samples with the whole segment.
    head = jnp.where(np.arange(span) < W, seg, 0.0)
    spec = jnp.conj(jnp.fft.rfft(head, n=n_fft)) * jnp.fft.rfft(seg, n=n_fft)
    r = jnp.fft.irfft(spec, n=n_fft)[..., :n_lag]
    cs = jnp.concatenate([jnp.zeros((B, T, 1)), jnp.cumsum(seg**2, axis=-1)], axis=-1)
    lag = np.arange(n_lag)
    e_tau = cs[..., lag + W] - cs[..., lag]  # energy of s[tau : tau + W]
    e0 = e_tau[..., :1]
    d = jnp.maximum(e0 + e_tau - 2.0 * r, 0.0)
    d = d.at[..., 0].set(0.0)
    cum = jnp.cumsum(d, axis=-1)
    tiny = 1e-12 * jnp.maximum(e0, 1e-30)
    cmnd = jnp.where(lag[None, None, :] == 0, 1.0, d * lag / jnp.maximum(cum, tiny))

    in_range = (lag >= tau_min) & (lag <= tau_max)
    below = (cmnd < threshold) & in_range
    has_dip = below.any(axis=-1)
    first = jnp.argmax(below, axis=-1)
    nxt = jnp.concatenate([cmnd[..., 1:], cmnd[..., -1:]], axis=-1)
    rising = (lag[None, None, :] >= first[..., None]) & (nxt >= cmnd) & (lag <= tau_max)
    tau = jnp.where(rising.any(axis=-1), jnp.argmax(rising, axis=-1), tau_max)
    take = lambda k: jnp.take_along_axis(cmnd, k[..., None], axis=-1)[..., 0]  # noqa: E731
    a, b, c = take(tau - 1), take(tau), take(jnp.minimum(tau + 1, n_lag - 1))
    denom = a - 2.0 * b + c
    shift = jnp.where(denom > 1e-12, 0.5 * (a - c) / jnp.where(denom > 1e-12, denom, 1.0), 0.0)
    shift = jnp.clip(shift, -1.0, 1.0)
    f0 = sample_rate / (tau + shift)
    dip = jnp.min(jnp.where(in_range, cmnd, jnp.inf), axis=-1)

    valid = centres[None, :] < lengths[:, None]
    energy = e0[..., 0] / W
    peak = jnp.max(jnp.where(valid, energy, 0.0), axis=-1, keepdims=True)
    loud = (energy >= peak * 10.0 ** (-silence_db / 10.0)) & (energy > energy_floor)
    voiced = has_dip & loud & valid
    return jnp.where(voiced, f0, 0.0), voiced, jnp.where(valid, dip, 1.0)


def yin(
    waveforms: jax.Array | np.ndarray,
    lengths: jax.Array | np.ndarray | None = None,
    *,
    sample_rate: int = 16000,
    frame_shift_ms: float = 20.0,
    f0_min: float = 71.0,
    f0_max: float = 800.0,
    window_ms: float = 25.0,
    threshold: float = 0.1,
    silence_db: float = 40.0,
    energy_floor: float = 1e-10,
    centre_offset: int | None = None,
    num_frames: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """YIN F0 of a padded batch (see the module docstring).

    Args:
      waveforms: ``(B, N)`` (or ``(N,)``) float samples, zero-padded.
      lengths: ``(B,)`` true sample counts (default all ``N``).
      threshold: YIN absolute threshold on the cumulative mean normalised difference.
      silence_db: frames quieter than the loudest frame of their utterance by more than this are unvoiced.
      energy_floor: absolute floor on the mean square of a frame (waveform units squared).
      centre_offset: centre sample of frame 0 (default ``hop // 2``); frame t is centred at
        ``t * hop + centre_offset``.
      num_frames: frames to return (default ``N // hop``), e.g. a model's frame count.
    Returns:
      ``f0`` ``(B, num_frames)`` in Hz (0 = unvoiced or padding), ``voiced`` bool, and ``aperiodicity`` (the
      minimum of the normalised difference in range, low = strongly periodic; 1 on padding).
    """
    waveforms, lengths, squeeze = as_batch(waveforms, lengths, "yin")
    hop = int(round(sample_rate * frame_shift_ms * 1e-3))
    if waveforms.shape[1] < hop:
        raise ValueError(f"yin: {waveforms.shape[1]} samples is shorter than one {hop}-sample hop")
    centre_offset = hop // 2 if centre_offset is None else int(centre_offset)
    num_frames = waveforms.shape[1] // hop if num_frames is None else int(num_frames)
    if num_frames < 1 or centre_offset < 0:
        raise ValueError(f"yin: need num_frames >= 1 and centre_offset >= 0, got {num_frames}, {centre_offset}")
    out = _yin(
        waveforms,
        lengths,
        sample_rate=sample_rate,
        hop=hop,
        f0_min=float(f0_min),
        f0_max=float(f0_max),
        window_ms=float(window_ms),
        threshold=float(threshold),
        silence_db=float(silence_db),
        energy_floor=float(energy_floor),
        centre_offset=centre_offset,
        num_frames=num_frames,
    )
    return tuple(o[0] for o in out) if squeeze else out  # type: ignore[return-value]


def pitch_bin_edges(f0_voiced_values: np.ndarray | jax.Array) -> tuple[float, float]:
    """(p33, p66): the 33rd and 66th percentiles (linear interpolation) of the voiced F0 values.

    Values ``<= 0`` (unvoiced markers) and non-finite values are ignored; raises when none is left.
    """
    f0 = np.asarray(f0_voiced_values, dtype=np.float64).ravel()
    f0 = f0[np.isfinite(f0) & (f0 > 0)]
    if f0.size == 0:
        raise ValueError("pitch_bin_edges: no voiced (F0 > 0) values to take percentiles of")
    p33, p66 = np.percentile(f0, [33.0, 66.0])
    return float(p33), float(p66)


@jax.jit
def pitch_bins(f0: jax.Array, edges: tuple[float, float] | jax.Array) -> jax.Array:
    """Pitch bin per frame: 0 low (``f0 < p33``), 1 mid (``p33 <= f0 < p66``), 2 high; -1 unvoiced (f0 <= 0)."""
    edges = jnp.asarray(edges, jnp.float32)
    f0 = jnp.asarray(f0)
    bins = (f0 >= edges[0]).astype(jnp.int32) + (f0 >= edges[1]).astype(jnp.int32)
    return jnp.where(f0 > 0, bins, -1)
