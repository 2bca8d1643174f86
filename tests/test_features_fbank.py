"""Kaldi log-mel filterbank: agreement with a plain NumPy reference and Kaldi's documented behaviour."""

import math

import jax
import numpy as np
import pytest

from jaxneurons.features.fbank import (
    FLOAT32_EPS,
    fbank,
    inverse_mel_scale,
    mel_banks,
    mel_scale,
    num_frames,
    utterance_mvn,
)

SR = 16000


def reference_fbank(x, num_mel_bins=40, window="povey", low_freq=20.0, high_freq=0.0, sr=SR):
    """Straightforward per-frame NumPy (float64) version of Kaldi's compute-fbank-feats."""
    win, shift, n_fft = int(sr * 0.025), int(sr * 0.010), 512
    n = np.arange(win)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / (win - 1))
    w = hann**0.85 if window == "povey" else hann
    nyq = sr / 2
    hi = high_freq if high_freq > 0 else nyq + high_freq

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    lo_m, hi_m = mel(low_freq), mel(hi)
    delta = (hi_m - lo_m) / (num_mel_bins + 1)
    banks = np.zeros((num_mel_bins, n_fft // 2 + 1))
    for m in range(num_mel_bins):
        left, centre, right = lo_m + m * delta, lo_m + (m + 1) * delta, lo_m + (m + 2) * delta
        for k in range(n_fft // 2):  # the Nyquist bin keeps weight 0
            mk = mel(k * sr / n_fft)
            if left < mk < right:
                banks[m, k] = (mk - left) / (centre - left) if mk <= centre else (right - mk) / (right - centre)
    out = []
    for t in range(1 + (len(x) - win) // shift):
        f = np.asarray(x[t * shift : t * shift + win], np.float64)
        f = f - f.mean()
        f = np.concatenate([[f[0] - 0.97 * f[0]], f[1:] - 0.97 * f[:-1]])
        spec = np.abs(np.fft.rfft(f * w, n=n_fft)) ** 2
        out.append(np.log(np.maximum(banks @ spec, FLOAT32_EPS)))
    return np.array(out)


def _speechlike(rng, n):
    t = np.arange(n) / SR
    f0 = 120 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    return (0.3 * x * (1 + 0.5 * np.sin(2 * np.pi * 4 * t)) + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize(("bins", "window"), [(40, "povey"), (23, "povey"), (128, "hanning")])
def test_matches_numpy_reference(bins, window):
    rng = np.random.default_rng(0)
    for x in (_speechlike(rng, 8000), (0.1 * rng.standard_normal(6000)).astype(np.float32)):
        got, n = fbank(x, num_mel_bins=bins, window_type=window)
        ref = reference_fbank(x, bins, window)
        assert got.shape == ref.shape == (int(n), bins)
        assert np.abs(np.asarray(got) - ref).max() < 1e-3


def test_matches_transformers_kaldi_numpy_path():
    """transformers' NumPy Kaldi fbank (used by Speech2Text without torchaudio) is a third implementation."""
    audio_utils = pytest.importorskip("transformers.audio_utils")
    rng = np.random.default_rng(1)
    x = _speechlike(rng, 12345)
    mel = audio_utils.mel_filter_bank(
        num_frequency_bins=257, num_mel_filters=80, min_frequency=20, max_frequency=SR // 2,
        sampling_rate=SR, norm=None, mel_scale="kaldi", triangularize_in_mel_space=True,
    )
    ref = audio_utils.spectrogram(
        x, audio_utils.window_function(400, "povey", periodic=False), frame_length=400, hop_length=160,
        fft_length=512, power=2.0, center=False, preemphasis=0.97, mel_filters=mel, log_mel="log",
        mel_floor=FLOAT32_EPS, remove_dc_offset=True,
    ).T
    got, _ = fbank(x, num_mel_bins=80)
    assert got.shape == ref.shape
    assert np.abs(np.asarray(got) - ref).max() < 1e-3


def test_frame_count_snip_edges():
    for n_samples in (400, 401, 559, 560, 16000, 16399):
        x = np.zeros(n_samples, np.float32)
        feats, n = fbank(x)
        assert int(n) == 1 + (n_samples - 400) // 160 == feats.shape[0]
    assert list(num_frames([0, 399, 400, 560, 16000])) == [0, 0, 1, 2, 98]


def test_pure_tone_peaks_in_nearest_mel_bin():
    bins = 40
    lo, hi = mel_scale(20.0), mel_scale(SR / 2)
    centres = inverse_mel_scale(lo + (np.arange(bins) + 1) * (hi - lo) / (bins + 1))
    t = np.arange(SR // 2) / SR
    for k in (3, 10, 22, 35):
        f = float(centres[k])
        feats, _ = fbank((0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32), num_mel_bins=bins)
        assert int(np.argmax(np.asarray(feats).mean(0))) == k


def test_mel_scale_and_banks():
    assert np.isclose(mel_scale(700.0), 1127.0 * math.log(2.0))
    assert np.isclose(inverse_mel_scale(mel_scale(1234.5)), 1234.5)
    banks = mel_banks(40, 512, 16000.0)
    assert banks.shape == (257, 40)
    assert np.all(banks[-1] == 0) and np.all(banks >= 0) and np.all(banks <= 1)
    assert np.all(banks[: int(20 * 512 / 16000)] == 0)  # nothing below low_freq = 20 Hz
    with pytest.raises(ValueError, match="low_freq"):
        mel_banks(40, 512, 16000.0, low_freq=9000.0)


def test_batch_padding_matches_single():
    rng = np.random.default_rng(2)
    lens = [16000, 9000, 300, 4321]
    batch = np.zeros((4, 16000), np.float32)
    for i, n in enumerate(lens):
        batch[i, :n] = _speechlike(rng, n)
    feats, n_frames = fbank(batch, np.array(lens))
    assert list(np.asarray(n_frames)) == list(num_frames(lens))
    for i, n in enumerate(lens):
        nf = int(n_frames[i])
        assert np.all(np.asarray(feats[i, nf:]) == 0)
        if nf:
            single, _ = fbank(batch[i, :n])
            np.testing.assert_allclose(np.asarray(feats[i, :nf]), np.asarray(single), atol=1e-4)


def test_floor_and_scale():
    feats, _ = fbank(np.zeros(1000, np.float32))
    assert np.allclose(np.asarray(feats), np.log(FLOAT32_EPS))
    rng = np.random.default_rng(3)
    x = _speechlike(rng, 4000)
    a, _ = fbank(x)
    b, _ = fbank(x * 32768.0)  # int16 scale only shifts the log by 2 ln 32768
    np.testing.assert_allclose(np.asarray(b) - np.asarray(a), 2 * math.log(32768.0), atol=1e-3)


def test_dither_needs_key_and_perturbs():
    x = np.zeros(2000, np.float32)
    with pytest.raises(ValueError, match="PRNG key"):
        fbank(x, dither=1.0)
    feats, _ = fbank(x, dither=1.0, key=jax.random.PRNGKey(0))
    assert np.all(np.asarray(feats) > np.log(FLOAT32_EPS) + 1)


def test_bad_input():
    with pytest.raises(ValueError, match="shorter than one"):
        fbank(np.zeros(100, np.float32))
    with pytest.raises(ValueError, match="lengths"):
        fbank(np.zeros((2, 1000), np.float32), np.array([1000]))
    with pytest.raises(ValueError, match="window_type"):
        fbank(np.zeros(1000, np.float32), window_type="kaiser")


def test_utterance_mvn_uses_valid_frames_only():
    rng = np.random.default_rng(4)
    feats = rng.normal(3.0, 2.0, (3, 50, 5)).astype(np.float32)
    lengths = np.array([50, 20, 1])
    feats[1, 20:] = 1e6  # garbage in padding must not leak into the statistics
    out = np.asarray(utterance_mvn(feats, lengths))
    for i, n in enumerate(lengths):
        assert np.all(out[i, n:] == 0)
        if n > 1:
            np.testing.assert_allclose(out[i, :n].mean(0), 0, atol=1e-5)
            np.testing.assert_allclose(out[i, :n].std(0), 1, atol=1e-3)
    mean_only = np.asarray(utterance_mvn(feats, lengths, variance=False))
    np.testing.assert_allclose(mean_only[0], feats[0] - feats[0].mean(0), atol=1e-5)
