"""YIN F0 on synthetic signals of known F0, voicing, batching, and the pitch bins."""

import numpy as np
import pytest
from scipy.signal import lfilter

from jaxneurons.features.pitch import (
    LIBRISPEECH_DEV_CLEAN_PITCH_EDGES,
    pitch_bin_edges,
    pitch_bins,
    yin,
    yin_lags,
)

SR = 16000
F0S = (80.0, 110.0, 150.0, 200.0, 290.0, 400.0)


def tone(f0, n, rng):
    return 0.5 * np.sin(2 * np.pi * f0 * np.arange(n) / SR + rng.uniform(0, 2 * np.pi))


def harmonic_complex(f0, n, rng):
    t = np.arange(n) / SR
    ks = [k for k in range(1, 16) if k * f0 < SR / 2]
    return 0.1 * sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in ks)


def vowel(f0, n, rng, formants=(700.0, 1220.0, 2600.0)):
    """Source-filter vowel: impulse train (slight jitter) through a tilt filter and formant resonators."""
    period = SR / f0
    pos = np.cumsum(period * (1 + 0.003 * rng.standard_normal(int(n / period) + 2)))
    src = np.zeros(n)
    src[np.round(pos[pos < n - 1]).astype(int)] = 1.0
    y = lfilter([1.0], [1.0, -0.95], src)
    for f, bw in zip(formants, (80.0, 100.0, 120.0), strict=True):
        r = np.exp(-np.pi * bw / SR)
        y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / SR), r * r], y)
    return 0.5 * y / np.abs(y).max()


@pytest.mark.parametrize("make", [tone, harmonic_complex, vowel])
def test_known_f0_median_error_below_2_percent(make):
    rng = np.random.default_rng(0)
    n = SR // 2
    batch = np.stack([make(f, n, rng) + 0.005 * rng.standard_normal(n) for f in F0S]).astype(np.float32)
    f0, voiced, _ = yin(batch)  # one batched call for all F0s
    f0, voiced = np.asarray(f0), np.asarray(voiced)
    assert f0.shape == (len(F0S), n // 320)
    for i, target in enumerate(F0S):
        assert voiced[i].mean() > 0.85, (make.__name__, target, voiced[i].mean())
        assert abs(np.median(f0[i][voiced[i]]) / target - 1) < 0.02
        assert np.all(f0[i][~voiced[i]] == 0)


def test_silence_and_noise_are_unvoiced():
    rng = np.random.default_rng(1)
    x = np.stack([np.zeros(SR), 0.3 * rng.standard_normal(SR)]).astype(np.float32)
    f0, voiced, aperiodicity = yin(x)
    assert not np.asarray(voiced[0]).any()
    assert np.asarray(voiced[1]).mean() < 0.05
    assert np.all(np.asarray(f0)[~np.asarray(voiced)] == 0)
    assert np.median(np.asarray(aperiodicity[1])) > 0.5


def test_voicing_follows_the_signal_and_padding():
    rng = np.random.default_rng(2)
    voiced_part = vowel(130.0, SR // 2, rng)
    x = np.concatenate([voiced_part, 1e-5 * rng.standard_normal(SR // 2)]).astype(np.float32)
    padded = np.zeros((2, SR + 3200), np.float32)
    padded[0, :SR] = x
    padded[1, : SR // 2] = voiced_part
    lengths = np.array([SR, SR // 2])
    f0, voiced, _ = yin(padded, lengths)
    f0, voiced = np.asarray(f0), np.asarray(voiced)
    assert voiced[0, 2:23].all() and not voiced[0, 27:].any()
    assert not voiced[1, SR // 2 // 320 :].any()  # padding frames are unvoiced
    single, _, _ = yin(x)
    np.testing.assert_allclose(f0[0, :50], np.asarray(single), rtol=1e-4, atol=1e-3)


def test_glide_is_tracked():
    n = SR
    f_inst = np.linspace(100.0, 250.0, n)
    x = (0.5 * np.sin(2 * np.pi * np.cumsum(f_inst) / SR)).astype(np.float32)
    f0, voiced, _ = yin(x)
    f0, voiced = np.asarray(f0), np.asarray(voiced)
    centres = np.arange(f0.shape[0]) * 320 + 160
    err = np.abs(f0[voiced] / f_inst[centres[voiced]] - 1)
    assert voiced.mean() > 0.9 and np.median(err) < 0.02


def test_lags_and_errors():
    assert yin_lags(16000, 71.0, 800.0) == (20, 226)
    with pytest.raises(ValueError, match="f0_min"):
        yin(np.zeros(4000, np.float32), f0_min=900.0)
    with pytest.raises(ValueError, match="lengths"):
        yin(np.zeros((2, 4000), np.float32), np.array([4000]))
    with pytest.raises(ValueError, match="shorter"):
        yin(np.zeros(100, np.float32))


def test_threshold_flag_changes_voicing_of_weak_periodicity():
    rng = np.random.default_rng(3)
    x = (harmonic_complex(150.0, SR, rng) + 0.02 * rng.standard_normal(SR)).astype(np.float32)
    _, v_strict, ap = yin(x, threshold=0.02)  # the dips sit near 0.05 at this SNR
    _, v_loose, _ = yin(x, threshold=0.15)
    assert np.asarray(v_loose)[2:-2].all() and not np.asarray(v_strict).any()
    assert 0.02 < np.median(np.asarray(ap)) < 0.15


def test_pitch_bin_edges_and_bins():
    f0 = np.array([0.0, 100.0, 0.0, 120.0, 140.0, 160.0, 180.0, 200.0, np.nan])
    p33, p66 = pitch_bin_edges(f0)
    # Worked by hand: the 6 voiced values 100..200 (zeros and NaN dropped); linear interpolation puts the
    # 33rd percentile at rank 0.33 * 5 = 1.65 (120 + 0.65 * 20) and the 66th at 3.3 (160 + 0.3 * 20).
    assert (p33, p66) == pytest.approx((133.0, 166.0), abs=1e-9)
    bins = np.asarray(pitch_bins(np.array([0.0, 90.0, p33, 150.0, p66, 500.0]), (p33, p66)))
    assert list(bins) == [-1, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="no voiced"):
        pitch_bin_edges(np.zeros(5))
    assert LIBRISPEECH_DEV_CLEAN_PITCH_EDGES == (129.03, 179.78)
    lib = np.asarray(pitch_bins(np.array([[129.0, 129.03, 179.78, -1.0]]), LIBRISPEECH_DEV_CLEAN_PITCH_EDGES))
    assert lib.tolist() == [[0, 1, 2, -1]]


def test_model_frame_alignment():
    """centre_offset/num_frames give one F0 per model frame (wav2vec 2.0: centre 320 t + 200)."""
    n = SR
    f_inst = np.where(np.arange(n) < 8000, 100.0, 200.0)
    x = (0.5 * np.sin(2 * np.pi * np.cumsum(f_inst) / SR)).astype(np.float32)
    t_model = (n - 400) // 320 + 1
    f0, voiced, _ = yin(x, centre_offset=200, num_frames=t_model)
    f0, voiced = np.asarray(f0), np.asarray(voiced)
    assert f0.shape == (t_model,)
    centres = np.arange(t_model) * 320 + 200
    far = np.abs(centres - 8000) > 500  # away from the step and its analysis window
    far[:2] = far[-2:] = False
    assert voiced[far].all()
    np.testing.assert_allclose(f0[far], f_inst[centres[far]], rtol=0.02)
    with pytest.raises(ValueError, match="num_frames"):
        yin(x, num_frames=0)
