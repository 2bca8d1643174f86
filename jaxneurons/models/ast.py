"""Audio Spectrogram Transformer (AST; Gong et al., 2021) in Flax NNX, numerically equal to HF ``ASTModel``.

Pipeline (HF ``ASTFeatureExtractor`` + ``ASTModel``):

1. Front end, per utterance: Kaldi log-mel filterbank (``num_mel_bins`` = 128, 25 ms hanning window, 10 ms
   shift, no dither; :func:`jaxneurons.features.fbank.fbank`), zero-padded or truncated to ``max_length``
   frames, normalised as ``(fbank - feature_mean) / (2 * feature_std)``. Padding is applied *before* the
   normalisation, so padded frames hold ``-feature_mean / (2 feature_std)``, not 0: it is part of the model's
   input, exactly as in HF. Input features are ``(B, max_length, num_mel_bins)`` (HF ``input_values``).
2. Patch embedding: a ``patch_size`` x ``patch_size`` Conv2d over (mel, time) with strides
   (``frequency_stride``, ``time_stride``), giving an ``F' x T'`` grid, ``F' = (mel - p) // fs + 1``,
   ``T' = (max_length - p) // ts + 1``.
3. Tokens: ``[cls, distillation, patches...]`` + learned position embeddings. Patches are in HF's order,
   mel-row-major: token ``2 + f * T' + t`` is the patch of mel row ``f`` and time column ``t``; it covers
   fbank frames ``[t ts, t ts + p)`` (samples ``[160 t ts, 160 (t ts + p - 1) + 400)``) and mel bins
   ``[f fs, f fs + p)``. Tokens are therefore *not* in time order (see :meth:`ASTModel.patch_grid`).
4. Pre-LN ViT layers (``x + attn(LN(x))``, ``x + ffn(LN(x))``, no attention mask), final LayerNorm.

Frames: every utterance has the same ``T = 2 + F' T'`` tokens and all of them are valid
(``frame_mask`` all True, ``frame_lengths`` = T), because the model attends to all of them, padding patches
included, with no mask. :meth:`ASTModel.content_mask` marks the tokens that see any real audio, for
statistics that should leave pure-padding patches out.

Parameter paths are the ones all families share (``encoder.layers[i].attention.{q,k,v,out}_proj``,
``.layer_norm`` before attention, ``.final_layer_norm`` before the FFN,
``.feed_forward.{intermediate_dense,output_dense}``), so capture, masking, scoring and pruning need no AST
case; ``checkpoints_convert.hf_weights.ast_keys_from_hf`` maps HF's names (both styles) onto them. The
embedding and final-norm names are HF's: ``embeddings.{cls_token,distillation_token,position_embeddings}``,
``embeddings.patch_embeddings.projection``, ``layernorm``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxneurons.features.fbank import fbank
from jaxneurons.models.blocks import SelfAttention, make_layer_norm, make_linear
from jaxneurons.models.config import SpeechConfig
from jaxneurons.models.wav2vec2 import EncoderLayer, EncoderOutput, layer_slice

Array = jax.Array

FBANK_WINDOW = 400  # 25 ms at 16 kHz
FBANK_HOP = 160  # 10 ms at 16 kHz
NUM_SPECIAL_TOKENS = 2  # cls + distillation


def patch_grid(config: SpeechConfig) -> tuple[int, int]:
    """(mel rows F', time columns T') of the patch grid (HF ``ASTEmbeddings.get_shape``)."""
    p = config.patch_size
    return (config.num_mel_bins - p) // config.frequency_stride + 1, (config.max_length - p) // config.time_stride + 1


def num_tokens(config: SpeechConfig) -> int:
    """Sequence length of every AST input: cls + distillation + F' T' patches."""
    f, t = patch_grid(config)
    return NUM_SPECIAL_TOKENS + f * t


class Conv2d(nnx.Module):
    """2-D convolution on (B, H, W, C_in), no padding, PyTorch semantics (kernel stored HWIO)."""

    def __init__(self, n_in: int, n_out: int, kernel: tuple[int, int], stride: tuple[int, int], rngs: nnx.Rngs):
        fan_in = n_in * kernel[0] * kernel[1]
        bound = 1.0 / np.sqrt(fan_in)  # PyTorch's default Conv2d init
        self.kernel = nnx.Param(jax.random.uniform(rngs.params(), (*kernel, n_in, n_out), minval=-bound,
                                                   maxval=bound))
        self.bias = nnx.Param(jax.random.uniform(rngs.params(), (n_out,), minval=-bound, maxval=bound))
        self.stride = stride

    def __call__(self, x: Array) -> Array:
        y = jax.lax.conv_general_dilated(
            x, self.kernel[...], window_strides=self.stride, padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=jax.lax.Precision.HIGHEST,
        )
        return y + self.bias[...]


class PatchEmbeddings(nnx.Module):
    """(B, time, mel) spectrogram -> (B, F' T', C) patch embeddings, mel-row-major like HF."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        p = config.patch_size
        self.projection = Conv2d(1, config.hidden_size, (p, p), (config.frequency_stride, config.time_stride), rngs)

    def __call__(self, features: Array) -> Array:
        x = jnp.swapaxes(features, 1, 2)[..., None]  # (B, mel, time, 1): H = mel, W = time as in HF
        y = self.projection(x)  # (B, F', T', C)
        b, f, t, c = y.shape
        return y.reshape(b, f * t, c)


class ASTEmbeddings(nnx.Module):
    """cls + distillation tokens, patch embeddings and learned position embeddings (HF names and shapes)."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        c = config.hidden_size
        # HF initialises these to zeros; small random values keep a fresh model's tokens distinct.
        self.cls_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, c)))
        self.distillation_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, c)))
        self.patch_embeddings = PatchEmbeddings(config, rngs)
        self.position_embeddings = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, num_tokens(config), c)))

    def __call__(self, features: Array) -> Array:
        patches = self.patch_embeddings(features)
        b, _, c = patches.shape
        special = jnp.concatenate([self.cls_token[...], self.distillation_token[...]], axis=1)
        tokens = jnp.concatenate([jnp.broadcast_to(special, (b, NUM_SPECIAL_TOKENS, c)), patches], axis=1)
        return tokens + self.position_embeddings[...]


class ASTSelfAttention(SelfAttention):
    """The shared attention (head mask, ``AttentionProbs`` capture) with optional q/k/v biases (``qkv_bias``)."""

    def __init__(self, hidden_size: int, num_heads: int, qkv_bias: bool, rngs: nnx.Rngs):
        super().__init__(hidden_size, num_heads, rngs)
        if not qkv_bias:
            self.q_proj = make_linear(hidden_size, hidden_size, rngs, use_bias=False)
            self.k_proj = make_linear(hidden_size, hidden_size, rngs, use_bias=False)
            self.v_proj = make_linear(hidden_size, hidden_size, rngs, use_bias=False)


class ASTEncoder(nnx.Module):
    """Pre-LN ViT layers (the shared :class:`EncoderLayer` with ``stable=True``), no attention mask."""

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        stable = config.replace(do_stable_layer_norm=True)
        self.layers = nnx.List([
            EncoderLayer(
                stable, i, rngs,
                attention=ASTSelfAttention(config.hidden_size, config.num_attention_heads, config.qkv_bias, rngs),
            )
            for i in range(config.num_hidden_layers)
        ])

    def __call__(
        self,
        x: Array,
        neuron_mask: Array | Sequence[Array] | None = None,
        neuron_offset: Array | Sequence[Array] | None = None,
        head_mask: Array | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        hidden_states = [x]
        for i, layer in enumerate(self.layers):
            x = layer(x, None, layer_slice(neuron_mask, i), layer_slice(neuron_offset, i), layer_slice(head_mask, i))
            hidden_states.append(x)
        return x, tuple(hidden_states)


class ASTModel(nnx.Module):
    """Waveform (B, S) at 16 kHz -> :class:`EncoderOutput` over AST's ``2 + F' T'`` tokens.

    ``encode_features`` runs the same encoder on precomputed HF ``input_values`` (B, max_length, mel).
    """

    def __init__(self, config: SpeechConfig, rngs: nnx.Rngs):
        if config.family != "ast":
            raise ValueError(f"ASTModel needs an 'ast' config, got family {config.family!r}")
        self.config = config
        self.embeddings = ASTEmbeddings(config, rngs)
        self.encoder = ASTEncoder(config, rngs)
        self.layernorm = make_layer_norm(config.hidden_size, config.layer_norm_eps, rngs)

    # Geometry -----------------------------------------------------------------------------------------

    def patch_grid(self) -> tuple[int, int]:
        """(F', T'): mel rows and time columns of the patch grid; token ``2 + f T' + t`` is patch (f, t)."""
        return patch_grid(self.config)

    def num_frames(self, num_samples: Array | int) -> Array | int:
        """Tokens per utterance: ``2 + F' T'`` whatever the length (the input is padded to ``max_length``)."""
        n = num_tokens(self.config)
        if isinstance(num_samples, int | np.integer):
            return n
        return jnp.full(jnp.shape(num_samples), n, dtype=jnp.int32)

    def num_fbank_frames(self, num_samples: Array | int) -> Array | int:
        """Real (unpadded) fbank frames of an utterance, capped at ``max_length`` (Kaldi ``snip_edges``)."""
        if isinstance(num_samples, int | np.integer):
            n = 1 + (int(num_samples) - FBANK_WINDOW) // FBANK_HOP if num_samples >= FBANK_WINDOW else 0
            return min(n, self.config.max_length)
        n = jnp.asarray(num_samples)
        frames = jnp.where(n >= FBANK_WINDOW, 1 + (n - FBANK_WINDOW) // FBANK_HOP, 0)
        return jnp.minimum(frames, self.config.max_length).astype(jnp.int32)

    def content_mask(self, audio_lengths: Array) -> Array:
        """(B, T) bool: cls/distillation tokens and the patches whose frames include real audio.

        Patch (f, t) covers fbank frames ``[t ts, t ts + p)``; it is content iff ``t ts < n_frames``. The
        others see only the normalised zero padding. (``frame_mask`` keeps all tokens: the model uses them.)
        """
        f, t = self.patch_grid()
        first_frame = jnp.tile(jnp.arange(t) * self.config.time_stride, f)  # mel-row-major token order
        n = self.num_fbank_frames(jnp.asarray(audio_lengths))
        patches = first_frame[None, :] < n[:, None]
        special = jnp.ones((patches.shape[0], NUM_SPECIAL_TOKENS), bool)
        return jnp.concatenate([special, patches], axis=1)

    # Front end ----------------------------------------------------------------------------------------

    def features(self, audio: Array, audio_lengths: Array | None = None) -> Array:
        """HF ``ASTFeatureExtractor``: normalised log-mel input ``(B, max_length, num_mel_bins)``."""
        cfg = self.config
        batch, num_samples = audio.shape
        if audio_lengths is None:
            audio_lengths = jnp.full((batch,), num_samples, dtype=jnp.int32)
        # Frames past max_length are truncated anyway: do not compute them.
        keep = (cfg.max_length - 1) * FBANK_HOP + FBANK_WINDOW
        if num_samples > keep:
            audio = audio[:, :keep]
            audio_lengths = jnp.minimum(audio_lengths, keep)
        elif num_samples < FBANK_WINDOW:  # fbank needs one window; lengths keep the padding out
            audio = jnp.pad(audio, ((0, 0), (0, FBANK_WINDOW - num_samples)))
        feats, _ = fbank(audio, audio_lengths, num_mel_bins=cfg.num_mel_bins, window_type="hanning",
                         sample_rate=cfg.sample_rate)
        # fbank zeroes frames past each utterance's end: that is HF's zero padding to max_length.
        t = feats.shape[1]
        if t < cfg.max_length:
            feats = jnp.pad(feats, ((0, 0), (0, cfg.max_length - t), (0, 0)))
        else:
            feats = feats[:, : cfg.max_length]
        return (feats - cfg.feature_mean) / (cfg.feature_std * 2)

    # Forward ------------------------------------------------------------------------------------------

    def encode_features(
        self,
        features: Array,
        *,
        neuron_mask: Array | Sequence[Array] | None = None,
        neuron_offset: Array | Sequence[Array] | None = None,
        head_mask: Array | None = None,
    ) -> EncoderOutput:
        """Encoder on precomputed HF ``input_values`` (B, max_length, num_mel_bins); masks as in ``__call__``."""
        cfg = self.config
        expected = (cfg.max_length, cfg.num_mel_bins)
        if features.ndim != 3 or tuple(features.shape[1:]) != expected:
            raise ValueError(f"AST features must be (B, {expected[0]}, {expected[1]}), got {features.shape}")
        x = self.embeddings(features)
        last, hidden_states = self.encoder(x, neuron_mask, neuron_offset, head_mask)
        batch, tokens = x.shape[:2]
        lengths = jnp.full((batch,), tokens, dtype=jnp.int32)
        mask = jnp.ones((batch, tokens), dtype=bool)
        return EncoderOutput(self.layernorm(last), hidden_states, lengths, mask, features)

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

        ``extract_features`` is the normalised log-mel input (B, max_length, mel); ``frame_mask`` is all
        True (see the module docstring). AST has no masked-prediction embedding, so ``time_mask`` must be None.
        """
        if time_mask is not None:
            raise ValueError("time_mask given but AST has no masked_spec_embed")
        return self.encode_features(
            self.features(audio, audio_lengths),
            neuron_mask=neuron_mask, neuron_offset=neuron_offset, head_mask=head_mask,
        )

    def pooled(self, output: EncoderOutput) -> Array:
        """HF's pooler output: mean of the final cls and distillation tokens, (B, C)."""
        return (output.last_hidden_state[:, 0] + output.last_hidden_state[:, 1]) / 2


__all__ = ["ASTModel", "num_tokens", "patch_grid"]
