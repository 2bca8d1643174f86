"""TERA / Mockingjay / Audio ALBERT encoders (s3prl ``upstream/mockingjay``) in Flax NNX.

TERA (Liu, Li, Lee, TASLP 2021, arXiv:2007.06028) and Mockingjay (Liu et al., ICASSP 2020) are BERT-style
Transformers on spectrogram frames. s3prl's ``TransformerModel`` computes, for frames ``x`` (B, T, input_dim)::

    h_0 = LayerNorm(spec_transform(x) + PE)            # sinusoidal PE, s3prl `position_encoding`
    h_l = BERT layer(h_{l-1})                          # post-LN, or pre-LN with `pre_layer_norm`
    hidden states = [h_0, ..., h_L]                    # pre-LN: each through its own LayerNorm[i]

with additive -10000 attention masking of padded keys, ``layer_norm_eps`` inside the square root (TF style,
the same as PyTorch's LayerNorm) and an optional spectrogram prediction head (``SpecHead``: dense, act,
LayerNorm, output). Attribute names follow the layout every family shares
(``encoder.layers.{i}.attention.q_proj``, ``feed_forward.intermediate_dense``, ...), so FFN capture (``sow``),
neuron masks, head masks, pruning and the scan need no TERA case; the converter renames s3prl's keys.

Front ends (:class:`SpeechConfig` ``s3prl_features``), per utterance exactly as s3prl computes them:

* ``online_mel`` (s3prl ``OnlinePreprocessor``, every released TERA): waveform scaled to ``target_level_db``
  RMS (``x * 10^(level/20) / (rms + 1e-10)``), ``torch.stft`` with ``center=True`` / reflect padding, Hann
  window (periodic) of 400 samples, hop 160, power spectrum, torchaudio ``MelScale`` (HTK mel, no norm,
  0-8000 Hz), ``log(mel + 1e-10)``. Frame ``t`` is centred on sample ``160 t``; ``1 + N // 160`` frames.
* ``kaldi_fbank`` (s3prl ``baseline/extracter``): ``torchaudio.compliance.kaldi.fbank`` with its defaults
  (Povey window, no dither, waveform in [-1, 1]) and the config's ``num_mel_bins``; Kaldi ``snip_edges`` frames.

then ``feature_delta`` orders of torchaudio ``compute_deltas`` (window ``delta_win_length``, replicate padding at
each utterance's own ends) and CMVN ``(x - mean) / (std + 1e-10)`` over the utterance (unbiased std).

Long inputs: with ``chunk_length`` (s3prl ``task.sequence_length``) > 0, s3prl runs an input of ``n > chunk_length``
frames as ``ceil(n / chunk_length)`` independent equal chunks (``torch.chunk``), each with its own position
encoding. We do the same per utterance (attention only within a chunk, positions restarting), so an utterance
gives the same result alone or in a padded batch (s3prl chunks a padded batch by its padded length instead, and its
``online_mel`` reflect-pads a short utterance's STFT with the batch's zeros: its batches depend on the padding).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxneurons.features.fbank import fbank
from jaxneurons.models.blocks import activation_fn, frame_mask, make_layer_norm, make_linear
from jaxneurons.models.config import SpeechConfig
from jaxneurons.models.wav2vec2 import EncoderLayer, EncoderOutput, layer_slice

Array = jax.Array

STFT_WINDOW = 400  # OnlinePreprocessor: win_ms 25 at 16 kHz, n_fft = (n_freq - 1) * 2 = 400
STFT_HOP = 160
STFT_BINS = 201
LOG_EPS = 1e-10  # OnlinePreprocessor.eps and CMVN eps
KALDI_WINDOW, KALDI_HOP = 400, 160
CHUNK_MASK = -1e9  # scores across chunks: exp() is exactly 0, like separate forward passes


@functools.lru_cache(maxsize=16)
def sinusoid_table(num_positions: int, hidden_size: int) -> np.ndarray:
    """s3prl ``get_sinusoid_table``: ``pos / 10000^(2 (j // 2) / d)``, sin on even j, cos on odd (float64 -> f32)."""
    pos = np.arange(num_positions, dtype=np.float64)[:, None]
    j = np.arange(hidden_size)[None, :]
    angle = pos / np.power(10000, 2 * (j // 2) / hidden_size)
    table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


@functools.lru_cache(maxsize=8)
def htk_mel_filters(num_mel_bins: int, sample_rate: int = 16000, n_freqs: int = STFT_BINS) -> np.ndarray:
    """torchaudio ``melscale_fbanks(n_freqs, 0, sr / 2, n_mels, sr, norm=None, mel_scale='htk')``: (n_freqs, mels)."""
    all_freqs = np.linspace(0, sample_rate // 2, n_freqs, dtype=np.float32)
    m_max = 2595.0 * np.log10(1.0 + (sample_rate / 2) / 700.0)
    m_pts = np.linspace(0.0, m_max, num_mel_bins + 2, dtype=np.float32)
    f_pts = (700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)).astype(np.float32)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


def _online_power_frames(audio: Array, lengths: Array) -> tuple[Array, Array]:
    """Centred, reflect-padded STFT power frames of each utterance (its own length): (B, T, 201), frames (B,)."""
    b, s = audio.shape
    t_max = 1 + s // STFT_HOP
    idx = np.arange(t_max)[:, None] * STFT_HOP - STFT_WINDOW // 2 + np.arange(STFT_WINDOW)[None, :]
    idx = jnp.asarray(idx)[None]  # (1, T, W)
    last = (lengths - 1)[:, None, None]
    idx = jnp.abs(idx)  # reflect at the start: x[-i] -> x[i]
    idx = jnp.where(idx > last, 2 * last - idx, idx)  # reflect at each utterance's own end
    idx = jnp.clip(jnp.broadcast_to(idx, (b, t_max, STFT_WINDOW)), 0, s - 1)
    frames = jax.vmap(lambda x, i: x[i])(audio, idx)  # (B, T, W)
    n = np.arange(STFT_WINDOW)
    window = (0.5 - 0.5 * np.cos(2.0 * math.pi * n / STFT_WINDOW)).astype(np.float32)  # periodic Hann
    spec = jnp.fft.rfft(frames * window, n=STFT_WINDOW, axis=-1)
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2, 1 + lengths // STFT_HOP


def compute_deltas(feats: Array, lengths: Array, win_length: int = 5) -> Array:
    """torchaudio ``compute_deltas`` along time, replicate-padded at each utterance's own first/last frame."""
    half = (win_length - 1) // 2
    denom = half * (half + 1) * (2 * half + 1) / 3
    t = jnp.arange(feats.shape[1])
    out = jnp.zeros_like(feats)
    for k in range(-half, half + 1):
        if k == 0:
            continue
        src = jnp.clip(t[None, :] + k, 0, jnp.maximum(lengths[:, None] - 1, 0))  # (B, T)
        out = out + k * jnp.take_along_axis(feats, src[..., None], axis=1)
    return out / denom


def s3prl_features(config: SpeechConfig, audio: Array, lengths: Array) -> tuple[Array, Array]:
    """The s3prl front end the config names: (B, T, input_dim) frames (0 beyond each length) and lengths (B,)."""
    valid_samples = jnp.arange(audio.shape[1])[None, :] < lengths[:, None]
    audio = jnp.where(valid_samples, audio.astype(jnp.float32), 0.0)
    if config.s3prl_features == "online_mel":
        if config.target_level_db is not None:
            count = jnp.maximum(lengths, 1).astype(jnp.float32)[:, None]
            rms = jnp.sqrt(jnp.sum(audio**2, axis=1, keepdims=True) / count)
            audio = audio * ((10.0 ** (config.target_level_db / 20.0)) / (rms + LOG_EPS))
        power, n_frames = _online_power_frames(audio, lengths)
        filters = jnp.asarray(htk_mel_filters(config.num_mel_bins, config.sample_rate))
        feats = jnp.einsum("btk,km->btm", power, filters, precision=jax.lax.Precision.HIGHEST)
        if config.feature_log:
            feats = jnp.log(feats + LOG_EPS)
    else:
        feats, n_frames = fbank(audio, lengths, num_mel_bins=config.num_mel_bins, window_type="povey",
                                use_log=config.feature_log)
    parts = [feats]
    for _ in range(config.feature_delta):
        parts.append(compute_deltas(parts[-1], n_frames, config.delta_win_length))
    feats = jnp.concatenate(parts, axis=-1)
    valid = (jnp.arange(feats.shape[1])[None, :] < n_frames[:, None])[..., None]
    if config.feature_cmvn:
        count = jnp.maximum(n_frames, 1).astype(jnp.float32)[:, None, None]
        mean = jnp.sum(jnp.where(valid, feats, 0.0), axis=1, keepdims=True) / count
        var = jnp.sum(jnp.where(valid, (feats - mean) ** 2, 0.0), axis=1, keepdims=True) / jnp.maximum(count - 1, 1)
        feats = (feats - mean) / (jnp.sqrt(var) + LOG_EPS)
    return jnp.where(valid, feats, 0.0), n_frames


def input_dim(config: SpeechConfig) -> int:
    """Size of the frames ``spec_transform`` reads."""
    return config.num_mel_bins * (1 + config.feature_delta)


def chunk_positions(lengths: Array, num_frames: int, chunk_length: int) -> tuple[Array, Array]:
    """Per frame, its chunk index and position inside the chunk (s3prl's ``torch.chunk`` of each utterance)."""
    t = jnp.arange(num_frames)[None, :]
    if chunk_length <= 0:
        return jnp.zeros_like(t) + jnp.zeros_like(lengths)[:, None], t + jnp.zeros_like(lengths)[:, None]
    n = jnp.maximum(lengths, 1)[:, None]
    chunks = -(-n // chunk_length)
    size = -(-n // chunks)
    index = t // size
    return index, t - index * size


class TeraInputRepresentations(nnx.Module):
    """s3prl ``TransformerInputRepresentations``: LayerNorm(spec_transform(x) + PE)."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        self.spec_transform = make_linear(input_dim(config), config.hidden_size, rngs)
        self.layer_norm = make_layer_norm(config.hidden_size, config.layer_norm_eps, rngs)

    def __call__(self, x: Array, pos_enc: Array) -> Array:
        return self.layer_norm(self.spec_transform(x) + pos_enc)


class TeraEncoder(nnx.Module):
    """BERT layers; pre-LN models have one LayerNorm per reported hidden state (s3prl ``encoder.LayerNorm``)."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        self.layers = nnx.List([EncoderLayer(config, i, rngs) for i in range(config.num_hidden_layers)])
        self.stable = config.do_stable_layer_norm
        self.output_norms = (
            nnx.List([make_layer_norm(config.hidden_size, config.layer_norm_eps, rngs)
                      for _ in range(config.num_hidden_layers + 1)]) if self.stable else None
        )

    def __call__(self, x, key_mask, bias, neuron_mask=None, neuron_offset=None, head_mask=None):
        states = []
        for i, layer in enumerate(self.layers):
            states.append(self.output_norms[i](x) if self.stable else x)
            x = layer(x, key_mask, layer_slice(neuron_mask, i), layer_slice(neuron_offset, i),
                      layer_slice(head_mask, i), bias=bias)
        states.append(self.output_norms[-1](x) if self.stable else x)
        return states[-1], tuple(states)


class TeraSpecHead(nnx.Module):
    """s3prl ``TransformerSpecPredictionHead``: output(LayerNorm(act(dense(h))))."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        self.dense = make_linear(config.hidden_size, config.hidden_size, rngs)
        self.layer_norm = make_layer_norm(config.hidden_size, config.layer_norm_eps, rngs)
        self.output = make_linear(config.hidden_size, config.spec_head_dim, rngs)
        self.act = config.hidden_act

    def __call__(self, h: Array) -> Array:
        return self.output(self.layer_norm(activation_fn(self.act)(self.dense(h))))


class TeraModel(nnx.Module):
    """Waveform (B, S) at 16 kHz -> :class:`EncoderOutput` (s3prl mockingjay / TERA upstream)."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        if config.family != "tera":
            raise ValueError(f"TeraModel needs a 'tera' config, got family {config.family!r}")
        self.config = config
        self.input_representations = TeraInputRepresentations(config, rngs)
        self.encoder = TeraEncoder(config, rngs)
        self.spec_head = TeraSpecHead(config, rngs) if config.spec_head_dim else None

    def num_frames(self, num_samples: Array | int) -> Array | int:
        """Frames from ``num_samples`` samples: ``1 + N // 160`` (centred STFT) or Kaldi's snip_edges count."""
        if self.config.s3prl_features == "online_mel":
            return 1 + num_samples // STFT_HOP
        if isinstance(num_samples, int):
            return 1 + (num_samples - KALDI_WINDOW) // KALDI_HOP if num_samples >= KALDI_WINDOW else 0
        n = jnp.asarray(num_samples)
        return jnp.where(n >= KALDI_WINDOW, 1 + (n - KALDI_WINDOW) // KALDI_HOP, 0)

    def __call__(
        self,
        audio: Array,
        audio_lengths: Array | None = None,
        *,
        neuron_mask: Array | Sequence[Array] | None = None,
        neuron_offset: Array | Sequence[Array] | None = None,
        head_mask: Array | None = None,
        time_mask: Array | None = None,
    ) -> EncoderOutput:
        """Same contract as :meth:`jaxneurons.models.wav2vec2.Wav2Vec2Model.__call__`; ``time_mask`` zeroes
        input frames (TERA's masked acoustic modelling)."""
        batch, num_samples = audio.shape
        if audio_lengths is None:
            audio_lengths = jnp.full((batch,), num_samples, dtype=jnp.int32)
        feats, lengths = s3prl_features(self.config, audio, audio_lengths.astype(jnp.int32))
        if time_mask is not None:
            feats = jnp.where(time_mask[:, :, None], 0.0, feats)
        t = feats.shape[1]
        mask = frame_mask(lengths, t)
        chunk, pos = chunk_positions(lengths, t, self.config.chunk_length)
        table = jnp.asarray(sinusoid_table(max(t, 1), self.config.hidden_size))
        hidden = self.input_representations(feats, table[pos])
        bias = None
        if self.config.chunk_length > 0:
            same = chunk[:, :, None] == chunk[:, None, :]
            bias = jnp.where(same, 0.0, CHUNK_MASK)[:, None]
        last, hidden_states = self.encoder(hidden, mask, bias, neuron_mask, neuron_offset, head_mask)
        return EncoderOutput(last, hidden_states, lengths, mask, feats)

    def predict(self, output: EncoderOutput) -> Array:
        """Spectrogram reconstruction (B, T, spec_head_dim) from the last hidden state (s3prl ``SpecHead``)."""
        if self.spec_head is None:
            raise ValueError("this TERA model has no spectrogram prediction head (spec_head_dim=0)")
        return self.spec_head(output.last_hidden_state)


def frame_geometry(config: SpeechConfig):
    """Receptive-field geometry for frame labels: a frame's label is the segment at its centre sample.

    ``online_mel`` frames are centred on sample ``160 t`` (torch.stft ``center=True``): a 1-sample "kernel" with
    stride 160 has exactly that centre. ``kaldi_fbank`` frames are Kaldi's ``[160 t, 160 t + 400)``.
    """
    from jaxneurons.data.frames import ConvFrontEnd, FbankFrontEnd

    if config.s3prl_features == "online_mel":
        return ConvFrontEnd((1,), (STFT_HOP,))
    return FbankFrontEnd(hop=KALDI_HOP, window=KALDI_WINDOW, stack=1)
