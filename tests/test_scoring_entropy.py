"""LAPE/AAPE entropy selection vs a literal NumPy port of RUCAIBox/Language-Specific-Neurons identify.py."""

import numpy as np
import pytest

from jaxneurons.scoring import class_coverage, lape_neurons


def identify_port(over_zero_ldc, n, top_rate=0.01, filter_rate=0.95, activation_bar_ratio=0.95):
    """Line-by-line NumPy transcription of ``activation()`` (torch.kthvalue = 1-based k-th smallest)."""
    activation_probs = over_zero_ldc / n
    with np.errstate(invalid="ignore"):
        normed = activation_probs / activation_probs.sum(axis=-1, keepdims=True)
    normed[np.isnan(normed)] = 0
    with np.errstate(divide="ignore"):
        log_probs = np.where(normed > 0, np.log(normed), 0)
    entropy = -np.sum(normed * log_probs, axis=-1)
    flattened_probs = activation_probs.flatten()
    top_prob_value = np.sort(flattened_probs)[round(len(flattened_probs) * filter_rate) - 1]
    top_position = (activation_probs > top_prob_value).sum(axis=-1)
    entropy[top_position == 0] = np.inf
    flattened_entropy = entropy.flatten()
    top_entropy_value = round(len(flattened_entropy) * top_rate)
    index = np.argsort(flattened_entropy, kind="stable")[:top_entropy_value]
    row_index, col_index = index // entropy.shape[1], index % entropy.shape[1]
    selected_probs = activation_probs[row_index, col_index].T  # lang x n
    activation_bar = np.sort(flattened_probs)[round(len(flattened_probs) * activation_bar_ratio) - 1]
    lang, indice = np.nonzero(selected_probs > activation_bar)
    out = []
    for c in range(over_zero_ldc.shape[-1]):
        out.append(sorted(zip(row_index[indice[lang == c]].tolist(), col_index[indice[lang == c]].tolist(),
                              strict=True)))
    return out, top_prob_value, activation_bar


def test_hand_worked():
    # 1 layer, 4 neurons, 2 classes, 10 frames each. p (D x C):
    # n0 = [0.9, 0.0] specific to class 0 (H = 0); n1 = [0.9, 0.9] (H = log 2); n2, n3 low.
    pos = np.array([[[9, 9, 1, 0], [0, 9, 1, 1]]])  # (L=1, C=2, D=4)
    frames = np.array([10, 10])
    # 8 entries of p: [0.9, 0, 0.9, 0.9, 0.1, 0.1, 0, 0.1]; round(8*0.5)=4th smallest = 0.1
    r = lape_neurons(pos, frames, top_rate=0.25, filter_rate=0.5, activation_bar_ratio=0.5)
    assert r["bar"] == pytest.approx(0.1)
    np.testing.assert_allclose(r["entropy"][0], [0.0, np.log(2), np.inf, np.inf])
    assert np.flatnonzero(r["selected"][0]).tolist() == [0]  # round(4 * 0.25) = 1 neuron
    assert r["class_masks"][:, 0, 0].tolist() == [True, False]
    assert class_coverage(r["class_masks"]) == 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_identify_port_on_random_counts(seed):
    rng = np.random.default_rng(seed)
    L, D, C = 4, 300, 6
    n = rng.integers(50, 500, C)
    rate = rng.beta(0.3, 2.0, (L, D, 1)) * rng.uniform(0.2, 1.5, (L, D, C))
    over_zero = rng.binomial(n[None, None, :], np.clip(rate, 0, 1)).astype(float)
    ref, bar, act_bar = identify_port(over_zero, n, top_rate=0.02, filter_rate=0.9, activation_bar_ratio=0.93)
    r = lape_neurons(over_zero.transpose(0, 2, 1), n, top_rate=0.02, filter_rate=0.9, activation_bar_ratio=0.93)
    assert r["bar"] == bar and r["activation_bar"] == act_bar
    got = [sorted(zip(*np.nonzero(r["class_masks"][c]), strict=True)) for c in range(C)]
    assert [[(int(a), int(b)) for a, b in g] for g in got] == ref
    assert r["selected"].sum() == round(L * D * 0.02)


def test_defaults_and_padding():
    rng = np.random.default_rng(5)
    L, C, D = 2, 3, 200
    n = np.array([100, 100, 100])
    pos = rng.binomial(100, rng.beta(0.5, 3, (L, C, D))).astype(float)
    pos[1, :, 150:] = 0  # layer 1 has 150 real neurons
    r = lape_neurons(pos, n, widths=[200, 150])
    assert r["selected"].sum() == round(350 * 0.01)
    assert not r["selected"][1, 150:].any() and np.isnan(r["entropy"][1, 150:]).all()
    ref, _, _ = identify_port(np.concatenate([pos[0].T, pos[1, :, :150].T])[None], n)
    got = [sorted((0, (d if l == 0 else 200 + d)) for l, d in zip(*np.nonzero(r["class_masks"][c]), strict=True))
           for c in range(C)]
    assert [[(0, int(b)) for _, b in g] for g in got] == [[(0, b) for _, b in g] for g in ref]
    with pytest.raises(ValueError, match="classes \\[1\\] have no frames"):
        lape_neurons(pos, np.array([100, 0, 100]))
