"""Counts and moments of the statistics kernel vs a straightforward NumPy reference (same tie rule)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxneurons.stats import (
    ConditionSpec,
    ContinuousSpec,
    StatsConfig,
    check_labels,
    init_stats,
    merge_stats,
    run_scan,
    topk_indices,
    topk_size,
    uniform_config,
    update_stats,
)
from tests.helpers import STATS_CONFIG as CONFIG
from tests.helpers import fake_forward, make_batches, ref_counts, ref_topk, reference_over


@pytest.mark.parametrize("method", ["topk", "blocked", "auto"])
def test_topk_indices_match_numpy_with_ties(method):
    rng = np.random.default_rng(1)
    a = np.abs(np.round(rng.standard_normal((6, 50, 203)) * 2) / 2).astype(np.float32)
    a[0, :10] = 0.0            # all-zero rows: the k lowest indices win
    a[1, :10, 100:] = 3.0      # ties at the top spanning several blocks
    for k in (1, 5, 13):
        got = np.sort(np.asarray(topk_indices(jnp.asarray(a), k, method=method)), -1)
        np.testing.assert_array_equal(got, np.sort(ref_topk(a, k), -1))


def test_topk_size_rule():
    assert topk_size(3072, 0.01) == 31
    assert topk_size(768, 0.01) == 8
    assert topk_size(50, 0.01) == 1  # 0.5 rounds half up
    assert topk_size(10, 0.01) == 1  # never 0
    with pytest.raises(ValueError):
        topk_size(0, 0.01)


def test_hand_worked_counts():
    """2 frames, 4 neurons, k = 1: counts computable by hand."""
    cfg = uniform_config(1, 4, [ConditionSpec("c", 2, stats=("topk", "positive"))], rho=0.25)
    h = jnp.asarray([[[[0.5, -2.0, 1.0, 0.0], [3.0, -3.0, 0.1, -0.2]]]], jnp.float32)  # (L=1,B=1,T=2,D=4)
    s = update_stats(init_stats(cfg), h, jnp.ones((1, 2), bool), {"c": jnp.asarray([[1, 1]])})
    np.testing.assert_array_equal(s.frames("c"), [0, 2])
    # frame 0: |h| max at neuron 1; frame 1: tie 3.0 at neurons 0 and 1 -> lower index 0 wins
    np.testing.assert_array_equal(s.topk_counts("c")[0, 1], [1, 1, 0, 0])
    np.testing.assert_array_equal(s.positive_counts("c")[0, 1], [2, 0, 2, 0])
    np.testing.assert_array_equal(s.topk_counts("c")[0, 0], [0, 0, 0, 0])


def test_counts_match_numpy_reference_over_scan():
    rng = np.random.default_rng(0)
    batches = make_batches(rng, 3, L=3, B=4, T=9, D=40)
    stats, cursor = run_scan(fake_forward, None, batches, CONFIG)
    assert cursor == 3
    ref = reference_over(batches, CONFIG)
    for c in CONFIG.conditions:
        np.testing.assert_array_equal(np.asarray(stats.frames(c.name)), ref[c.name]["frames"])
        np.testing.assert_array_equal(np.asarray(stats.topk_counts(c.name)), ref[c.name]["topk"])
        if "positive" in c.stats:
            np.testing.assert_array_equal(np.asarray(stats.positive_counts(c.name)), ref[c.name]["positive"])
    assert stats.topk_counts("pitch").dtype == jnp.int32
    with pytest.raises(KeyError, match="not collected"):
        stats.positive_counts("pitch")


def test_unequal_widths_tuple_input():
    rng = np.random.default_rng(2)
    widths = (24, 40, 17)
    cfg = StatsConfig(widths=widths, conditions=(ConditionSpec("phone", 5, stats=("topk", "positive", "moments")),),
                      rho=0.1)
    B, T = 3, 7
    hs = [(np.round(rng.standard_normal((B, T, w)) * 2) / 2).astype(np.float32) for w in widths]
    valid = np.arange(T)[None] < np.array([[7], [5], [2]])
    labels = {"phone": rng.integers(-1, 5, (B, T)).astype(np.int32)}
    s = jax.jit(update_stats)(init_stats(cfg), tuple(jnp.asarray(x) for x in hs), jnp.asarray(valid), labels)
    ref = ref_counts(hs, valid, labels, {}, cfg)["phone"]
    np.testing.assert_array_equal(np.asarray(s.topk_counts("phone")), ref["topk"])
    np.testing.assert_array_equal(np.asarray(s.positive_counts("phone")), ref["positive"])
    # padded neurons never count and have zero moments
    pad = ~s.neuron_mask()
    assert pad.sum() == 3 * 40 - sum(widths)
    assert np.all(np.asarray(s.topk_counts("phone")).transpose(0, 2, 1)[pad] == 0)
    assert np.all(np.asarray(s.mean("phone", absolute=True)).transpose(0, 2, 1)[pad] == 0)
    with pytest.raises(ValueError, match="layer 1 has shape"):
        update_stats(init_stats(cfg), (hs[0], hs[0], hs[2]), valid, labels)


def test_moments_match_float64():
    rng = np.random.default_rng(3)
    batches = make_batches(rng, 4, L=3, B=4, T=9, D=40, ties=False)
    stats, _ = run_scan(fake_forward, None, batches, CONFIG)
    vals = {c: [] for c in range(5)}
    for bt in batches:
        lab = bt["labels"]["phone"]
        for b, t in zip(*np.nonzero(bt["valid"] & (lab >= 0)), strict=True):
            vals[lab[b, t]].append(bt["h"][b, :, t].astype(np.float64))
    for c in range(5):
        v = np.stack(vals[c])  # (n, L, D)
        np.testing.assert_allclose(stats.mean("phone")[:, c], v.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stats.var("phone")[:, c], v.var(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stats.mean("phone", absolute=True)[:, c], np.abs(v).mean(0), rtol=1e-5)
        np.testing.assert_allclose(stats.var("phone", absolute=True, ddof=1)[:, c], np.abs(v).var(0, ddof=1),
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(stats.sum_abs("phone")[:, c], np.abs(v).sum(0), rtol=1e-5)


def test_compensated_moments_large_offset():
    """Mean 1000, std 0.01 over 60 batches: float32 sums of squares would be useless; Chan + two-sum is not."""
    cfg = uniform_config(1, 8, [ConditionSpec("d", 1, stats=("moments",))], rho=0.125)
    rng = np.random.default_rng(4)
    step = jax.jit(update_stats)
    s = init_stats(cfg)
    xs = []
    for _ in range(60):
        x = 1000.0 + 0.01 * rng.standard_normal((1, 2, 50, 8))
        xs.append(x.reshape(-1, 8))
        s = step(s, jnp.asarray(x, jnp.float32), jnp.ones((2, 50), bool), {"d": jnp.zeros((2,), jnp.int32)})
    x64 = np.concatenate(xs).astype(np.float32).astype(np.float64)  # the float32 inputs the kernel saw
    a = s.to_numpy()
    mean = a["d/mean"].astype(np.float64) + a["d/mean_lo"]  # the (hi, lo) pair carries ~48 bits
    np.testing.assert_allclose(mean[0, 0], x64.mean(0), rtol=2e-12)
    np.testing.assert_allclose(np.asarray(s.var("d"), np.float64)[0, 0], x64.var(0), rtol=2e-3)


def test_merge_is_order_independent():
    rng = np.random.default_rng(5)
    b1, b2 = make_batches(rng, 2, L=3, B=4, T=9, D=40)
    s1, _ = run_scan(fake_forward, None, [b1], CONFIG)
    s2, _ = run_scan(fake_forward, None, [b2], CONFIG)
    s12, _ = run_scan(fake_forward, None, [b1, b2], CONFIG)
    m = merge_stats(s2, s1)
    for key in s12.arrays:
        if key.endswith(("/frames", "/topk", "/positive")):
            np.testing.assert_array_equal(m.arrays[key], s12.arrays[key])
    # float32 results of magnitude ~1: agree to a few ulps
    np.testing.assert_allclose(m.mean("phone"), s12.mean("phone"), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m.var("phone"), s12.var("phone"), rtol=1e-5, atol=1e-6)


def test_continuous_label_moments():
    rng = np.random.default_rng(6)
    cfg = uniform_config(2, 16, [], [ContinuousSpec("f0", selection="voiced")], rho=0.1)
    L, B, T, D = 2, 3, 11, 16
    s = init_stats(cfg)
    hs, ys = [], []
    for _ in range(3):
        h = rng.standard_normal((L, B, T, D)).astype(np.float32)
        y = rng.standard_normal((B, T)).astype(np.float32)
        y[0, :2] = np.nan
        valid = np.arange(T)[None] < np.array([[11], [8], [5]])
        voiced = rng.random((B, T)) < 0.7
        s = update_stats(s, h, valid, {"f0": y}, {"voiced": voiced})
        m = valid & voiced & ~np.isnan(y)
        hs.append(h[:, m].transpose(1, 0, 2))
        ys.append(y[m])
    h = np.concatenate(hs).astype(np.float64)
    y = np.concatenate(ys).astype(np.float64)
    c = s.continuous("f0")
    assert int(c["n"]) == len(y)
    np.testing.assert_allclose(c["y_mean"], y.mean(), rtol=1e-5)
    np.testing.assert_allclose(c["h_m2"], ((h - h.mean(0)) ** 2).sum(0), rtol=1e-4)
    np.testing.assert_allclose(c["c"], ((h - h.mean(0)) * (y - y.mean())[:, None, None]).sum(0),
                               rtol=1e-4, atol=1e-4)


def test_label_errors_name_the_batch():
    rng = np.random.default_rng(7)
    (bt,) = make_batches(rng, 1, L=3, B=4, T=9, D=40)
    bt["labels"]["phone"][0, 0] = 5
    with pytest.raises(ValueError, match=r"batch 0: labels 'phone' have 1 values outside \[-1, 5\)"):
        run_scan(fake_forward, None, [bt], CONFIG)
    bt["labels"]["phone"][0, 0] = -1
    check_labels(bt, CONFIG, source="batch 3")
    bad = dict(bt, selections={})
    with pytest.raises(ValueError, match="selection mask 'mid' is missing"):
        check_labels(bad, CONFIG, source="batch 3")
    # bypassing the host check: the kernel counts rejected labels instead of dropping them silently
    bt["labels"]["phone"][0, 0] = 5
    s = update_stats(init_stats(CONFIG), jnp.moveaxis(bt["h"], 1, 0), bt["valid"], bt["labels"], bt["selections"])
    assert int(s.arrays["phone/rejected"]) == 1
    with pytest.raises(ValueError, match="does not match the activations"):
        update_stats(init_stats(CONFIG), jnp.moveaxis(bt["h"], 1, 0), bt["valid"][:, :5], bt["labels"],
                     bt["selections"])
