"""Corpus readers on tiny trees built in a temp dir: TIMIT, MFA TextGrids over LibriSpeech, VoxCeleb, lists."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from jaxneurons.data import phones
from jaxneurons.data.audio import AudioError, DataIssues
from jaxneurons.data.manifest import read_manifest, write_manifest
from jaxneurons.data.readers import (
    SEGMENT_END_TOLERANCE,
    CorpusError,
    read_mfa,
    read_path_list,
    read_timit,
    read_voxceleb,
)
from jaxneurons.data.textgrid import TextGridError, parse_textgrid, read_textgrid
from tests.helpers import run_python


def _audio(path, n, sr=16000, fmt=None, channels=1):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = 0.1 * np.random.default_rng(len(path)).standard_normal((n, channels)).astype(np.float32)
    sf.write(path, x if channels > 1 else x[:, 0], sr, format=fmt, subtype="PCM_16")


def _lines(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(" ".join(map(str, r)) + "\n" for r in rows))


@pytest.fixture()
def timit(tmp_path):
    root = tmp_path / "TIMIT"
    d1 = root / "TRAIN" / "DR1" / "FCJF0"
    _audio(str(d1 / "SA1.WAV"), 4000, fmt="NIST")  # NIST SPHERE, as on the LDC discs
    _lines(d1 / "SA1.PHN", [(0, 500, "h#"), (500, 900, "bcl"), (900, 1000, "b"), (1000, 1500, "ix"),
                            (1500, 1600, "q"), (1600, 2500, "zh"), (2500, 3000, "pau"), (3000, 3500, "epi"),
                            (3500, 4000, "h#")])
    _lines(d1 / "SA1.WRD", [(500, 1600, "be"), (1500, 2500, "ja")])  # overlapping words, as TIMIT has
    _lines(d1 / "SA1.TXT", [(0, 4000, "Be ja.")])
    d2 = root / "TEST" / "DR2" / "MABC0"
    _audio(str(d2 / "SX9.WAV.wav"), 3200)  # RIFF copy, as in common re-distributions
    _lines(d2 / "SX9.PHN", [(0, 1600, "h#"), (1600, 3200, "ao")])
    return str(root)


def test_timit(timit):
    issues = DataIssues()
    utts = read_timit(timit, issues=issues)
    assert [u.utt_id for u in utts] == ["timit_FCJF0_SA1", "timit_MABC0_SX9"]
    a, b = utts
    assert a.phones == ((0, 900, "sil"), (900, 1000, "b"), (1000, 1500, "ih"), (1600, 2500, "jh"),
                        (2500, 4000, "sil"))  # folded, q removed (gap), adjacent sil merged
    assert a.words == ((500, 1500, "be"), (1500, 2500, "ja"))
    assert (a.speaker, a.gender, a.num_samples, a.text) == ("FCJF0", "f", 4000, "Be ja.")
    assert a.labels == {"dataset": "timit", "dialect": "DR1", "subset": "TRAIN", "sentence": "SA1"}
    assert (b.gender, b.phones[-1][2], b.words) == ("m", "aa", None)
    assert issues.counts == {"timit_q_removed": 1, "word_overlap_trimmed": 1}
    assert [u.utt_id for u in read_timit(timit, subsets=["TEST"])] == ["timit_MABC0_SX9"]


def test_timit_errors(timit, tmp_path):
    phn = os.path.join(timit, "TEST", "DR2", "MABC0", "SX9.PHN")
    _lines(phn, [(0, 1600, "h#"), (1600, 3400, "ao")])
    with pytest.raises(CorpusError, match=r"SX9.PHN: phone segment .* ends after the audio \(3200 samples"):
        read_timit(timit)
    issues = DataIssues()
    assert len(read_timit(timit, on_error="record", issues=issues)) == 1
    assert issues.counts["error_CorpusError"] == 1
    _lines(phn, [(0, 1600, "h#"), (1600, 3200, "xyz")])
    with pytest.raises(CorpusError, match="SX9.PHN: 'xyz' is not a TIMIT phone"):
        read_timit(timit)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no TIMIT utterances"):
        read_timit(str(tmp_path / "empty"))


def test_timit_last_segment_a_few_samples_after_the_audio_is_clipped(timit):
    """Real TIMIT: a final h# one sample past the audio (e.g. 54682 of 54681) is clipped and counted."""
    d = os.path.join(timit, "TEST", "DR2", "MABC0")
    _lines(os.path.join(d, "SX9.PHN"), [(0, 1600, "h#"), (1600, 3000, "ao"), (3000, 3201, "h#")])
    _lines(os.path.join(d, "SX9.WRD"), [(1600, 3201, "all")])
    issues = DataIssues()
    sx9 = read_timit(timit, issues=issues)[1]  # the default on_error="raise" reads it
    assert sx9.phones[-1] == (3000, 3200, "sil") and sx9.words == ((1600, 3200, "all"),)
    assert issues.counts["segment_end_clipped"] == 2
    assert "SX9.PHN: last phone segment 'h#' ended at 3201, 1 sample(s) after the audio (3200)" in (
        issues.files["segment_end_clipped"][0])
    # the tolerance is exact: one sample more is an error, as are overshoots of any segment but the last
    _lines(os.path.join(d, "SX9.PHN"), [(0, 1600, "h#"), (1600, 3200 + SEGMENT_END_TOLERANCE + 1, "ao")])
    with pytest.raises(CorpusError, match=r"SX9.PHN: phone segment .* ends after the audio \(3200 samples; only"):
        read_timit(timit)
    _lines(os.path.join(d, "SX9.PHN"), [(0, 3201, "ao"), (3201, 3202, "h#")])
    with pytest.raises(CorpusError, match="ends after the audio"):
        read_timit(timit)
    _lines(os.path.join(d, "SX9.PHN"), [(0, 1700, "ao"), (1600, 3201, "iy")])
    with pytest.raises(CorpusError, match="overlaps the previous one"):
        read_timit(timit)


def test_recorded_error_names_its_file_once(timit):
    phn = os.path.join(timit, "TEST", "DR2", "MABC0", "SX9.PHN")
    _lines(phn, [(0, 1600, "h#"), (1600, 3200, "xyz")])
    issues = DataIssues()
    read_timit(timit, on_error="record", issues=issues)
    (entry,) = issues.files["error_CorpusError"]
    assert entry.count("SX9.PHN") == 1, entry


def test_fold_timit_covers_61_and_gives_39():
    folded = {phones.fold_timit(p) for p in phones.TIMIT_61} - {None}
    assert folded == set(phones.phone_set("en")) and len(folded) == 39


LONG_TG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 0.25
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 0.25
        intervals: size = 2
        intervals [1]:
            xmin = 0
            xmax = 0.05
            text = ""
        intervals [2]:
            xmin = 0.05
            xmax = 0.25
            text = "say ""hi"" 2"
    item [2]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 0.25
        intervals: size = 5
        intervals [1]:
            xmin = 0
            xmax = 0.05
            text = "sil"
        intervals [2]:
            xmin = 0.05
            xmax = 0.1
            text = "S"
        intervals [3]:
            xmin = 0.1
            xmax = 0.15
            text = "EY1"
        intervals [4]:
            xmin = 0.15
            xmax = 0.2
            text = "spn"
        intervals [5]:
            xmin = 0.2
            xmax = 0.25
            text = "ZH"
'''

SHORT_TG = '''File type = "ooTextFile"
Object class = "TextGrid"

0
0.2
<exists>
2
"IntervalTier"
"phones"
0
0.2
3
0
0.1
"AO2"
0.1
0.15
"sp"
0.15
0.2
""
"IntervalTier"
"words"
0
0.2
2
0
0.1
"all"
0.1
0.2
""
'''


def test_textgrid_long_and_short_agree():
    long_tiers = parse_textgrid(LONG_TG)
    assert long_tiers["words"].items == ((0.0, 0.05, ""), (0.05, 0.25, 'say "hi" 2'))
    assert long_tiers["phones"].items[2] == (0.1, 0.15, "EY1")
    short_tiers = parse_textgrid(SHORT_TG)
    assert short_tiers["phones"].items == ((0.0, 0.1, "AO2"), (0.1, 0.15, "sp"), (0.15, 0.2, ""))
    with pytest.raises(TextGridError, match="x.TextGrid: not a Praat TextGrid"):
        parse_textgrid('File type = "ooTextFile"\nObject class = "Pitch"\n', "x.TextGrid")
    for truncated in (SHORT_TG[:70], LONG_TG[:300], LONG_TG[:-40]):
        with pytest.raises(TextGridError, match="x.TextGrid: malformed or truncated TextGrid"):
            parse_textgrid(truncated, "x.TextGrid")
    duplicated = SHORT_TG.replace('"words"', '"phones"')
    with pytest.raises(TextGridError, match="x.TextGrid: two tiers named 'phones'"):
        parse_textgrid(duplicated, "x.TextGrid")


def test_textgrid_point_tier_and_undecodable_file(tmp_path):
    points = ('File type = "ooTextFile"\nObject class = "TextGrid"\n\n0\n1\n<exists>\n1\n"TextTier"\n"tones"\n'
              '0\n1\n2\n0.25\n"H*"\n0.75\n"L%"\n')
    tier = parse_textgrid(points)["tones"]
    assert (tier.kind, tier.items) == ("TextTier", ((0.25, "H*"), (0.75, "L%")))
    bad = tmp_path / "b.TextGrid"
    bad.write_bytes(b"\xff\xfe\x00\xd8")  # UTF-16 BOM then a lone surrogate
    with pytest.raises(TextGridError, match="b.TextGrid: not UTF-8/UTF-16 text"):
        read_textgrid(str(bad))


@pytest.fixture()
def libri(tmp_path):
    root = tmp_path / "LibriSpeech" / "dev-clean"
    _audio(str(root / "19" / "198" / "19-198-0001.flac"), 4000)
    (root / "19" / "198" / "19-198-0001.TextGrid").write_text(LONG_TG, encoding="utf-8")
    _audio(str(root / "26" / "495" / "26-495-0000.flac"), 3200)
    tg = tmp_path / "aligned" / "26"  # MFA output flattened per speaker, UTF-16 as Praat writes it
    tg.mkdir(parents=True)
    (tg / "26-495-0000.TextGrid").write_bytes(SHORT_TG.encode("utf-16"))
    (tmp_path / "aligned" / "19" / "198").mkdir(parents=True)
    (tmp_path / "aligned" / "19" / "198" / "19-198-0001.TextGrid").write_text(LONG_TG, encoding="utf-8")
    spk = tmp_path / "SPEAKERS.TXT"
    spk.write_text("; comment\n;ID  |SEX| SUBSET |MINUTES| NAME\n19   | F | train-clean-100 | 25.19 | Kara\n"
                   "26   | M | train-clean-100 | 25.08 | Den\n", encoding="utf-8")
    return str(root), str(tmp_path / "aligned"), str(spk)


def test_mfa_librispeech(libri, tmp_path):
    root, aligned, spk = libri
    issues = DataIssues()
    utts = read_mfa(root, aligned, spk, issues=issues)
    a, b = utts
    assert (a.utt_id, a.speaker, a.gender, a.labels["chapter"]) == ("19-198-0001", "19", "f", "198")
    assert a.phones == ((0, 800, "sil"), (800, 1600, "s"), (1600, 2400, "ey"), (3200, 4000, "jh"))  # ZH stays voiced
    assert a.words == ((800, 4000, 'say "hi" 2'),)
    assert b.phones == ((0, 1600, "aa"), (1600, 3200, "sil")) and b.gender == "m"
    assert issues.counts == {"spoken_noise": 1}
    out = write_manifest(str(tmp_path / "m.jsonl"), utts)
    assert read_manifest(out) == utts
    # A missing alignment is an error unless asked to keep the utterance unaligned (and counted).
    with pytest.raises(CorpusError, match="26-495-0000.flac: no TextGrid"):
        read_mfa(root, None, spk)
    issues = DataIssues()
    kept = read_mfa(root, None, spk, missing_alignment="keep", issues=issues)
    assert kept[1].phones is None and issues.counts["no_alignment"] == 1


def test_mfa_rejects_ipa_phones(libri):
    root, aligned, spk = libri
    path = os.path.join(aligned, "26", "26-495-0000.TextGrid")
    Path(path).write_bytes(SHORT_TG.replace('"AO2"', '"ɔː"').encode("utf-16"))
    with pytest.raises(CorpusError, match="26-495-0000.TextGrid: 'ɔː' is not an ARPAbet phone"):
        read_mfa(root, aligned, spk)


def test_voxceleb(tmp_path):
    root = tmp_path / "vox"
    _audio(str(root / "id10001" / "1zcIwhmdeo4" / "00001.wav"), 1600)
    _audio(str(root / "id10001" / "7w0IBEWc9Qw" / "00002.wav"), 800, sr=8000, channels=2)
    _audio(str(root / "id10002" / "abc" / "00001.wav"), 1000)
    (root / "id10002" / "abc" / "broken.wav").write_bytes(b"junk")
    meta = tmp_path / "vox1_meta.csv"
    meta.write_text("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\nid10001\tA.J.\tm\tUSA\tdev\n"
                    "id10002\tB\tf\tIndia\ttest\n", encoding="utf-8")
    with pytest.raises(AudioError, match="broken.wav: not a readable audio file"):
        read_voxceleb(str(root), str(meta))
    issues = DataIssues()
    utts = read_voxceleb(str(root), str(meta), on_error="record", issues=issues)
    assert [u.utt_id for u in utts] == ["id10001/1zcIwhmdeo4/00001", "id10001/7w0IBEWc9Qw/00002",
                                        "id10002/abc/00001"]
    assert utts[1].num_samples == 1600  # 8 kHz header -> length at 16 kHz
    assert (utts[0].gender, utts[2].gender, utts[0].labels["nationality"]) == ("m", "f", "USA")
    assert issues.counts == {"unreadable": 1}


def test_path_lists(tmp_path):
    _audio(str(tmp_path / "wav" / "a.wav"), 1000)
    _audio(str(tmp_path / "wav" / "b.flac"), 2000)
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,speaker,gender,emotion\nwav/a.wav,s1,female,happy\nwav/b.flac,s2,,sad\n")
    utts = read_path_list(str(csv_path))
    assert [(u.utt_id, u.speaker, u.gender, u.labels) for u in utts] == [
        ("wav/a", "s1", "f", {"emotion": "happy"}), ("wav/b", "s2", None, {"emotion": "sad"})]
    assert utts[1].num_samples == 2000
    jl = tmp_path / "list.jsonl"
    jl.write_text(json.dumps({"path": "wav/a.wav", "utt_id": "x", "language": "tr", "octave": 3}) + "\n")
    (u,) = read_path_list(str(jl))
    assert (u.utt_id, u.language, u.labels) == ("x", "tr", {"octave": 3})
    tsv = tmp_path / "list.tsv"
    tsv.write_text("path\tspeaker\tgender\nwav/a.wav\ts1\tf\n")
    assert [(u.utt_id, u.speaker, u.gender) for u in read_path_list(str(tsv))] == [("wav/a", "s1", "f")]
    bad = tmp_path / "bad.csv"
    bad.write_text("file\nwav/a.wav\n")
    with pytest.raises(CorpusError, match="bad.csv: CSV/TSV needs a header row with a 'path' column"):
        read_path_list(str(bad))
    bad.write_text("path,gender\nwav/a.wav,x\n")
    with pytest.raises(CorpusError, match="bad.csv:2: gender 'x'"):
        read_path_list(str(bad))
    bad.write_text("path\nwav/missing.wav\n")
    with pytest.raises(AudioError, match="missing.wav: file does not exist"):
        read_path_list(str(bad))


def test_readers_cli(tmp_path):
    _audio(str(tmp_path / "wav" / "a.wav"), 1000)
    (tmp_path / "list.csv").write_text("path,speaker\nwav/a.wav,s1\n")
    out = tmp_path / "m.jsonl"
    res = _readers_cli("--format=list", f"--root={tmp_path / 'list.csv'}", f"--out={out}")
    assert "1 utterances; no data issues" in res.stdout
    assert [u.speaker for u in read_manifest(str(out))] == ["s1"]


def _readers_cli(*args: str, returncodes=(0,)):
    return run_python(["-m", "jaxneurons.data.readers", *args], returncodes=returncodes, timeout=120)


def test_readers_cli_reads_real_timit_overshoot_and_says_what_it_clipped(timit, tmp_path):
    d = os.path.join(timit, "TEST", "DR2", "MABC0")
    _lines(os.path.join(d, "SX9.PHN"), [(0, 1600, "h#"), (1600, 3201, "ao")])
    out = tmp_path / "m.jsonl"
    res = _readers_cli("--format=timit", f"--root={timit}", f"--out={out}")
    assert "2 utterances" in res.stdout
    assert "segment_end_clipped: 1 file(s), e.g." in res.stdout and "SX9.PHN: last phone segment" in res.stdout
    assert read_manifest(str(out))[1].phones[-1] == (1600, 3200, "aa")
    detail = json.loads((tmp_path / "m.data_issues.json").read_text())
    assert detail["counts"]["segment_end_clipped"] == 1 and "SX9.PHN" in detail["files"]["segment_end_clipped"][0]


def test_readers_cli_error_is_one_line(timit, tmp_path):
    _lines(os.path.join(timit, "TEST", "DR2", "MABC0", "SX9.PHN"), [(0, 1600, "h#"), (1600, 4000, "ao")])
    res = _readers_cli("--format=timit", f"--root={timit}", f"--out={tmp_path / 'm.jsonl'}", returncodes=(1,))
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "SX9.PHN: phone segment" in lines[0], res.stderr
    assert not (tmp_path / "m.jsonl").exists()
