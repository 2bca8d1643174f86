"""Heads pipeline: streamed metrics equal per-utterance ones, typing, one-compilation ablation, results, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxneurons.data import load_audio
from jaxneurons.heads import HEAD_TYPES, UNTYPED, head_metrics
from jaxneurons.models import build_model, forward_with_captures
from jaxneurons.pipeline.heads import (
    NONE_MASK,
    HeadsConfig,
    ablation_masks,
    run_ablation,
    run_heads,
    type_heads,
    write_heads_results,
)
from jaxneurons.probes import ProbeSuiteConfig, evaluate, extract_features
from jaxneurons.results import ResultsDir, load_results
from tests.helpers import TINY_MELHUBERT as TINY
from tests.helpers import run_python

PROBE = ProbeSuiteConfig(tasks=("phone",), epochs=2, min_steps=5, batch_size=3, bootstrap_draws=50)
OPTIONS = HeadsConfig(batch_size=3, probe=PROBE, random_controls=1, single_head_ablation=True, max_single_heads=2)


@pytest.fixture(scope="module")
def manifest(tiny_manifest):
    return tiny_manifest  # conftest.py: 4 speakers, enough for the probe's speaker-disjoint split


@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    return tiny_corpus


@pytest.fixture(scope="module")
def model():
    return build_model(TINY, seed=0)


@pytest.fixture(scope="module")
def analysis(model, corpus):
    return run_heads(model, corpus, OPTIONS)


def test_streamed_metrics_equal_each_utterance_alone(analysis, model, corpus):
    per_utt = analysis.metrics.utterance_metrics
    assert per_utt.shape == (len(corpus), 2, 2, 3) and np.isfinite(per_utt).all()
    lengths = [u.num_samples for u in corpus]
    assert len(set(lengths)) > 1  # batches were padded
    for i in (int(np.argmin(lengths)), int(np.argmax(lengths))):  # most and least padding
        audio = load_audio(corpus[i].path)[None]
        _, _, attn = forward_with_captures(model, audio, capture_ffn=False, capture_attention=True)
        t = attn[0].shape[-1]
        assert analysis.metrics.frame_lengths[i] == t
        alone = np.asarray(head_metrics(np.stack([np.asarray(a) for a in attn]), np.array([t])))[:, 0]
        np.testing.assert_allclose(per_utt[i], alone, atol=1e-5)
    stats = analysis.metrics.stats
    np.testing.assert_array_equal(stats["count"], len(corpus))
    np.testing.assert_allclose(stats["mean"], per_utt.mean(0), atol=1e-5)
    assert stats["hist"].sum(-1).max() == len(corpus)
    assert analysis.example.shape[:2] == (2, 2) and analysis.example.shape[2] == analysis.metrics.frame_lengths[0]


def test_typing_gives_a_layer_by_head_map(analysis):
    typing = analysis.typing
    assert typing.types.shape == (2, 2) and typing.types.dtype == np.int8
    assert ((typing.types >= UNTYPED) & (typing.types < len(HEAD_TYPES))).all()
    for name, lh in typing.representative.items():
        assert (lh is None) == (not (typing.types == HEAD_TYPES.index(name)).any())
    # Hand-made means: each head clearly stands out on one metric.
    mean = np.array([[[0.9, 0.1, 0.2], [0.2, 0.9, 0.1]], [[0.1, 0.2, 0.9], [0.8, 0.2, 0.2]]])
    t = type_heads(mean, HeadsConfig())
    np.testing.assert_array_equal(t.types, [[0, 1], [2, 0]])
    assert t.representative == {"diagonal": (0, 0), "vertical": (0, 1), "global": (1, 0)}
    assert t.counts() == {"diagonal": 2, "vertical": 1, "global": 1}


def test_ablation_masks_cover_types_controls_and_single_heads():
    types = np.array([[0, 0, 1], [2, 0, 1]], np.int8)
    names, masks, info = ablation_masks(types, HeadsConfig(random_controls=3, single_head_ablation=True,
                                                           single_head_layers=(1,), max_single_heads=2))
    assert masks.shape == (len(names), 2, 3) and names[0] == NONE_MASK and masks[0].all()
    by = dict(zip(names, masks, strict=True))
    np.testing.assert_array_equal(by["remove:diagonal"], types != 0)
    np.testing.assert_array_equal(by["keep_only:global"], types == 2)
    for r in range(3):
        removed = by[f"random_remove:diagonal:{r}"] == 0
        assert removed.sum() == 3 and not (removed & (types == 0)).any()  # control never holds the type's heads
        kept = by[f"random_keep:vertical:{r}"] == 1
        assert kept.sum() == 2 and not (kept & (types == 1)).any()
    assert len({by[f"random_remove:vertical:{r}"].tobytes() for r in range(3)}) > 1  # draws differ
    singles = [n for n in names if n.startswith("head:")]
    assert singles == ["head:1.0", "head:1.1"]
    assert all(i["heads_removed"] == (m == 0).sum() for i, m in zip(info, masks, strict=True))
    # 4 diagonal heads of 6: no same-size control outside the type exists; said so, not drawn with overlap.
    crowded = np.array([[0, 0, 1], [0, 0, 2]], np.int8)
    names, _, info = ablation_masks(crowded, HeadsConfig(random_controls=2))
    assert not any(n.startswith("random_remove:diagonal") for n in names)
    assert "only 2 others" in dict(zip(names, info, strict=True))["remove:diagonal"]["controls_impossible"]


def test_head_ablation_reaches_the_forward_and_matches_the_probe(corpus):
    # Make attention matter (at init it barely moves the residual stream) so masks change predictions.
    strong = build_model(TINY, seed=0)
    for layer in strong.encoder.layers:
        layer.attention.out_proj.kernel.value = layer.attention.out_proj.kernel.value * 100
    types = np.array([[0, 1], [2, 0]], np.int8)
    options = HeadsConfig(probe=PROBE, random_controls=0)
    ab = run_ablation(strong, corpus, types, options)
    probe = ab["_probe"]
    from jaxneurons.probes import ProbeSuite

    suite = ProbeSuite(corpus, PROBE)
    test = [corpus[i] for i in suite.splits["phone"][0].test]
    loader = suite_loader(strong, test)
    accs = set()
    for name in ("remove:diagonal", "keep_only:global"):
        mask = ab["masks"][ab["names"].index(name)]
        direct = evaluate(probe, extract_features(strong, loader, layers=[2], frame_label_keys=("phone",),
                                                  head_mask=mask))
        assert ab["results"][name]["accuracy"] == pytest.approx(direct["accuracy"], abs=1e-6)
        assert direct["num_examples"] == ab["num_test_frames"]
        accs.add(round(direct["accuracy"], 6))
        lo, hi = ab["results"][name]["ci95"]
        assert lo <= ab["results"][name]["accuracy"] <= hi
    accs.add(round(ab["results"][NONE_MASK]["accuracy"], 6))
    assert len(accs) > 1  # the masks do change the predictions


def suite_loader(model, utts):
    from jaxneurons.data import BatchLoader, FrameLabelSpec
    from jaxneurons.pipeline.labels import PhoneInventory, frame_geometry, manifest_phone_set

    inv = PhoneInventory.of(manifest_phone_set(utts))
    return BatchLoader(utts, 2, frame_geometry(model.config),
                       labels={"phone": FrameLabelSpec("phones", inv.vocab, ignore=("sil",))})


def test_pipeline_writes_results_directory(analysis, tmp_path):
    ab = analysis.ablation
    assert ab["num_masks"] == len(ab["results"]) >= 1 + 4
    assert ab["split"]["kind"].startswith("speaker_disjoint")  # the one split policy of every study
    with ResultsDir(str(tmp_path / "res"), "heads", flags={"test": True}) as res:
        summary = write_heads_results(res, analysis, extra_text="test")
    root = tmp_path / "res"
    assert load_results(str(root))["kind"] == "heads"
    types = json.loads((root / "head_types.json").read_text())
    assert len(types["types"]) == 2 and len(types["types"][0]) == 2
    ablation = json.loads((root / "ablation.json").read_text())
    assert set(ablation["results"]) == set(ab["names"]) and "head:0.1" in ablation["results"]
    assert np.load(root / "arrays" / "metrics_mean.npy").shape == (2, 2, 3)
    for fig in ("head_types", "representative_heads", "ablation", "single_head", "diagonality"):
        assert (root / "figures" / f"{fig}.png").exists(), fig
    assert (root / "report.html").exists() and "Head ablation" in (root / "report.md").read_text()
    assert sum(summary["type_counts"].values()) == 4


@pytest.mark.slow
def test_cli_heads(manifest, model, tmp_path):
    from jaxneurons.models.checkpoint import save_model

    save_model(model, str(tmp_path / "model"))
    done = run_python(["-m", "jaxneurons.cli", "heads", f"--model={tmp_path / 'model'}", f"--manifest={manifest}",
                       f"--out={tmp_path / 'res'}", "--batch_size=4",
                       "--probe_epochs=2", "--probe_min_steps=5", "--random_controls=1", "--single_head_ablation",
                       "--max_single_heads=2", "--min_diagonality=0.1"])
    assert "head types:" in done.stdout
    run = load_results(str(tmp_path / "res"))
    assert run["flags"]["options"]["min_diagonality"] == 0.1 and run["flags"]["options"]["normalize"] == "none"
    assert (tmp_path / "res" / "ablation.json").exists() and (tmp_path / "res" / "report.html").exists()
