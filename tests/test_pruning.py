"""Pruning: L1 scores (layouts), exact protected selection, strategies, schedules, slimming == masking."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from checkpoints_convert.hf_weights import to_hf_layout
from jaxneurons.models import SpeechConfig, build_model
from jaxneurons.models.checkpoint import load_model, save_model
from jaxneurons.pruning import (
    PruningError,
    iterative_prune,
    keep_count,
    keep_neuron_mask,
    l1_scores,
    protected_prune,
    prune_to_density,
    select_keep,
    slim_model,
    zero_pruned,
)

TINY = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=40,
            num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
CONFIGS = {
    "wav2vec2": SpeechConfig(family="wav2vec2", conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), **TINY),
    "melhubert": SpeechConfig(family="melhubert", num_mel_bins=8, num_clusters=5, **TINY),
}


@pytest.fixture(scope="module")
def models():
    return {name: build_model(cfg, seed=1) for name, cfg in CONFIGS.items()}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal((2, 2400))).astype(np.float32)
    audio[1, 1700:] = 0.0
    return audio, np.array([2400, 1700], np.int32)


@functools.partial(jax.jit, static_argnames="graphdef")
def _run(state, audio, lengths, mask, offset, *, graphdef):
    out = nnx.merge(graphdef, state)(audio, lengths, neuron_mask=mask, neuron_offset=offset)
    return out.last_hidden_state, out.frame_mask


def _forward(model, audio, lengths, neuron_mask=None, neuron_offset=None):
    """Jitted forward (compiled once per model structure and mask kind); returns (last hidden, valid frames)."""
    graphdef, state = nnx.split(model)
    if neuron_mask is not None and neuron_offset is None:
        neuron_offset = np.zeros_like(neuron_mask)
    last, valid = _run(state, audio, lengths, neuron_mask, neuron_offset, graphdef=graphdef)
    return np.asarray(last), np.asarray(valid)

# ---------------------------------------------------------------- scores


def test_l1_scores_match_hf_layout(models):
    model = models["wav2vec2"]
    scores = l1_scores(model)
    assert scores.shape == (3, 40)
    for layer in range(3):
        ff = model.encoder.layers[layer].feed_forward
        # HF layout: W1 is (D, C), W2 is (C, D).
        W1 = to_hf_layout(("kernel",), np.asarray(ff.intermediate_dense.kernel[...]))
        W2 = to_hf_layout(("kernel",), np.asarray(ff.output_dense.kernel[...]))
        b1 = np.asarray(ff.intermediate_dense.bias[...])
        assert W1.shape == (40, 16) and W2.shape == (16, 40)
        for i in (0, 7, 39):
            expected = np.abs(W1[i, :]).sum() + abs(b1[i]) + np.abs(W2[:, i]).sum()
            np.testing.assert_allclose(scores[layer, i], expected, rtol=1e-6)


# ---------------------------------------------------------------- selection


def _check_keep(keep, scores, protected, density, scope):
    keep = np.asarray(keep)
    L, D = scores.shape
    assert not (protected & ~keep).any(), "a protected neuron was pruned"
    if scope == "layer":
        assert (keep.sum(1) == keep_count(D, density)).all()
        groups = [(scores[l], keep[l], protected[l]) for l in range(L)]
    else:
        assert keep.sum() == keep_count(L * D, density)
        groups = [(scores.ravel(), keep.ravel(), protected.ravel())]
    for s, k, p in groups:
        pruned, kept_cand = s[~k], s[k & ~p]
        if pruned.size and kept_cand.size:
            assert pruned.max() <= kept_cand.min(), "a higher-scoring candidate was pruned before a lower one"


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_protected_selection_exact_density(scope):
    rng = np.random.default_rng(42)
    for trial in range(60):
        L, D = int(rng.integers(1, 6)), int(rng.integers(5, 80))
        scores = rng.standard_normal((L, D))
        if trial % 3 == 0:
            scores = np.round(scores, 1)  # ties
        density = float(rng.choice([0.0, 0.05, 0.19, 0.3, 0.5, 0.77, 1.0, rng.uniform()]))
        target = keep_count(D, density)
        # protected sets small enough to be feasible in every layer
        protected = np.zeros((L, D), bool)
        for l in range(L):
            n = int(rng.integers(0, target + 1))
            protected[l, rng.choice(D, n, replace=False)] = True
        keep = prune_to_density(scores, density, scope=scope, protected=protected)
        assert keep.dtype == bool and keep.shape == (L, D)
        _check_keep(keep, scores, protected, density, scope)


def test_unreachable_target_raises_or_clamps():
    scores = np.arange(20.0).reshape(2, 10)
    protected = np.zeros((2, 10), bool)
    protected[1, :6] = True  # 6 protected, density 0.3 keeps 3
    with pytest.raises(PruningError, match="layer 1: 6 protected"):
        prune_to_density(scores, 0.3, protected=protected)
    keep = prune_to_density(scores, 0.3, protected=protected, clamp=True)
    assert keep[0].sum() == 3 and keep[1].sum() == 6 and keep[1, :6].all()
    protected[0, :] = True  # 16 protected > 6 kept in all
    with pytest.raises(PruningError, match="global target"):
        prune_to_density(scores, 0.3, scope="global", protected=protected)
    with pytest.raises(PruningError, match="density"):
        prune_to_density(scores, 1.5)
    with pytest.raises(PruningError, match="NaN"):
        prune_to_density(np.full((1, 4), np.nan), 0.5)
    with pytest.raises(PruningError, match="only 2 are left"):
        select_keep(scores, 3, alive=np.arange(20).reshape(2, 10) < 2)


def test_alive_neurons_only():
    scores = np.arange(10.0)[None]
    alive = np.ones((1, 10), bool)
    alive[0, 5:8] = False
    keep = select_keep(scores, 4, alive=alive)
    assert not (keep & ~alive).any() and keep.sum() == 4
    np.testing.assert_array_equal(np.flatnonzero(keep[0]), [3, 4, 8, 9])


# ---------------------------------------------------------------- strategies


def _bias_identify(calls, quantile=0.8):
    """Protected = neurons with a large b1 (an index-free property of the weights, like a real identify)."""

    def identify(model, keep, layer):
        calls.append((layer, None if keep is None else [np.asarray(k).copy() for k in keep]))
        out = []
        for l in range(model.config.num_hidden_layers):
            b1 = np.asarray(model.encoder.layers[l].feed_forward.intermediate_dense.bias[...])
            out.append(b1 > np.quantile(b1, quantile))
        return out

    return identify


def test_strategy_all_and_each(models):
    model = models["wav2vec2"]
    calls: list = []
    keep_all = protected_prune(model, 0.5, identify=_bias_identify(calls))
    assert [c[0] for c in calls] == [None]
    calls.clear()
    keep_each = protected_prune(model, 0.5, identify=_bias_identify(calls), strategy="each")
    assert [c[0] for c in calls] == [0, 1, 2]
    # before pruning layer l, layers < l are already pruned and the rest are whole
    for layer, keep in calls:
        for l, k in enumerate(keep):
            assert k.sum() == (20 if l < layer else 40)
    # a protection that does not depend on the pruning gives the same result either way
    np.testing.assert_array_equal(keep_all, keep_each)
    prot = np.stack(_bias_identify([])(model, None, None))
    assert not (prot & ~keep_each).any()
    with pytest.raises(PruningError, match="scope='layer'"):
        protected_prune(model, 0.5, identify=_bias_identify([]), strategy="each", scope="global")


# ---------------------------------------------------------------- slimming


@pytest.mark.parametrize(("name", "scope"), [("wav2vec2", "global"), ("melhubert", "layer")])
def test_slimmed_forward_equals_masked(models, batch, name, scope):
    model = models[name]
    keep = protected_prune(model, 0.3, scope=scope)
    slim = slim_model(model, keep)
    widths = tuple(int(k.sum()) for k in keep)
    assert slim.config.intermediate_sizes == widths
    for l, w in enumerate(widths):
        ff = slim.encoder.layers[l].feed_forward
        assert ff.intermediate_dense.kernel[...].shape == (16, w) and ff.output_dense.kernel[...].shape == (w, 16)
    masked, valid = _forward(model, *batch, neuron_mask=keep_neuron_mask(keep))
    slimmed, _ = _forward(slim, *batch)
    full, _ = _forward(model, *batch, neuron_mask=np.ones_like(keep_neuron_mask(keep)))
    assert np.abs(masked - slimmed)[valid].max() < 1e-5
    assert np.abs(masked - full)[valid].max() > 1e-3  # pruning changed the output
    if name == "melhubert":
        assert slim.final_proj is not None


def test_slim_folds_mean_offset(models, batch):
    model = models["wav2vec2"]
    keep = protected_prune(model, 0.5)
    offset = np.where(keep, 0.0, np.random.default_rng(3).uniform(-0.5, 0.5, keep.shape)).astype(np.float32)
    masked, valid = _forward(model, *batch, neuron_mask=keep_neuron_mask(keep), neuron_offset=offset)
    slimmed, _ = _forward(slim_model(model, keep, neuron_offset=offset), *batch)
    assert np.abs(masked - slimmed)[valid].max() < 1e-5


def test_slimmed_model_saves_and_loads(models, batch, tmp_path):
    model = models["wav2vec2"]
    slim = slim_model(model, protected_prune(model, 0.4, scope="global"))
    save_model(slim, str(tmp_path / "m"))
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.config.intermediate_sizes == slim.config.intermediate_sizes
    a, valid = _forward(slim, *batch)
    b, _ = _forward(loaded, *batch)
    np.testing.assert_array_equal(a, b)


def test_zero_pruned_equals_masked_and_leaves_input(models, batch):
    model = models["wav2vec2"]
    before = np.asarray(model.encoder.layers[0].feed_forward.output_dense.kernel[...]).copy()
    keep = protected_prune(model, 0.25)
    zeroed = zero_pruned(model, keep)
    np.testing.assert_array_equal(np.asarray(model.encoder.layers[0].feed_forward.output_dense.kernel[...]), before)
    masked, valid = _forward(model, *batch, neuron_mask=keep_neuron_mask(keep))
    z, _ = _forward(zeroed, *batch)
    assert np.abs(masked - z)[valid].max() < 1e-5
    scores = l1_scores(zeroed)
    assert (scores[~keep] == 0).all()


def test_bad_keep_shape(models):
    with pytest.raises(ValueError, match="layer 0 has 39 neurons"):
        slim_model(models["wav2vec2"], np.ones((3, 39), bool))


# ---------------------------------------------------------------- iterative


@pytest.mark.parametrize("physical", [True, False])
def test_iterative_schedule(models, batch, physical):
    model = models["wav2vec2"]
    calls: list = []
    trained: list = []

    def train_fn(m, step):
        trained.append((step, [m.config.ffn_width(l) for l in range(3)]))
        return m

    final, keep, history = iterative_prune(
        model, neurons_per_step=6, num_steps=3, train_fn=train_fn, identify=_bias_identify(calls),
        physical=physical,
    )
    assert [h.widths for h in history] == [[34] * 3, [28] * 3, [22] * 3]
    assert [t[0] for t in trained] == [0, 1, 2]
    expected_width = [34, 28, 22] if physical else [40, 40, 40]
    assert [t[1][0] for t in trained] == expected_width
    assert keep.shape == (3, 40) and (keep.sum(1) == 22).all()
    for h in history:
        assert all(len(k) == w for k, w in zip(h.kept, h.widths, strict=True))
    np.testing.assert_array_equal(np.stack([np.isin(np.arange(40), k) for k in history[-1].kept]), keep)
    # protected neurons of the unpruned model (b1 is never changed) survive every step
    prot = np.stack(_bias_identify([])(model, None, None))
    assert not (prot & ~keep).any()
    # without training, the final model is the original model masked with the final keep mask
    masked, valid = _forward(model, *batch, neuron_mask=keep_neuron_mask(keep))
    out, _ = _forward(final, *batch)
    assert np.abs(masked - out)[valid].max() < 1e-5


def test_iterative_without_training_equals_one_shot(models):
    model = models["melhubert"]
    _, keep, _ = iterative_prune(model, neurons_per_step=5, num_steps=4, physical=True)
    one_shot = select_keep(l1_scores(model), 20)
    np.testing.assert_array_equal(keep, one_shot)
    _, keep_g, _ = iterative_prune(model, neurons_per_step=5, num_steps=4, scope="global", physical=False)
    assert keep_g.sum() == 60
    np.testing.assert_array_equal(keep_g, select_keep(l1_scores(model), 60, scope="global"))


def test_iterative_masked_rezeroes_after_training(models):
    model = models["wav2vec2"]

    def noisy_train(m, step):
        graphdef, state = nnx.split(nnx.clone(m))
        state = jax.tree.map(lambda x: x + 0.01, state)
        return nnx.merge(graphdef, state)

    final, keep, _ = iterative_prune(model, neurons_per_step=10, num_steps=2, train_fn=noisy_train, physical=False)
    scores = l1_scores(final)
    assert (scores[~keep] == 0).all() and (scores[keep] > 0).all()


def test_iterative_errors(models):
    with pytest.raises(PruningError, match="fewer than 30"):
        iterative_prune(models["wav2vec2"], neurons_per_step=30, num_steps=2)
    with pytest.raises(PruningError, match="strategy"):
        iterative_prune(models["wav2vec2"], neurons_per_step=1, num_steps=1, strategy="some")
