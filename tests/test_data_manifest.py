"""Manifest schema: round trip, atomic write, and one clear error per kind of bad line."""

import json
import os
from pathlib import Path

import pytest

from jaxneurons.data.manifest import ManifestError, Utterance, manifest_fingerprint, read_manifest, write_manifest


def _utt(**kw):
    base = dict(
        utt_id="u1", path="/abs/a.flac", speaker="s1", gender="f", language="en", duration=1.0,
        sample_rate=16000, num_samples=16000, phones=((0, 8000, "sil"), (8000, 16000, "aa")), phone_set="en39",
        words=((8000, 16000, "ah"),), labels={"dataset": "x", "pitch": 3}, text="ah",
    )
    base.update(kw)
    return Utterance(**base)


def _line(**kw):
    obj = {
        "manifest_version": 1, "utt_id": "u1", "path": "a.flac", "speaker": "s", "gender": "m", "language": "en",
        "duration": 1.0, "sample_rate": 16000, "num_samples": 16000, "phones": [[0, 16000, "sil"]],
    }
    obj.update(kw)
    return obj


def _write_lines(tmp_path, objs):
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return str(p)


def test_round_trip_relative_paths(tmp_path):
    audio = str(tmp_path / "audio" / "a.flac")
    utts = [_utt(path=audio), _utt(utt_id="u2", path="/elsewhere/b.flac", gender=None, phones=None, phone_set=None)]
    out = write_manifest(str(tmp_path / "m.jsonl"), utts)
    lines = Path(out).read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["path"] == os.path.join("audio", "a.flac")  # under the manifest dir: relative
    assert json.loads(lines[1])["path"] == "/elsewhere/b.flac"
    back = read_manifest(out)
    assert back == utts
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".manifest-")]  # no temp file left
    assert manifest_fingerprint(back) == manifest_fingerprint(utts)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (_line(extra=1), "unknown keys ['extra']"),
        (_line(manifest_version=2), "manifest_version"),
        ({k: v for k, v in _line().items() if k != "speaker"}, "missing keys ['speaker']"),
        (_line(phones=[[0, 16001, "sil"]]), "ends after the audio"),
        (_line(phones=[[0, 9000, "sil"], [8000, 16000, "aa"]]), "sorted and non-overlapping"),
        (_line(phones=[[8000, 16000, "aa"], [0, 8000, "sil"]]), "sorted and non-overlapping"),
        (_line(phones=[[0, 16000, "xx"]]), "label 'xx' is not in phone set 'en39'"),
        (_line(phones=[[0, 16000, "a"]], language="de"), "no default set"),
        (_line(phones=[[0, 0, "sil"]]), "empty or negative"),
        (_line(phones=[[0.5, 10, "sil"]]), "integer samples"),
        (_line(gender="x"), "gender"),
        (_line(duration=2.0), "duration"),
        (_line(words=[[0, 20000, "w"]]), "words[0]"),
        (_line(labels={"a": [1]}), "JSON scalar"),
        (_line(phone_set="nope"), "unknown phone_set"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, obj, message):
    path = _write_lines(tmp_path, [_line(utt_id="ok"), obj])
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert f"{path}:2" in str(err.value)
    assert message in str(err.value)


def test_duplicate_ids_and_bad_json(tmp_path):
    path = _write_lines(tmp_path, [_line(), _line()])
    with pytest.raises(ManifestError, match="duplicate utt_id 'u1'"):
        read_manifest(path)
    p = tmp_path / "bad.jsonl"
    p.write_text('{"manifest_version": 1,\n', encoding="utf-8")
    with pytest.raises(ManifestError, match="bad.jsonl:1: not valid JSON"):
        read_manifest(str(p))


def test_write_validates_and_leaves_old_file(tmp_path):
    out = write_manifest(str(tmp_path / "m.jsonl"), [_utt()])
    before = Path(out).read_bytes()
    with pytest.raises(ManifestError, match="ends after the audio"):
        write_manifest(out, [_utt(phones=((0, 20000, "sil"),))])
    assert Path(out).read_bytes() == before  # a failed write never touches the existing manifest
