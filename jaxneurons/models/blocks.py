"""Shared building blocks: FFN with neuron capture + mask, self-attention with head mask + probability capture.

Hook points (the names used in results and the CLI): ``layers.{i}.ffn`` is the post-activation FFN value
``h = act(x W1ᵀ + b1)`` of layer ``i`` (shape (B, T, D)); ``layers.{i}.attn`` are the attention
probabilities of layer ``i`` (shape (B, H, T, T)), after the head mask.

Masks are arrays, never Python branches: ``h * neuron_mask + neuron_offset`` and ``probs * head_mask`` run
for any value, so one compiled forward serves every ablation. A mask of ones and an offset of zeros is the
identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


class FFNActivation(nnx.Intermediate):
    """Post-activation FFN neurons ``h`` of one layer, (B, T, D), after the neuron mask."""


class AttentionProbs(nnx.Intermediate):
    """Attention probabilities of one layer, (B, H, T, T), after the head mask."""


def activation_fn(name: str) -> Callable[[Array], Array]:
    """HF activation names -> JAX functions. HF ``gelu`` is the exact (erf) GELU."""
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu
    if name in ("swish", "silu"):
        return jax.nn.silu
    raise ValueError(f"unsupported activation {name!r}")


def linear_init(stddev: float = 0.02) -> nnx.Initializer:
    # HF speech models initialise Linear weights from N(0, initializer_range=0.02).
    return nnx.initializers.normal(stddev)


def make_linear(n_in: int, n_out: int, rngs: nnx.Rngs, use_bias: bool = True) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, use_bias=use_bias, kernel_init=linear_init(), rngs=rngs)


def make_layer_norm(n: int, eps: float, rngs: nnx.Rngs, affine: bool = True) -> nnx.LayerNorm:
    # use_fast_variance=False: E[(x-mean)^2] like PyTorch, not E[x^2]-mean^2 (loses precision).
    return nnx.LayerNorm(n, epsilon=eps, use_bias=affine, use_scale=affine, use_fast_variance=False, rngs=rngs)


class FeedForward(nnx.Module):
    """Transformer FFN: ``h = act(x W1ᵀ + b1)``, ``y = h W2ᵀ + b2`` (HF names intermediate/output_dense)."""

    def __init__(self, hidden_size: int, intermediate_size: int, act: str, rngs: nnx.Rngs):
        self.intermediate_dense = make_linear(hidden_size, intermediate_size, rngs)
        self.output_dense = make_linear(intermediate_size, hidden_size, rngs)
        self.act = act

    def __call__(self, x: Array, neuron_mask: Array | None = None, neuron_offset: Array | None = None) -> Array:
        h = activation_fn(self.act)(self.intermediate_dense(x))
        if neuron_mask is not None:
            h = h * neuron_mask
        if neuron_offset is not None:
            h = h + neuron_offset
        self.sow(FFNActivation, "h", h)
        return self.output_dense(h)


class SelfAttention(nnx.Module):
    """Multi-head self-attention (HF names q/k/v/out_proj); optional additive bias per head (WavLM)."""

    def __init__(self, hidden_size: int, num_heads: int, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.q_proj = make_linear(hidden_size, hidden_size, rngs)
        self.k_proj = make_linear(hidden_size, hidden_size, rngs)
        self.v_proj = make_linear(hidden_size, hidden_size, rngs)
        self.out_proj = make_linear(hidden_size, hidden_size, rngs)

    def _heads(self, x: Array) -> Array:
        b, t, _ = x.shape
        return x.reshape(b, t, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)

    def __call__(
        self,
        x: Array,
        key_mask: Array | None = None,
        head_mask: Array | None = None,
        bias: Array | None = None,
    ) -> Array:
        """``key_mask`` (B, T) bool: False keys get no attention. ``head_mask`` (H,) multiplies probabilities.

        ``bias`` (B, H, T, T) is added to the scaled scores before the softmax.
        """
        q = self._heads(self.q_proj(x)) * (self.head_dim**-0.5)
        k = self._heads(self.k_proj(x))
        v = self._heads(self.v_proj(x))
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k)
        if bias is not None:
            scores = scores + bias
        if key_mask is not None:
            scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores, axis=-1)
        if head_mask is not None:
            probs = probs * head_mask[None, :, None, None]
        self.sow(AttentionProbs, "probs", probs)
        out = jnp.einsum("bhqk,bhkd->bhqd", probs, v)
        b, _, t, _ = out.shape
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, t, -1))


class Conv1d(nnx.Module):
    """1-D convolution on (B, T, C) with PyTorch semantics (explicit symmetric padding, groups)."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        kernel: int,
        rngs: nnx.Rngs,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        use_bias: bool = True,
    ):
        fan_in = n_in // groups * kernel
        # Kaiming-normal init like HF's speech convs.
        self.kernel = nnx.Param(
            jax.random.normal(rngs.params(), (kernel, n_in // groups, n_out)) * math.sqrt(2.0 / fan_in)
        )
        self.bias = nnx.Param(jnp.zeros((n_out,))) if use_bias else None
        self.stride = stride
        self.padding = padding
        self.groups = groups

    def __call__(self, x: Array) -> Array:
        y = jax.lax.conv_general_dilated(
            x,
            self.kernel[...],
            window_strides=(self.stride,),
            padding=[(self.padding, self.padding)],
            dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=self.groups,
        )
        if self.bias is not None:
            y = y + self.bias[...]
        return y


def conv_output_length(length: Array | int, kernels: tuple[int, ...], strides: tuple[int, ...]) -> Array | int:
    """HF's formula for the number of frames a stack of unpadded convs produces from ``length`` samples."""
    for k, s in zip(kernels, strides, strict=True):
        length = (length - k) // s + 1
    return length


def frame_mask(lengths: Array, num_frames: int) -> Array:
    """(B,) valid lengths -> (B, T) bool mask of valid frames."""
    return jnp.arange(num_frames)[None, :] < lengths[:, None]
