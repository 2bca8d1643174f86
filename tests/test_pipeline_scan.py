"""End to end: synthetic corpus -> scan (batched, padded) -> statistics equal per-utterance counting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxneurons.data import generate_corpus, load_audio, read_manifest
from jaxneurons.models import SpeechConfig, build_model, forward_with_captures
from jaxneurons.pipeline.scan import ScanOptions, plan_scan, scan_statistics, score
from jaxneurons.pipeline.scan_report import write_scan_results
from jaxneurons.results import ResultsDir, load_results
from jaxneurons.stats.spec import topk_size

TINY = SpeechConfig(family="melhubert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=100, num_mel_bins=16, num_conv_pos_embeddings=5,
                    num_conv_pos_embedding_groups=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return read_manifest(generate_corpus(str(out), num_speakers=2, minutes=0.4, languages=["en"], seed=5,
                                         progress=False))


def test_scan_counts_equal_per_utterance_reference(corpus, tmp_path):
    model = build_model(TINY, seed=0)
    options = ScanOptions(properties=("phone_type", "gender", "pitch", "aape:speaker"), batch_size=3)
    plan = plan_scan(model, corpus, options)
    stats = scan_statistics(model, corpus, plan, checkpoint_path=str(tmp_path / "stats.npz"), progress=False)
    arrays = stats.to_numpy()
    n_ph = plan.inventory.size
    k = topk_size(TINY.intermediate_size, 0.01)
    ref_topk = np.zeros((TINY.num_hidden_layers, n_ph, TINY.intermediate_size))
    ref_pos = np.zeros((TINY.num_hidden_layers, 2, TINY.intermediate_size))
    ref_frames = np.zeros(n_ph)
    for i, u in enumerate(corpus):
        audio = load_audio(u.path)[None]
        _, ffn, _ = forward_with_captures(model, audio)
        lab = plan.utt_labels[i]
        sel = lab.middle & (lab.phone >= 0)
        speaker = plan.utt_classes["aape_speaker"][i]
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
    options = ScanOptions(properties=("phone_type", "gender", "aape:gender", "selective:speaker"), frames="all",
                          batch_size=4)
    plan = plan_scan(model, corpus, options)
    stats = scan_statistics(model, corpus, plan, progress=False)
    scored = score(stats, plan)
    with ResultsDir(str(tmp_path / "res"), "scan", flags={"test": True}) as res:
        summary, report = write_scan_results(res, plan, stats, scored)
        report.write(res.tmp)
    run = load_results(str(tmp_path / "res"))
    assert run["kind"] == "scan"
    neurons = json.loads((tmp_path / "res" / "neurons.json").read_text())
    assert set(neurons) == {"phone_type", "gender", "aape:gender", "selective:speaker"}
    assert set(neurons["phone_type"]) == {"vowel", "voiced", "unvoiced"}
    assert set(neurons["phone_type"]["vowel"]) == {"layers.0.ffn", "layers.1.ffn"}
    # AAPE keeps ~1 % of all neurons, each assigned to the classes it is specific to.
    assert summary["totals"]["aape:gender"]["m"] + summary["totals"]["aape:gender"]["f"] >= 1
    assert scored["selective:speaker"]["scores"][plan.class_vocabs["selective_speaker"].label(0)].shape == (2, 100)
    assert (tmp_path / "res" / "report.html").exists() and (tmp_path / "res" / "figures" / "phone_type.png").exists()


def test_speaker_property_cells_combine_ivector_groups_and_ssl_clusters(corpus):
    model = build_model(TINY, seed=2)
    options = ScanOptions(properties=("speaker",), batch_size=4, ivector_components=4, ivector_dim=4,
                          num_ssl_clusters=3, speaker_sigma=1.0)
    plan = plan_scan(model, corpus, options)
    assert plan.ssl_layer == 2 and plan.ssl_centroids.shape == (3, TINY.hidden_size)
    assert set(np.unique(plan.speaker_groups)) <= {0, 1}
    stats = scan_statistics(model, corpus, plan, progress=False)
    frames = stats.to_numpy()["speaker_cell/frames"]
    assert frames.shape == (6,)
    # Every valid frame is counted once, in the cell of its utterance's i-vector group.
    total = sum(int(model.num_frames(u.num_samples)) for u in corpus)
    assert frames.sum() == total
    for g in (0, 1):
        expected = sum(int(model.num_frames(u.num_samples)) for u, grp in zip(corpus, plan.speaker_groups, strict=True)
                       if grp == g)
        assert frames[g * 3:(g + 1) * 3].sum() == expected
    scored = score(stats, plan)
    assert set(scored["speaker"]["groups"]) == {"ivector_cluster0", "ivector_cluster1"}
    assert set(scored["ssl_cluster"]["groups"]) == {"ssl_cluster0", "ssl_cluster1", "ssl_cluster2"}
