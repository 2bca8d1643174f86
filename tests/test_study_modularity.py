"""Study 5 (modularity, arXiv 2408.17324): the selective-pruning experiment removes each set and reports
forget-class vs retained-class probe drops against random same-size sets; sets, overlaps, MoEfication."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxneurons.studies.modularity import ModularityConfig, _class_drops, run, task_classes
from tests.helpers import TINY_MELHUBERT, run_python


def test_class_drops_pool_the_retained_classes_by_their_examples():
    clean = {"per_class": {"a": 0.9, "b": 0.8, "c": 0.6}, "per_class_n": {"a": 10, "b": 30, "c": 10}}
    pruned = {"per_class": {"a": 0.1, "b": 0.8, "c": 0.4}, "per_class_n": {"a": 10, "b": 30, "c": 10}}
    d = _class_drops(clean, pruned, "a")
    assert d["forget_drop"] == pytest.approx(0.8)
    assert d["retained_drop"] == pytest.approx((0.8 * 30 + 0.6 * 10 - 0.8 * 30 - 0.4 * 10) / 40)  # 0.05
    assert d["targeted"] == pytest.approx(0.75)


def test_task_classes_bins_and_skips():
    from jaxneurons.data import Utterance

    utts = [Utterance(f"u{i}", "/x.wav", f"s{i}", "m", "en", 1.0, 16000, 16000, labels={"p": p})
            for i, p in enumerate([40, 45, 50, 60])]
    classes, edges, skipped = task_classes(utts, ["p/2", "language", "gender"])
    assert edges == {"p/2": [47.5]} and classes["p/2"] == ["q1", "q1", "q2", "q2"]
    assert set(skipped) == {"language", "gender"}  # one class each
    with pytest.raises(ValueError, match="KEY/N"):
        ModularityConfig(tasks=("p/1",))
    with pytest.raises(ValueError, match="report_fraction"):
        ModularityConfig(fractions=(0.1,), report_fraction=0.05)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from jaxneurons.data import generate_corpus
    from jaxneurons.models import build_model
    from jaxneurons.models.checkpoint import save_model
    from jaxneurons.probes import ProbeSuiteConfig

    root = tmp_path_factory.mktemp("modularity")
    model = save_model(build_model(TINY_MELHUBERT, seed=3), str(root / "tiny"))
    a, b = (generate_corpus(str(root / f"c{s}"), num_speakers=6, minutes=0.5, languages=["en", "tr"], seed=s,
                            progress=False) for s in (21, 22))
    config = ModularityConfig(model=model, manifest=a, manifest_b=b, tasks=("language", "gender"),
                              fractions=(0.05, 0.2), report_fraction=0.05, random_sets=1, moe_expert_size=16,
                              null_draws=20, batch_size=8,
                              probe=ProbeSuiteConfig(epochs=3, min_steps=20, bootstrap_draws=50))
    # Record every ablation the study hands to the probe suite, to check what it removes.
    from unittest import mock

    from jaxneurons.probes import ProbeSuite

    captured, drops = {}, ProbeSuite.drops

    def spy(self, model, ablations):
        captured.update(ablations)
        return drops(self, model, ablations)

    with mock.patch.object(ProbeSuite, "drops", spy):
        res = run(config, str(root / "out"), progress=False)
    return config, res, captured


def test_selective_pruning_removes_each_set_and_reports_targeted_drops(study):
    config, res, ablations = study
    assert set(res.pruning["sets"]) == {"0.05", "0.2"}
    names = ["language:en", "language:tr", "gender:f", "gender:m"]
    for f in (0.05, 0.2):
        rows = res.pruning["sets"][str(f)]
        assert list(rows) == names
        for name, row in rows.items():
            assert row["size"] == int(f * 128) == int(res.sets["trained"][f][name].sum())
            for m in ("forget_drop", "retained_drop", "targeted", "random_forget_drop", "random_retained_drop"):
                assert np.isfinite(row[m]), (name, m)
            assert row["targeted"] == pytest.approx(row["forget_drop"] - row["retained_drop"])
            assert len(row["random_draws"]) == 1
            # The set itself is what is removed (h * 0 on exactly its neurons; today's code removed nothing) ...
            chosen = res.sets["trained"][f][name]
            removed = np.asarray(ablations[f"{f:g}|{name}"].neuron_mask) == 0
            np.testing.assert_array_equal(removed, chosen)
            assert ablations[f"{f:g}|{name}"].neuron_offset is None  # zero ablation (mean offset is an option)
            # ... and its control is as large in every layer and shares no neuron with it.
            control = np.asarray(ablations[f"{f:g}|{name}#random0"].neuron_mask) == 0
            assert control.sum(1).tolist() == chosen.sum(1).tolist() and not (control & chosen).any()
    clean = res.pruning["clean"]
    assert set(clean) == {"all.language", "all.gender"}
    assert all(r["split"].startswith("speaker_disjoint") for r in clean.values())
    assert set(clean["all.language"]["per_class"]) == {"en", "tr"}  # every class among the test speakers
    assert set(clean["all.gender"]["per_class"]) == {"f", "m"}


def test_study_writes_sets_overlaps_and_balanced_experts(study):
    config, res, _ = study
    out = res.out_dir
    with open(os.path.join(out, "pruning.json")) as f:
        assert set(json.load(f)["sets"]) == {"0.05", "0.2"}
    small = np.load(os.path.join(out, "arrays", "trained__sets__0.05.npy"))
    big = np.load(os.path.join(out, "arrays", "trained__sets__0.2.npy"))
    assert small.shape == (4, 2, 64) and np.all(big | ~small)  # nested: larger fraction prunes a superset
    iou = np.array(res.overlaps["trained"]["0.05"]["iou"]["observed"], float)
    assert iou.shape == (4, 4) and np.allclose(np.diag(iou), 1.0)
    for model in ("trained", "random-init"):
        assert res.moefication[model]["n_experts"] == 64 // 16 and res.moefication[model]["expert_size"] == 16
        ids = np.load(os.path.join(out, "arrays", f"{model}__moe_cluster_ids.npy"))
        assert all(np.bincount(layer, minlength=4).tolist() == [16] * 4 for layer in ids)
    for f in ("run.json", "report.md", "report.html", "scan-trained/neurons.json", "figures/targeted_drop.png"):
        assert os.path.exists(os.path.join(out, f)), f


def test_launcher_flags_come_from_the_config():
    proc = run_python(["-m", "experiments.modularity", "--help"], returncodes=(0, 1))  # absl: --help exits 1
    assert not proc.stderr.strip(), proc.stderr[-2000:]
    for flag in ("--moe_expert_size: Neurons per MoEfication expert", "(default: '32')", "--mean_offset",
                 "--random_sets", "--probe_epochs"):
        assert flag in proc.stdout, flag
    assert "0.01,0.02,0.05,0.1,0.2" in proc.stdout  # the paper's fractions, from the config
