"""Probes: metrics on hand-worked examples, splits, training on synthetic features with known structure,
save / load, and an end-to-end run on a tiny random model with and without ablation masks."""

import dataclasses
import json

import numpy as np
import pytest

from jaxneurons.probes import (
    FeatureStream,
    FrameFeatures,
    SplitError,
    UtteranceFeatures,
    ctc_greedy_decode,
    evaluate,
    extract_features,
    frame_merge,
    levenshtein,
    load_probe,
    phone_error_rate,
    predict,
    save_probe,
    speaker_disjoint_split,
    train_frame_classifier,
    train_gender_probe,
    train_phone_probe,
    train_pitch_probe,
    train_speaker_probe,
    within_speaker_split,
)

# Shared optimiser settings and minibatch size: identical shapes let tests reuse compiled steps.
FAST = dict(learning_rate=1e-2, batch_size=128)

# --------------------------------------------------------------------------------------------------------------
# Synthetic data


def phone_like(seed, n_utt=30, max_t=30, dim=12, layers=3, num_classes=5, informative=1, signal=2.0):
    """Frames in runs of 2-5 of one class; class centre added to layer ``informative`` only; -1 gaps."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(num_classes, dim)) * signal
    lengths = rng.integers(10, max_t + 1, n_utt)
    labels = np.full((n_utt, max_t), -1)
    for n in range(n_utt):
        t = 1  # frame 0 unlabelled, like leading silence
        while t < lengths[n]:
            d = int(rng.integers(2, 6))
            labels[n, t:min(t + d, lengths[n])] = rng.integers(num_classes)
            t += d + int(rng.random() < 0.2)  # occasional one-frame gap
    x = rng.normal(size=(n_utt, max_t, layers, dim)).astype(np.float32)
    if informative is not None:
        x[:, :, informative] += np.where(labels[..., None] >= 0, centres[np.maximum(labels, 0)], 0.0)
    speakers = np.array([f"spk{n % 6}" for n in range(n_utt)])
    return FrameFeatures.from_padded(x, lengths, {"phone": labels}, {"speaker": speakers})


def reference_levenshtein(a, b):
    d = np.zeros((len(a) + 1, len(b) + 1), dtype=int)
    d[:, 0] = np.arange(len(a) + 1)
    d[0, :] = np.arange(len(b) + 1)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
    return d[-1, -1]


# --------------------------------------------------------------------------------------------------------------
# Metrics


@pytest.mark.parametrize("a,b,dist", [
    ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("intention", "execution", 5), ("abc", "", 3),
    ("", "ab", 2), ("", "", 0), ("abc", "abc", 0), ("abc", "cba", 2), ("a", "b", 1),
])
def test_levenshtein_hand_worked(a, b, dist):
    assert levenshtein(list(a), list(b)) == dist
    assert levenshtein(list(b), list(a)) == dist


def test_levenshtein_matches_plain_dp():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(0, 4, rng.integers(0, 12))
        b = rng.integers(0, 4, rng.integers(0, 12))
        assert levenshtein(a, b) == reference_levenshtein(a, b)
    with pytest.raises(ValueError, match="1-D"):
        levenshtein(np.zeros((2, 2)), [1])


def test_frame_merge_and_ctc_decoding():
    np.testing.assert_array_equal(frame_merge(np.array([1, 1, 2, 2, 2, 1])), [1, 2, 1])
    # unlabelled frames are skipped and break runs: "a a _ a" -> "a a"
    np.testing.assert_array_equal(frame_merge(np.array([3, 3, 3, 3]), np.array([0, 0, -1, 0])), [3, 3])
    np.testing.assert_array_equal(frame_merge(np.array([4, 5, 5, 6]), np.array([-1, 1, 1, 1])), [5, 6])
    assert frame_merge(np.array([1, 2]), np.array([-1, -1])).size == 0
    np.testing.assert_array_equal(ctc_greedy_decode(np.array([0, 1, 1, 0, 1, 2, 2, 0]), blank=0), [1, 1, 2])
    np.testing.assert_array_equal(ctc_greedy_decode(np.array([3, 3, 3]), blank=3), [])
    per, edits, total = phone_error_rate([np.array([1, 2, 3]), np.array([4])], [np.array([1, 3]), np.array([4, 4])])
    assert (edits, total) == (2, 4) and per == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------------------
# Splits


def test_speaker_disjoint_split():
    speakers = [f"s{i % 10}" for i in range(100)]
    gender = ["m" if int(s[1:]) < 5 else "f" for s in speakers]
    split = speaker_disjoint_split(speakers, dev_fraction=0.2, test_fraction=0.2, seed=3)
    parts = [set(np.asarray(speakers)[p]) for p in (split.train, split.dev, split.test)]
    assert all(parts) and not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sorted(np.concatenate([split.train, split.dev, split.test])) == list(range(100))
    again = speaker_disjoint_split(speakers, dev_fraction=0.2, test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(split.test, again.test)
    other = [speaker_disjoint_split(speakers, dev_fraction=0.2, test_fraction=0.2, seed=s).test for s in range(5)]
    assert len({tuple(o) for o in other}) > 1
    strat = speaker_disjoint_split(speakers, dev_fraction=0.2, test_fraction=0.2, seed=0, stratify=gender)
    for part in (strat.train, strat.dev, strat.test):
        assert set(np.asarray(gender)[part]) == {"m", "f"}
    with pytest.raises(SplitError, match="train split would be empty"):
        speaker_disjoint_split(["a", "b"], dev_fraction=0.1, test_fraction=0.1)
    with pytest.raises(SplitError, match="no speaker"):
        speaker_disjoint_split(["a", None, "b", "c"])
    with pytest.raises(SplitError, match="more than one stratify"):
        speaker_disjoint_split(["a", "a", "b"], stratify=["m", "f", "m"])


def test_within_speaker_split():
    speakers = [f"s{i % 4}" for i in range(40)]
    split = within_speaker_split(speakers, dev_fraction=0.2, test_fraction=0.2, seed=1)
    for part in (split.train, split.dev, split.test):
        assert set(np.asarray(speakers)[part]) == {"s0", "s1", "s2", "s3"}
    all_idx = np.concatenate([split.train, split.dev, split.test])
    assert len(set(all_idx)) == 40 == len(all_idx)
    with pytest.raises(SplitError, match="fewer than 3 utterances"):
        within_speaker_split(["a"] * 5 + ["b"] * 2)


# --------------------------------------------------------------------------------------------------------------
# Training on synthetic features


def test_phone_probe_learns_clusters_and_weights_informative_layer():
    train, dev, test = phone_like(0), phone_like(1), phone_like(2)
    probe = train_phone_probe(train, dev, **FAST)
    result = evaluate(probe, test)
    assert result["accuracy"] > 0.95 and result["balanced_accuracy"] > 0.95
    assert result["chance"]["accuracy"] < 0.4 and result["chance"]["balanced_accuracy"] == pytest.approx(0.2)
    assert result["per"] < 0.1 < 0.5 < result["chance"]["per"]
    assert set(result["per_class"]) == {"0", "1", "2", "3", "4"}
    assert all(v["accuracy"] > 0.85 for v in result["per_class"].values())
    weights = probe.layer_weights
    assert weights.argmax() == 1 and weights[1] > 0.5, weights
    json.dumps(result)  # JSON-able for the results directory


def test_random_features_stay_near_chance():
    train, dev, test = (phone_like(s, informative=None) for s in (0, 1, 2))
    probe = train_frame_classifier(train, dev, label_key="phone", **FAST)
    result = evaluate(probe, test)
    assert result["accuracy"] < max(result["chance"]["accuracy"], 0.2) + 0.12
    assert result["balanced_accuracy"] < 0.35


def test_mlp_probe_and_per_class_drop_when_informative_dims_zeroed():
    train, dev, test = phone_like(0), phone_like(1), phone_like(2)
    probe = train_frame_classifier(train, dev, label_key="phone", hidden=16, **FAST)
    clean = evaluate(probe, test)
    ablated = FrameFeatures(test.x.copy(), test.offsets, test.layers, test.frame_labels, test.utt_labels)
    ablated.x[:, 1] = 0.0  # the informative layer
    hurt = evaluate(probe, ablated)
    assert clean["accuracy"] > 0.9 and hurt["accuracy"] < clean["accuracy"] - 0.3
    assert hurt["chance"] == clean["chance"]


def test_ctc_probe_per_beats_chance():
    train, dev, test = phone_like(0, signal=3.0), phone_like(1, signal=3.0), phone_like(2, signal=3.0)
    probe = train_phone_probe(train, dev, ctc=True, learning_rate=3e-2, max_epochs=30, batch_size=10, min_steps=150)
    result = evaluate(probe, test)
    assert "accuracy" not in result
    assert result["per"] < 0.5 * result["chance"]["per"], result
    hyps = predict(probe, test)
    assert len(hyps) == test.num_utterances


def speaker_corpus(n_spk, per_spk, dim, speaker_scale, gender_shift, seed=0):
    """Utterances of frames: speaker centre on layer 0, a gender shift on channel 0 of layer 1, unit noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_spk, dim)) * speaker_scale
    speakers = np.repeat([f"s{i}" for i in range(n_spk)], per_spk)
    gender = np.array(["m" if int(s[1:]) % 2 else "f" for s in speakers])
    lengths = rng.integers(5, 20, len(speakers))
    x = rng.normal(size=(len(speakers), 20, 2, dim)).astype(np.float32)
    x[:, :, 0] += centres[np.repeat(np.arange(n_spk), per_spk)][:, None]
    x[:, :, 1, 0] += np.where(gender == "m", gender_shift, -gender_shift)[:, None]
    return FrameFeatures.from_padded(x, lengths, utt_labels={"speaker": speakers, "gender": gender})


def test_speaker_probe_on_pooled_features():
    feats = speaker_corpus(n_spk=12, per_spk=8, dim=10, speaker_scale=1.5, gender_shift=0.0)
    speakers = feats.utt_labels["speaker"]
    split = within_speaker_split(speakers, dev_fraction=0.25, test_fraction=0.25, seed=0)
    probe = train_speaker_probe(feats.subset(split.train), feats.subset(split.dev), learning_rate=3e-2)
    result = evaluate(probe, feats.subset(split.test))
    assert result["accuracy"] > 0.9 and result["chance"]["accuracy"] < 0.2
    assert set(probe.config.classes) == set(speakers[split.train])
    # a speaker the probe never saw is an error, not a silent miss
    unseen = UtteranceFeatures(feats.pooled().x[:2], feats.layers, {"speaker": np.array(["zz", "s0"])})
    with pytest.raises(ValueError, match="not seen in training"):
        evaluate(probe, unseen)


@pytest.mark.parametrize("level", ["utterance", "frame"])
def test_gender_probe_on_unseen_speakers(level):
    feats = speaker_corpus(n_spk=30, per_spk=4, dim=6, speaker_scale=0.5, gender_shift=2.0)
    gender = feats.utt_labels["gender"]
    split = speaker_disjoint_split(feats.utt_labels["speaker"], dev_fraction=0.2, test_fraction=0.2,
                                   stratify=gender, seed=0)
    probe = train_gender_probe(feats.subset(split.train), feats.subset(split.dev), level=level, learning_rate=1e-2)
    result = evaluate(probe, feats.subset(split.test))
    assert result["accuracy"] > 0.9, result
    assert set(result["per_class"]) == {"m", "f"}
    assert result["chance"]["balanced_accuracy"] == 0.5
    assert probe.layer_weights[1] > probe.layer_weights[0]


def test_pitch_regression_on_voiced_frames():
    rng = np.random.default_rng(0)
    n, t, dim = 20, 25, 8
    lengths = rng.integers(10, t + 1, n)
    x = rng.normal(size=(n, t, dim)).astype(np.float32)
    f0 = np.exp(np.log(150.0) + 0.3 * x[..., 0] - 0.2 * x[..., 1])
    f0[rng.random((n, t)) < 0.3] = 0.0  # unvoiced
    f0[x[..., 2] > 1.5] = np.nan
    feats = FrameFeatures.from_padded(x, lengths, {"f0": f0})
    train, dev, test = feats.subset(range(12)), feats.subset(range(12, 16)), feats.subset(range(16, 20))
    probe = train_pitch_probe(train, dev, learning_rate=1e-2, max_epochs=100)
    result = evaluate(probe, test)
    assert result["mse"] < 0.05 * result["chance"]["mse"], result
    assert result["r2"] > 0.9 and result["pearson"] > 0.95
    voiced = test.frame_labels["f0"] > 0
    assert result["num_examples"] == int(voiced.sum())
    hz = predict(probe, test)[voiced]
    assert np.median(np.abs(np.log(hz) - np.log(test.frame_labels["f0"][voiced]))) < 0.1


def test_save_load_round_trip(tmp_path):
    train, dev, test = phone_like(0), phone_like(1), phone_like(2)
    probe = train_phone_probe(train, dev, hidden=16, max_epochs=3, min_steps=0, **FAST)
    path = save_probe(probe, str(tmp_path / "phone_probe"))
    loaded = load_probe(path)
    assert loaded.config == probe.config
    for k in probe.params:
        np.testing.assert_array_equal(loaded.params[k], probe.params[k])
    assert evaluate(loaded, test) == evaluate(probe, test)
    assert loaded.info["epochs_run"] == probe.info["epochs_run"] == 3
    save_probe(probe, path)  # overwriting is allowed
    with pytest.raises(FileNotFoundError, match="not a saved probe"):
        load_probe(str(tmp_path))
    with pytest.raises(ValueError, match="expects layers"):
        evaluate(probe, FrameFeatures(test.x[..., :5], test.offsets, test.layers, test.frame_labels))


def test_feature_containers_and_errors():
    feats = phone_like(0, n_utt=5)
    sub = feats.subset([3, 1])
    np.testing.assert_array_equal(sub.lengths, feats.lengths[[3, 1]])
    np.testing.assert_array_equal(sub.x[: sub.lengths[0]], feats.x[feats.offsets[3]:feats.offsets[4]])
    pooled = feats.pooled()
    np.testing.assert_allclose(pooled.x[2], feats.x[feats.offsets[2]:feats.offsets[3]].mean(0), rtol=1e-5)
    assert feats.frame_label("speaker")[feats.offsets[4]] == "spk4"
    with pytest.raises(KeyError, match="no frame or utterance label"):
        feats.frame_label("nope")
    with pytest.raises(ValueError, match="does not cover"):
        FrameFeatures.from_padded(np.zeros((2, 5, 3)), [5, 5], {"y": np.zeros((2, 4))})
    one_class = FrameFeatures.from_padded(np.zeros((2, 3, 4)), [3, 3], {"y": np.zeros((2, 3), int)})
    with pytest.raises(ValueError, match="at least 2 classes"):
        train_frame_classifier(one_class, one_class, label_key="y")
    with pytest.raises(KeyError, match="labels present"):
        train_frame_classifier(feats, feats, label_key="nope")


# --------------------------------------------------------------------------------------------------------------
# End to end on a tiny random model


@pytest.fixture(scope="module")
def tiny():
    from jaxneurons.models import SpeechConfig, build_model

    config = SpeechConfig(family="hubert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                          num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
    model = build_model(config, seed=0)
    rng = np.random.default_rng(0)
    batches = []
    for b in range(6):
        lengths = np.array([800, 640, 720, 800])
        audio = np.zeros((4, 800), np.float32)
        tone = np.sin(2 * np.pi * 400 * np.arange(800) / 16000).astype(np.float32)
        frames = model.num_frames(800)
        labels = np.full((4, frames), -1)
        for i in range(4):
            n_frames = int(model.num_frames(int(lengths[i])))
            split = rng.integers(10, n_frames - 10)
            audio[i, : split * 10] = tone[: split * 10] * 0.5  # tone, then noise
            audio[i, split * 10: lengths[i]] = rng.normal(size=lengths[i] - split * 10) * 0.05
            labels[i, :split] = 0
            labels[i, split:n_frames] = 1
        batches.append({"audio": audio, "lengths": lengths, "label": labels,
                        "speaker": np.array([f"b{b}u{i}" for i in range(4)])})
    return model, batches


def test_end_to_end_extract_train_and_ablate(tiny):
    model, batches = tiny
    cfg = model.config
    kw = dict(layers="all", frame_label_keys=("label",), utt_label_keys=("speaker",))
    train = extract_features(model, batches[:4], **kw)
    dev = extract_features(model, batches[4:], **kw)
    assert train.x.shape[1:] == (cfg.num_hidden_layers + 1, cfg.hidden_size) and train.x.dtype == np.float32
    assert train.num_utterances == 16
    np.testing.assert_array_equal(train.lengths[:4], [int(model.num_frames(n)) for n in (800, 640, 720, 800)])
    # probe the last layer: the input of layer 0 is not changed by FFN / head masks
    probe = train_frame_classifier(train.select_layers(-1), dev.select_layers(-1), label_key="label",
                                   learning_rate=1e-2, max_epochs=30)
    assert probe.config.layers == (cfg.num_hidden_layers,)
    clean = evaluate(probe, dev.select_layers([cfg.num_hidden_layers]))
    assert clean["accuracy"] > 0.9, clean
    # same batches through a stream give the same evaluation
    stream = extract_features(model, batches[4:], recompute=True, **kw)
    assert isinstance(stream, FeatureStream)
    assert evaluate(probe, stream) == clean  # the probe picks its layer out of all extracted ones
    # Ablate every FFN neuron and every head: features of layers >= 1 change. In a random model the residual
    # stream dominates (zeroing changes the last layer by ~1 %), so the probe check sets neurons to a constant
    # (mask 0, offset 3) and uses a label that is a random linear function of the clean last-layer features.
    neuron_mask = np.zeros((cfg.num_hidden_layers, cfg.intermediate_size), np.float32)
    head_mask = np.zeros((cfg.num_hidden_layers, cfg.num_attention_heads), np.float32)
    zeroed = extract_features(model, batches[4:], neuron_mask=neuron_mask, head_mask=head_mask, **kw)
    np.testing.assert_array_equal(zeroed.x[:, 0], dev.x[:, 0])  # input of layer 0 is untouched
    assert not np.allclose(zeroed.x[:, -1], dev.x[:, -1])
    ablated = extract_features(model, batches[4:], neuron_mask=neuron_mask, neuron_offset=neuron_mask + 3.0,
                               head_mask=head_mask, **kw)
    direction = np.random.default_rng(1).normal(size=cfg.hidden_size)
    threshold = np.median(train.x[:, -1] @ direction)

    def with_teacher(f, clean):  # the label always comes from the clean features
        labels = {"teacher": (clean.x[:, -1] @ direction > threshold).astype(int)}
        return dataclasses.replace(f, frame_labels=labels).select_layers(-1)

    teacher = train_frame_classifier(with_teacher(train, train), with_teacher(dev, dev), label_key="teacher",
                                     learning_rate=3e-2, max_epochs=60)
    clean_t = evaluate(teacher, with_teacher(dev, dev))
    hurt = evaluate(teacher, with_teacher(ablated, dev))
    # clean, zeroed and constant-ablated runs (and the stream) shared one compiled forward
    from flax import nnx

    from jaxneurons.probes.features import _forward_fn
    assert _forward_fn(nnx.split(model)[0], tuple(range(cfg.num_hidden_layers + 1)), False)._cache_size() == 1
    assert clean_t["accuracy"] > 0.9 and hurt["accuracy"] < clean_t["accuracy"] - 0.1, (clean_t, hurt)
    assert hurt["chance"] == clean_t["chance"]
    assert not np.array_equal(predict(teacher, ablated.select_layers(-1)), predict(teacher, dev.select_layers(-1)))
    with pytest.raises(ValueError, match="expects layers"):
        evaluate(teacher, ablated.select_layers([0, 1]))
    # utterance-level extraction pools inside the jitted forward
    pooled = extract_features(model, batches[4:], layers=[-1], level="utterance", utt_label_keys=("speaker",))
    np.testing.assert_allclose(pooled.x, dev.pooled().x[:, -1:], rtol=1e-4, atol=1e-5)
    assert pooled.layers == (cfg.num_hidden_layers,)


def test_stream_training_and_extraction_errors(tiny):
    model, batches = tiny
    stream = FeatureStream(model, batches[:4], layers=[1], frame_label_keys=("label",))
    dev = FeatureStream(model, lambda: iter(batches[4:]), layers="all", frame_label_keys=("label",))
    probe = train_frame_classifier(stream, dev, label_key="label", max_epochs=5, min_steps=0, **FAST)
    assert probe.config.layers == (1,)
    assert evaluate(probe, dev)["num_examples"] > 0
    with pytest.raises(TypeError, match="one-shot iterator"):
        FeatureStream(model, iter(batches), frame_label_keys=("label",))
    # the data layer's Batch objects: labels in a dict, dummy rows (length 0), manifest indices
    from jaxneurons.data.batching import Batch

    b = batches[0]
    rows = np.r_[0, 1, 2, 3, 0]
    audio, lengths = b["audio"][rows], np.r_[b["lengths"][:4], 0]
    frame_lengths = np.r_[[int(model.num_frames(int(n))) for n in lengths[:4]], 0]
    labels = np.where(np.arange(b["label"].shape[1]) < frame_lengths[:, None], b["label"][rows], -1)
    real = Batch(audio, lengths, frame_lengths, {"label": labels}, np.r_[7, 8, 9, 10, -1])
    names = np.array([f"utt{i}" for i in range(11)])
    got = extract_features(model, [real], layers=[1], frame_label_keys=("label",), utt_label_values={"name": names})
    assert got.num_utterances == 4 and list(got.utt_labels["name"]) == ["utt7", "utt8", "utt9", "utt10"]
    np.testing.assert_allclose(got.x, extract_features(model, batches[:1], layers=[1]).x, atol=1e-5)
    bad = Batch(audio, lengths, frame_lengths + 1, {"label": labels}, np.r_[7, 8, 9, 10, -1])
    with pytest.raises(ValueError, match="another front end"):
        extract_features(model, [bad], layers=[1])
    short = dict(batches[0], label=batches[0]["label"][:, :10])
    with pytest.raises(ValueError, match="align labels"):
        extract_features(model, [short], frame_label_keys=("label",))
    with pytest.raises(ValueError, match="out of range"):
        extract_features(model, batches[:1], layers=[7])


# ---------------------------------------------------------------- ProbeSuite


class _BlockMeanConfig:
    """Just enough of a model config for the suite: one layer, 2 'neurons', 320-sample frames."""

    family = "wav2vec2"
    conv_kernel = (320,)
    conv_stride = (320,)
    num_hidden_layers = 1
    num_attention_heads = 1
    uniform_ffn = True

    def ffn_width(self, layer):
        return 2

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, _BlockMeanConfig)


class _BlockMeanModel(__import__("flax").nnx.Module):
    """hidden state = (mean of each 320-sample block, 0.1) * neuron_mask + neuron_offset: features are known."""

    def __init__(self):
        self.config = _BlockMeanConfig()

    def num_frames(self, n):
        return (n - 320) // 320 + 1

    def __call__(self, audio, lengths, neuron_mask=None, neuron_offset=None, head_mask=None):
        import types

        import jax.numpy as jnp

        b, s = audio.shape
        t = (s - 320) // 320 + 1
        block = audio[:, : t * 320].reshape(b, t, 320).mean(-1)
        h = jnp.stack([block, jnp.full_like(block, 0.1)], -1)
        h = h * neuron_mask[0] + neuron_offset[0]
        frame_lengths = (lengths - 320) // 320 + 1
        return types.SimpleNamespace(hidden_states=(h, h), frame_lengths=frame_lengths,
                                     frame_mask=jnp.arange(t)[None] < frame_lengths[:, None])


def _level_corpus(num_speakers=8, per_speaker=4):
    """Utterances whose label 'level' (hi / lo) is the sign of their DC offset: a linear probe must get it all."""
    from jaxneurons.data import Utterance

    rng = np.random.default_rng(0)
    utts, audio = [], []
    for s in range(num_speakers):
        for k in range(per_speaker):
            level = "hi" if (s + k) % 2 == 0 else "lo"
            n = 320 * int(rng.integers(5, 12))
            audio.append((0.5 if level == "hi" else -0.5) + 0.01 * rng.standard_normal(n).astype(np.float32))
            utts.append(Utterance(f"s{s}_{k}", f"/nonexistent/s{s}_{k}.wav", f"s{s}", None, None, n / 16000, 16000, n,
                                  labels={"level": level}))
    return utts, audio


def test_probe_suite_known_answer_chance_ci_and_drops():
    from jaxneurons.interventions import Ablation
    from jaxneurons.probes import ProbeSuite, ProbeSuiteConfig

    utts, audio = _level_corpus()
    suite = ProbeSuite(utts, ProbeSuiteConfig(tasks=("level", "speaker"), epochs=20, min_steps=50,
                                              bootstrap_draws=200), audio=audio)
    split, kind = suite.splits["level"]
    assert kind == "speaker_disjoint"
    spk = lambda idx: {utts[i].speaker for i in idx}  # noqa: E731
    assert not spk(split.train) & spk(split.test) and not spk(split.dev) & spk(split.test)
    sp_split, sp_kind = suite.splits["speaker"]
    assert sp_kind == "within_speaker" and spk(sp_split.test) == spk(sp_split.train)  # speaker ID: same speakers
    clean = suite.fit(_BlockMeanModel())
    level = clean["level"]
    assert level["metric"] == "accuracy" and level["value"] == 1.0 and level["ci95"] == [1.0, 1.0]
    test_levels = [utts[i].labels["level"] for i in split.test]
    majority = max(test_levels.count("hi"), test_levels.count("lo")) / len(test_levels)
    train_levels = [utts[i].labels["level"] for i in split.train]
    train_major = max(("hi", "lo"), key=train_levels.count)
    assert level["chance"] == pytest.approx(test_levels.count(train_major) / len(test_levels))
    assert level["n_utterances"] == len(split.test) and set(level["per_class"]) == {"hi", "lo"}
    # Zeroing neuron 0 leaves a constant feature: the probe gives one class everywhere.
    mask = np.array([[0.0, 1.0]], np.float32)
    drops = suite.drops(_BlockMeanModel(), {"no_dc": Ablation(neuron_mask=mask, label="no_dc")})
    ablated = drops["no_dc"]["level"]
    assert ablated["value"] in (pytest.approx(majority), pytest.approx(1 - majority))
    assert ablated["drop"] == pytest.approx(1.0 - ablated["value"])
    assert 0 < ablated["drop_ci95"][0] <= ablated["drop"] <= ablated["drop_ci95"][1]
    assert drops["clean"]["level"]["value"] == 1.0


def test_bootstrap_over_utterances_covers_the_truth():
    """Utterances differ (per-utterance accuracy ~ Beta): a CI over utterances covers the true mean ~95 % of the
    time; one over frames would be far too narrow and cover it much less often."""
    from jaxneurons.probes import bootstrap_ci

    rng = np.random.default_rng(1)
    truth, covered = 0.7, 0
    for _ in range(100):
        p = rng.beta(7, 3, size=40)  # mean 0.7
        frames = rng.integers(50, 150, size=40)
        correct = rng.binomial(frames, p)
        draws = rng.integers(0, 40, size=(500, 40))
        lo, hi = bootstrap_ci(correct, frames, draws)
        covered += lo <= truth <= hi
    assert 85 <= covered <= 100


def test_probe_suite_config_and_errors():
    from jaxneurons.probes import ProbeSuite, ProbeSuiteConfig, SplitError

    assert ProbeSuiteConfig().hidden_states(12) == (12,) and ProbeSuiteConfig(layer="mid").hidden_states(12) == (6,)
    assert ProbeSuiteConfig(layer=-2).hidden_states(12) == (11,) and ProbeSuiteConfig(layer=3).layer == "3"
    assert ProbeSuiteConfig(layer="all").hidden_states(2) == (0, 1, 2)
    with pytest.raises(ValueError, match="layer"):
        ProbeSuiteConfig(layer="first")
    utts, audio = _level_corpus(num_speakers=2)
    with pytest.raises(SplitError, match="at least 3 speakers"):
        ProbeSuite(utts, ProbeSuiteConfig(tasks=("level",)), audio=audio)
    with pytest.raises(ValueError, match="neither a built-in task"):
        ProbeSuite(utts, ProbeSuiteConfig(tasks=("colour",)), audio=audio)
    # One class among the training speakers: the corpus's problem, a one-line error at the CLI (not a traceback)
    utts, audio = _level_corpus()
    one_class = [dataclasses.replace(u, labels={"level": "hi"}) for u in utts]
    with pytest.raises(SplitError, match="cannot train the 'level' probe.*at least 2 classes") as err:
        ProbeSuite(one_class, ProbeSuiteConfig(tasks=("level",), epochs=2), audio=audio).fit(_BlockMeanModel())
    from jaxneurons.errors import is_user_error

    assert is_user_error(err.value)


def test_probe_suite_split_stratifies_by_speaker_constant_labels():
    from jaxneurons.data import Utterance
    from jaxneurons.probes import ProbeSuite, ProbeSuiteConfig

    def corpus(num_speakers):
        out = []
        for s in range(num_speakers):
            lang, gender = ("en", "tr")[s % 2], ("m", "f")[(s // 2) % 2]
            out += [Utterance(f"s{s}_{k}", "/x.wav", f"s{s}", gender, None, 1.0, 16000, 16000,
                              labels={"lang": lang}) for k in range(2)]
        return out

    utts = corpus(12)  # 3 speakers in each language x gender stratum
    suite = ProbeSuite(utts, ProbeSuiteConfig(tasks=("lang",)))
    split, kind = suite.splits["lang"]
    assert kind == "speaker_disjoint_stratified_by_gender+lang"
    for part in (split.train, split.dev, split.test):
        assert {(utts[i].gender, utts[i].labels["lang"]) for i in part} == {("m", "en"), ("m", "tr"), ("f", "en"),
                                                                            ("f", "tr")}
    # 8 speakers: 2 per language x gender, 4 per gender -> gender only; 4 speakers: 2 per gender -> none
    assert ProbeSuite(corpus(8), ProbeSuiteConfig(tasks=("lang",))).splits["lang"][1] == \
        "speaker_disjoint_stratified_by_gender"
    assert ProbeSuite(corpus(4), ProbeSuiteConfig(tasks=("lang",))).splits["lang"][1] == "speaker_disjoint"


def test_probe_fitting_reports_each_epoch_to_a_progress_bar(monkeypatch):
    import jaxneurons.probes.probe as probe_module

    calls: list[tuple[int, dict]] = []

    class RecordingBar:  # jaxneurons.progress.ProgressBar's interface: bar(done, **postfix), a context manager
        def __init__(self, total, initial=0, desc="", unit="it", leave=True):
            self.total, self.desc = total, desc

        def __call__(self, done, **postfix):
            calls.append((done, postfix))

        def __enter__(self):
            return self

        def __exit__(self, *_):
            pass

    monkeypatch.setattr(probe_module, "ProgressBar", RecordingBar)
    probe = train_phone_probe(phone_like(0), phone_like(1), max_epochs=4, patience=4, min_steps=0, **FAST)
    history = probe.info["history"]
    assert [done for done, _ in calls] == [1, 2, 3, 4] == [h["epoch"] + 1 for h in history]
    assert calls[-1][1]["dev_loss"] == f"{history[-1]['dev_loss']:.4f}"
