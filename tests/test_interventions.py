"""Interventions: sets -> masks, zero/mean/head ablation, random controls, and one compile for many masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxneurons.interventions import (
    head_mask_keep_only,
    head_mask_remove,
    head_selection,
    indices_from_selection,
    make_mask_evaluator,
    mean_ablation,
    model_metric_fn,
    protected_from_json,
    random_controls,
    selection_from_indices,
    selections_from_json,
    union,
    zero_ablation,
)
from jaxneurons.models import SpeechConfig, build_model, forward_with_captures

CONFIG = SpeechConfig(family="wav2vec2", hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=24, conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2),
                      num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)
NEURONS_JSON = {
    "gender": {"male": {"0": [1, 2], "layers.1.ffn": [5]}, "female": {"1": [3]}},
    "pitch": {"low": {0: [7]}, "mid": {}, "high": {"1": [0, 23]}},
}


@pytest.fixture(scope="module")
def model():
    return build_model(CONFIG, seed=2)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal((2, 1800))).astype(np.float32)
    audio[1, 1200:] = 0.0
    return {"audio": audio, "lengths": np.array([1800, 1200], np.int32)}


# ---------------------------------------------------------------- sets -> selections


def test_selection_from_indices_and_back():
    sel = selection_from_indices({0: [1, 2], "1": [5], "layers.2.ffn": [0]}, (3, 6))
    assert sel.dtype == bool and sel.sum() == 4 and sel[0, 1] and sel[0, 2] and sel[1, 5] and sel[2, 0]
    assert indices_from_selection(sel) == {0: [1, 2], 1: [5], 2: [0]}
    np.testing.assert_array_equal(selection_from_indices([[1, 2], [5], [0]], (3, 6)), sel)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        selection_from_indices({0: [6]}, (3, 6))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        selection_from_indices({0: [-1]}, (3, 6))
    with pytest.raises(ValueError, match="out of range"):
        selection_from_indices({"3": [0]}, (3, 6))
    with pytest.raises(ValueError, match="hook name"):
        selection_from_indices({"layer3": [0]}, (3, 6))
    with pytest.raises(ValueError, match="2 layers, expected 3"):
        selection_from_indices([[0], [1]], (3, 6))


def test_selections_from_json():
    sets = selections_from_json(NEURONS_JSON, (2, 24))
    assert sorted(sets) == [("gender", "female"), ("gender", "male"), ("pitch", "high"), ("pitch", "low"),
                            ("pitch", "mid")]
    assert indices_from_selection(sets[("gender", "male")]) == {0: [1, 2], 1: [5]}
    assert sets[("pitch", "mid")].sum() == 0
    prot = protected_from_json(NEURONS_JSON, (2, 24), ["gender"])
    np.testing.assert_array_equal(prot, union([sets[("gender", "male")], sets[("gender", "female")]]))
    assert prot.sum() == 4
    with pytest.raises(ValueError, match="not in the neuron sets"):
        protected_from_json(NEURONS_JSON, (2, 24), ["speaker"])
    with pytest.raises(ValueError, match="pitch/high"):
        selections_from_json(NEURONS_JSON, (2, 20))


# ---------------------------------------------------------------- ablation masks


def test_zero_and_mean_ablation_in_forward(model, batch):
    sel = selection_from_indices({0: [1, 2], 1: [5]}, (2, 24))
    mask, offset = zero_ablation(sel)
    assert mask.dtype == np.float32 and (mask[sel] == 0).all() and (mask[~sel] == 1).all() and not offset.any()
    mean = np.random.default_rng(1).uniform(-1, 1, (2, 24)).astype(np.float32)
    mmask, moff = mean_ablation(sel, mean)
    np.testing.assert_array_equal(mmask, mask)
    np.testing.assert_array_equal(moff[sel], mean[sel])
    assert not moff[~sel].any()
    graphdef, state = nnx.split(model)

    @jax.jit
    def ffn(state, mask, offset):
        return forward_with_captures(nnx.merge(graphdef, state), batch["audio"], batch["lengths"],
                                     neuron_mask=mask, neuron_offset=offset)[1]

    clean = ffn(state, np.ones_like(mmask), np.zeros_like(moff))
    h = ffn(state, mmask, moff)
    for l in range(2):
        h_l, c_l = np.asarray(h[l]), np.asarray(clean[l])
        np.testing.assert_allclose(h_l[..., sel[l]], np.broadcast_to(mean[l, sel[l]], h_l[..., sel[l]].shape))
        if l == 0:  # layer 0's other neurons are untouched (layer 1's see layer 0's ablation)
            np.testing.assert_allclose(h_l[..., ~sel[l]], c_l[..., ~sel[l]], atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        mean_ablation(sel, mean[:, :5])
    bad = mean.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="not finite"):
        mean_ablation(sel, bad)


def test_head_masks():
    sel = head_selection([(0, 1), (1, 3), (1, 0)], (2, 4))
    assert sel.sum() == 3 and sel[0, 1] and sel[1, 3] and sel[1, 0]
    remove, keep = head_mask_remove(sel), head_mask_keep_only(sel)
    np.testing.assert_array_equal(remove + keep, np.ones((2, 4), np.float32))
    assert (remove[sel] == 0).all() and (keep[~sel] == 0).all()
    with pytest.raises(ValueError, match="out of range"):
        head_selection([(2, 0)], (2, 4))
    with pytest.raises(ValueError, match="pairs"):
        head_selection([(0, 1, 2)], (2, 4))


def test_random_controls():
    rng = np.random.default_rng(5)
    sel = rng.random((4, 50)) < 0.2
    ctrl = random_controls(sel, 10, seed=3)
    assert ctrl.shape == (10, 4, 50)
    np.testing.assert_array_equal(ctrl.sum(-1), np.broadcast_to(sel.sum(-1), (10, 4)))
    assert not (ctrl & sel).any()
    np.testing.assert_array_equal(ctrl, random_controls(sel, 10, seed=3))
    assert not np.array_equal(ctrl, random_controls(sel, 10, seed=4))
    assert len({c.tobytes() for c in ctrl}) == 10
    incl = random_controls(sel, 200, seed=0, exclude=False)
    assert (incl & sel).any()  # drawn from all neurons
    other = ~sel & (rng.random((4, 50)) < 0.3)
    assert not (random_controls(sel, 5, exclude=other | sel) & other).any()
    valid = np.ones((4, 50), bool)
    valid[:, 40:] = False
    assert not random_controls(sel & valid, 5, valid=valid)[..., 40:].any()
    full = np.zeros((1, 4), bool)
    full[0, :3] = True
    with pytest.raises(ValueError, match="needs 3 units but only 1"):
        random_controls(full)


# ---------------------------------------------------------------- one compile for many masks


@pytest.mark.parametrize(("mode", "chunk"), [("vmap", None), ("map", 4)])
def test_evaluator_one_compile_equals_separate(model, batch, mode, chunk):
    graphdef, state = nnx.split(model)
    traces = []

    readout = jnp.asarray(np.random.default_rng(9).standard_normal(16), jnp.float32)  # a fixed "probe"

    def metric(out, batch):
        valid = out.frame_mask
        score = out.last_hidden_state @ readout  # (B, T)
        return jnp.sum(score * valid, axis=1) / jnp.sum(valid, axis=1)

    inner = model_metric_fn(graphdef, metric)

    @jax.jit
    def f(state, batch, neuron_mask, head_mask, neuron_offset):
        traces.append(1)  # Python side effect: runs once per trace
        return inner(state, batch, neuron_mask, head_mask, neuron_offset)

    M = 6

    def masks(seed):
        r = np.random.default_rng(seed)
        nm = (r.random((M, 2, 24)) > 0.3).astype(np.float32)
        hm = (r.random((M, 2, 4)) > 0.3).astype(np.float32)
        no = np.where(nm == 0, r.standard_normal((M, 2, 24)), 0).astype(np.float32)
        return nm, hm, no

    evaluator = make_mask_evaluator(f, mode=mode, chunk_size=chunk)
    nm, hm, no = masks(1)
    result = np.asarray(evaluator(state, batch, nm, hm, no))
    assert result.shape == (M, 2)
    assert len(traces) == 1
    nm2, hm2, no2 = masks(2)
    result2 = np.asarray(evaluator(state, batch, nm2, hm2, no2))
    assert len(traces) == 1, "a second sweep of the same shapes must not retrace"
    assert evaluator.jitted._cache_size() == 1
    for i in range(M):
        separate = np.asarray(f(state, batch, nm[i], hm[i], no[i]))
        np.testing.assert_allclose(result[i], separate, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(result2[i], np.asarray(f(state, batch, nm2[i], hm2[i], no2[i])),
                                   rtol=1e-5, atol=1e-6)
    # JAX batches the one trace of the inner jit (its jaxpr is traced with one mask's shapes), so even the
    # separate per-mask calls reuse it.
    assert len(traces) == 1
    assert np.abs(result - result2).max() > 1e-4  # the masks matter


def test_evaluator_errors_and_four_argument_f():
    calls = []

    def f(state, batch, neuron_mask, head_mask):
        calls.append(1)
        return jnp.sum(neuron_mask) * state + (0.0 if head_mask is None else jnp.sum(head_mask))

    ev = make_mask_evaluator(f)
    out = np.asarray(ev(jnp.float32(2.0), None, np.ones((3, 2, 5)) * np.arange(3)[:, None, None]))
    np.testing.assert_allclose(out, [0.0, 20.0, 40.0])
    with pytest.raises(ValueError, match="disagree"):
        ev(1.0, None, np.ones((3, 2, 5)), np.ones((4, 2, 2)))
    with pytest.raises(ValueError, match="at least one"):
        ev(1.0, None)
    with pytest.raises(ValueError, match="mode"):
        make_mask_evaluator(f, mode="loop")
    with pytest.raises(ValueError, match="chunk_size"):
        make_mask_evaluator(f, chunk_size=2)


# ---------------------------------------------------------------- NeuronSets / Ablation


def test_neuron_sets_normalise_and_round_trip_json(tmp_path):
    from jaxneurons.interventions import NeuronSets

    # Unsorted, duplicated indices and mixed layer keys give the same object as the clean spelling.
    messy = NeuronSets.from_neurons_json(
        {"gender": {"male": {"layers.1.ffn": [5], "0": [2, 1, 2]}, "female": {1: [3]}}}, (24, 24))
    clean = NeuronSets({"gender/male": {0: (1, 2), 1: (5,)}, "gender/female": {1: (3,)}}, (24, 24))
    assert messy == clean
    assert messy.to_neurons_json() == {"gender": {"male": {"layers.0.ffn": [1, 2], "layers.1.ffn": [5]},
                                                  "female": {"layers.1.ffn": [3]}}}
    assert NeuronSets.from_neurons_json(messy.to_neurons_json(), (24, 24)) == messy
    path = messy.save(str(tmp_path / "sets.json"))
    assert NeuronSets.load(path) == messy  # widths stored with the sets
    plain = tmp_path / "neurons.json"
    plain.write_text(__import__("json").dumps(messy.to_neurons_json()))
    assert NeuronSets.load(str(plain), widths=(24, 24)) == messy
    with pytest.raises(ValueError, match="pass widths"):
        NeuronSets.load(str(plain))
    with pytest.raises(ValueError, match="widths"):
        NeuronSets.load(path, widths=(24, 12))
    assert messy.size("gender/male") == 3 and messy.per_layer_sizes() == [2, 2]
    assert messy.select("gender").names() == ["gender/male", "gender/female"]
    assert messy.select("gender/female").names() == ["gender/female"]
    with pytest.raises(ValueError, match="no neuron set"):
        messy.select("pitch")
    with pytest.raises(ValueError, match=r"\[0, 24\)"):
        NeuronSets({"a/b": {0: (24,)}}, (24, 24))
    with pytest.raises(ValueError, match="'property/group'"):
        NeuronSets({"nogroup": {0: (1,)}}, (24, 24))


def test_random_control_is_disjoint_same_sized_and_refuses_a_small_pool():
    from jaxneurons.interventions import InterventionError, NeuronSets

    widths = (10, 6)  # a pruned model: layer 1 has only 6 neurons (columns 6..9 do not exist)
    sets = NeuronSets({"p/a": {0: range(0, 4), 1: (0, 1)}, "p/b": {0: (4, 5), 1: (2, 3)}}, widths)
    a, b = sets.selection("p/a"), sets.selection("p/b")
    for seed in range(30):
        ctrl = sets.random_control("p/a", seed, exclude="p/b")
        assert ctrl.sum(1).tolist() == [4, 2]
        assert not (ctrl & a).any() and not (ctrl & b).any()
        assert not ctrl[1, 6:].any()  # never a neuron the layer does not have
    # Layer 1 has 6 - 2 (set) - 2 (excluded) = 2 eligible neurons for 2: still fine; exclude one more -> error.
    extra = np.zeros_like(a)
    extra[1, 4] = True
    with pytest.raises(InterventionError, match="layer 1"):
        sets.random_control("p/a", 0, exclude=b | extra)
    assert issubclass(InterventionError, ValueError)


def test_pipeline_random_control_no_longer_overlaps_silently():
    from jaxneurons.interventions import InterventionError
    from jaxneurons.pipeline.ablation import random_control

    mask = np.zeros((1, 4), bool)
    mask[0, :3] = True
    with pytest.raises(InterventionError):  # the old code drew from all neurons, overlapping the set
        random_control(mask, 0, exclude=mask)
    half = np.array([[True, True, False, False]])
    ctrl = random_control(half, 0)
    assert ctrl.sum() == 2 and not (ctrl & half).any()


def test_to_ablation_zeroes_exactly_the_set_in_a_forward(model, batch):
    from jaxneurons.interventions import NeuronSets

    widths = (CONFIG.intermediate_size,) * CONFIG.num_hidden_layers
    sets = NeuronSets({"p/a": {0: (1, 7, 20), 1: (3,)}, "p/b": {1: (0,)}}, widths)
    _, clean, _ = forward_with_captures(model, batch["audio"], batch["lengths"])
    ab = sets.to_ablation(model, "p/a")
    assert ab.label == "p/a" and ab.neuron_offset is None
    _, ablated, _ = forward_with_captures(model, batch["audio"], batch["lengths"], **ab.kwargs())
    sel = sets.selection("p/a")
    h0, a0 = np.asarray(clean[0]), np.asarray(ablated[0])
    assert (np.abs(h0[..., sel[0]]) > 0).any()  # the neurons were active before
    np.testing.assert_array_equal(a0[..., sel[0]], 0.0)
    np.testing.assert_array_equal(a0[..., ~sel[0]], h0[..., ~sel[0]])  # layer 0: nothing else changed
    np.testing.assert_array_equal(np.asarray(ablated[1])[..., sel[1]], 0.0)
    assert (np.asarray(ablated[1])[..., ~sel[1]] != 0).any()
    mean = np.full((2, CONFIG.intermediate_size), 0.25, np.float32)
    abm = sets.to_ablation(model, "p/a", kind="mean", mean=mean)
    _, meaned, _ = forward_with_captures(model, batch["audio"], batch["lengths"], **abm.kwargs())
    np.testing.assert_allclose(np.asarray(meaned[0])[..., sel[0]], 0.25)
    with pytest.raises(ValueError, match="widths"):
        NeuronSets({"p/a": {0: (1,)}}, (24, 12)).to_ablation(model)
