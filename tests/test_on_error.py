"""Unusable audio found during a scan: on_error="record" leaves it out and says so, "raise" stops with one line.

A manifest that mixes good files with a NaN file, a truncated file and a file that is not audio (each passes the
header-only readers, or was replaced after the manifest was written) is scanned end to end.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from jaxneurons.data import AudioError, DataIssues, Utterance, write_manifest
from jaxneurons.data.decoded import DecodedDataset, DecodeOptions
from jaxneurons.errors import error_line, is_user_error, user_errors
from jaxneurons.models import build_model
from jaxneurons.pipeline.scan import ScanOptions, plan_scan, scan_statistics
from jaxneurons.results import ResultsDir, load_results
from tests.helpers import TINY_MELHUBERT, run_python

TINY = TINY_MELHUBERT
OPTIONS = ScanOptions(properties=("phone_type", "gender", "aape_gender"), batch_size=2, checkpoint_every=1)
PHONES = ("sil", "aa", "s", "iy", "m", "t", "sil")
BAD = ("nan", "truncated", "not_audio")


def _utt(path: str, utt_id: str, n: int, gender: str) -> Utterance:
    step = n // len(PHONES)
    phones = tuple((i * step, (i + 1) * step, p) for i, p in enumerate(PHONES))
    return Utterance(utt_id=utt_id, path=path, speaker=f"spk_{gender}{utt_id[-1]}", gender=gender, language="en",
                     duration=n / 16000, sample_rate=16000, num_samples=n, phones=phones, phone_set="en39")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """(manifest path, utterances, bad paths): 6 good files and the 3 bad kinds, interleaved."""
    tmp_path = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    utts, bad_paths = [], {}
    for i in range(9):
        n = int(rng.integers(9000, 16000))
        path = str(tmp_path / "wav" / f"u{i}.wav")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        x = (0.1 * rng.standard_normal(n)).astype(np.float32)
        kind = BAD[i // 3] if i % 3 == 1 else None
        if kind == "nan":
            x[100:200] = np.nan
            sf.write(path, x, 16000, subtype="FLOAT")
        elif kind == "truncated":
            sf.write(path, x, 16000, subtype="PCM_16")
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) - 4000)
        elif kind == "not_audio":
            with open(path, "w") as f:
                f.write("this is a transcript, not audio\n")
        else:
            sf.write(path, x, 16000, subtype="PCM_16")
        if kind:
            bad_paths[kind] = path
        utts.append(_utt(path, f"utt{i}", n, "mf"[i % 2]))
    manifest = write_manifest(str(tmp_path / "manifest.jsonl"), utts)
    return manifest, utts, bad_paths


@pytest.fixture(scope="module")
def good_only_stats(mixed):
    """Statistics of a manifest holding only the good utterances (what a record scan must reproduce)."""
    _, utts, bad = mixed
    good = [u for u in utts if u.path not in bad.values()]
    return _scan(good, DecodedDataset(good)).to_numpy()


def _scan(utts, decoded, checkpoint=None):
    model = build_model(TINY, seed=0)
    plan = plan_scan(model, decoded.utts, OPTIONS, decoded.issues, decoded=decoded)
    return scan_statistics(model, decoded.utts, plan, checkpoint_path=checkpoint, issues=decoded.issues,
                           decoded=decoded, progress=False)


def test_record_leaves_bad_files_out_and_names_them_in_the_results(mixed, good_only_stats, tmp_path):
    _, utts, bad = mixed
    issues = DataIssues()
    decoded = DecodedDataset(utts, issues=issues, on_error="record")
    with pytest.raises(ValueError, match="pass DecodedDataset.utts"):
        plan_scan(build_model(TINY), utts, OPTIONS, issues, decoded=decoded)  # the manifest's list is refused
    stats = _scan(utts, decoded)
    assert [u.utt_id for u in decoded.utts] == ["utt0", "utt2", "utt3", "utt5", "utt6", "utt8"]
    assert {x.kind: x.path for x in decoded.left_out} == {"non_finite": bad["nan"], "truncated": bad["truncated"],
                                                          "unreadable": bad["not_audio"]}
    # the statistics are those of a manifest of the good utterances only
    arrays = stats.to_numpy()
    assert arrays.keys() == good_only_stats.keys()
    for name, value in arrays.items():
        np.testing.assert_array_equal(value, good_only_stats[name], err_msg=name)
    with ResultsDir(str(tmp_path / "results"), "scan") as res:
        res.run["data"] = decoded.record()
        res.run["data_issues"] = issues.as_dict()
        res.save_json("report_line", {"text": decoded.summary()})
    run = load_results(str(tmp_path / "results"))
    assert run["data"]["utterances_used"] == 6 and run["data"]["utterances_total"] == 9
    assert {x["path"] for x in run["data"]["left_out"]} == set(bad.values())
    assert all(x["error"].startswith(x["path"] + ": ") for x in run["data"]["left_out"])
    assert run["data_issues"]["counts"] == {"non_finite": 1, "truncated": 1, "unreadable": 1}
    line = decoded.summary()
    assert line.startswith("used 6 of 9 utterances; 3 left out") and all(p in line for p in bad.values())


def test_resumed_record_scan_gives_the_same_statistics(mixed, good_only_stats, tmp_path):
    _, utts, _ = mixed
    reference = good_only_stats  # = an uninterrupted record scan (test above)

    class KilledError(Exception):
        pass

    ckpt = str(tmp_path / "stats.npz")
    first = DecodedDataset(utts, on_error="record", progress=False)
    served = {"n": 0}
    audio = first.audio

    def dying_audio(index):  # the scan is killed while loading its third batch
        served["n"] += 1
        if served["n"] > 4:
            raise KilledError()
        return audio(index)

    first.audio = dying_audio
    with pytest.raises(KilledError):
        _scan(utts, first, ckpt)
    assert os.path.exists(ckpt)
    again = DecodedDataset(utts, on_error="record", progress=False)  # a new process screens again: same list
    loads = []
    again_audio = again.audio
    again.audio = lambda index: loads.append(index) or again_audio(index)
    resumed = _scan(utts, again, ckpt).to_numpy()
    assert 0 < len(loads) < len(again.utts)  # it resumed: the batches in the checkpoint were not loaded again
    assert reference.keys() == resumed.keys()
    for name in reference:
        np.testing.assert_array_equal(resumed[name], reference[name], err_msg=name)


def test_raise_stops_at_the_first_bad_file(mixed):
    _, utts, bad = mixed
    decoded = DecodedDataset(utts)  # on_error="raise" is the default
    with pytest.raises(AudioError, match=r"u1.wav: 100 NaN/inf samples") as err:
        decoded.screen(progress=False)
    assert err.value.path == bad["nan"] and is_user_error(err.value)
    assert DecodeOptions().on_error == "raise"
    with pytest.raises(ValueError, match="on_error must be one of"):
        DecodeOptions(on_error="skip")


def test_stale_manifest_length_is_a_recorded_audio_error(mixed):
    _, utts, _ = mixed
    stale = [utts[0].__class__(**{**utts[0].__dict__, "num_samples": utts[0].num_samples + 1,
                                  "duration": (utts[0].num_samples + 1) / 16000}), utts[2]]
    decoded = DecodedDataset(stale, on_error="record", progress=False)
    assert [u.utt_id for u in decoded.utts] == ["utt2"]
    assert decoded.left_out[0].kind == "length_mismatch" and "the manifest is stale" in decoded.left_out[0].error


def test_user_errors_wrapper_prints_one_line_and_exits_1(capsys):
    def main(_):
        raise AudioError("/data/x.wav", "non_finite", "3 NaN/inf samples\nsecond line")

    with pytest.raises(SystemExit) as exit_info:
        user_errors(main)([])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: /data/x.wav: 3 NaN/inf samples | second line\n"
    assert error_line(FileNotFoundError(2, "No such file or directory", "/m.jsonl")) == (
        "error: /m.jsonl: No such file or directory")

    def buggy(_):
        raise ZeroDivisionError("a bug keeps its traceback")

    with pytest.raises(ZeroDivisionError):
        user_errors(buggy)([])


def _cli(*args, cwd):
    return run_python(["-m", *args], returncodes=None, timeout=300, cwd=cwd)  # one CPU device, as a user has


def _one_error_line(res) -> str:
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    # (the scan's own progress line, written with "\r" even when stderr is not a terminal, may precede it)
    errors = [line[line.index("error: "):] for line in res.stderr.splitlines() if "error: " in line]
    assert len(errors) == 1, res.stderr
    assert res.stderr.rstrip().endswith(errors[0]), res.stderr
    return errors[0]


def test_cli_scan_under_raise_stops_with_one_clean_line(mixed, tmp_path):
    from jaxneurons.models.checkpoint import save_model

    manifest, _, bad = mixed
    model_dir = save_model(build_model(TINY), str(tmp_path / "model"))
    res = _cli("jaxneurons.cli", "scan", f"--model={model_dir}", f"--manifest={manifest}",
               f"--out={tmp_path / 'out'}", "--properties=phone_type", "--batch_size=2", cwd=str(tmp_path))
    line = _one_error_line(res)
    assert any(f"{p}: " in line for p in bad.values()), line
    assert not (tmp_path / "out").exists()


def test_cli_scan_under_record_finishes_and_names_every_bad_file(mixed, tmp_path):
    from jaxneurons.models.checkpoint import save_model

    manifest, utts, bad = mixed
    model_dir = save_model(build_model(TINY), str(tmp_path / "model"))
    out = tmp_path / "out"
    res = _cli("jaxneurons.cli", "scan", f"--model={model_dir}", f"--manifest={manifest}", f"--out={out}",
               "--properties=phone_type", "--batch_size=2", "--on_error=record", cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    record = load_results(str(out))["flags"]["data_decoding"]
    assert record["utterances_total"] == len(utts) and record["utterances_used"] == len(utts) - len(bad)
    assert sorted(e["path"] for e in record["left_out"]) == sorted(bad.values())
    assert f"used {len(utts) - len(bad)} of {len(utts)}" in res.stdout + res.stderr


def test_cli_missing_manifest_is_one_line(tmp_path):
    res = _cli("jaxneurons.cli", "scan", f"--manifest={tmp_path / 'nope.jsonl'}", f"--out={tmp_path / 'out'}",
               cwd=str(tmp_path))
    assert "nope.jsonl" in _one_error_line(res)


def test_cli_convert_bad_source_is_one_line(tmp_path):
    (tmp_path / "hf").mkdir()
    res = _cli("checkpoints_convert.convert", f"--source={tmp_path / 'hf'}", f"--out={tmp_path / 'out'}",
               cwd=str(tmp_path))
    assert "hf" in _one_error_line(res)


def test_manifest_error_in_readers_list_is_one_line(tmp_path):
    (tmp_path / "list.jsonl").write_text(json.dumps({"utt_id": "a"}) + "\n")
    res = _cli("jaxneurons.data.readers", "--format=list", f"--root={tmp_path / 'list.jsonl'}",
               f"--out={tmp_path / 'm.jsonl'}", cwd=str(tmp_path))
    assert "list.jsonl:1: no 'path'" in _one_error_line(res)


def test_cli_export_missing_model_is_one_line(tmp_path):
    res = _cli("checkpoints_convert.export_hf", f"--model={tmp_path / 'no_model'}", f"--out={tmp_path / 'out'}",
               cwd=str(tmp_path))
    assert "no_model" in _one_error_line(res)


def test_cli_bad_flag_value_is_one_line(tmp_path):
    res = _cli("jaxneurons.cli", "scan", "--on_error=bogus", f"--manifest={tmp_path / 'm.jsonl'}",
               f"--out={tmp_path / 'out'}", cwd=str(tmp_path))
    line = _one_error_line(res)
    assert "--on_error=bogus" in line and "raise|record" in line and "FATAL" not in res.stderr, res.stderr


def test_study_launcher_missing_manifest_is_one_plain_line(tmp_path):
    missing = tmp_path / "nope.jsonl"
    res = _cli("experiments.property_neurons", f"--manifest={missing}", f"--out={tmp_path / 'out'}",
               cwd=os.getcwd())  # experiments/ is not installed: run from the repository root
    assert _one_error_line(res) == f"error: {missing}: No such file or directory"  # not "[Errno 2] ..."
