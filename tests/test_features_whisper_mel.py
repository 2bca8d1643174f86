"""Whisper log-mel front end equals HF ``WhisperFeatureExtractor`` (80 and 128 bins, padded to the window).

Tolerance 5e-5 in normalised log-mel units ((log10 + 4) / 4). HF (torch installed) runs ``torch.stft`` in
float32; ours is ``jnp.fft.rfft`` in float32: FFT rounding relative to a frame's energy gives ~1e-6
(measured <= 6e-6). A convention error (window, centring, dropped frame, per-utterance vs per-batch clamp,
padding after instead of before the spectrum) is >= 1e-2.
"""

from __future__ import annotations

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("torch")

from jaxneurons.features.whisper_mel import whisper_log_mel, whisper_mel_filters  # noqa: E402

TOL = 5e-5


def _audio(lengths, seed=0, tail=0.0):
    """Rows of random speech-like audio (noise with a slow envelope); ``tail`` fills the padding (must be ignored)."""
    rng = np.random.default_rng(seed)
    audio = np.full((len(lengths), max(lengths)), tail, np.float32)
    for i, n in enumerate(lengths):
        envelope = 0.05 + np.abs(np.sin(np.arange(n) / (1000.0 + 300 * i)))
        audio[i, :n] = (rng.standard_normal(n) * 0.2 * envelope).astype(np.float32)
    return audio


@pytest.mark.parametrize("num_mel_bins", [80, 128])
def test_mel_filters_equal_hf(num_mel_bins):
    from transformers.audio_utils import mel_filter_bank

    theirs = mel_filter_bank(201, num_mel_bins, 0.0, 8000.0, 16000, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(whisper_mel_filters(num_mel_bins), theirs, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("num_mel_bins,chunk_seconds,lengths", [
    (80, 30, (16000 * 30, 12345, 401)),  # the real window: exactly full, padded, nearly all padding
    (128, 2, (40000, 32000, 7000)),  # truncated past the window (HF truncation=True), exact, padded
])
def test_log_mel_equals_whisper_feature_extractor(num_mel_bins, chunk_seconds, lengths):
    extractor = transformers.WhisperFeatureExtractor(feature_size=num_mel_bins, chunk_length=chunk_seconds)
    audio = _audio(lengths, tail=0.7)  # garbage after each row's end: only the first `length` samples count
    theirs = extractor([audio[i, :n] for i, n in enumerate(lengths)], sampling_rate=16000,
                       return_tensors="np").input_features
    ours = np.asarray(whisper_log_mel(audio, np.asarray(lengths), num_mel_bins=num_mel_bins,
                                      n_samples=chunk_seconds * 16000))
    assert ours.shape == (len(lengths), chunk_seconds * 100, num_mel_bins)
    diff = np.abs(ours - theirs.transpose(0, 2, 1)).max()
    assert diff <= TOL, f"max |ours - HF| = {diff:.2e}"
    # Each row alone gives the same features as in the padded batch (per-utterance clamp, zeroed padding).
    alone = np.asarray(whisper_log_mel(audio[2:, : lengths[2]], None, num_mel_bins=num_mel_bins,
                                       n_samples=chunk_seconds * 16000))
    np.testing.assert_array_equal(alone[0], ours[2])
