"""Property-neuron scoring: hand-worked cases and a randomized cross-check against loops."""

import numpy as np
import pytest

from jaxneurons.scoring import (
    activation_probability,
    cross_groups,
    cross_labels,
    mask_to_sets,
    property_neurons,
    sets_to_mask,
)


def test_hand_worked_two_groups():
    # 1 layer, D = 100 -> k = 1, chance 0.01. 4 cells: group A = cells 0, 1; group B = cells 2, 3.
    D = 100
    counts = np.zeros((1, 4, D))
    frames = np.array([10, 10, 10, 10])
    counts[0, :, 0] = [5, 5, 0, 0]     # neuron 0: meaningful in A's cells only -> exclusive to A
    counts[0, :, 1] = [5, 5, 5, 5]     # neuron 1: both groups -> kept for both, exclusive to none
    counts[0, :, 2] = [5, 0, 5, 5]     # neuron 2: A score 0.5 (< 0.8), B score 1 -> exclusive to B
    counts[0, :, 3] = [0.1, 0.1, 0, 0]  # P = 0.01 = chance, not > chance -> nothing
    r = property_neurons(counts, frames, {"A": [0, 1], "B": [2, 3]})
    np.testing.assert_allclose(r["scores"]["A"][0, :4], [1.0, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(r["scores"]["B"][0, :4], [0.0, 1.0, 1.0, 0.0])
    assert np.flatnonzero(r["exclusive"]["A"][0]).tolist() == [0]
    assert np.flatnonzero(r["exclusive"]["B"][0]).tolist() == [2]
    assert np.flatnonzero(r["kept"]["A"][0]).tolist() == [0, 1]
    np.testing.assert_allclose(r["chance"], [0.01])
    # sigma = 0.5 keeps neuron 2 for A as well -> no longer exclusive
    r = property_neurons(counts, frames, {"A": [0, 1], "B": [2, 3]}, sigma=0.5)
    assert np.flatnonzero(r["exclusive"]["B"][0]).tolist() == []


def test_empty_cells_excluded_or_zero():
    counts = np.zeros((1, 3, 100))
    counts[0, 0, 7] = 3
    frames = np.array([10, 0, 10])
    r = property_neurons(counts, frames, {"A": [0, 1], "B": [2]})
    assert r["empty_cells"] == {"A": [1], "B": []}
    assert r["exclusive"]["A"][0, 7]
    r = property_neurons(counts, frames, {"A": [0, 1], "B": [2]}, empty_cells="zero")
    assert r["scores"]["A"][0, 7] == 0.5 and not r["kept"]["A"][0, 7]
    with pytest.raises(ValueError, match="cell 2 is in groups"):
        property_neurons(counts, frames, {"A": [0, 2], "B": [2]})
    with pytest.raises(ValueError, match="outside"):
        property_neurons(counts, frames, {"A": [5]})


def test_cross_labels_and_groups():
    g = np.array([0, 1, -1])
    p = np.array([[2, -1], [0, 3], [1, 1]])
    np.testing.assert_array_equal(cross_labels(g[:, None], p, 4), [[2, -1], [4, 7], [-1, -1]])
    assert cross_groups(["lo", "hi"], 4, members=[1, 3]) == {"lo": [1, 3], "hi": [5, 7]}


def test_randomized_against_loops():
    rng = np.random.default_rng(0)
    L, C, D = 3, 12, 64
    widths = [64, 50, 33]
    frames = rng.integers(0, 30, C)
    counts = rng.binomial(frames[None, :, None].repeat(L, 0).repeat(D, 2), 0.04).astype(float)
    for l, w in enumerate(widths):
        counts[l, :, w:] = 0
    groups = {"a": [0, 1, 2, 3], "b": [4, 5, 6], "c": [7, 8, 9, 10, 11]}
    r = property_neurons(counts, frames, groups, rho=0.05, sigma=0.6, widths=widths)
    P = activation_probability(counts, frames)
    for l in range(L):
        k = int(np.floor(0.05 * widths[l] + 0.5))
        for n in range(D):
            kept = []
            for g, cells in groups.items():
                cells = [c for c in cells if frames[c] > 0]
                sc = np.mean([P[l, c, n] > k / widths[l] for c in cells]) if n < widths[l] else 0.0
                assert r["scores"][g][l, n] == pytest.approx(sc)
                if n < widths[l] and sc >= 0.6:
                    kept.append(g)
            for g in groups:
                assert r["exclusive"][g][l, n] == (kept == [g])


def test_mask_sets_roundtrip():
    m = np.zeros((2, 5), bool)
    m[1, [0, 4]] = True
    s = mask_to_sets(m)
    assert s == {"layers.0.ffn": [], "layers.1.ffn": [0, 4]}
    np.testing.assert_array_equal(sets_to_mask(s, 2, 5), m)
