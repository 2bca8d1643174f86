"""Selective pruning scores/masks and single-pass correlation scores."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxneurons.scoring import (
    DEFAULT_FRACTIONS,
    pearson_from_stats,
    point_biserial,
    point_biserial_from_stats,
    selective_from_stats,
    selective_prune_masks,
    selective_scores,
)
from jaxneurons.stats import ConditionSpec, ContinuousSpec, init_stats, uniform_config, update_stats


def test_hand_worked_scores_and_masks():
    forget = np.array([[1.0, 0.0, 2.0, 0.5], [0.2, 3.0, 0.0, 0.1]])
    retain = np.array([[1.0, 0.0, 0.999, 0.5], [0.2, 0.001, 1.0, 0.1]])
    s = selective_scores(forget, retain)
    np.testing.assert_allclose(s[0], [1 / 1.001, 0.0, 2.0, 0.5 / 0.501])
    np.testing.assert_allclose(s[1, 1], 3.0 / 0.002)
    m = selective_prune_masks(s, [0.25, 0.5])
    assert np.argwhere(m[0.25]).tolist() == [[0, 2], [1, 1]]          # int(0.25 * 8) = 2 neurons
    assert m[0.5].sum() == 4 and (m[0.5] >= m[0.25]).all()
    assert DEFAULT_FRACTIONS == (0.01, 0.02, 0.05, 0.1, 0.2)
    with pytest.raises(ValueError, match="must both be"):
        selective_scores(forget, retain[:1])


def test_masks_random_vs_reference_with_padding():
    rng = np.random.default_rng(0)
    s = rng.random((3, 50))
    m = selective_prune_masks(s, DEFAULT_FRACTIONS, widths=[50, 20, 50])
    flat = [(s[l, d], l, d) for l in range(3) for d in range(50) if not (l == 1 and d >= 20)]
    flat.sort(key=lambda t: -t[0])
    for fr in DEFAULT_FRACTIONS:
        want = np.zeros((3, 50), bool)
        for _, l, d in flat[: int(fr * 120)]:
            want[l, d] = True
        np.testing.assert_array_equal(m[fr], want)


def _scan(rng, L=2, D=16, batches=3):
    cfg = uniform_config(L, D, [ConditionSpec("ds", 3, stats=("moments",))], [ContinuousSpec("y")], rho=0.1)
    s = init_stats(cfg)
    H, LAB, Y = [], [], []
    for _ in range(batches):
        lab = rng.integers(0, 3, (4,)).astype(np.int32)
        h = rng.standard_normal((L, 4, 7, D)).astype(np.float32) + lab[None, :, None, None] * np.linspace(0, 1, D)
        y = rng.standard_normal((4, 7)).astype(np.float32) + h[0, :, :, 0]
        s = update_stats(s, jnp.asarray(h), jnp.ones((4, 7), bool), {"ds": lab, "y": y})
        H.append(h.transpose(1, 2, 0, 3).reshape(-1, L, D))
        LAB.append(np.repeat(lab, 7))
        Y.append(y.reshape(-1))
    return s, np.concatenate(H).astype(np.float64), np.concatenate(LAB), np.concatenate(Y).astype(np.float64)


def test_selective_from_stats_matches_direct_means():
    s, H, lab, _ = _scan(np.random.default_rng(1))
    r = selective_from_stats(s, "ds", forget=2, retain=0)
    want = np.abs(H[lab == 2]).mean(0) / (np.abs(H[lab == 0]).mean(0) + 1e-3)
    np.testing.assert_allclose(r["scores"], want, rtol=1e-5)
    assert r["masks"][0.1].sum() == int(0.1 * 32)


def test_point_biserial_and_pearson_match_numpy():
    s, H, lab, Y = _scan(np.random.default_rng(2))
    b = (lab == 1).astype(float)
    want = np.array([[np.corrcoef(b, H[:, l, d])[0, 1] for d in range(16)] for l in range(2)])
    np.testing.assert_allclose(point_biserial_from_stats(s, "ds", 1), want, rtol=1e-4, atol=1e-6)
    keep = lab != 2
    want2 = np.array([[np.corrcoef(b[keep], H[keep, l, d])[0, 1] for d in range(16)] for l in range(2)])
    np.testing.assert_allclose(point_biserial_from_stats(s, "ds", 1, 0), want2, rtol=1e-4, atol=1e-6)
    want3 = np.array([[np.corrcoef(Y, H[:, l, d])[0, 1] for d in range(16)] for l in range(2)])
    np.testing.assert_allclose(pearson_from_stats(s, "y"), want3, rtol=1e-4, atol=1e-6)


def test_point_biserial_hand_worked():
    # group 1: values [2, 4] (mean 3, M2 2); group 0: [0, 2] (mean 1, M2 2); pooled M2 = 4 + 4 * 1 = 8
    r = point_biserial(2, np.array([3.0]), np.array([2.0]), 2, np.array([1.0]), np.array([2.0]))
    np.testing.assert_allclose(r, [2.0 * 2.0 / np.sqrt(4 * 8)])
    np.testing.assert_allclose(r, [np.corrcoef([1, 1, 0, 0], [2, 4, 0, 2])[0, 1]])
