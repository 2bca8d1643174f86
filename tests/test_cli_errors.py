"""Bad settings fail at once with one line naming the setting (jaxneurons.errors), not minutes into a run."""

from __future__ import annotations

import pytest

from jaxneurons.errors import SettingError, error_line, is_user_error
from jaxneurons.pipeline.scan import ScanOptions
from tests.helpers import run_python


@pytest.mark.parametrize(("field", "value"), [("batch_size", 0), ("pad_seconds", 0.0), ("examples", -1)])
def test_scan_options_refuse_unusable_pass_settings(field, value):
    # the batch loader would refuse these too, but only after planning (F0, i-vectors over the whole corpus)
    with pytest.raises(SettingError, match=f"{field} must be") as err:
        ScanOptions(**{field: value})
    assert is_user_error(err.value) and "\n" not in error_line(err.value)
    ScanOptions(batch_size=1, pad_seconds=1 / 16000, examples=0)  # the smallest usable values pass


def test_train_with_a_wrong_init_path_says_it_is_not_a_model(tmp_path):
    res = run_python(["-m", "jaxneurons.cli", "train", f"--init={tmp_path / 'typo'}",
                      f"--manifest={tmp_path / 'm.jsonl'}", f"--out={tmp_path / 'out'}"], returncodes=None, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'typo'}: not a jaxneurons model directory " \
        "(no config.json)", res.stderr  # not "the model stores no target recipe"
    assert not (tmp_path / "out.work").exists()  # nothing created before the check


def test_train_stops_at_an_unusable_file_with_one_line(tmp_path):
    import numpy as np
    import soundfile as sf

    from jaxneurons.data import Utterance, write_manifest

    good, bad = str(tmp_path / "good.wav"), str(tmp_path / "nan.wav")
    sf.write(good, np.zeros(8000, np.float32), 16000)
    sf.write(bad, np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    manifest = write_manifest(str(tmp_path / "m.jsonl"), [
        Utterance(name, path, "s0", None, "en", 0.5, 16000, 8000) for name, path in (("a", good), ("b", bad))])
    res = run_python(["-m", "jaxneurons.cli", "train", f"--manifest={manifest}", f"--out={tmp_path / 'out'}",
                      "--preset=tiny", "--on_error=raise"], returncodes=None, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"error: {bad}: 8000 NaN/inf samples", res.stderr


def test_pitch_on_a_corpus_without_voiced_frames_is_a_setting_error():
    import numpy as np

    from jaxneurons.pipeline.labels import PhoneInventory, UtteranceLabels, pitch_edges_from_data

    inventory = PhoneInventory.of("en39")
    voiced = inventory.voiced_ids[0]
    phone = np.full(10, voiced, np.int32)
    unvoiced = UtteranceLabels(phone, np.zeros(10, bool), 0, np.zeros(10, np.float32))  # F0 0: e.g. noise
    with pytest.raises(SettingError, match="pitch: no voiced frames .* 1 utterances.*leave 'pitch' out"):
        pitch_edges_from_data([unvoiced], inventory)
    f0 = np.linspace(100, 200, 10).astype(np.float32)
    edges = pitch_edges_from_data([UtteranceLabels(phone, np.zeros(10, bool), 0, f0)], inventory)
    np.testing.assert_allclose(edges, np.percentile(f0, [33, 66]))  # the study rule: 33rd / 66th


def test_heads_with_a_missing_manifest_is_one_line_before_loading_the_model(tmp_path):
    missing = tmp_path / "missing.jsonl"
    res = run_python(["-m", "jaxneurons.cli", "heads", f"--manifest={missing}", f"--out={tmp_path / 'out'}"],
                     returncodes=None, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines() == [f"error: {missing}: No such file or directory"], res.stderr


def test_heads_on_error_raise_stops_with_one_line_and_record_leaves_the_file_out(tmp_path):
    import json

    import numpy as np
    import soundfile as sf

    from jaxneurons.data import Utterance, write_manifest
    from jaxneurons.models import build_model
    from jaxneurons.models.checkpoint import save_model
    from tests.helpers import TINY_MELHUBERT

    save_model(build_model(TINY_MELHUBERT, seed=0), str(tmp_path / "model"))
    rng = np.random.default_rng(0)
    utts = []
    for i in range(3):
        path = str(tmp_path / f"u{i}.wav")
        sf.write(path, (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
        utts.append(Utterance(f"u{i}", path, "s0", None, "en", 0.5, 16000, 8000))
    bad = str(tmp_path / "nan.wav")
    sf.write(bad, np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    manifest = write_manifest(str(tmp_path / "m.jsonl"),
                              [utts[0], Utterance("nan", bad, "s0", None, "en", 0.5, 16000, 8000), *utts[1:]])
    common = ["-m", "jaxneurons.cli", "heads", f"--model={tmp_path / 'model'}", f"--manifest={manifest}",
              "--noablation", "--batch_size=2"]
    res = run_python([*common, f"--out={tmp_path / 'raised'}", "--on_error=raise"], returncodes=None, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"error: {bad}: 8000 NaN/inf samples", res.stderr
    assert not (tmp_path / "raised").exists()

    res = run_python([*common, f"--out={tmp_path / 'recorded'}", "--on_error=record"], timeout=300)
    assert "heads finished: 3 utterances" in res.stdout and bad in res.stderr
    with open(tmp_path / "recorded" / "run.json") as f:
        decoding = json.load(f)["data_decoding"]
    assert decoding["utterances_used"] == 3 and decoding["utterances_total"] == 4
    assert [x["path"] for x in decoding["left_out"]] == [bad]


def test_study_setup_screens_every_file_with_the_on_error_policy(tmp_path):
    import numpy as np
    import soundfile as sf

    from jaxneurons.data import AudioError, Utterance, write_manifest
    from jaxneurons.studies.common import DataConfig, load_setup

    good = []
    for i in range(2):
        path = str(tmp_path / f"u{i}.wav")
        sf.write(path, np.zeros(8000, np.float32), 16000)
        good.append(Utterance(f"u{i}", path, "s0", None, "en", 0.5, 16000, 8000))
    bad = str(tmp_path / "nan.wav")
    sf.write(bad, np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    manifest = write_manifest(str(tmp_path / "m.jsonl"),
                              [good[0], Utterance("nan", bad, "s0", None, "en", 0.5, 16000, 8000), good[1]])
    with pytest.raises(AudioError, match="NaN"):
        load_setup(DataConfig(manifest=manifest), str(tmp_path / "raised"))
    setup = load_setup(DataConfig(manifest=manifest, on_error="record"), str(tmp_path / "recorded"))
    assert [u.utt_id for u in setup.utts] == ["u0", "u1"] and setup.decoded.utts == setup.utts
    assert [x.path for x in setup.decoded.left_out] == [bad] and "used 2 of 3 utterances" in setup.description


def test_aape_and_modularity_corpora_are_screened_with_the_on_error_policy(tmp_path):
    import dataclasses

    import numpy as np
    import soundfile as sf

    from jaxneurons.data import AudioError, Utterance, write_manifest
    from jaxneurons.studies import modularity
    from jaxneurons.studies.corpora import make_corpora

    def manifest(name, bad_too):
        utts = []
        for i in range(2):
            path = str(tmp_path / f"{name}{i}.wav")
            sf.write(path, np.zeros(8000, np.float32), 16000)
            utts.append(Utterance(f"{name}{i}", path, "s0", None, "en", 0.5, 16000, 8000))
        if bad_too:
            bad = str(tmp_path / f"{name}-nan.wav")
            sf.write(bad, np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
            utts.insert(1, Utterance(f"{name}-nan", bad, "s0", None, "en", 0.5, 16000, 8000))
        return write_manifest(str(tmp_path / f"{name}.jsonl"), utts)

    a, b = manifest("a", bad_too=False), manifest("b", bad_too=True)
    kwargs = dict(want_b=True, num_speakers=2, minutes=0.1, languages=("en",), seed=0, seed_b=1)
    with pytest.raises(AudioError, match="b-nan.wav"):
        make_corpora(str(tmp_path), a, b, **kwargs)
    got = make_corpora(str(tmp_path), a, b, **kwargs, on_error="record")
    assert [u.utt_id for u in got["A"][1]] == ["a0", "a1"] and [u.utt_id for u in got["B"][1]] == ["b0", "b1"]
    config = dataclasses.replace(modularity.ModularityConfig(), manifest=a, manifest_b=b)
    with pytest.raises(AudioError, match="b-nan.wav"):
        modularity.corpora(config, str(tmp_path))
    parts = modularity.corpora(dataclasses.replace(config, on_error="record"), str(tmp_path))
    assert [u.utt_id for u in parts["B"][1]] == ["b0", "b1"]
    assert [x["path"] for x in parts["B"][1].decoding["left_out"]] == [str(tmp_path / "b-nan.wav")]
    assert parts["A"][1].decoding["left_out"] == [] and "used 2 of 3 utterances" in parts["B"][1].summary
