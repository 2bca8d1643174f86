"""Whisper encoder (Radford et al. 2022) in Flax NNX, numerically equal to HF ``WhisperModel.encoder``.

Pipeline (HF ``WhisperFeatureExtractor`` + ``WhisperEncoder``):

1. Front end, per utterance: log-mel spectrogram of the audio zero-padded to the model's window
   (:mod:`jaxneurons.features.whisper_mel`; ``num_mel_bins`` 80 or 128, 10 ms hop), ``2 P`` mel frames with
   ``P = max_source_positions`` (3000 frames = 30 s for every released Whisper).
2. ``conv1`` (kernel 3, padding 1) + GELU, ``conv2`` (kernel 3, stride 2, padding 1) + GELU: ``P`` frames of
   20 ms, plus the fixed sinusoidal ``embed_positions``.
3. Pre-LN Transformer layers (``x + attn(LN(x))``, ``x + ffn(LN(x))``; ``k_proj`` has no bias), no attention
   mask (HF's encoder ignores padding: every frame of the window attends to every other), final ``layer_norm``.

Frames. The encoder always runs on the whole window, as HF does, so the values of the frames covering the
audio equal HF's. Encoder frame ``t`` is centred on mel frame ``2 t``, i.e. on sample ``320 t`` (the STFT is
centred). Its frames "cover real audio" as HF's own ``attention_mask`` says: mel frame ``i`` is real when
sample ``160 i`` is inside the utterance, so an utterance of ``n`` samples has ``ceil(n / 320)`` real frames
(``frame_lengths``, capped at ``P``; audio beyond the window is cut, as HF's ``truncation=True`` does).
:meth:`WhisperModel.__call__` returns only the first ``num_frames(S)`` frames of a batch of width ``S`` (and
:func:`~jaxneurons.models.registry.forward_with_captures` cuts the captured FFN values and attention maps to
them), with ``frame_mask`` marking each utterance's real frames: statistics, probes and head metrics count
only those. The rows of a captured attention map over real frames therefore omit the mass on the silent
rest of the window (head metrics renormalise rows over valid frames). :meth:`WhisperModel.encode_features`
returns HF's full ``P`` frames.

Parameter paths are the ones all families share (``encoder.layers[i].attention.{q,k,v,out}_proj``,
``.layer_norm`` before attention, ``.final_layer_norm`` before the FFN,
``.feed_forward.{intermediate_dense,output_dense}``); the front end keeps HF's names (``encoder.conv1``,
``encoder.conv2``, ``encoder.embed_positions``, ``encoder.layer_norm``). ``checkpoints_convert.whisper`` maps
HF's ``self_attn`` / ``fc1`` / ``fc2`` names onto them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxneurons.features.whisper_mel import HOP_LENGTH, whisper_log_mel
from jaxneurons.models.blocks import Conv1d, SelfAttention, activation_fn, frame_mask, make_layer_norm, make_linear
from jaxneurons.models.config import SpeechConfig
from jaxneurons.models.wav2vec2 import EncoderLayer, EncoderOutput, layer_slice

Array = jax.Array

SAMPLES_PER_FRAME = 2 * HOP_LENGTH  # conv2's stride 2 over 10 ms mel frames: 20 ms encoder frames


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's fixed positional embedding (HF ``sinusoids``): ``[sin(t w_k), cos(t w_k)]``, (length, channels)."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-increment * np.arange(channels // 2, dtype=np.float32))
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


def window_samples(config: SpeechConfig) -> int:
    """Samples of the encoder's window: ``2 * max_source_positions * 160`` (480000 = 30 s)."""
    return config.max_source_positions * SAMPLES_PER_FRAME


class SinusoidalPositions(nnx.Module):
    """``embed_positions`` (P, C): sinusoids at init, the checkpoint's values after conversion (frozen in HF)."""

    def __init__(self, config: SpeechConfig):
        self.embedding = nnx.Param(jnp.asarray(sinusoids(config.max_source_positions, config.hidden_size)))


class WhisperSelfAttention(SelfAttention):
    """The shared attention (head mask, ``AttentionProbs`` capture) with Whisper's bias-free ``k_proj``."""

    def __init__(self, hidden_size: int, num_heads: int, rngs: nnx.Rngs):
        super().__init__(hidden_size, num_heads, rngs)
        self.k_proj = make_linear(hidden_size, hidden_size, rngs, use_bias=False)


class WhisperEncoder(nnx.Module):
    """Convolutional stem + sinusoidal positions + pre-LN layers + final LayerNorm (HF ``WhisperEncoder``)."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        c = config.hidden_size
        self.conv1 = Conv1d(config.num_mel_bins, c, 3, rngs, padding=1)
        self.conv2 = Conv1d(c, c, 3, rngs, stride=2, padding=1)
        self.embed_positions = SinusoidalPositions(config)
        pre_ln = config.replace(do_stable_layer_norm=True)  # every Whisper layer is pre-LN, whatever the field says
        self.layers = nnx.List([
            EncoderLayer(pre_ln, i, rngs, attention=WhisperSelfAttention(c, config.num_attention_heads, rngs))
            for i in range(config.num_hidden_layers)
        ])
        self.layer_norm = make_layer_norm(c, config.layer_norm_eps, rngs)

    def __call__(
        self,
        features: Array,
        neuron_mask: Array | Sequence[Array] | None = None,
        neuron_offset: Array | Sequence[Array] | None = None,
        head_mask: Array | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """``features`` (B, 2 P, mel) -> (final-normed (B, P, C), hidden states [stem output, layer outputs...])."""
        gelu = activation_fn("gelu")  # HF applies nn.functional.gelu (exact) in the stem, whatever hidden_act is
        x = gelu(self.conv2(gelu(self.conv1(features))))
        x = x + self.embed_positions.embedding[...]
        hidden_states = [x]
        for i, layer in enumerate(self.layers):
            x = layer(x, None, layer_slice(neuron_mask, i), layer_slice(neuron_offset, i), layer_slice(head_mask, i))
            hidden_states.append(x)
        return self.layer_norm(x), tuple(hidden_states)


class WhisperModel(nnx.Module):
    """Waveform (B, S) at 16 kHz -> :class:`EncoderOutput` of Whisper's encoder (see the module docstring)."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        if config.family != "whisper":
            raise ValueError(f"WhisperModel needs a 'whisper' config, got family {config.family!r}")
        self.config = config
        self.encoder = WhisperEncoder(config, rngs)

    # Geometry -----------------------------------------------------------------------------------------

    def num_frames(self, num_samples: Array | int) -> Array | int:
        """Frames covering ``num_samples`` samples of audio: ``ceil(n / 320)``, at most ``max_source_positions``.

        HF's rule (``attention_mask[:, ::160]`` then ``(m - 1) // 2 + 1``); 0 for an empty row.
        """
        cap = self.config.max_source_positions
        if isinstance(num_samples, int | np.integer):
            return min(-(-int(num_samples) // SAMPLES_PER_FRAME), cap) if num_samples > 0 else 0
        n = jnp.maximum(jnp.asarray(num_samples), 0)
        return jnp.minimum((n + SAMPLES_PER_FRAME - 1) // SAMPLES_PER_FRAME, cap).astype(jnp.int32)

    # Front end ----------------------------------------------------------------------------------------

    def features(self, audio: Array, audio_lengths: Array | None = None) -> Array:
        """HF ``WhisperFeatureExtractor`` log-mel input, time-major ``(B, 2 P, num_mel_bins)``."""
        return whisper_log_mel(audio, audio_lengths, num_mel_bins=self.config.num_mel_bins,
                               n_samples=window_samples(self.config))

    # Forward ------------------------------------------------------------------------------------------

    def encode_features(
        self,
        features: Array,
        feature_lengths: Array | None = None,
        *,
        num_output_frames: int | None = None,
        neuron_mask: Array | Sequence[Array] | None = None,
        neuron_offset: Array | Sequence[Array] | None = None,
        head_mask: Array | None = None,
    ) -> EncoderOutput:
        """Encoder on log-mel ``features`` (B, 2 P, mel) (HF ``input_features`` transposed); masks as in ``__call__``.

        ``feature_lengths`` (B,) real mel frames per row (default: all); ``num_output_frames`` keeps the first
        frames of the outputs (default: all ``P``, exactly HF's ``last_hidden_state`` and hidden states).
        """
        cfg = self.config
        expected = (2 * cfg.max_source_positions, cfg.num_mel_bins)
        if features.ndim != 3 or tuple(features.shape[1:]) != expected:
            raise ValueError(f"Whisper features must be (B, {expected[0]}, {expected[1]}), got {features.shape}")
        last, hidden_states = self.encoder(features, neuron_mask, neuron_offset, head_mask)
        batch, positions = last.shape[:2]
        if feature_lengths is None:
            lengths = jnp.full((batch,), positions, dtype=jnp.int32)
        else:
            lengths = jnp.minimum((jnp.asarray(feature_lengths) + 1) // 2, positions).astype(jnp.int32)
        keep = positions if num_output_frames is None else num_output_frames
        if not 0 < keep <= positions:
            raise ValueError(f"num_output_frames must be in [1, {positions}], got {keep}")
        return EncoderOutput(last[:, :keep], tuple(h[:, :keep] for h in hidden_states), lengths,
                             frame_mask(lengths, keep), features[:, : 2 * keep])

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
        """Same contract as :meth:`jaxneurons.models.wav2vec2.Wav2Vec2Model.__call__`.

        Outputs have ``num_frames(S)`` frames for a batch of width ``S`` (the encoder itself runs on the full
        window); ``frame_mask`` marks each row's real frames; ``extract_features`` is the log-mel input of those
        frames (B, 2 T, mel). Whisper has no masked-prediction embedding, so ``time_mask`` must be None.
        """
        if time_mask is not None:
            raise ValueError("time_mask given but Whisper has no masked_spec_embed")
        batch, num_samples = audio.shape
        if audio_lengths is None:
            audio_lengths = jnp.full((batch,), num_samples, dtype=jnp.int32)
        mel_lengths = jnp.minimum((jnp.maximum(jnp.asarray(audio_lengths), 0) + HOP_LENGTH - 1) // HOP_LENGTH,
                                  2 * self.config.max_source_positions)
        return self.encode_features(
            self.features(audio, audio_lengths), mel_lengths, num_output_frames=max(self.num_frames(num_samples), 1),
            neuron_mask=neuron_mask, neuron_offset=neuron_offset, head_mask=head_mask,
        )


__all__ = ["WhisperModel", "sinusoids", "window_samples"]
