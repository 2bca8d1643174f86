"""Masked-prediction pre-training: span masks, learning, and exact resume after a kill."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxneurons.models import SpeechConfig, build_model
from jaxneurons.models.checkpoint import save_model
from jaxneurons.pruning import zero_pruned
from jaxneurons.train.masking import span_mask
from jaxneurons.train.pretrain import CheckpointMismatchError, TrainConfig, TrainData, Trainer, make_batch
from jaxneurons.train.targets import (
    TargetError,
    continued_pretraining_data,
    fit_target_recipe,
    kmeans_targets,
    load_recipe,
    mfcc_frame_features,
    save_recipe,
    targets_cache_key,
)
from tests.helpers import TINY_MEL, run_python, tone_corpus


def test_span_mask_properties():
    lengths = jnp.array([100, 40, 7])
    mask = np.asarray(span_mask(jax.random.key(0), lengths, 100, mask_prob=0.5, mask_length=5))
    assert not mask[1, 40:].any() and not mask[2, 7:].any()
    frac = mask[0].mean()
    assert 0.25 < frac <= 0.6  # overlapping spans: a bit under mask_prob in expectation
    again = np.asarray(span_mask(jax.random.key(0), lengths, 100, mask_prob=0.5, mask_length=5))
    np.testing.assert_array_equal(mask, again)


def test_batches_are_deterministic_and_aligned():
    data = tone_corpus()
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
    return Trainer(build_model(TINY_MEL, seed=1), tone_corpus(), cfg, str(tmp_path / name))


def test_resume_after_kill_continues_the_same_trajectory(tmp_path, monkeypatch):
    stderr = io.StringIO()  # not a terminal: no progress bar ...
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.delenv("JAXNEURONS_PROGRESS", raising=False)
    straight = _trainer(tmp_path, 6, "straight").train()
    assert "train" not in stderr.getvalue()
    killed = _trainer(tmp_path, 6, "resumed")
    killed.train(until_step=4)  # checkpoint at step 3; steps 4 is lost with the "kill"
    resumed = _trainer(tmp_path, 6, "resumed")
    assert resumed.restore_latest() and resumed.step == 3
    monkeypatch.setenv("JAXNEURONS_PROGRESS", "1")  # ... unless forced (a notebook): steps and loss
    new_steps = resumed.train()
    bar = stderr.getvalue().split("\r")[-1]  # tqdm redraws one line; the last draw is the finished bar
    assert bar.startswith("train") and "6/6" in bar and f"loss={new_steps[-1]['loss']:.4f}" in bar, bar
    logged = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([r["loss"] for r in logged], [r["loss"] for r in straight], rtol=1e-6)


def test_training_learns_the_masked_frames(tmp_path):
    cfg = TrainConfig(steps=40, batch_size=4, crop_seconds=0.5, learning_rate=3e-3, warmup_steps=5,
                      checkpoint_every=40, log_every=100, mask_prob=0.5, mask_length=2)
    history = Trainer(build_model(TINY_MEL, seed=2), tone_corpus(), cfg, str(tmp_path / "mel")).train()
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
    trainer = Trainer(build_model(config, seed=2), tone_corpus(), cfg, str(tmp_path / "hubert"), neuron_mask=mask)
    assert trainer.task.head is not None  # HF-family encoders get a fresh prediction head
    before = np.asarray(trainer.params["encoder"]["encoder"]["layers"][0]["feed_forward"]["intermediate_dense"]
                        ["kernel"][...])[:, :10].copy()
    history = trainer.train()
    assert all(np.isfinite(h["loss"]) for h in history)
    after = np.asarray(trainer.encoder().encoder.layers[0].feed_forward.intermediate_dense.kernel[...])[:, :10]
    # Masked neurons get no gradient through h; only weight decay shrinks their W1 columns.
    np.testing.assert_allclose(after, before * (1 - 0.01 * np.asarray([h["learning_rate"] for h in history])).prod(),
                               rtol=1e-5)


# ---------------------------------------------------------------- target recipes (METHODS.md §1: same targets)


def _tone_audio(n_utts=6):
    return list(tone_corpus(n_utts).audio)


def test_mfcc_recipe_regenerates_the_training_targets_exactly(tmp_path):
    model = build_model(TINY_MEL, seed=1)
    audio = _tone_audio()
    recipe, labels = fit_target_recipe(model, audio, 4, seed=3)
    save_recipe(recipe, str(tmp_path / "m"))
    # a different (e.g. pruned) model with the same head and geometry gets the same targets
    pruned = zero_pruned(model, np.arange(64)[None, :].repeat(2, 0) < 20)
    data = continued_pretraining_data(pruned, audio, recipe=str(tmp_path / "m"))
    assert data.num_clusters == 4 and not data.reinit_head and data.recipe.source == "mfcc"
    for a, b in zip(data.targets, labels, strict=True):
        np.testing.assert_array_equal(a, b)
    # fresh k-means of the same features (what continued pre-training did before recipes) is another labelling
    fresh, _ = kmeans_targets(mfcc_frame_features(audio, lambda n: int(model.num_frames(n))), 4, seed=4)
    assert any((a != b).any() for a, b in zip(fresh, labels, strict=True))


def test_layer_recipe_stores_its_feature_model(tmp_path):
    model = build_model(TINY_MEL, seed=1)
    feature_model = build_model(TINY_MEL, seed=9)  # "iteration 1"
    audio = _tone_audio()
    recipe, labels = fit_target_recipe(model, audio, 4, source="layer", feature_model=feature_model, layer=1)
    save_recipe(recipe, str(tmp_path / "m"), feature_model=feature_model)
    loaded = load_recipe(str(tmp_path / "m"))
    assert loaded.source == "layer" and loaded.layer == 1
    assert os.path.isdir(loaded.feature_model) and str(tmp_path / "m") in loaded.feature_model
    data = continued_pretraining_data(model, audio, recipe=loaded)
    for a, b in zip(data.targets, labels, strict=True):
        np.testing.assert_array_equal(a, b)
    # the stored feature model is checked against the fingerprint the targets were made with
    save_model(build_model(TINY_MEL, seed=10), loaded.feature_model)
    with pytest.raises(TargetError, match="fingerprint mismatch"):
        continued_pretraining_data(model, audio, recipe=str(tmp_path / "m"))


def test_head_and_geometry_mismatch_and_missing_recipe_are_errors(tmp_path):
    model = build_model(TINY_MEL, seed=1)
    audio = _tone_audio(3)
    recipe, _ = fit_target_recipe(model, audio, 4)
    with pytest.raises(TargetError, match="head .* predicts 5 clusters but its target recipe has 4"):
        continued_pretraining_data(build_model(TINY_MEL.replace(num_clusters=5)), audio, recipe=recipe)
    with pytest.raises(TargetError, match="cuts frames differently"):  # 10 ms frames instead of 20 ms
        continued_pretraining_data(build_model(TINY_MEL.replace(frame_stacking=1)), audio, recipe=recipe)
    with pytest.raises(TargetError, match="fresh_mfcc_kmeans"):
        continued_pretraining_data(model, audio, recipe=str(tmp_path))  # no targets/recipe.json there
    with pytest.raises(TargetError, match="fresh_mfcc_kmeans"):
        continued_pretraining_data(model, audio)
    with pytest.raises(ValueError, match="encoder head predicts 4 clusters, targets have 3"):
        Trainer(model, TrainData(audio, [np.zeros(10, np.int32)] * 3, 3), TrainConfig(), str(tmp_path / "w"))


def test_fresh_targets_are_explicit_and_reinitialise_the_head(tmp_path):
    model = build_model(TINY_MEL, seed=1)
    head = np.asarray(model.final_proj.kernel[...]).copy()
    data = continued_pretraining_data(model, _tone_audio(4), targets="fresh_mfcc_kmeans")
    assert data.reinit_head and data.num_clusters == 4 and data.recipe.source == "mfcc"
    trainer = Trainer(model, data, TrainConfig(steps=1, batch_size=2, crop_seconds=0.5), str(tmp_path / "w"))
    new_head = np.asarray(trainer.task.encoder.final_proj.kernel[...])
    assert not np.allclose(new_head, head)  # old head outputs meant other clusters
    np.testing.assert_array_equal(np.asarray(model.final_proj.kernel[...]), head)  # caller's model untouched
    with pytest.raises(TargetError, match="re-initialised, not resized"):
        continued_pretraining_data(model, _tone_audio(4), targets="fresh_mfcc_kmeans", num_clusters=7)


def test_targets_cache_key_covers_geometry_init_and_data():
    model = build_model(TINY_MEL, seed=1)
    audio = _tone_audio(3)
    common = dict(choice="new", source="mfcc", num_clusters=4, seed=0)
    key = targets_cache_key(model, audio, **common)
    assert key == targets_cache_key(build_model(TINY_MEL, seed=1), audio, **common)
    assert key != targets_cache_key(build_model(TINY_MEL, seed=2), audio, **common)  # another --init
    assert key != targets_cache_key(build_model(TINY_MEL.replace(frame_stacking=1), seed=1), audio, **common)
    assert key != targets_cache_key(model, [a * 0.5 for a in audio], **common)
    assert key != targets_cache_key(model, audio, **{**common, "num_clusters": 5})


# ---------------------------------------------------------------- checkpoints belong to one run


def test_restore_refuses_a_checkpoint_of_another_run(tmp_path):
    data = tone_corpus()
    cfg = TrainConfig(steps=3, batch_size=4, crop_seconds=0.5, checkpoint_every=3, log_every=100, warmup_steps=1)
    first = Trainer(build_model(TINY_MEL, seed=1), data, cfg, str(tmp_path / "w"))
    first.train()
    assert Trainer(build_model(TINY_MEL, seed=1), data, cfg, str(tmp_path / "w")).restore_latest()
    mask = np.ones((2, 64), np.float32)
    mask[0, :5] = 0
    others = {
        "model_weights": dict(encoder=build_model(TINY_MEL, seed=2)),
        "train_config": dict(config=dataclasses.replace(cfg, learning_rate=1e-4)),
        "neuron_mask": dict(neuron_mask=mask),
        "data": dict(data=TrainData(data.audio, [np.roll(t, 1) for t in data.targets], 4)),
    }
    for what, change in others.items():
        kw = {**dict(encoder=build_model(TINY_MEL, seed=1), data=data, config=cfg, workdir=str(tmp_path / "w")),
              **change}
        with pytest.raises(CheckpointMismatchError, match=f"differs in: {what}"):
            Trainer(**kw).restore_latest()
    fresh = Trainer(build_model(TINY_MEL, seed=2), data, cfg, str(tmp_path / "w"))
    assert not fresh.restore_latest(on_mismatch="fresh") and fresh.step == 0
    assert fresh.manager.latest_step() is None and not (tmp_path / "w" / "metrics.jsonl").exists()


def test_bundled_default_model_has_an_explicit_recipe():
    """Its iteration-1 feature model was not kept, so its recipe is the documented 'head' fallback: the
    unpruned bundled model's own head argmax, also for a pruned copy (docs/default_model.md)."""
    from jaxneurons.assets import default_model_path
    from jaxneurons.models.checkpoint import load_model
    from jaxneurons.train.targets import head_targets

    path = default_model_path()
    recipe = load_recipe(path)
    assert recipe is not None and recipe.source == "head" and recipe.num_clusters == 100
    model = load_model(path)
    audio = [a[:16000] for a in _tone_audio(3)]
    own = head_targets(model, audio)
    keep = np.ones((6, 768), bool)
    keep[:, :300] = False
    data = continued_pretraining_data(zero_pruned(model, keep), audio, recipe=path)
    assert not data.reinit_head and data.num_clusters == 100
    for a, b in zip(data.targets, own, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # four `jaxneurons train` processes
def test_jaxneurons_train_stores_its_recipe_and_refuses_foreign_checkpoints(tmp_path):
    import soundfile as sf

    from jaxneurons.data import load_audio
    from jaxneurons.data.manifest import Utterance, write_manifest
    from jaxneurons.models.checkpoint import load_model, read_provenance

    utts = []
    for i, wav in enumerate(_tone_audio(6)):
        path = str(tmp_path / f"u{i}.wav")
        sf.write(path, wav, 16000)
        utts.append(Utterance(f"u{i}", path, "s0", None, "en", len(wav) / 16000, 16000, len(wav)))
    nan_path = str(tmp_path / "nan.wav")  # an unusable file: left out under --on_error=record
    sf.write(nan_path, np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    nan_utt = Utterance("nan", nan_path, "s0", None, "en", 0.5, 16000, 8000)
    manifest = write_manifest(str(tmp_path / "manifest.jsonl"), [*utts[:3], nan_utt, *utts[3:]])
    common = ["--manifest", manifest, "--steps", "2", "--batch_size", "2", "--crop_seconds", "0.5",
              "--checkpoint_every", "2", "--warmup_steps", "1", "--on_error", "record"]

    def train(*args):
        return run_python(["-c", "from jaxneurons.cli import run; run()", "train", *common, *args],
                          returncodes=None, timeout=900)

    first = str(tmp_path / "m1")
    out = train("--out", first, "--preset", "tiny", "--num_clusters", "8")
    assert out.returncode == 0, out.stderr[-2000:]
    decoding = read_provenance(first)["data_decoding"]
    assert decoding["utterances_used"] == len(utts) and [x["path"] for x in decoding["left_out"]] == [nan_path]
    assert read_provenance(first)["num_utterances"] == len(utts) and nan_path in out.stderr
    audio = [load_audio(u.path, 16000) for u in utts]
    (cache,) = [d for d in os.listdir(first + ".work") if d.startswith("targets-")]
    with np.load(os.path.join(first + ".work", cache, "labels.npz")) as z:
        trained_on = [z[str(i)] for i in range(len(utts))]
    data = continued_pretraining_data(load_model(first), audio, recipe=first)
    for a, b in zip(data.targets, trained_on, strict=True):
        np.testing.assert_array_equal(a, b)

    second = str(tmp_path / "m2")
    out = train("--out", second, "--init", first)
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_provenance(second)["targets"]["choice"] == "recipe"
    assert load_recipe(second).fingerprint() == load_recipe(first).fingerprint()
    out = train("--out", second, "--init", first, "--learning_rate", "1e-3")  # same work dir, other run
    assert out.returncode != 0 and "made by another run" in out.stderr and "Traceback" not in out.stderr

    bare = str(tmp_path / "bare")
    save_model(build_model(TINY_MEL), bare)  # e.g. an HF conversion: no targets/ recipe
    out = train("--out", str(tmp_path / "m3"), "--init", bare)
    assert out.returncode != 0 and "--targets=new" in out.stderr

