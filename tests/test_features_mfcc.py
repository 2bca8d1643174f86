"""MFCC, deltas, CMN and energy VAD against NumPy/SciPy references of the Kaldi conventions."""

import numpy as np
import pytest
import scipy.fft

from jaxneurons.features.fbank import fbank
from jaxneurons.features.mfcc import (
    add_deltas,
    cmn,
    dct_matrix,
    delta_filters,
    energy_vad,
    frame_log_energy,
    lifter_coeffs,
    mfcc,
)

SR = 16000


def _signal(rng, n):
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * k * 140 * t) / k for k in range(1, 15))
    return (0.2 * x + 0.01 * rng.standard_normal(n)).astype(np.float32)


def test_dct_is_orthonormal_dct2():
    basis = dct_matrix(23, 23)
    np.testing.assert_allclose(basis.T @ basis, np.eye(23), atol=1e-5)
    v = np.random.default_rng(0).normal(size=23)
    np.testing.assert_allclose(v @ basis, scipy.fft.dct(v, type=2, norm="ortho"), atol=1e-5)
    with pytest.raises(ValueError, match="num_ceps"):
        dct_matrix(10, 13)


def test_lifter_matches_kaldi_formula():
    c = lifter_coeffs(13, 22.0)
    assert c[0] == 1.0
    np.testing.assert_allclose(c, 1 + 11 * np.sin(np.pi * np.arange(13) / 22), rtol=1e-6)
    assert np.all(lifter_coeffs(13, 0.0) == 1)


def test_mfcc_is_liftered_dct_of_logmel():
    rng = np.random.default_rng(1)
    x = _signal(rng, 8000)
    logmel, _ = fbank(x, num_mel_bins=23)
    ref = scipy.fft.dct(np.asarray(logmel, np.float64), type=2, norm="ortho", axis=-1)[:, :13]
    ref *= 1 + 11 * np.sin(np.pi * np.arange(13) / 22)
    got, n = mfcc(x)
    assert got.shape == (int(n), 13) == ref.shape
    np.testing.assert_allclose(np.asarray(got), ref, atol=2e-3)


def test_use_energy_replaces_c0_with_raw_log_energy():
    rng = np.random.default_rng(2)
    x = _signal(rng, 4000)
    got, n = mfcc(x, use_energy=True)
    frames = np.stack([x[t * 160 : t * 160 + 400].astype(np.float64) for t in range(int(n))])
    frames -= frames.mean(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(got[:, 0]), np.log((frames**2).sum(1)), atol=1e-3)
    plain, _ = mfcc(x)
    np.testing.assert_allclose(np.asarray(got[:, 1:]), np.asarray(plain[:, 1:]), atol=1e-5)


def test_delta_filters_match_kaldi():
    s = delta_filters(2, 2)
    np.testing.assert_allclose(s[1], [0, 0, -0.2, -0.1, 0, 0.1, 0.2, 0, 0], atol=1e-7)
    np.testing.assert_allclose(s[2], [0.04, 0.04, 0.01, -0.04, -0.1, -0.04, 0.01, 0.04, 0.04], atol=1e-7)


def _reference_deltas(x, window=2):
    """HTK regression with edge replication; order 2 = Kaldi's convolved filter on the static features."""
    T = len(x)
    norm = 2 * sum(n * n for n in range(1, window + 1))

    def clamp(i):
        return x[min(max(i, 0), T - 1)]

    d1 = np.stack([sum(n * (clamp(t + n) - clamp(t - n)) for n in range(1, window + 1)) / norm for t in range(T)])
    s2 = delta_filters(2, window)[2]
    half = len(s2) // 2
    d2 = np.stack([sum(s2[j] * clamp(t + j - half) for j in range(len(s2))) for t in range(T)])
    return np.concatenate([x, d1, d2], axis=-1)


def test_deltas_reference_and_padding():
    rng = np.random.default_rng(3)
    lens = [30, 7, 1]
    feats = np.zeros((3, 30, 4), np.float32)
    for i, n in enumerate(lens):
        feats[i, :n] = rng.normal(size=(n, 4))
    feats[1, 7:] = 99.0  # padding garbage must not be used: edges are clamped at the true end
    out = np.asarray(add_deltas(feats, np.array(lens)))
    assert out.shape == (3, 30, 12)
    for i, n in enumerate(lens):
        np.testing.assert_allclose(out[i, :n], _reference_deltas(feats[i, :n]), atol=1e-5)
        assert np.all(out[i, n:] == 0)


def test_deltas_of_a_ramp():
    ramp = (np.arange(20, dtype=np.float32) * 0.5)[None, :, None]
    out = np.asarray(add_deltas(ramp, np.array([20])))[0]
    np.testing.assert_allclose(out[4:-4, 1], 0.5, atol=1e-6)  # slope
    np.testing.assert_allclose(out[4:-4, 2], 0.0, atol=1e-6)  # no curvature
    assert np.asarray(add_deltas(ramp, np.array([20]), order=1)).shape == (1, 20, 2)


def test_cmn_with_lengths():
    rng = np.random.default_rng(4)
    feats = rng.normal(5.0, 1.0, (2, 10, 3)).astype(np.float32)
    out = np.asarray(cmn(feats, np.array([10, 4])))
    np.testing.assert_allclose(out[1, :4].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out[1, :4], feats[1, :4] - feats[1, :4].mean(0), atol=1e-5)
    assert np.all(out[1, 4:] == 0)


def test_batched_mfcc_matches_single():
    rng = np.random.default_rng(5)
    lens = [8000, 5000]
    batch = np.zeros((2, 8000), np.float32)
    for i, n in enumerate(lens):
        batch[i, :n] = _signal(rng, n)
    feats, n_frames = mfcc(batch, np.array(lens), use_energy=True)
    for i, n in enumerate(lens):
        single, nf = mfcc(batch[i, :n], use_energy=True)
        assert int(n_frames[i]) == int(nf)
        np.testing.assert_allclose(np.asarray(feats[i, : int(nf)]), np.asarray(single), atol=1e-4)
        assert np.all(np.asarray(feats[i, int(nf) :]) == 0)


def test_energy_vad_finds_the_loud_part():
    rng = np.random.default_rng(6)
    x = np.concatenate([1e-4 * rng.standard_normal(8000), _signal(rng, 8000), 1e-4 * rng.standard_normal(8000)])
    x = x.astype(np.float32)[None]
    lengths = np.array([x.shape[1]])
    energy = frame_log_energy(x, lengths)
    vad = np.asarray(energy_vad(energy, (lengths - 400) // 160 + 1))[0]
    assert vad[55:93].all()  # frames fully inside the loud half second (samples 8000..16000)
    assert not vad[:40].any() and not vad[110:].any()
