"""End to end: synthetic corpus -> scan (batched, padded) -> statistics equal per-utterance counting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxneurons.data import load_audio
from jaxneurons.features.ivector import IVectorConfig
from jaxneurons.models import build_model, forward_with_captures
from jaxneurons.pipeline.properties import AAPE, Gender, PhoneType, Pitch, PropertyNeuronConfig, SpeakerNeuronConfig
from jaxneurons.pipeline.scan import ScanOptions, plan_scan, scan, scan_statistics, score
from jaxneurons.pipeline.scan_report import write_scan_results
from jaxneurons.results import ResultsDir, load_results
from jaxneurons.stats.spec import topk_size
from tests.helpers import TINY_CORPUS_SPEAKERS, run_python, tiny_melhubert

TINY = tiny_melhubert(intermediate_size=100)


@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    return tiny_corpus


def test_scan_counts_equal_per_utterance_reference(corpus, tmp_path):
    model = build_model(TINY, seed=0)
    options = ScanOptions(properties=("phone_type", "gender", "pitch", "aape_speaker"), batch_size=3)
    plan = plan_scan(model, corpus, options)
    stats = scan_statistics(model, corpus, plan, checkpoint_path=str(tmp_path / "stats.npz"), progress=False)
    arrays = stats.to_numpy()
    n_ph = plan.inventory.size
    k = topk_size(TINY.intermediate_size, 0.01)
    ref_topk = np.zeros((TINY.num_hidden_layers, n_ph, TINY.intermediate_size))
    ref_pos = np.zeros((TINY.num_hidden_layers, TINY_CORPUS_SPEAKERS, TINY.intermediate_size))
    ref_frames = np.zeros(n_ph)
    for i, u in enumerate(corpus):
        audio = load_audio(u.path)[None]
        _, ffn, _ = forward_with_captures(model, audio)
        lab = plan.utt_labels[i]
        sel = lab.middle & (lab.phone >= 0)
        speaker = plan.state("aape_speaker")["classes"][i]
        for layer, h in enumerate(ffn):
            h = np.asarray(h[0])
            assert h.shape[0] == len(lab.phone)
            top = np.argsort(-np.abs(h), axis=1, kind="stable")[:, :k]
            for t in np.flatnonzero(sel):
                ref_topk[layer, lab.phone[t], top[t]] += 1
            ref_pos[layer, speaker] += (h > 0).sum(axis=0)
        np.add.at(ref_frames, lab.phone[sel], 1)
    np.testing.assert_array_equal(arrays["phone/frames"], ref_frames)
    # Batched (padded) vs one-at-a-time forwards differ by float rounding: allow rare top-k swaps at ties.
    assert np.abs(arrays["phone/topk"] - ref_topk).sum() <= 0.01 * ref_topk.sum()
    assert np.abs(arrays["aape_speaker/positive"] - ref_pos).sum() <= 1e-3 * ref_pos.sum()
    assert arrays["gender_phone/frames"].sum() == ref_frames.sum()  # every speaker has a gender
    assert 0 < arrays["pitch_phone/frames"].sum() <= ref_frames.sum()


def test_scan_results_directory(corpus, tmp_path):
    model = build_model(TINY, seed=1)
    options = ScanOptions(properties=("phone_type", "gender", "aape_gender", "selective_speaker"),
                          property=PropertyNeuronConfig(frames="all"), batch_size=4)
    plan = plan_scan(model, corpus, options)
    stats = scan_statistics(model, corpus, plan, progress=False)
    scored = score(stats, plan)
    with ResultsDir(str(tmp_path / "res"), "scan", flags={"test": True}) as res:
        summary, report = write_scan_results(res, plan, stats, scored)
        report.write(res.tmp)
    run = load_results(str(tmp_path / "res"))
    assert run["kind"] == "scan"
    neurons = json.loads((tmp_path / "res" / "neurons.json").read_text())
    assert set(neurons) == {"phone_type", "gender", "aape_gender", "selective_speaker"}
    assert set(neurons["phone_type"]) == {"vowel", "voiced", "unvoiced"}
    assert set(neurons["phone_type"]["vowel"]) == {"layers.0.ffn", "layers.1.ffn"}
    # AAPE keeps ~1 % of all neurons, each assigned to the classes it is specific to.
    # One spelling of the gender groups in every result: male / female (property neurons and AAPE classes).
    assert set(neurons["gender"]) == set(neurons["aape_gender"]) == {"male", "female"}
    assert summary["totals"]["aape_gender"]["male"] + summary["totals"]["aape_gender"]["female"] >= 1
    assert summary["class_vocabularies"]["aape_gender"]["labels"] == ["female", "male"]
    first = plan.state("selective_speaker")["vocab"].label(0)
    assert scored["selective_speaker"]["scores"][first].shape == (2, 100)
    assert (tmp_path / "res" / "report.html").exists() and (tmp_path / "res" / "figures" / "phone_type.png").exists()


def test_speaker_property_cells_combine_ivector_groups_and_ssl_clusters(corpus):
    model = build_model(TINY, seed=2)
    options = ScanOptions(properties=("speaker",), batch_size=4,
                          speaker=SpeakerNeuronConfig(ivector=IVectorConfig(num_components=4, ivector_dim=4),
                                                      num_ssl_clusters=3))
    plan = plan_scan(model, corpus, options)
    state = plan.state("speaker")
    assert state["ssl_layer"] == 2 and state["ssl_centroids"].shape == (3, TINY.hidden_size)
    assert set(np.unique(state["speaker_groups"])) <= {0, 1}
    stats = scan_statistics(model, corpus, plan, progress=False)
    frames = stats.to_numpy()["speaker_cell/frames"]
    assert frames.shape == (6,)
    # Every valid frame is counted once, in the cell of its utterance's i-vector group.
    total = sum(int(model.num_frames(u.num_samples)) for u in corpus)
    assert frames.sum() == total
    for g in (0, 1):
        expected = sum(int(model.num_frames(u.num_samples))
                       for u, grp in zip(corpus, state["speaker_groups"], strict=True) if grp == g)
        assert frames[g * 3:(g + 1) * 3].sum() == expected
    scored = score(stats, plan)
    assert set(scored["speaker"]["groups"]) == {"ivector_cluster0", "ivector_cluster1"}
    assert set(scored["ssl_cluster"]["groups"]) == {"ssl_cluster0", "ssl_cluster1", "ssl_cluster2"}


def test_scan_entry_point_properties_as_objects_or_names(corpus, tmp_path):
    """``scan`` with property objects equals ``scan`` with their names; it writes a results directory."""
    model = build_model(TINY, seed=3)
    by_name = scan(model, corpus, ["phone_type", "gender", "pitch", "aape_gender"],
                   options=ScanOptions(batch_size=4), progress=False)
    out = str(tmp_path / "res")
    cfg = PropertyNeuronConfig()
    by_object = scan(model, corpus, [PhoneType(cfg), Gender(cfg), Pitch(cfg), AAPE("gender")],
                     options=ScanOptions(batch_size=4), out_dir=out, progress=False)
    assert by_object.neuron_sets == by_name.neuron_sets
    assert json.loads((tmp_path / "res" / "neurons.json").read_text()) == by_name.neuron_sets
    for key, value in by_name.stats.to_numpy().items():
        np.testing.assert_array_equal(by_object.stats.to_numpy()[key], value, err_msg=key)
    assert not (tmp_path / "res.work").exists()  # checkpoints removed once the results are committed
    masks = by_object.masks("phone_type")
    assert set(masks) == {"vowel", "voiced", "unvoiced"} and masks["vowel"].shape == (2, 100)
    # different parameters are a different scan: sigma changes which neurons are kept
    loose = scan(model, corpus, [PhoneType(PropertyNeuronConfig(sigma=0.1))], options=ScanOptions(batch_size=4),
                 progress=False)
    strict = sum(len(v) for g in by_name.neuron_sets["phone_type"].values() for v in g.values())
    assert sum(len(v) for g in loose.neuron_sets["phone_type"].values() for v in g.values()) > strict


def test_a_new_property_is_one_class(corpus):
    """The scan dispatches on the protocol, not on names: a property defined here runs through it."""
    import dataclasses

    from jaxneurons.pipeline.properties import Property
    from jaxneurons.stats.spec import ConditionSpec

    @dataclasses.dataclass(frozen=True)
    class Parity(Property):
        name = "parity"

        def conditions(self, state):
            return [ConditionSpec("parity", 2, None, ("positive",))]

        def frame_labels(self, state, rows):
            return {"parity": np.where(rows.utt_indices >= 0, rows.utt_indices % 2, -1).astype(np.int32)}

        def score(self, state, stats, widths):
            frames = stats.to_numpy()["parity/frames"]
            return {"parity": {"groups": {}, "frames": frames}}

    model = build_model(TINY, seed=4)
    result = scan(model, corpus, [Parity(), "phone_type"], options=ScanOptions(batch_size=3), progress=False)
    n = [int(model.num_frames(u.num_samples)) for u in corpus]
    assert result.scored["parity"]["frames"].tolist() == [sum(n[0::2]), sum(n[1::2])]
    assert set(result.neuron_sets) == {"parity", "phone_type"}


def test_unknown_property_names_fail_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown property 'aape:gender'.*phone_type"):
        ScanOptions(properties=("aape:gender",))
    with pytest.raises(ValueError, match="needs a label"):
        ScanOptions(properties=("aape_",))
    with pytest.raises(ValueError, match="pitch_edges"):
        PropertyNeuronConfig(pitch_edges=(180.0, 120.0))


def test_scan_command_exposes_every_scan_option():
    """``jaxneurons scan --help`` lists a flag for every ScanOptions field (nested configs as PREFIX_ flags)."""
    import dataclasses

    done = run_python(["-m", "jaxneurons.cli", "scan", "--help"], returncodes=(0, 1))  # absl: --help exits 1
    assert "Try --helpfull" in done.stdout, done.stderr[-2000:]
    def flag_names(cls_or_obj, prefix=""):
        names = []
        for f in dataclasses.fields(cls_or_obj):
            if dataclasses.is_dataclass(f.default):
                names += flag_names(f.default, f"{prefix}{f.name}_")
            else:
                names.append(prefix + f.name)
        return names

    expected = flag_names(ScanOptions)
    assert "speaker_ivector_num_components" in expected and "checkpoint_every" in expected
    missing = [name for name in expected if f"--{name}:" not in done.stdout and f"--[no]{name}:" not in done.stdout]
    assert not missing, missing
    assert "(default: '64')" in done.stdout  # i-vector components: the config's default, declared once
