"""MelHuBERT-style encoder (Lin et al., 2022): our architecture for pre-training from scratch.

Waveform -> Kaldi log-mel filterbank (``num_mel_bins`` = 40, 25 ms window, 10 ms hop, see
:mod:`jaxneurons.features.fbank`) -> per-utterance mean/variance normalisation -> stacking of
``frame_stacking`` = 2 consecutive frames (20 ms frames, like wav2vec2's) -> LayerNorm + linear input
projection -> convolutional positional embedding -> post-LN Transformer -> optional masked-prediction head
``final_proj`` (logits over ``num_clusters`` k-means targets, trained with cross-entropy on masked frames).

Frame ``t`` covers fbank frames ``2t`` and ``2t+1``, i.e. samples ``[320 t, 320 t + 560)`` at 16 kHz.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxneurons.features.fbank import fbank, utterance_mvn
from jaxneurons.models.blocks import frame_mask, make_layer_norm, make_linear
from jaxneurons.models.config import SpeechConfig
from jaxneurons.models.wav2vec2 import EncoderOutput, TransformerEncoder

Array = jax.Array

FBANK_WINDOW = 400  # 25 ms at 16 kHz
FBANK_HOP = 160  # 10 ms at 16 kHz


class MelFeatureProjection(nnx.Module):
    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        n_in = config.num_mel_bins * config.frame_stacking
        self.layer_norm = make_layer_norm(n_in, config.layer_norm_eps, rngs)
        self.projection = make_linear(n_in, config.hidden_size, rngs)

    def __call__(self, x: Array) -> tuple[Array, Array]:
        normed = self.layer_norm(x)
        return self.projection(normed), normed


class MelHuBERTModel(nnx.Module):
    """Waveform (B, S) at 16 kHz -> :class:`EncoderOutput` (and ``predict`` for the masked-prediction head)."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        if config.do_stable_layer_norm:
            raise ValueError("MelHuBERT uses post-LN blocks; do_stable_layer_norm must be False")
        self.config = config
        self.feature_projection = MelFeatureProjection(config, rngs)
        self.masked_spec_embed = nnx.Param(jax.random.uniform(rngs.params(), (config.hidden_size,)))
        self.encoder = TransformerEncoder(config, rngs)
        self.final_proj = make_linear(config.hidden_size, config.num_clusters, rngs) if config.num_clusters else None

    def num_frames(self, num_samples: Array | int) -> Array | int:
        """Model frames from ``num_samples`` samples: Kaldi frames (snip_edges) // stacking."""
        n_fbank = jnp.maximum(1 + (jnp.asarray(num_samples) - FBANK_WINDOW) // FBANK_HOP, 0)
        if isinstance(num_samples, int):
            return max(1 + (num_samples - FBANK_WINDOW) // FBANK_HOP, 0) // self.config.frame_stacking
        return n_fbank // self.config.frame_stacking

    def features(self, audio: Array, audio_lengths: Array) -> tuple[Array, Array]:
        """Stacked normalised log-mel frames (B, T, mel * stacking) and frame lengths (B,)."""
        feats, n_fbank = fbank(audio, audio_lengths, num_mel_bins=self.config.num_mel_bins)
        feats = utterance_mvn(feats, n_fbank)
        k = self.config.frame_stacking
        b, t, f = feats.shape
        t_out = t // k
        stacked = feats[:, : t_out * k].reshape(b, t_out, k * f)
        return stacked, n_fbank // k

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
        """Same contract as :meth:`jaxneurons.models.wav2vec2.Wav2Vec2Model.__call__`."""
        batch, num_samples = audio.shape
        if audio_lengths is None:
            audio_lengths = jnp.full((batch,), num_samples, dtype=jnp.int32)
        stacked, lengths = self.features(audio, audio_lengths)
        mask = frame_mask(lengths, stacked.shape[1])
        hidden, normed = self.feature_projection(stacked)
        if time_mask is not None:
            hidden = jnp.where(time_mask[:, :, None], self.masked_spec_embed[...], hidden)
        last, hidden_states = self.encoder(hidden, mask, neuron_mask, neuron_offset, head_mask)
        return EncoderOutput(last, hidden_states, lengths, mask, normed)

    def predict(self, output: EncoderOutput) -> Array:
        """Masked-prediction logits (B, T, num_clusters)."""
        if self.final_proj is None:
            raise ValueError("this MelHuBERT config has num_clusters=0 (no prediction head)")
        return self.final_proj(output.last_hidden_state)
