"""load_audio's policy for every kind of bad input, and the DataIssues counts a scan reports."""

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from jaxneurons.data.audio import AudioError, DataIssues, audio_info, load_audio, resample, scan_audio


def _tone(n, sr=16000, amp=0.5):
    return (amp * np.sin(2 * np.pi * 220 * np.arange(n) / sr)).astype(np.float32)


def test_plain_file(tmp_path):
    p = str(tmp_path / "a.flac")
    x = _tone(8000)
    sf.write(p, x, 16000, subtype="PCM_16")
    issues = DataIssues()
    y = load_audio(p, issues=issues)
    assert y.dtype == np.float32 and y.shape == (8000,)
    np.testing.assert_allclose(y, x, atol=1 / 32768)
    assert not issues.counts
    assert audio_info(p) == (8000, 16000, 1)


def test_stereo_is_downmixed_and_logged(tmp_path, caplog):
    p = str(tmp_path / "s.wav")
    left, right = _tone(4000), np.zeros(4000, np.float32)
    sf.write(p, np.stack([left, right], 1), 16000, subtype="FLOAT")
    issues = DataIssues()
    with caplog.at_level(logging.DEBUG, logger="jaxneurons.data.audio"):
        y = load_audio(p, issues=issues)
    np.testing.assert_allclose(y, left / 2, atol=1e-7)
    assert issues.counts["downmixed"] == 1 and "downmixed" in caplog.text


def test_other_rate_is_resampled_with_warning(tmp_path, caplog):
    p = str(tmp_path / "r.wav")
    x = _tone(22050, sr=22050)
    sf.write(p, x, 22050, subtype="FLOAT")
    issues = DataIssues()
    with caplog.at_level(logging.DEBUG, logger="jaxneurons.data.audio"):
        y = load_audio(p, 16000, issues=issues)
    assert y.shape == (16000,) and audio_info(p, 16000)[0] == 16000
    np.testing.assert_allclose(y, resample_poly(x.astype(np.float64), 320, 441), atol=1e-6)
    assert issues.counts["resampled"] == 1 and "resampled to 16000" in caplog.text
    # 8 kHz -> 16 kHz: lengths match resampled_length's ceil rule
    p8 = str(tmp_path / "r8.wav")
    sf.write(p8, _tone(801, sr=8000), 8000, subtype="FLOAT")
    assert load_audio(p8).shape == (1602,) == (audio_info(p8)[0],)


def test_resample_uses_the_default_filter():
    x = np.random.default_rng(0).standard_normal(3001)
    np.testing.assert_allclose(resample(x, 22050, 16000), resample_poly(x, 320, 441), rtol=0, atol=1e-12)
    assert resample(x, 16000, 16000) is x


def test_clipped_is_loaded_and_counted(tmp_path, caplog):
    p = str(tmp_path / "c.wav")
    x = _tone(4000, amp=1.5).clip(-1, 1)
    sf.write(p, x, 16000, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="jaxneurons.data.audio"):
        y = load_audio(p)  # a single call, nobody aggregates: a warning
    assert y.shape == (4000,) and "clipped samples" in caplog.text
    n_clip = int((np.abs(y) >= 32767 / 32768).sum())
    caplog.clear()
    issues = DataIssues()
    with caplog.at_level(logging.WARNING, logger="jaxneurons.data.audio"):
        load_audio(p, issues=issues)
    assert issues.counts["clipped"] == 1 and not caplog.text  # with a collector: counted, detail at DEBUG
    assert n_clip > 100 and str(n_clip) in issues.examples["clipped"][0]


def test_data_decisions_are_aggregated_one_line_per_kind(tmp_path, caplog):
    """A corpus where every file has full-scale samples logs one line per kind, not one per file."""
    paths = []
    for i in range(6):
        paths.append(str(tmp_path / f"c{i}.wav"))
        sf.write(paths[-1], _tone(2000, amp=1.5).clip(-1, 1), 16000 if i else 8000, subtype="PCM_16")
    issues = DataIssues(max_examples=2)
    with caplog.at_level(logging.DEBUG, logger="jaxneurons.data.audio"):
        for p in paths:
            load_audio(p, issues=issues)
    assert sum("clipped samples" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records) == 6
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jaxneurons.data.audio"):
        issues.log_summary()
    assert [r.getMessage().split(" file(s)")[0] for r in caplog.records] == ["data: clipped: 6", "data: resampled: 1"]
    record = issues.as_dict()
    assert record["counts"] == {"clipped": 6, "resampled": 1}
    assert len(record["examples"]["clipped"]) == 2 and len(record["files"]["clipped"]) == 6  # every file kept
    assert [e.split(":")[0] for e in record["files"]["clipped"]] == paths


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_is_an_error(tmp_path, bad):
    p = str(tmp_path / "n.wav")
    x = _tone(1000)
    x[10] = bad
    sf.write(p, x, 16000, subtype="FLOAT")
    issues = DataIssues()
    with pytest.raises(AudioError, match="n.wav: 1 NaN/inf samples"):
        load_audio(p, issues=issues)
    assert issues.counts["non_finite"] == 1


def test_too_short_is_an_error(tmp_path):
    p = str(tmp_path / "t.wav")
    sf.write(p, _tone(399), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"t.wav: 399 samples .* needs >= 400") as err:
        load_audio(p, min_samples=400)
    assert err.value.kind == "too_short"
    assert load_audio(p, min_samples=399).shape == (399,)


def test_empty_corrupt_and_non_audio(tmp_path):
    empty = tmp_path / "e.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    good = str(tmp_path / "g.wav")
    sf.write(good, _tone(16000), 16000, subtype="PCM_16")
    raw = Path(good).read_bytes()
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00" + raw[6:40])  # header cut inside the fmt chunk
    truncated = tmp_path / "trunc.wav"
    truncated.write_bytes(raw[: len(raw) // 2])  # header announces 16000 frames, half are there
    flac = str(tmp_path / "g.flac")
    sf.write(flac, np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1, 16000)
    cut_flac = tmp_path / "cut.flac"
    cut_flac.write_bytes(Path(flac).read_bytes()[:3000])
    zero = str(tmp_path / "zero.wav")
    sf.write(zero, np.zeros(0, np.float32), 16000, subtype="PCM_16")
    missing = str(tmp_path / "nope.wav")

    cases = {
        str(empty): "empty", str(text): "unreadable", str(corrupt): "unreadable", str(truncated): "truncated",
        str(cut_flac): "corrupt", zero: "empty", missing: "missing",
    }
    for path, kind in cases.items():
        with pytest.raises(AudioError) as err:
            load_audio(path)
        assert err.value.kind == kind, path
        assert str(err.value).startswith(path + ": ")

    ok, issues = scan_audio([good, *cases])
    assert ok == [True] + [False] * len(cases)
    assert dict(issues.counts) == {"ok": 1, "empty": 2, "unreadable": 2, "truncated": 1, "corrupt": 1, "missing": 1}
    assert "empty: 2" in issues.summary()
    assert issues.as_dict()["counts"]["unreadable"] == 2
