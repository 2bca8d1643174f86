"""Masked-prediction pre-training: span masks, learning, and exact resume after a kill."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from jaxneurons.models import SpeechConfig, build_model
from jaxneurons.train.masking import span_mask
from jaxneurons.train.pretrain import TrainConfig, TrainData, Trainer, make_batch

TINY_MEL = SpeechConfig(family="melhubert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_mel_bins=16, num_conv_pos_embeddings=5,
                        num_conv_pos_embedding_groups=2, num_clusters=4)


def _tone_corpus(n_utts=12, seed=0):
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


def test_span_mask_properties():
    lengths = jnp.array([100, 40, 7])
    mask = np.asarray(span_mask(jax.random.key(0), lengths, 100, mask_prob=0.5, mask_length=5))
    assert not mask[1, 40:].any() and not mask[2, 7:].any()
    frac = mask[0].mean()
    assert 0.25 < frac <= 0.6  # overlapping spans: a bit under mask_prob in expectation
    again = np.asarray(span_mask(jax.random.key(0), lengths, 100, mask_prob=0.5, mask_length=5))
    np.testing.assert_array_equal(mask, again)


def test_batches_are_deterministic_and_aligned():
    data = _tone_corpus()
    model = build_model(TINY_MEL)
    cfg = TrainConfig(batch_size=4, crop_seconds=0.5, seed=3)
    a, b = make_batch(data, model, cfg, 5), make_batch(data, model, cfg, 5)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert a["targets"].shape == (4, int(model.num_frames(8000)))
    assert (a["targets"] >= -1).all() and (a["targets"] < 4).all()


def _trainer(tmp_path, steps, name):
    cfg = TrainConfig(steps=steps, batch_size=4, crop_seconds=0.5, learning_rate=3e-3, warmup_steps=2,
                      checkpoint_every=3, log_every=100, mask_prob=0.5, mask_length=2)
    return Trainer(build_model(TINY_MEL, seed=1), _tone_corpus(), cfg, str(tmp_path / name))


def test_resume_after_kill_continues_the_same_trajectory(tmp_path):
    straight = _trainer(tmp_path, 6, "straight").train()
    killed = _trainer(tmp_path, 6, "resumed")
    killed.train(until_step=4)  # checkpoint at step 3; steps 4 is lost with the "kill"
    resumed = _trainer(tmp_path, 6, "resumed")
    assert resumed.restore_latest() and resumed.step == 3
    resumed.train()
    logged = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([r["loss"] for r in logged], [r["loss"] for r in straight], rtol=1e-6)


def test_training_learns_the_masked_frames(tmp_path):
    cfg = TrainConfig(steps=40, batch_size=4, crop_seconds=0.5, learning_rate=3e-3, warmup_steps=5,
                      checkpoint_every=40, log_every=100, mask_prob=0.5, mask_length=2)
    history = Trainer(build_model(TINY_MEL, seed=2), _tone_corpus(), cfg, str(tmp_path / "mel")).train()
    loss = np.array([h["loss"] for h in history])
    acc = np.array([h["masked_accuracy"] for h in history])
    assert loss[-10:].mean() < 0.85 * loss[:5].mean(), loss
    assert acc[-10:].mean() > acc[:5].mean() + 0.2, acc  # chance is 0.25


def test_continued_pretraining_of_a_conv_model_with_a_new_head_and_mask(tmp_path):
    config = SpeechConfig(family="hubert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4),
                          conv_stride=(5, 4, 16), num_conv_pos_embeddings=5, num_conv_pos_embedding_groups=2)
    cfg = TrainConfig(steps=3, batch_size=4, crop_seconds=0.5, checkpoint_every=3, log_every=100)
    mask = np.ones((2, 64), np.float32)
    mask[0, :10] = 0.0
    trainer = Trainer(build_model(config, seed=2), _tone_corpus(), cfg, str(tmp_path / "hubert"), neuron_mask=mask)
    assert trainer.task.head is not None  # HF-family encoders get a fresh prediction head
    before = np.asarray(trainer.params["encoder"]["encoder"]["layers"][0]["feed_forward"]["intermediate_dense"]
                        ["kernel"][...])[:, :10].copy()
    history = trainer.train()
    assert all(np.isfinite(h["loss"]) for h in history)
    after = np.asarray(trainer.encoder().encoder.layers[0].feed_forward.intermediate_dense.kernel[...])[:, :10]
    # Masked neurons get no gradient through h; only weight decay shrinks their W1 columns.
    np.testing.assert_allclose(after, before * (1 - 0.01 * np.asarray([h["learning_rate"] for h in history])).prod(),
                               rtol=1e-5)
