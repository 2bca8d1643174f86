"""Span masks for masked-prediction pre-training (HuBERT / MelHuBERT style), jit-able and seeded.

Like fairseq's ``compute_mask_indices``: each utterance of ``n`` valid frames gets
``floor(mask_prob * n / mask_length + u)`` spans (``u ~ U[0, 1)``, so the expected masked fraction before
overlaps is ``mask_prob``), span starts uniform over ``[0, n - mask_length]``; spans may overlap.
MelHuBERT (used by the property-neuron study for continued pre-training) sets ``mask_prob=0.7`` and
``mask_length=5``; HuBERT base uses 0.8 and 10.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def span_mask(
    key: Array, frame_lengths: Array, num_frames: int, mask_prob: float = 0.7, mask_length: int = 5
) -> Array:
    """(B, T) bool mask of frames to replace by the mask embedding; only valid frames are ever masked."""
    batch = frame_lengths.shape[0]
    max_spans = max(1, int(mask_prob * num_frames / mask_length) + 1)
    k_count, k_start = jax.random.split(key)
    n = frame_lengths.astype(jnp.float32)
    num_spans = jnp.floor(mask_prob * n / mask_length + jax.random.uniform(k_count, (batch,))).astype(jnp.int32)
    num_spans = jnp.clip(num_spans, 0, max_spans)
    room = jnp.maximum(frame_lengths - mask_length, 0) + 1  # possible start positions
    starts = jnp.floor(jax.random.uniform(k_start, (batch, max_spans)) * room[:, None]).astype(jnp.int32)
    active = jnp.arange(max_spans)[None, :] < num_spans[:, None]
    t = jnp.arange(num_frames)[None, None, :]
    covered = (t >= starts[..., None]) & (t < starts[..., None] + mask_length) & active[..., None]
    valid = jnp.arange(num_frames)[None, :] < frame_lengths[:, None]
    return covered.any(axis=1) & valid
