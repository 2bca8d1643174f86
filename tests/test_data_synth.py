"""espeak-ng synthesis: exact tiling boundaries, energy sanity, mapping coverage, determinism, resume."""

import filecmp
import os

import numpy as np
import pytest

from jaxneurons.data import phones, synth, text
from jaxneurons.data.espeak import EspeakWorker, RawSynthesis, SynthRequest
from jaxneurons.data.manifest import read_manifest
from jaxneurons.data.synth import (
    ACCENTS,
    VARIANTS,
    generate_corpus,
    make_speakers,
    raw_to_utterance_audio,
    variant_gender,
)
from jaxneurons.errors import SettingError
from tests.helpers import run_python


@pytest.fixture(scope="module")
def worker():
    with EspeakWorker() as w:
        yield w


def _check_tiling(segs, n):
    assert segs[0][0] == 0 and segs[-1][1] == n
    for (s0, e0, _), (s1, e1, _) in zip(segs[:-1], segs[1:], strict=True):
        assert s0 < e0 == s1 < e1


@pytest.mark.parametrize(("voice", "language", "sentence"), [
    ("en-us+f2", "en", "The old sailor found a green bottle near the river."),
    ("tr+m3", "tr", "Küçük kedi bahçede sessizce uyudu."),
])
def test_boundaries_tile_and_vowels_are_loud(worker, voice, language, sentence):
    raw = worker.synthesize(SynthRequest(sentence, voice, volume=60))
    assert raw.sample_rate == 22050
    audio, segs, words = raw_to_utterance_audio(raw, sentence, language, voice.split("+")[0], "t1")
    assert audio.dtype == np.float32 and audio.shape[0] == -(-raw.audio.shape[0] * 320 // 441)
    _check_tiling(segs, audio.shape[0])
    for a, b in zip(segs[:-1], segs[1:], strict=True):
        assert not (a[2] == b[2] == "sil")  # silences merged
    assert all(lab in phones.phone_set(language) for _, _, lab in segs)

    def energy(kind):
        vals = [np.mean(audio[s:e] ** 2) for s, e, lab in segs if (phones.phone_type(lab, language) or "sil") == kind]
        return np.median(vals)

    assert energy("vowel") > 100 * energy("sil")
    assert energy("vowel") > energy("unvoiced")
    # Words: inside the audio, sorted, and their text is what was said.
    spoken = [w for _, _, w in words]
    assert spoken == [w.strip(".,") for w in sentence.split()]
    for s, e, _ in words:
        assert 0 <= s < e <= audio.shape[0]


def test_event_positions_are_rescaled_exactly():
    # A fake espeak output: boundaries at native samples 0, 441, 882 map to 0, 320, 640 at 16 kHz.
    raw = RawSynthesis(np.ones(1323, np.int16), 22050, [(0, "h"), (441, "'a"), (882, "_:")],
                       [], [["phoneme", 0, "h"], ["phoneme", 441, "'a"], ["phoneme", 882, "_:"]])
    _, segs, _ = raw_to_utterance_audio(raw, "ha", "en", "en-us", "fake")
    assert segs == [(0, 320, "hh"), (320, 640, "ae"), (640, 960, "sil")]


def test_unknown_mnemonic_raises_with_context():
    raw = RawSynthesis(np.ones(100, np.int16), 22050, [(0, "Q!")], [], [["phoneme", 0, "Q!"]])
    with pytest.raises(phones.UnknownPhoneError, match=r"'Q!'.*utt-42"):
        raw_to_utterance_audio(raw, "x", "en", "en-us", "utt-42")


def test_mapping_covers_every_bundled_word_in_every_accent(worker):
    for language, accents in ACCENTS.items():
        seen = set()
        words = text.all_words(language)
        for accent in accents:
            for i in range(0, len(words), 40):
                chunk = ", ".join(words[i : i + 40]) + "."
                raw = worker.synthesize(SynthRequest(chunk, accent + "+m1"))
                for _, m in raw.phonemes:  # raises on any unmapped mnemonic
                    seen.add(phones.espeak_to_phone(m, language, accent, context=chunk))
        assert seen == set(phones.phone_set(language))  # and every phone of the set occurs


def test_speakers_are_deterministic_and_gender_balanced():
    a = make_speakers(12, ["en", "tr"], seed=3)
    assert a == make_speakers(12, ["en", "tr"], seed=3)
    assert a != make_speakers(12, ["en", "tr"], seed=4)
    assert [s.language for s in a[:4]] == ["en", "tr", "en", "tr"]
    assert sum(s.gender == "m" for s in a) == 6
    assert len({s.speaker_id for s in a}) == 12
    for s in a:
        assert variant_gender(s.variant) == s.gender and s.variant in VARIANTS[s.gender]
    with pytest.raises(SettingError, match="not supported"):
        make_speakers(2, ["xx"], 0)


def _tree_files(d):
    out = []
    for root, _, files in os.walk(d):
        out += [os.path.relpath(os.path.join(root, f), d) for f in files]
    return sorted(out)


def test_generate_corpus_is_deterministic_and_resumable(tmp_path, monkeypatch):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    args = dict(num_speakers=2, minutes=0.1, languages=["en", "tr"], seed=5, progress=False)
    pa = generate_corpus(a, **args)
    files = _tree_files(a)
    assert files == ["audio/" + f for f in _tree_files(os.path.join(a, "audio"))] + ["manifest.jsonl",
                                                                                    "synth_config.json"]
    utts = read_manifest(pa)
    assert {u.language for u in utts} == {"en", "tr"}
    assert sum(u.duration for u in utts) >= 6.0
    for u in utts:
        _check_tiling(list(u.phones), u.num_samples)
        assert u.gender in ("m", "f") and u.labels["dataset"] == "synth-espeak"

    # Interrupt a second run after the first speaker, then resume: byte-identical to the uninterrupted run.
    real = synth._make_speaker

    def flaky(worker, spk, index, *rest):
        if index == 1:
            raise RuntimeError("interrupted")
        return real(worker, spk, index, *rest)

    monkeypatch.setattr(synth, "_make_speaker", flaky)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate_corpus(b, **args)
    assert not os.path.exists(os.path.join(b, "manifest.jsonl"))
    first = os.path.join(b, "audio", utts[0].speaker)
    stamps = {f: os.stat(os.path.join(first, f)).st_mtime_ns for f in os.listdir(first)}
    monkeypatch.setattr(synth, "_make_speaker", real)
    generate_corpus(b, **args)
    assert stamps == {f: os.stat(os.path.join(first, f)).st_mtime_ns for f in os.listdir(first)}  # not redone
    assert _tree_files(b) == files
    for f in files:
        assert filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False), f
    assert generate_corpus(b, **args) == os.path.join(b, "manifest.jsonl")  # complete: returned as is
    with pytest.raises(SettingError, match="other arguments"):
        generate_corpus(b, **{**args, "seed": 6})


def test_cli(tmp_path):
    out = str(tmp_path / "cli")
    res = run_python(["-m", "jaxneurons.data.synth", "--num_speakers=1", "--minutes=0.05", "--languages=en",
                      "--seed=1", f"--out={out}"], timeout=120)
    assert "real time" in res.stdout and res.stderr == ""  # no progress bar when stderr is not a terminal
    assert len(read_manifest(os.path.join(out, "manifest.jsonl"))) >= 1


def test_synth_cli_bad_setting_is_one_line(tmp_path):
    res = run_python(["-m", "jaxneurons.data.synth", f"--out={tmp_path / 'c'}", "--languages=zz"], returncodes=(1,),
                     timeout=120)
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == "error: language 'zz' not supported; choose from ['en', 'tr']"
