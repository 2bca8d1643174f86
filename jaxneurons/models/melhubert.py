"""MelHuBERT-style encoder (Lin et al., 2022): our architecture for pre-training from scratch.

Waveform -> Kaldi log-mel filterbank (``num_mel_bins`` = 40, 25 ms window, 10 ms hop, see
:mod:`jaxneurons.features.fbank`) -> per-utterance mean/variance normalisation -> stacking of
``frame_stacking`` = 2 consecutive frames (20 ms frames, like wav2vec2's) -> LayerNorm + linear input
projection -> convolutional positional embedding -> post-LN Transformer -> optional masked-prediction head
``final_proj`` (logits over ``num_clusters`` k-means targets, trained with cross-entropy on masked frames).

Frame ``t`` covers fbank frames ``2t`` and ``2t+1``, i.e. samples ``[320 t, 320 t + 560)`` at 16 kHz.

The authors' MelHuBERT (nervjack2/MelHuBERT, read by ``jaxneurons-convert --source ckpt --mean_std npy``) is
the same network with config fields set the way its checkpoints need (see :class:`SpeechConfig`): waveform x
2^15 (``waveform_scale``), Hamming-window fbank (``fbank_window``), normalised by the training corpus' per-bin
mean/std (``fbank_mean``/``fbank_std``), ``frame_stacking`` 1 (10 ms) or 2 (20 ms; an odd last fbank frame is
kept with a zero second half, ``frame_stacking_pad``), no LayerNorm before the projection
(``input_layer_norm=False``), masked frames replaced *before* the projection by zeros or a learnt vector of the
input size (``mask_before_proj``, ``has_masked_spec_embed``), pre-LN layers when trained with
``layer_norm_first`` (``do_stable_layer_norm``), and ``conv_pos_depth`` stacked positional convs.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxneurons.features.fbank import fbank, utterance_mvn
from jaxneurons.models.blocks import frame_mask, make_layer_norm, make_linear
from jaxneurons.models.config import SpeechConfig
from jaxneurons.models.wav2vec2 import Data2VecPositionalConvEmbedding, EncoderOutput, TransformerEncoder

Array = jax.Array

FBANK_WINDOW = 400  # 25 ms at 16 kHz
FBANK_HOP = 160  # 10 ms at 16 kHz


class MelFeatureProjection(nnx.Module):
    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        n_in = config.num_mel_bins * config.frame_stacking
        self.layer_norm = make_layer_norm(n_in, config.layer_norm_eps, rngs) if config.input_layer_norm else None
        self.projection = make_linear(n_in, config.hidden_size, rngs)

    def __call__(self, x: Array) -> tuple[Array, Array]:
        normed = self.layer_norm(x) if self.layer_norm is not None else x
        return self.projection(normed), normed


class MelHuBERTEncoder(TransformerEncoder):
    """The shared encoder; ``conv_pos_depth > 1`` swaps in fairseq's stack of positional convs."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        super().__init__(config, rngs)
        if config.conv_pos_depth > 1:
            # fairseq/MelHuBERT: `depth` convs of kernel max(3, conv_pos // depth), each followed by SamePad,
            # LayerNorm without affine and GELU: data2vec-audio's block, built here from these two fields.
            stack = config.replace(num_conv_pos_embeddings=config.conv_pos_depth,
                                   conv_pos_kernel_size=max(3, config.num_conv_pos_embeddings // config.conv_pos_depth))
            self.pos_conv_embed = Data2VecPositionalConvEmbedding(stack, rngs)


class MelHuBERTModel(nnx.Module):
    """Waveform (B, S) at 16 kHz -> :class:`EncoderOutput` (and ``predict`` for the masked-prediction head)."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        self.config = config
        self.feature_projection = MelFeatureProjection(config, rngs)
        # Our MelHuBERT-style models learn an embedding of the hidden size; the authors' models learn one (of the
        # input size with mask_before_proj) only with learnable_mask_emb, else masked frames become zeros.
        mask_dim = config.num_mel_bins * config.frame_stacking if config.mask_before_proj else config.hidden_size
        self.masked_spec_embed = (nnx.Param(jax.random.uniform(rngs.params(), (mask_dim,)))
                                  if config.has_masked_spec_embed else None)
        self.encoder = MelHuBERTEncoder(config, rngs)
        self.final_proj = make_linear(config.hidden_size, config.num_clusters, rngs) if config.num_clusters else None

    def num_frames(self, num_samples: Array | int) -> Array | int:
        """Model frames from ``num_samples`` samples: Kaldi frames (snip_edges) // stacking, rounded up with
        ``frame_stacking_pad``."""
        k, pad = self.config.frame_stacking, self.config.frame_stacking_pad
        if isinstance(num_samples, int):
            n = 1 + (num_samples - FBANK_WINDOW) // FBANK_HOP if num_samples >= FBANK_WINDOW else 0
            return -(-n // k) if pad else n // k
        samples = jnp.asarray(num_samples)
        n_fbank = jnp.where(samples >= FBANK_WINDOW, 1 + (samples - FBANK_WINDOW) // FBANK_HOP, 0)
        return (n_fbank + k - 1) // k if pad else n_fbank // k

    def features(self, audio: Array, audio_lengths: Array) -> tuple[Array, Array]:
        """Stacked normalised log-mel frames (B, T, mel * stacking) and frame lengths (B,)."""
        c = self.config
        if c.waveform_scale != 1.0:
            audio = audio * c.waveform_scale
        feats, n_fbank = fbank(audio, audio_lengths, num_mel_bins=c.num_mel_bins, window_type=c.fbank_window)
        if c.fbank_mean is None:
            feats = utterance_mvn(feats, n_fbank)
        else:
            valid = (jnp.arange(feats.shape[1])[None, :] < n_fbank[:, None])[..., None]
            mean, std = jnp.asarray(c.fbank_mean, jnp.float32), jnp.asarray(c.fbank_std, jnp.float32)
            feats = jnp.where(valid, (feats - mean) / std, 0.0)  # padding stays 0, as the authors' pad_sequence
        k = c.frame_stacking
        b, t, f = feats.shape
        t_out = -(-t // k) if c.frame_stacking_pad else t // k
        if t_out * k > t:  # the zero second half of an odd last frame
            feats = jnp.pad(feats, ((0, 0), (0, t_out * k - t), (0, 0)))
        stacked = feats[:, : t_out * k].reshape(b, t_out, k * f)
        lengths = (n_fbank + k - 1) // k if c.frame_stacking_pad else n_fbank // k
        return stacked, lengths

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
        fill = self.masked_spec_embed[...] if self.masked_spec_embed is not None else 0.0
        if time_mask is not None and self.config.mask_before_proj:
            stacked = jnp.where(time_mask[:, :, None], fill, stacked)
        hidden, normed = self.feature_projection(stacked)
        if time_mask is not None and not self.config.mask_before_proj:
            hidden = jnp.where(time_mask[:, :, None], fill, hidden)
        last, hidden_states = self.encoder(hidden, mask, neuron_mask, neuron_offset, head_mask)
        return EncoderOutput(last, hidden_states, lengths, mask, normed)

    def predict(self, output: EncoderOutput) -> Array:
        """Masked-prediction logits (B, T, num_clusters)."""
        if self.final_proj is None:
            raise ValueError("this MelHuBERT config has num_clusters=0 (no prediction head)")
        return self.final_proj(output.last_hidden_state)
