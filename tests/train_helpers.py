"""Shared by the training, pruning and resume tests: a tiny MelHuBERT and a learnable tone corpus."""

from __future__ import annotations

import numpy as np

from jaxneurons.models import SpeechConfig
from jaxneurons.train.pretrain import TrainData

TINY_MEL = SpeechConfig(family="melhubert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_mel_bins=16, num_conv_pos_embeddings=5,
                        num_conv_pos_embedding_groups=2, num_clusters=4)


def tone_corpus(n_utts=12, seed=0):
    """Each 20 ms frame is a tone from one of 4 frequencies; the target is which one (learnable)."""
    rng = np.random.default_rng(seed)
    freqs = np.array([300.0, 700.0, 1500.0, 3000.0])
    audio, targets = [], []
    for _ in range(n_utts):
        frames = int(rng.integers(60, 120))
        labels = np.repeat(rng.integers(0, 4, frames // 5 + 1), 5)[:frames]
        t = np.arange(frames * 320 + 240) / 16000
        f = np.repeat(freqs[labels], 320)
        f = np.concatenate([f, np.full(240, f[-1])])
        audio.append((0.3 * np.sin(2 * np.pi * np.cumsum(f) / 16000) + 0.01 * rng.standard_normal(len(t)))
                     .astype(np.float32))
        targets.append(labels.astype(np.int32))
    return TrainData(audio, targets, num_clusters=4)
