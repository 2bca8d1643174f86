"""Study 3 (AAPE) launcher: helper units and a tiny end-to-end run (modularity: tests/test_study_modularity.py).

The launchers run as subprocesses (``python -m experiments.X``): every launcher defines absl flags such as
``--out``, and two of them in one process would clash.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxneurons.data import Utterance
from jaxneurons.studies.aape import shared_ratios
from jaxneurons.studies.corpora import Task, bin_edges, class_of, label_corpora, usable_tasks
from tests.helpers import TINY_MELHUBERT, run_python


def _utt(i: int, speaker: str, gender: str, pitch: int) -> Utterance:
    return Utterance(utt_id=f"{speaker}-{i}", path="/x.flac", speaker=speaker, gender=gender, language="en",
                     duration=1.0, sample_rate=16000, num_samples=16000, labels={"pitch_setting": pitch})


def test_task_parsing_and_bins():
    assert Task.parse("gender") == Task("gender", 0)
    t = Task.parse("pitch_setting/2")
    assert (t.key, t.bins, t.slug, t.spec) == ("pitch_setting", 2, "pitch_setting_q2", "pitch_setting/2")
    for bad in ("x/1", "x/a", "/2"):
        with pytest.raises(ValueError):
            Task.parse(bad)
    utts = [_utt(i, f"s{i}", "m", p) for i, p in enumerate([40, 45, 50, 60])]
    edges = bin_edges(utts, t)
    assert edges == [47.5]
    assert [class_of(u, t, edges) for u in utts] == ["q1", "q1", "q2", "q2"]
    assert class_of(utts[0], Task.parse("gender"), None) == "male"  # one spelling of gender classes


def test_label_corpora_keeps_corpora_apart():
    a = [_utt(0, "s0", "m", 40), _utt(1, "s1", "f", 60)]
    b = [_utt(0, "s0", "f", 40), _utt(1, "s1", "m", 60)]  # same ids as corpus A
    corpora = {"A": a, "B": b}
    tasks, edges, skipped = usable_tasks(corpora, {"A": ["gender", "language"], "B": ["gender"]}, a)
    assert [t.spec for t in tasks["A"]] == ["gender"] and "A.language" in skipped  # one language only
    utts, n = label_corpora(corpora, tasks, edges)
    assert n == {"A.gender": 2, "B.gender": 2}
    assert len({u.utt_id for u in utts}) == 4 and utts[2].speaker == "B/s0"
    assert [u.labels["A.gender"] for u in utts] == ["male", "female", None, None]
    assert [u.labels["B.gender"] for u in utts] == [None, None, "female", "male"]
    assert [u.labels["corpus"] for u in utts] == ["A", "A", "B", "B"]


def test_shared_ratios_identical_and_disjoint_sets():
    m = np.zeros((3, 200), bool)
    m[:, :10] = True
    other = np.zeros_like(m)
    other[:, 100:110] = True
    res = shared_ratios({"m": m, "f": other}, {"m": m.copy(), "f": other.copy()}, n_draws=200, seed=0)
    c = res["containment"]
    i_m, i_f = res["classes_a"].index("m"), res["classes_b"].index("f")
    assert c["observed"][i_m, res["classes_b"].index("m")] == 1.0
    assert c["observed"][i_m, i_f] == 0.0
    assert res["same_class"]["m"]["containment"]["p_value"] < 0.01
    assert res["same_class"]["m"]["containment"]["null_mean"] < 0.2
    assert res["same_class"]["f"]["iou"]["observed"] == 1.0


# ----------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from jaxneurons.models import build_model
    from jaxneurons.models.checkpoint import save_model

    return save_model(build_model(TINY_MELHUBERT, seed=3), str(tmp_path_factory.mktemp("model") / "tiny"))


def _launch(module: str, *args: str) -> None:
    run_python(["-m", module, *args])


def _load(out, name):
    with open(os.path.join(out, f"{name}.json")) as f:
        return json.load(f)


def _check_report(out):
    for f in ("run.json", "report.md", "report.html", "scan-trained/neurons.json", "scan-random-init/report.html"):
        assert os.path.exists(os.path.join(out, f)), f
    with open(os.path.join(out, "report.md")) as f:
        md = f.read()
    for line in md.splitlines():  # every figure the report links exists
        if line.startswith("!["):
            assert os.path.exists(os.path.join(out, line.split("](")[1].rstrip(")"))), line


def test_aape_launcher_smoke(tmp_path, tiny_model):
    out = str(tmp_path / "aape")
    _launch("experiments.aape", f"--out={out}", f"--model={tiny_model}", "--num_speakers=4", "--minutes=0.8",
            "--tasks=gender,speaker,pitch_setting/2", "--shared_tasks=gender", "--random_controls=1",
            "--probe_epochs=2", "--probe_min_steps=2", "--probe_bootstrap_draws=20", "--null_draws=20",
            "--batch_size=8", "--aape_top_rate=0.05")
    _check_report(out)
    run = _load(out, "run")
    assert set(run["manifests"]) == {"A", "B"} and run["flags"]["aape"]["top_rate"] == 0.05
    coverage = _load(out, "coverage")
    assert set(coverage) == {"trained", "random-init"}
    for model, rows in coverage.items():
        for row in rows:
            masks = np.load(os.path.join(out, "arrays", f"{model}__{row['task'].replace('.', '_')}__class_masks.npy"))
            assert masks.shape[0] == row["classes"] and masks.shape[1:] == (2, 64)
            assert row["coverage"] == pytest.approx(masks.reshape(len(masks), -1).any(1).mean())
            assert row["per_layer"] == masks.any(0).sum(1).tolist()
            # AAPE keeps round(top_rate * L * D) neurons; each kept neuron serves >= 1 class (bar == activation bar)
            assert row["selected"] == round(0.05 * 128) and row["class_specific_union"] <= row["selected"]
    shared = _load(out, "shared")["gender"]
    assert shared["classes_a"] == ["female", "male"] and shared["classes_b"] == ["female", "male"]
    obs = np.array(shared["containment"]["observed"], float)
    assert obs.shape == (2, 2) and np.all((np.isnan(obs)) | ((obs >= 0) & (obs <= 1)))
    ablation = _load(out, "ablation")
    assert set(ablation) == {"trained:A.gender", "trained:A.speaker", "trained:A.pitch_setting_q2"}
    for task, ab in ablation.items():
        if "error" in ab:
            continue
        key = task.split(":", 1)[1]
        # one probe suite: within-speaker split for speaker ID, speaker-disjoint for the other tasks
        assert ab["probe_task"] == ("speaker" if key == "A.speaker" else key)
        assert ab["split"].startswith("within_speaker" if key == "A.speaker" else "speaker_disjoint")
        assert ab["split_sizes"]["test"] > 0
        assert set(ab["classes"]) == set(_classes(out, key.removeprefix("A.")))
        for entry in ab["classes"].values():
            if "skipped" not in entry:
                assert 0.0 <= entry["own_random"] <= 1.0 and 0.0 <= entry["own_ablated"] <= 1.0
    assert any("skipped" not in e for ab in ablation.values() if "error" not in ab for e in ab["classes"].values())
    assert set(_load(out, "twin_overlap")) == {f"A.{t}:{c}" for t in ("gender", "speaker", "pitch_setting_q2")
                                               for c in _classes(out, t)}


def _classes(out, task):
    with open(os.path.join(out, "scan-trained", "neurons.json")) as f:
        return list(json.load(f)[f"aape_A.{task}"])


def test_modularity_with_one_manifest_is_an_error_before_any_work(tmp_path):
    import dataclasses

    from jaxneurons.studies import modularity

    config = dataclasses.replace(modularity.ModularityConfig(), manifest=str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="give manifest_b with manifest"):
        modularity.corpora(config, str(tmp_path))  # the manifest is never read
