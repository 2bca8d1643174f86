"""Neuron-set overlap (IoU, containment), overlap matrices and the shuffled-set null."""

import numpy as np
import pytest
from scipy.stats import hypergeom

from jaxneurons.scoring.overlap import (
    as_mask,
    overlap_matrix,
    overlap_matrix_null,
    overlap_null,
    set_overlap,
)

SHAPE = (3, 20)


def test_as_mask_forms_and_errors():
    m = as_mask({0: [1, 2], 2: np.array([19])}, SHAPE)
    assert m.shape == SHAPE and m.sum() == 3 and m[2, 19]
    np.testing.assert_array_equal(as_mask([[1, 2], [], [19]], SHAPE), m)
    assert as_mask(m) is m
    with pytest.raises(ValueError, match="out of range"):
        as_mask({0: [20]}, SHAPE)
    with pytest.raises(ValueError, match="out of range"):
        as_mask({0: [-1]}, SHAPE)
    with pytest.raises(ValueError, match="layer 3"):
        as_mask({3: [0]}, SHAPE)
    with pytest.raises(ValueError, match="boolean"):
        as_mask(np.zeros(SHAPE, int))
    with pytest.raises(ValueError, match="shape="):
        as_mask({0: [1]})


def test_set_overlap_per_layer_pooled_and_empty():
    a = as_mask({0: [0, 1, 2, 3], 1: [5]}, SHAPE)
    b = as_mask({0: [2, 3, 4], 1: [], 2: [7]}, SHAPE)
    o = set_overlap(a, b)
    np.testing.assert_array_equal(o["intersection"], [2, 0, 0])
    np.testing.assert_array_equal(o["union"], [5, 1, 1])
    np.testing.assert_allclose(o["iou"], [2 / 5, 0, 0])
    # |A| = 0 in layer 2: containment 0/0 is NaN, not 0.
    assert o["containment"][0] == pytest.approx(0.5) and o["containment"][1] == 0
    assert np.isnan(o["containment"][2])
    assert o["pooled_iou"] == pytest.approx(2 / 7)
    assert o["pooled_containment"] == pytest.approx(2 / 5)
    # Both empty: IoU 0/0 is NaN.
    e = set_overlap(np.zeros(SHAPE, bool), np.zeros(SHAPE, bool))
    assert np.all(np.isnan(e["iou"])) and np.isnan(e["pooled_iou"])
    # Index sets work directly, and asymmetric containment swaps with the arguments.
    o2 = set_overlap({0: [2, 3, 4], 2: [7]}, {0: [0, 1, 2, 3], 1: [5]}, shape=SHAPE)
    assert o2["pooled_containment"] == pytest.approx(2 / 4)


def test_overlap_matrix_matches_pairwise():
    rng = np.random.default_rng(0)
    sets = {f"s{i}": rng.random(SHAPE) < p for i, p in enumerate((0.1, 0.3, 0.5, 0.0))}
    for metric, key in (("iou", "pooled_iou"), ("containment", "pooled_containment")):
        names, m = overlap_matrix(sets, metric)
        assert names == list(sets) and m.shape == (4, 4)
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                np.testing.assert_allclose(m[i, j], set_overlap(sets[a], sets[b])[key], equal_nan=True)
    _, per = overlap_matrix(sets, "iou", per_layer=True)
    assert per.shape == (4, 4, SHAPE[0])
    np.testing.assert_allclose(per[0, 1], set_overlap(sets["s0"], sets["s1"])["iou"])
    assert np.isnan(overlap_matrix(sets, "iou")[1][3, 3])  # empty vs empty
    with pytest.raises(ValueError, match="unknown overlap metric"):
        overlap_matrix(sets, "dice")


def test_null_matches_hypergeometric_and_permutation():
    rng = np.random.default_rng(1)
    d = 200
    a = rng.random((2, d)) < 0.2
    b = rng.random((2, d)) < 0.3
    hyp = overlap_null(a, b, n_draws=4000, seed=0)
    perm = overlap_null(a, b, n_draws=4000, seed=0, method="permute")
    ka, kb = a.sum(1), b.sum(1)
    exact_mean_inter = ka * kb / d
    np.testing.assert_allclose(hyp["containment"]["null_mean"], exact_mean_inter / ka, rtol=0.03)
    np.testing.assert_allclose(perm["containment"]["null_mean"], exact_mean_inter / ka, rtol=0.03)
    np.testing.assert_allclose(hyp["iou"]["null_mean"], perm["iou"]["null_mean"], rtol=0.05)
    np.testing.assert_allclose(hyp["pooled_iou"]["null_std"], perm["pooled_iou"]["null_std"], rtol=0.1)
    # p-value of the observed intersection vs the exact hypergeometric tail.
    inter = (a & b).sum(1)
    exact_p = hypergeom.sf(inter - 1, d, ka, kb)
    np.testing.assert_allclose(hyp["containment"]["p_value"], exact_p, atol=0.02)
    assert set(hyp["iou"]) >= {"observed", "null_mean", "null_std", "p_value", "null_p2.5", "null_p50", "null_p97.5"}
    # Seeded: same seed, same draws.
    again = overlap_null(a, b, n_draws=4000, seed=0)
    np.testing.assert_array_equal(again["iou"]["null_mean"], hyp["iou"]["null_mean"])


def test_null_detects_real_overlap_and_handles_empty_layers():
    rng = np.random.default_rng(2)
    a = rng.random((2, 300)) < 0.1
    b = a.copy()
    b[:, :30] = rng.random((2, 30)) < 0.5  # mostly the same set
    res = overlap_null(a, b, n_draws=500, seed=3)
    assert np.all(res["iou"]["p_value"] < 0.01) and res["pooled_iou"]["p_value"] < 0.01
    assert np.all(res["iou"]["observed"] > res["iou"]["null_p97.5"])
    a[1] = False  # A empty in layer 1: containment undefined there
    res = overlap_null(a, b, n_draws=100, seed=3)
    assert np.isnan(res["containment"]["observed"][1]) and np.isnan(res["containment"]["p_value"][1])
    assert np.isfinite(res["pooled_containment"]["p_value"])
    with pytest.raises(ValueError, match="n_draws"):
        overlap_null(a, b, n_draws=0)
    with pytest.raises(ValueError, match="null method"):
        overlap_null(a, b, method="bootstrap")


def test_matrix_null():
    rng = np.random.default_rng(4)
    base = rng.random(SHAPE) < 0.3
    sets = {"a": base, "b": base | (rng.random(SHAPE) < 0.05), "c": rng.random(SHAPE) < 0.3}
    names, res = overlap_matrix_null(sets, "iou", n_draws=300, seed=0)
    assert names == ["a", "b", "c"]
    for key in ("observed", "null_mean", "null_std", "z", "p_value"):
        assert res[key].shape == (3, 3)
    assert res["p_value"][0, 1] < 0.01 and res["z"][0, 1] > 3
    assert res["p_value"][0, 2] > 0.01
    names2, res2 = overlap_matrix_null(sets, "iou", n_draws=300, seed=0)
    np.testing.assert_array_equal(res2["null_mean"], res["null_mean"])
