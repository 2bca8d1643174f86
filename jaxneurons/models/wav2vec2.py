"""wav2vec 2.0 / HuBERT / data2vec-audio encoders in Flax NNX, numerically equal to HF ``transformers``.

Attribute names follow HF so that a checkpoint key ``encoder.layers.3.feed_forward.intermediate_dense.weight``
is the NNX path ``encoder.layers[3].feed_forward.intermediate_dense.kernel`` (transposed).

Differences between the families, all driven by :class:`SpeechConfig`:
- front end: ``feat_extract_norm='group'`` (per-channel norm over time after the first conv only; padded
  samples take part in its statistics exactly as in HF) or ``'layer'`` (LayerNorm over channels after each conv);
- ``do_stable_layer_norm``: pre-LN blocks and a final LayerNorm (large/xlarge checkpoints) vs post-LN blocks;
- positional embedding: one weight-normed grouped conv (wav2vec2, HuBERT, WavLM; the weight norm is folded into
  a plain kernel at conversion), optionally preceded by BatchNorm (HuBERT ``conv_pos_batch_norm``), or a stack
  of plain convs + affine-free LayerNorm (data2vec-audio).

Padding (``SpeechConfig.group_norm_padding``): with ``"mask"`` (default) an utterance's activations do not depend
on the padding its batch needs: group-norm statistics use valid samples only, and padded frames are re-zeroed
between data2vec-audio's stacked positional convs (HF lets them become non-zero after the first one, which
changes an utterance's last frames: 0.83 relative error in the small config of tests/test_models_padding.py).
``"hf"`` reproduces HF on a padded batch exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxneurons.models.blocks import (
    Conv1d,
    FeedForward,
    SelfAttention,
    activation_fn,
    conv_output_length,
    frame_mask,
    make_layer_norm,
    make_linear,
)
from jaxneurons.models.config import SpeechConfig

Array = jax.Array


@struct.dataclass
class EncoderOutput:
    """What every encoder returns.

    ``hidden_states[0]`` is the input of the first Transformer layer, ``hidden_states[i + 1]`` the output of
    layer ``i``; ``last_hidden_state`` additionally has the final LayerNorm of pre-LN models.
    """

    last_hidden_state: Array
    hidden_states: tuple[Array, ...]
    frame_lengths: Array
    frame_mask: Array
    extract_features: Array


class ChannelNorm(nnx.Module):
    """GroupNorm with one group per channel over (B, T, C): normalise each channel over time."""

    def __init__(self, channels: int, rngs: nnx.Rngs, eps: float = 1e-5):
        del rngs
        self.scale = nnx.Param(jnp.ones((channels,)))
        self.bias = nnx.Param(jnp.zeros((channels,)))
        self.eps = eps

    def __call__(self, x: Array, lengths: Array | None = None) -> Array:
        """``lengths`` (B,): normalise over each utterance's valid frames only (padding-independent)."""
        if lengths is None:
            mean = x.mean(axis=1, keepdims=True)
            var = jnp.square(x - mean).mean(axis=1, keepdims=True)
        else:
            valid = (jnp.arange(x.shape[1])[None, :] < lengths[:, None])[..., None].astype(x.dtype)
            count = jnp.maximum(valid.sum(axis=1, keepdims=True), 1.0)
            mean = (x * valid).sum(axis=1, keepdims=True) / count
            var = (jnp.square(x - mean) * valid).sum(axis=1, keepdims=True) / count
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


class BatchNorm(nnx.Module):
    """Inference-mode BatchNorm over the channel axis of (B, T, C) (running statistics only)."""

    def __init__(self, channels: int, rngs: nnx.Rngs, eps: float = 1e-5):
        del rngs
        self.scale = nnx.Param(jnp.ones((channels,)))
        self.bias = nnx.Param(jnp.zeros((channels,)))
        self.mean = nnx.BatchStat(jnp.zeros((channels,)))
        self.var = nnx.BatchStat(jnp.ones((channels,)))
        self.eps = eps

    def __call__(self, x: Array) -> Array:
        return (x - self.mean[...]) * jax.lax.rsqrt(self.var[...] + self.eps) * self.scale[...] + self.bias[...]


class ConvLayer(nnx.Module):
    def __init__(self, config: SpeechConfig, layer_id: int, rngs: nnx.Rngs):
        n_in = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        n_out = config.conv_dim[layer_id]
        self.conv = Conv1d(
            n_in, n_out, config.conv_kernel[layer_id], rngs, stride=config.conv_stride[layer_id],
            use_bias=config.conv_bias,
        )
        if config.feat_extract_norm == "layer":
            self.layer_norm = make_layer_norm(n_out, 1e-5, rngs)
        elif layer_id == 0:
            self.layer_norm = ChannelNorm(n_out, rngs)
        else:
            self.layer_norm = None
        self.act = config.feat_extract_activation
        self.kernel, self.stride = config.conv_kernel[layer_id], config.conv_stride[layer_id]

    def __call__(self, x: Array, lengths: Array | None = None) -> Array:
        """``lengths`` (B,) valid input steps, used only by a padding-masked ChannelNorm."""
        x = self.conv(x)
        if isinstance(self.layer_norm, ChannelNorm):
            out_lengths = None if lengths is None else (lengths - self.kernel) // self.stride + 1
            x = self.layer_norm(x, out_lengths)
        elif self.layer_norm is not None:
            x = self.layer_norm(x)
        return activation_fn(self.act)(x)


class ConvFeatureEncoder(nnx.Module):
    """Waveform (B, S) -> features (B, T, C) by a stack of strided 1-D convolutions."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        self.conv_layers = nnx.List([ConvLayer(config, i, rngs) for i in range(len(config.conv_dim))])

    def __call__(self, audio: Array, audio_lengths: Array | None = None) -> Array:
        """``audio_lengths`` given: group norm statistics over valid samples only (see SpeechConfig)."""
        x = audio[:, :, None]
        for layer in self.conv_layers:
            x = layer(x, audio_lengths)
        return x


class FeatureProjection(nnx.Module):
    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        use_norm = config.feat_proj_layer_norm or config.family != "hubert"
        self.layer_norm = make_layer_norm(config.conv_dim[-1], config.layer_norm_eps, rngs) if use_norm else None
        self.projection = make_linear(config.conv_dim[-1], config.hidden_size, rngs)

    def __call__(self, x: Array) -> tuple[Array, Array]:
        normed = self.layer_norm(x) if self.layer_norm is not None else x
        return self.projection(normed), normed


def _same_pad_trim(x: Array, kernel: int) -> Array:
    # HF SamePad: an even kernel with padding k//2 yields one extra frame, which is dropped.
    return x[:, :-1] if kernel % 2 == 0 else x


class PositionalConvEmbedding(nnx.Module):
    """wav2vec2/HuBERT/WavLM: grouped conv (weight norm folded into ``conv.kernel``) + GELU."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        k = config.num_conv_pos_embeddings
        self.batch_norm = BatchNorm(config.hidden_size, rngs) if config.conv_pos_batch_norm else None
        self.conv = Conv1d(
            config.hidden_size, config.hidden_size, k, rngs, padding=k // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        self.kernel_size = k
        self.act = config.feat_extract_activation

    def __call__(self, x: Array) -> Array:
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        return activation_fn(self.act)(_same_pad_trim(self.conv(x), self.kernel_size))


class Data2VecPositionalConvLayer(nnx.Module):
    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        k = config.conv_pos_kernel_size
        self.conv = Conv1d(
            config.hidden_size, config.hidden_size, k, rngs, padding=k // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        self.layer_norm = make_layer_norm(config.hidden_size, 1e-5, rngs, affine=False)
        self.kernel_size = k
        self.act = config.feat_extract_activation

    def __call__(self, x: Array) -> Array:
        return activation_fn(self.act)(self.layer_norm(_same_pad_trim(self.conv(x), self.kernel_size)))


class Data2VecPositionalConvEmbedding(nnx.Module):
    """data2vec-audio: ``num_conv_pos_embeddings`` stacked convs, each followed by affine-free LN + GELU."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [Data2VecPositionalConvLayer(config, rngs) for _ in range(config.num_conv_pos_embeddings)]
        )

    def __call__(self, x: Array, mask: Array | None = None) -> Array:
        """``mask`` (B, T) given: padded frames are re-zeroed before every conv after the first.

        Each layer's LN + GELU makes padded frames non-zero, and the next conv would carry them into the
        utterance's last frames; zeroing them makes every layer see what it sees on the unpadded utterance.
        HF does not (``group_norm_padding='hf'``).
        """
        for i, layer in enumerate(self.layers):
            if mask is not None and i > 0:
                x = jnp.where(mask[:, :, None], x, 0.0)
            x = layer(x)
        return x


class EncoderLayer(nnx.Module):
    """One Transformer block; ``stable`` selects pre-LN (HF ``do_stable_layer_norm``) over post-LN."""

    def __init__(self, config: SpeechConfig, layer_id: int, rngs: nnx.Rngs, attention: nnx.Module | None = None):
        self.attention = attention or SelfAttention(config.hidden_size, config.num_attention_heads, rngs)
        self.layer_norm = make_layer_norm(config.hidden_size, config.layer_norm_eps, rngs)
        self.feed_forward = FeedForward(config.hidden_size, config.ffn_width(layer_id), config.hidden_act, rngs)
        self.final_layer_norm = make_layer_norm(config.hidden_size, config.layer_norm_eps, rngs)
        self.stable = config.do_stable_layer_norm

    def __call__(
        self,
        x: Array,
        key_mask: Array | None,
        neuron_mask: Array | None = None,
        neuron_offset: Array | None = None,
        head_mask: Array | None = None,
        **attn_kwargs,
    ) -> Array:
        if self.stable:
            x = x + self.attention(self.layer_norm(x), key_mask, head_mask, **attn_kwargs)
            return x + self.feed_forward(self.final_layer_norm(x), neuron_mask, neuron_offset)
        x = self.layer_norm(x + self.attention(x, key_mask, head_mask, **attn_kwargs))
        return self.final_layer_norm(x + self.feed_forward(x, neuron_mask, neuron_offset))


def layer_slice(masks: Array | Sequence[Array] | None, i: int) -> Array | None:
    """Per-layer entry of a stacked (L, ...) mask array or a sequence of per-layer arrays."""
    return None if masks is None else masks[i]


class TransformerEncoder(nnx.Module):
    """Positional conv + Transformer layers with captures and masks; shared by all conv-front-end families."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        if config.family == "data2vec-audio":
            self.pos_conv_embed = Data2VecPositionalConvEmbedding(config, rngs)
        else:
            self.pos_conv_embed = PositionalConvEmbedding(config, rngs)
        self.layer_norm = make_layer_norm(config.hidden_size, config.layer_norm_eps, rngs)
        self.layers = nnx.List([self._make_layer(config, i, rngs) for i in range(config.num_hidden_layers)])
        self.stable = config.do_stable_layer_norm

    def _make_layer(self, config: SpeechConfig, layer_id: int, rngs: nnx.Rngs) -> EncoderLayer:
        return EncoderLayer(config, layer_id, rngs)

    def _layer_kwargs(self, x: Array, layer_id: int, state: dict) -> dict:
        """Extra keyword arguments of layer ``layer_id`` (WavLM passes its position bias here)."""
        return {}

    def __call__(
        self,
        x: Array,
        mask: Array,
        neuron_mask: Array | Sequence[Array] | None = None,
        neuron_offset: Array | Sequence[Array] | None = None,
        head_mask: Array | None = None,
        *,
        mask_padding: bool = True,
    ) -> tuple[Array, tuple[Array, ...]]:
        """``mask_padding`` (``group_norm_padding == "mask"``): padded frames stay zero between stacked
        positional convs (data2vec-audio), so valid frames do not depend on the batch's padding."""
        # Padded frames are zeroed before the positional conv, as in HF.
        x = jnp.where(mask[:, :, None], x, 0.0)
        if isinstance(self.pos_conv_embed, Data2VecPositionalConvEmbedding):
            x = x + self.pos_conv_embed(x, mask if mask_padding else None)
        else:
            x = x + self.pos_conv_embed(x)
        if not self.stable:
            x = self.layer_norm(x)
        hidden_states = [x]
        state: dict = {}
        for i, layer in enumerate(self.layers):
            x = layer(
                x, mask, layer_slice(neuron_mask, i), layer_slice(neuron_offset, i), layer_slice(head_mask, i),
                **self._layer_kwargs(x, i, state),
            )
            hidden_states.append(x)
        last = self.layer_norm(x) if self.stable else x
        return last, tuple(hidden_states)


class Wav2Vec2Model(nnx.Module):
    """wav2vec 2.0, HuBERT and data2vec-audio: waveform (B, S) at 16 kHz -> :class:`EncoderOutput`."""

    encoder_cls: type[TransformerEncoder] = TransformerEncoder

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        self.config = config
        self.feature_extractor = ConvFeatureEncoder(config, rngs)
        self.feature_projection = FeatureProjection(config, rngs)
        self.masked_spec_embed = (
            nnx.Param(jax.random.uniform(rngs.params(), (config.hidden_size,)))
            if config.has_masked_spec_embed else None
        )
        self.encoder = self.encoder_cls(config, rngs)

    def num_frames(self, num_samples: Array | int) -> Array | int:
        """Frames produced from ``num_samples`` samples (HF ``_get_feat_extract_output_lengths``)."""
        return conv_output_length(num_samples, self.config.conv_kernel, self.config.conv_stride)

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
        """Run the encoder.

        Args:
          audio: (B, S) float32 waveform, zero-padded after each utterance's end.
          audio_lengths: (B,) valid samples per utterance (default: all of S).
          neuron_mask, neuron_offset: (L, D) or L arrays (D_l,): FFN ``h -> h * mask + offset``.
          head_mask: (L, H) multiplying the attention probabilities after the softmax.
          time_mask: (B, T) bool frames replaced by ``masked_spec_embed`` (masked prediction training).
        """
        batch, num_samples = audio.shape
        if audio_lengths is None:
            audio_lengths = jnp.full((batch,), num_samples, dtype=jnp.int32)
        masked_norm = self.config.group_norm_padding == "mask"
        features = self.feature_extractor(audio, audio_lengths if masked_norm else None)
        lengths = self.num_frames(audio_lengths)
        mask = frame_mask(lengths, features.shape[1])
        hidden, normed = self.feature_projection(features)
        if time_mask is not None:
            if self.masked_spec_embed is None:
                raise ValueError("time_mask given but this model has no masked_spec_embed")
            hidden = jnp.where(time_mask[:, :, None], self.masked_spec_embed[...], hidden)
        last, hidden_states = self.encoder(hidden, mask, neuron_mask, neuron_offset, head_mask,
                                           mask_padding=masked_norm)
        return EncoderOutput(last, hidden_states, lengths, mask, normed)
