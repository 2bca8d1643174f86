"""Pruning: L1 scores (layouts), exact protected selection, strategies, schedules, slimming == masking."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
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


# ---------------------------------------------------------------- protection that bites


def _with_biases(model, seed=0, spread=3.0):
    """A copy of ``model`` with non-zero b1 (``build_model`` starts every bias at 0): |b1| then dominates the
    L1 score, so low-|b1| neurons are the ones plain L1 prunes first."""
    model = nnx.clone(model)
    rng = np.random.default_rng(seed)
    for layer in model.encoder.layers:
        bias = layer.feed_forward.intermediate_dense.bias
        bias.set_value(jnp.asarray(rng.uniform(-spread, spread, bias.get_value().shape), jnp.float32))
    return model


@pytest.fixture(scope="module")
def biased(models):
    return _with_biases(models["wav2vec2"])


def _lowest(scores, count):
    """Per layer, the ``count`` lowest-scoring neurons."""
    out = np.zeros(scores.shape, bool)
    for layer, row in enumerate(scores):
        out[layer, np.argsort(row, kind="stable")[:count]] = True
    return out


def test_l1_score_includes_the_bias_term(biased):
    scores = l1_scores(biased)
    b1 = np.stack([np.asarray(layer.feed_forward.intermediate_dense.bias[...]) for layer in biased.encoder.layers])
    assert np.abs(b1).min() > 0
    only_bias = zero_pruned(biased, np.ones((3, 40), bool))  # same weights ...
    for layer in only_bias.encoder.layers:  # ... then W1 and W2 of every neuron zeroed, b1 kept
        ff = layer.feed_forward
        ff.intermediate_dense.kernel.set_value(jnp.zeros_like(ff.intermediate_dense.kernel.get_value()))
        ff.output_dense.kernel.set_value(jnp.zeros_like(ff.output_dense.kernel.get_value()))
    np.testing.assert_allclose(l1_scores(only_bias), np.abs(b1), rtol=1e-6)
    for layer in range(3):  # ... and with the weights: HF-layout norms plus |b1|
        ff = biased.encoder.layers[layer].feed_forward
        W1 = to_hf_layout(("kernel",), np.asarray(ff.intermediate_dense.kernel[...]))
        W2 = to_hf_layout(("kernel",), np.asarray(ff.output_dense.kernel[...]))
        expected = np.abs(W1).sum(1) + np.abs(b1[layer]) + np.abs(W2).sum(0)
        np.testing.assert_allclose(scores[layer], expected, rtol=1e-6)


def test_protecting_the_lowest_neurons_keeps_them_at_the_exact_count(biased):
    scores = l1_scores(biased)
    protected = _lowest(scores, 3)  # plain L1 prunes exactly these first

    def identify(model, keep, layer):
        return protected

    plain = protected_prune(biased, 0.5)
    keep = protected_prune(biased, 0.5, identify=identify)
    assert (keep.sum(1) == 20).all()
    assert keep[protected].all() and not plain[protected].any()
    assert (keep != plain).any()
    # the rest are the 17 best-scoring unprotected neurons of each layer
    for layer in range(3):
        free = np.flatnonzero(~protected[layer])
        best = free[np.argsort(-scores[layer, free], kind="stable")[:17]]
        np.testing.assert_array_equal(np.flatnonzero(keep[layer] & ~protected[layer]), np.sort(best))


def test_each_re_identifies_on_the_partly_pruned_model(biased):
    """``identify`` protects, in layer l, the neurons whose index was pruned in layer l - 1: its answer
    depends on ``keep``, so ``each`` (re-identify before each layer) and ``all`` (once) must differ."""
    calls = []

    def identify(model, keep, layer):
        keep = np.asarray(keep)
        calls.append((layer, keep.copy()))
        out = np.zeros_like(keep)
        for l in range(1, keep.shape[0]):
            out[l] = ~keep[l - 1]
        return out

    plain = protected_prune(biased, 0.5)
    keep_each = protected_prune(biased, 0.5, identify=identify, strategy="each")
    assert [c[0] for c in calls] == [0, 1, 2]
    for layer, seen in calls:  # layers < l already pruned to 20, the rest whole
        assert [int(k.sum()) for k in seen] == [20 if l < layer else 40 for l in range(3)]
    np.testing.assert_array_equal(keep_each[0], plain[0])
    for l in (1, 2):  # 20 pruned indices in layer l-1 = 20 protected = everything layer l keeps
        np.testing.assert_array_equal(keep_each[l], ~keep_each[l - 1])
    calls.clear()
    keep_all = protected_prune(biased, 0.5, identify=identify, strategy="all")
    assert [c[0] for c in calls] == [None] and calls[0][1].all()  # nothing pruned yet: nothing protected
    np.testing.assert_array_equal(keep_all, plain)
    assert (keep_each != keep_all).any()
    with pytest.raises(PruningError, match="scope='layer'"):
        protected_prune(biased, 0.5, identify=identify, strategy="each", scope="global")


def test_global_scope_keeps_protected_neurons_concentrated_in_one_layer():
    # layer 0 scores lowest everywhere: plain global pruning empties it
    scores = np.stack([np.linspace(0.0, 1.0, 20), np.linspace(2.0, 3.0, 20), np.linspace(4.0, 5.0, 20)])
    plain = prune_to_density(scores, 0.5, scope="global")
    assert plain[0].sum() == 0 and plain.sum() == 30
    protected = np.zeros_like(plain)
    protected[0, :6] = True  # the six lowest of the whole model
    keep = prune_to_density(scores, 0.5, scope="global", protected=protected)
    assert keep.sum() == 30 and keep[protected].all() and keep[0].sum() == 6
    # the other 24 are the best-scoring unprotected neurons: layer 2 whole, the top 4 of layer 1
    assert keep[2].all() and np.flatnonzero(keep[1]).tolist() == [16, 17, 18, 19]


def test_clamp_under_global_scope():
    scores = np.stack([np.linspace(0.0, 1.0, 10), np.linspace(2.0, 3.0, 10)])
    protected = np.zeros((2, 10), bool)
    protected[0, :] = True
    protected[1, :3] = True  # 13 protected, density 0.3 keeps 6
    with pytest.raises(PruningError, match="13 protected neurons but the global target keeps only 6"):
        prune_to_density(scores, 0.3, scope="global", protected=protected)
    keep = prune_to_density(scores, 0.3, scope="global", protected=protected, clamp=True)
    np.testing.assert_array_equal(keep, protected)  # every protected neuron and nothing more


def test_tie_break_prunes_the_lower_layer_and_index_first():
    # layer scope: equal scores -> the lower index is pruned first
    keep = select_keep(np.array([[1.0, 0.0, 1.0, 0.0, 1.0]]), 2)
    np.testing.assert_array_equal(np.flatnonzero(keep[0]), [2, 4])
    keep = select_keep(np.ones((1, 5)), 2)
    np.testing.assert_array_equal(np.flatnonzero(keep[0]), [3, 4])
    # global scope: equal scores -> ordered by (layer, index); layer 0 goes first
    keep = select_keep(np.ones((2, 5)), 4, scope="global")
    np.testing.assert_array_equal(keep, [[False] * 5, [False, True, True, True, True]])
    # protection removes a neuron from the candidates without changing the order of the rest
    prot = np.zeros((2, 5), bool)
    prot[0, 0] = True
    keep = select_keep(np.ones((2, 5)), 4, scope="global", protected=prot)
    np.testing.assert_array_equal(keep, [[True] + [False] * 4, [False, False, True, True, True]])


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


def _small_bias_identify(model0, calls, quantile=0.25):
    """Protected = neurons with |b1| below the unpruned model's ``quantile`` (a property of the weights that
    survives slimming; zeroed neurons have b1 = 0 but are dead, so pruning ignores them). On a biased model
    these are the lowest-L1 neurons, so protection bites."""
    b1 = np.concatenate([np.asarray(l.feed_forward.intermediate_dense.bias[...]) for l in model0.encoder.layers])
    threshold = np.quantile(np.abs(b1), quantile)

    def identify(model, keep, layer):
        out = [np.abs(np.asarray(l.feed_forward.intermediate_dense.bias[...])) < threshold
               for l in model.encoder.layers]
        calls.append((layer, [np.asarray(k).copy() for k in keep], out))
        return out

    return identify


@pytest.mark.parametrize("physical", [True, False])
def test_iterative_schedule(biased, batch, physical):
    model = biased
    calls: list = []
    trained: list = []

    def train_fn(m, step):
        trained.append((step, [m.config.ffn_width(l) for l in range(3)]))
        return m

    final, keep, history = iterative_prune(
        model, neurons_per_step=6, num_steps=3, train_fn=train_fn, identify=_small_bias_identify(model, calls),
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
    # the protected neurons of the unpruned model (b1 is never changed) survive every step, and plain L1
    # would have pruned some of them
    prot = np.stack(calls[0][2])
    assert prot.sum() >= 20
    assert not (prot & ~keep).any()
    _, plain, _ = iterative_prune(model, neurons_per_step=6, num_steps=3, physical=physical)
    assert (prot & ~plain).any()
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


# ---------------------------------------------------------------- iterative pruning with real training


def test_iterative_pruning_with_the_real_trainer(tmp_path):
    """Two pruning steps with continued pre-training by the real Trainer in between (masked pruning): pruned
    weights stay exactly zero through the updates (zero gradients, AdamW decay of 0 is 0), kept weights
    change, and the neurons identified on the trained weights before each step survive it."""
    from jaxneurons.train.pretrain import TrainConfig, Trainer
    from tests.helpers import TINY_MEL, tone_corpus

    model = _with_biases(build_model(TINY_MEL, seed=1), spread=1.0)
    data = tone_corpus(8)
    config = TrainConfig(steps=3, batch_size=2, crop_seconds=0.5, learning_rate=3e-3, warmup_steps=1,
                         checkpoint_every=3, log_every=100, mask_prob=0.5, mask_length=2)
    calls: list = []
    identify = _lowest_alive_identify(calls, 3)
    checked = []

    def train_fn(m, step):
        trainer = Trainer(m, data, config, str(tmp_path / f"step{step}"))
        trainer.train()
        out = trainer.encoder()
        dead = ~np.stack(history_keep[-1])
        for l in range(2):
            before, after = (x.encoder.layers[l].feed_forward for x in (m, out))
            w1b, w1a = (np.asarray(f.intermediate_dense.kernel[...]) for f in (before, after))
            b1a = np.asarray(after.intermediate_dense.bias[...])
            w2a = np.asarray(after.output_dense.kernel[...])
            assert (w1a[:, dead[l]] == 0).all() and (b1a[dead[l]] == 0).all() and (w2a[dead[l]] == 0).all()
            assert np.abs(w1a[:, ~dead[l]] - w1b[:, ~dead[l]]).max() > 1e-4  # kept weights trained
        checked.append(step)
        return out

    history_keep: list = []
    final, keep, history = iterative_prune(
        model, neurons_per_step=16, num_steps=2, train_fn=train_fn, identify=identify, physical=False,
        on_step=lambda record, m: history_keep.append([np.isin(np.arange(64), k) for k in record.kept]),
    )
    assert checked == [0, 1] and (keep.sum(1) == 32).all()
    # identify ran on the unpruned and then on the trained, pruned weights
    assert [c[0] for c in calls] == [None, None]
    assert (np.abs(l1_scores(calls[1][2]) - l1_scores(zero_pruned(model, np.stack(history_keep[0])))) > 1e-6).any()
    for step, (_, _, _, protected) in enumerate(calls):
        assert protected.sum() == 6
        assert np.stack(history_keep[step])[protected].all(), f"a neuron protected at step {step} was pruned"
    # and protection mattered: plain L1 on the same weights prunes the protected neurons of step 0
    assert not protected_prune(model, 48 / 64)[calls[0][3]].any()


def _lowest_alive_identify(calls, count):
    """Protect, per layer, the ``count`` lowest-L1 neurons still alive (what L1 pruning takes first)."""

    def identify(model, keep, layer):
        keep = np.asarray(keep)
        scores = np.where(keep, l1_scores(model), np.inf)
        protected = _lowest(scores, count) & keep
        calls.append((layer, keep.copy(), model, protected))
        return protected

    return identify
