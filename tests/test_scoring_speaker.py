"""Label-free speaker neurons, JAX k-means and cluster purity."""

import numpy as np
import pytest

from jaxneurons.scoring import cluster_purity, kmeans, kmeans_assign, speaker_neurons


def test_hand_worked_speaker_neurons():
    # G = 2 i-vector groups x S = 3 SSL clusters; cell = g * 3 + c; D = 100 -> chance 0.01
    counts = np.zeros((1, 6, 100))
    frames = np.full(6, 10)
    counts[0, [0, 1, 2], 0] = 1        # neuron 0 fires in every SSL cluster of group 0 only -> speaker g0
    counts[0, [0, 1], 1] = 1           # neuron 1: 2 of 3 clusters of g0 -> not kept at sigma=1, kept at 0.6
    counts[0, [1, 4], 2] = 1           # neuron 2: SSL cluster 1 in both groups -> SSL-cluster neuron c1
    r = speaker_neurons(counts, frames, 2, 3)
    assert np.flatnonzero(r["speaker"]["exclusive"]["group0"][0]).tolist() == [0]
    assert not r["speaker"]["exclusive"]["group1"].any()
    assert np.flatnonzero(r["ssl"]["exclusive"]["ssl1"][0]).tolist() == [2]
    r = speaker_neurons(counts, frames, 2, 3, sigma=0.6)
    assert np.flatnonzero(r["speaker"]["exclusive"]["group0"][0]).tolist() == [0, 1]
    with pytest.raises(ValueError, match="expected 2\\*3=6 cells"):
        speaker_neurons(counts[:, :5], frames[:5], 2, 3)


def test_kmeans_recovers_blobs_and_is_seeded():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = rng.integers(0, 3, 600)
    x = centres[truth] + rng.standard_normal((600, 2))
    c, lab = kmeans(x, 3, iters=20, seed=1)
    assert cluster_purity(lab, truth)["purity"] == 1.0
    assert np.allclose(np.sort(c[:, 0]), [0, 0, 10], atol=0.5)
    c2, lab2 = kmeans(x, 3, iters=20, seed=1)
    np.testing.assert_array_equal(lab, lab2)
    np.testing.assert_array_equal(c, c2)
    # fitted on a subsample, still assigns every frame
    c3, lab3 = kmeans(x, 3, iters=20, seed=2, max_points=100)
    assert lab3.shape == (600,) and cluster_purity(lab3, truth)["purity"] == 1.0
    np.testing.assert_array_equal(kmeans_assign(x, c3), lab3)
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.full((5, 2), np.nan), 2)


def test_kmeans_restarts_keep_the_lowest_inertia():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 4)).astype(np.float32)  # no clear clusters: starts disagree

    def inertia(c, lab):
        return float(((x - c[lab]) ** 2).sum())

    singles = [kmeans(x, 5, iters=5, seed=s) for s in range(7, 11)]
    c, lab = kmeans(x, 5, iters=5, seed=7, n_init=4)
    assert inertia(c, lab) == pytest.approx(min(inertia(*r) for r in singles))
    one = kmeans(x, 5, iters=5, seed=7, n_init=1)
    np.testing.assert_array_equal(one[1], singles[0][1])
    with pytest.raises(ValueError, match="n_init"):
        kmeans(x, 5, n_init=0)


def test_kmeans_matches_numpy_lloyd_from_same_init():
    """One Lloyd run in JAX equals a NumPy Lloyd run started from the JAX k-means++ centres (iters=0)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 4)).astype(np.float32)
    c0, _ = kmeans(x, 4, iters=0, seed=5)
    c = c0.astype(np.float64)
    for _ in range(10):
        lab = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), 1)
        c = np.stack([x[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(4)])
    c_jax, lab_jax = kmeans(x, 4, iters=10, seed=5)
    np.testing.assert_allclose(c_jax, c, atol=1e-4)
    np.testing.assert_array_equal(lab_jax, np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), 1))


def test_cluster_purity_hand_worked():
    clusters = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    gender = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, -1])
    r = cluster_purity(clusters, gender)
    assert r["clusters"][0] == {"majority": 0, "fraction": 0.75, "size": 4}
    assert r["clusters"][1] == {"majority": 1, "fraction": 0.8, "size": 5}
    assert r["purity"] == pytest.approx(7 / 9)
