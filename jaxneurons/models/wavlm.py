"""WavLM in Flax NNX: the wav2vec2 front end and blocks with gated relative position bias.

Layer 0 owns the bucketed relative-position embedding (``rel_attn_embed``); its (H, T, T) bias is computed
once and handed to every later layer, which gates it with its own ``gru_rel_pos_linear`` and
``gru_rel_pos_const`` (as in HF ``WavLMAttention``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxneurons.models.blocks import SelfAttention
from jaxneurons.models.config import SpeechConfig
from jaxneurons.models.wav2vec2 import EncoderLayer, TransformerEncoder, Wav2Vec2Model

Array = jax.Array


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> Array:
    """(T, T) bucket ids of ``key - query`` offsets; a faithful port of HF ``_relative_positions_bucket``."""
    context = jnp.arange(length)[:, None]
    memory = jnp.arange(length)[None, :]
    rel = memory - context
    half = num_buckets // 2
    buckets = (rel > 0).astype(jnp.int32) * half
    rel = jnp.abs(rel)
    max_exact = half // 2
    is_small = rel < max_exact
    # float32 log like torch, so bucket boundaries fall on the same offsets.
    large = jnp.log(rel.astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + large * (half - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, half - 1)
    return buckets + jnp.where(is_small, rel, large)


class WavLMAttention(SelfAttention):
    def __init__(self, config: SpeechConfig, has_relative_position_bias: bool, rngs: nnx.Rngs):
        super().__init__(config.hidden_size, config.num_attention_heads, rngs)
        self.num_buckets = config.num_buckets
        self.max_distance = config.max_bucket_distance
        self.gru_rel_pos_const = nnx.Param(jnp.ones((1, config.num_attention_heads, 1, 1)))
        self.gru_rel_pos_linear = nnx.Linear(self.head_dim, 8, kernel_init=nnx.initializers.normal(0.02), rngs=rngs)
        self.rel_attn_embed = (
            nnx.Embed(config.num_buckets, config.num_attention_heads, rngs=rngs)
            if has_relative_position_bias else None
        )

    def position_bias(self, length: int) -> Array:
        """(H, T, T) ungated bias from the bucket embedding (layer 0 only)."""
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)
        return jnp.transpose(self.rel_attn_embed(buckets), (2, 0, 1))

    def __call__(
        self,
        x: Array,
        key_mask: Array | None = None,
        head_mask: Array | None = None,
        position_bias: Array | None = None,
    ) -> Array:
        b, t, _ = x.shape
        gate_in = self._heads(x)  # (B, H, T, head_dim)
        proj = self.gru_rel_pos_linear(gate_in).reshape(b, self.num_heads, t, 2, 4).sum(-1)
        gate = jax.nn.sigmoid(proj)
        gate_a, gate_b = gate[..., :1], gate[..., 1:]
        gate_out = gate_a * (gate_b * self.gru_rel_pos_const[...] - 1.0) + 2.0  # (B, H, T, 1)
        return super().__call__(x, key_mask, head_mask, bias=gate_out * position_bias[None])


class WavLMEncoder(TransformerEncoder):
    def _make_layer(self, config: SpeechConfig, layer_id: int, rngs: nnx.Rngs) -> EncoderLayer:
        attention = WavLMAttention(config, has_relative_position_bias=layer_id == 0, rngs=rngs)
        return EncoderLayer(config, layer_id, rngs, attention=attention)

    def _layer_kwargs(self, x: Array, layer_id: int, state: dict) -> dict:
        if "position_bias" not in state:
            state["position_bias"] = self.layers[0].attention.position_bias(x.shape[1])
        return {"position_bias": state["position_bias"]}


class WavLMModel(Wav2Vec2Model):
    """WavLM: waveform (B, S) at 16 kHz -> :class:`EncoderOutput`."""

    encoder_cls = WavLMEncoder
