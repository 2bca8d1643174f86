"""Studies 1 and 2 (jaxneurons.studies.property_neurons / speaker_neurons) through their launchers
(experiments/*.py): tiny random model, tiny synthetic corpus, tiny sizes; each runs end to end through its flags
and writes a complete results directory. Plus the rules: which sets protected pruning protects."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxneurons.data import generate_corpus, read_manifest
from jaxneurons.models import build_model
from jaxneurons.models.checkpoint import save_model
from jaxneurons.results import load_results
from tests.helpers import run_python, tiny_melhubert

TINY = tiny_melhubert(num_clusters=8)
# Tiny sizes shared by both launchers: one density, one random control, two probe epochs, a few CPT updates.
SMOKE = ["--batch_size=8", "--probe_epochs=2", "--probe_min_steps=5", "--probe_bootstrap_draws=20",
         "--densities=0.5", "--neurons_per_step=16", "--updates_per_step=2", "--cpt_crop_seconds=1.0",
         "--cpt_targets=fresh_mfcc_kmeans"]  # the tiny model has no stored target recipe: the explicit choice


def test_speaker_study_protects_p_ssl_and_p_ive_by_default():
    """arXiv 2506.21712 protects P_ssl ∪ P_ive (not the i-vector-group neurons alone)."""
    from jaxneurons.studies.pruning import PruningConfig
    from jaxneurons.studies.speaker_neurons import SpeakerNeuronsConfig

    assert set(SpeakerNeuronsConfig().pruning.protect) == {"speaker", "ssl_cluster"}
    with pytest.raises(ValueError, match="empty"):
        PruningConfig(protect=())


def test_cluster_contingency_purity_on_known_clusters():
    from jaxneurons.studies.speaker_neurons import contingency

    clusters = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    labels = np.array([0, 0, 1, 1, 1, 1, -1, 0])  # the -1 row is ignored
    c = contingency(clusters, labels, ["male", "female"], 2)
    assert c["counts"] == [[3, 1], [0, 3]]
    assert c["purity"] == pytest.approx(6 / 7) and c["largest_class_share"] == pytest.approx(4 / 7)
    assert c["majority"]["0"]["class"] == "male" and c["majority"]["1"]["class"] == "female"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiments")
    # 6 speakers (3 per gender: speaker-disjoint train/dev/test per gender), >= 3 utterances each (speaker ID).
    manifest = generate_corpus(str(root / "corpus"), num_speakers=6, minutes=1.6, languages=["en"], seed=3,
                               progress=False)
    save_model(build_model(TINY, seed=0), str(root / "model"))
    return str(root / "model"), manifest


def _run(module: str, args: list[str]):
    return run_python(["-m", module, *args])  # one CPU device, as on a user's machine


def _check_pruning(out, metrics: set[str]) -> dict:
    pruning = json.loads((out / "pruning.json").read_text())
    assert set(pruning["unpruned"]) == metrics
    # The unpruned model's own probes, applied unchanged to the unpruned model, score what retrained ones do.
    for m in metrics:
        if m.endswith("_frozen_probe"):
            assert pruning["unpruned"][m] == pytest.approx(pruning["unpruned"][m.removesuffix("_frozen_probe")])
    for method in ("L1", "protected"):
        (entry,) = pruning["one_shot"][method]
        assert entry["density"] == 0.5 and set(entry["metrics"]) == metrics
        assert all(0.0 <= v <= 1.0 for v in entry["metrics"].values())
        assert pruning["iterative"][method], method
        assert os.path.exists(out / "arrays" / f"keep__one_shot_{method}_0.5.npy")
    # L1 keeps exactly half of every layer; protected at least that (clamp keeps every protected neuron).
    assert np.load(out / "arrays" / "keep__one_shot_L1_0.5.npy").sum(axis=1).tolist() == [32, 32]
    assert pruning["one_shot"]["protected"][0]["achieved_density"] >= 0.5
    for fig in [f"pruning_{m}" for m in metrics]:
        assert (out / "figures" / f"{fig}.png").exists(), fig
    return pruning


def _protected(neurons: dict, properties: list[str]) -> np.ndarray:
    mask = np.zeros((2, 64), bool)
    for prop in properties:
        for sets in neurons[prop].values():
            for layer, idx in sets.items():
                mask[int(layer.split(".")[1]), idx] = True
    return mask


@pytest.mark.parametrize(("module", "flags", "protect"), [
    ("experiments.property_neurons", ("--neurons_sigma", "--random_controls", "--probe_epochs", "--densities",
                                      "--cpt_targets: <recipe|fresh_mfcc_kmeans>", "--manifest"),
     "phone_type,gender,pitch"),
    ("experiments.speaker_neurons", ("--speaker_sigma", "--speaker_ivector_num_components", "--probe_epochs",
                                     "--densities", "--neurons_per_step", "--manifest"), "speaker,ssl_cluster")])
def test_launcher_flags_come_from_the_config(module, flags, protect):
    """The launchers' flags (the end-to-end launcher runs are slow tests): each study's config, its defaults."""
    proc = run_python(["-m", module, "--help"], returncodes=(0, 1))  # absl: --help exits 1
    assert not proc.stderr.strip(), proc.stderr[-2000:]
    for flag in flags:
        assert flag in proc.stdout, flag
    protect_help = proc.stdout.split("--protect:", 1)[1].split("--", 1)[0]
    assert f"(default: '{protect}')" in protect_help, protect_help


@pytest.mark.slow  # the launcher end to end, ~2 min; run() of the same study at a tinier size: the default test
def test_property_neurons_launcher(inputs, tmp_path):
    model, manifest = inputs
    out = tmp_path / "property"
    done = _run("experiments.property_neurons", [
        f"--model={model}", f"--manifest={manifest}", f"--out={out}", *SMOKE, "--num_steps=2",
        "--random_controls=1", "--neurons_sigma=0.5"])
    assert "property neurons ->" in done.stdout
    run = load_results(str(out))
    assert run["kind"] == "property_neurons" and run["flags"]["neurons"]["sigma"] == 0.5
    assert run["flags"]["data"]["manifest"] == manifest
    neurons = json.loads((out / "neurons.json").read_text())
    assert {p: set(g) for p, g in neurons.items()} == {"phone_type": {"vowel", "voiced", "unvoiced"},
                                                      "gender": {"male", "female"}, "pitch": {"low", "mid", "high"}}
    editing = json.loads((out / "editing.json").read_text())
    assert sorted(editing["rows"] + editing["empty"]) == sorted(f"{p}/{g}" for p, gs in neurons.items() for g in gs)
    assert editing["columns"] == ["phone vowel", "phone voiced", "phone unvoiced", "gender male", "gender female",
                                  "speaker-ID male", "speaker-ID female", "pitch R2 (log F0)"]
    for row in editing["rows"]:
        prop, group = row.split("/")
        assert editing["sizes"][row] == sum(len(v) for v in neurons[prop][group].values()) > 0
    assert editing["rows"]  # sigma 0.5 finds some neurons, so zeroing is exercised
    # zeroing a set changes what the frozen probes see: some column moves for some row
    assert any(abs(editing["drop"][r][c]) > 0 for r in editing["rows"] for c in editing["columns"])
    assert np.load(out / "arrays" / "editing_specific_drop.npy").shape == (len(editing["rows"]), 8)
    pruning = _check_pruning(out, {"phone_accuracy", "speaker_accuracy", "phone_accuracy_frozen_probe",
                                   "speaker_accuracy_frozen_probe"})
    # One-shot protection: every property neuron of the scan survives.
    keep = np.load(out / "arrays" / "keep__one_shot_protected_0.5.npy")
    protected = _protected(neurons, ["phone_type", "gender", "pitch"])
    assert protected.any() and not (protected & ~keep).any()
    # Two iterative steps (16 then 32 of 64 removed; the second re-identified by a fresh scan), evaluated at the
    # step nearest each density (0.5: the last).
    assert pruning["iterative_eval_steps"] == [1]
    assert [e["step"] for e in pruning["iterative"]["L1"]] == [2]
    assert pruning["iterative"]["L1"][-1]["achieved_density"] == 0.5
    assert pruning["identify_scans"]["count"] >= 1
    assert len(pruning["cpt"]["protected"]) == 2
    for fig in ("phone_type", "gender", "pitch", "profile_vs_paper", "editing_drop", "editing_specific_drop"):
        assert (out / "figures" / f"{fig}.png").exists(), fig
    md = (out / "report.md").read_text()
    assert "Editing" in md and "Pruning" in md and (out / "report.html").exists()


@pytest.mark.slow  # the launcher end to end, ~2 min; run() of the same study at a tinier size: the default test
def test_speaker_neurons_launcher(inputs, tmp_path):
    model, manifest = inputs
    out = tmp_path / "speaker"
    done = _run("experiments.speaker_neurons", [
        f"--model={model}", f"--manifest={manifest}", f"--out={out}", *SMOKE, "--num_steps=1",
        "--speaker_ivector_num_components=4", "--speaker_ivector_ivector_dim=4", "--speaker_sigma=0.8"])
    assert "speaker neurons ->" in done.stdout
    assert load_results(str(out))["kind"] == "speaker_neurons"
    neurons = json.loads((out / "neurons.json").read_text())
    assert set(neurons) == {"speaker", "ssl_cluster"}
    assert set(neurons["speaker"]) == {"ivector_cluster0", "ivector_cluster1"}
    assert set(neurons["ssl_cluster"]) == {"ssl_cluster0", "ssl_cluster1", "ssl_cluster2"}
    clusters = json.loads((out / "clusters.json").read_text())
    assert clusters["ssl_layer"] == 2  # 3/4 of 2 layers, rounded
    for key, k, n in (("ivector_vs_gender", 2, 2), ("ssl_vs_gender", 3, 2), ("ssl_vs_phone_type", 3, 3),
                      ("ivector_vs_phone_type", 2, 3)):
        assert np.shape(clusters[key]["counts"]) == (k, n)
    assert sum(map(sum, clusters["ivector_vs_gender"]["counts"])) == len(read_manifest(manifest))
    by_sigma = json.loads((out / "counts_by_sigma.json").read_text())
    assert set(by_sigma) == {"0.8", "1.0"}
    assert by_sigma["0.8"]["speaker"] == {g: [len(v) for v in sets.values()] for g, sets in neurons["speaker"].items()}
    pruning = _check_pruning(out, {"speaker_accuracy", "speaker_accuracy_frozen_probe"})
    # The study's rule: protected pruning keeps P_ive (speaker) ∪ P_ssl (ssl_cluster), both non-empty here.
    assert pruning["protected_results"] == ["speaker", "ssl_cluster"]
    keep = np.load(out / "arrays" / "keep__one_shot_protected_0.5.npy")
    p_ssl, p_ive = _protected(neurons, ["ssl_cluster"]), _protected(neurons, ["speaker"])
    assert p_ssl.any() and not ((p_ssl | p_ive) & ~keep).any()
    assert pruning["protected_neurons"] == int((p_ssl | p_ive).sum())
    for fig in ("speaker", "ssl_cluster", "speaker_vs_sigma"):
        assert (out / "figures" / f"{fig}.png").exists(), fig
    assert "purity" in (out / "report.md").read_text() and (out / "report.html").exists()


# ------------------------------------------------- the same studies' run() in-process, at a tinier size (default)

def _tiny(config, inputs, **changes):
    """``config`` on the test corpus and model at the smallest sizes that still run every part of the study: one
    density, one iterative step of one continued pre-training update, 2-epoch probes, and batches holding the
    whole corpus (one compilation per forward program)."""
    import dataclasses

    from jaxneurons.studies.common import DataConfig

    model, manifest = inputs
    pruning = dataclasses.replace(config.pruning, densities=(0.5,), neurons_per_step=32, num_steps=1,
                                  updates_per_step=1, cpt_crop_seconds=0.5, cpt_targets="fresh_mfcc_kmeans")
    probe = dataclasses.replace(config.probe, epochs=2, min_steps=5, bootstrap_draws=20, batch_size=32)
    return dataclasses.replace(config, data=DataConfig(model=model, manifest=manifest), pruning=pruning, probe=probe,
                               batch_size=32, **changes)


def _check_tiny_pruning(out, metrics: set[str]) -> dict:
    pruning = json.loads((out / "pruning.json").read_text())
    assert set(pruning["unpruned"]) == metrics
    for method in ("L1", "protected"):
        (entry,) = pruning["one_shot"][method]
        assert entry["density"] == 0.5 and set(entry["metrics"]) == metrics
        assert all(0.0 <= v <= 1.0 for v in entry["metrics"].values())
        (step,) = pruning["iterative"][method]  # one step of 32 of 64 neurons per layer: density 0.5
        assert step["step"] == 1 and step["achieved_density"] >= 0.5
    assert np.load(out / "arrays" / "keep__one_shot_L1_0.5.npy").sum(axis=1).tolist() == [32, 32]
    assert pruning["iterative"]["L1"][0]["achieved_density"] == 0.5
    assert len(pruning["cpt"]["protected"]) == 1
    return pruning


def test_property_neurons_run_tiny(inputs, tmp_path):
    """Study 1's run() end to end (the launcher and two iterative steps: the slow test above)."""
    from jaxneurons.pipeline.properties import PropertyNeuronConfig
    from jaxneurons.studies.property_neurons import PropertyNeuronsConfig, run

    out = tmp_path / "property"
    config = _tiny(PropertyNeuronsConfig(), inputs, random_controls=1, neurons=PropertyNeuronConfig(sigma=0.5))
    run(config, str(out))
    assert load_results(str(out))["kind"] == "property_neurons"
    neurons = json.loads((out / "neurons.json").read_text())
    assert {p: set(g) for p, g in neurons.items()} == {"phone_type": {"vowel", "voiced", "unvoiced"},
                                                      "gender": {"male", "female"}, "pitch": {"low", "mid", "high"}}
    editing = json.loads((out / "editing.json").read_text())
    assert sorted(editing["rows"] + editing["empty"]) == sorted(f"{p}/{g}" for p, gs in neurons.items() for g in gs)
    assert editing["rows"] and any(abs(editing["drop"][r][c]) > 0 for r in editing["rows"]
                                   for c in editing["columns"])
    _check_tiny_pruning(out, {"phone_accuracy", "speaker_accuracy", "phone_accuracy_frozen_probe",
                              "speaker_accuracy_frozen_probe"})
    keep = np.load(out / "arrays" / "keep__one_shot_protected_0.5.npy")
    protected = _protected(neurons, ["phone_type", "gender", "pitch"])
    assert protected.any() and not (protected & ~keep).any()
    md = (out / "report.md").read_text()
    assert "Editing" in md and "Pruning" in md and (out / "report.html").exists()


def test_speaker_neurons_run_tiny(inputs, tmp_path):
    """Study 2's run() end to end (the launcher: the slow test above)."""
    from jaxneurons.features.ivector import IVectorConfig
    from jaxneurons.pipeline.properties import SpeakerNeuronConfig
    from jaxneurons.studies.speaker_neurons import SpeakerNeuronsConfig, run

    out = tmp_path / "speaker"
    speaker = SpeakerNeuronConfig(sigma=0.8, ivector=IVectorConfig(num_components=4, ivector_dim=4))
    run(_tiny(SpeakerNeuronsConfig(), inputs, speaker=speaker), str(out))
    assert load_results(str(out))["kind"] == "speaker_neurons"
    neurons = json.loads((out / "neurons.json").read_text())
    assert set(neurons["speaker"]) == {"ivector_cluster0", "ivector_cluster1"}
    assert set(neurons["ssl_cluster"]) == {"ssl_cluster0", "ssl_cluster1", "ssl_cluster2"}
    clusters = json.loads((out / "clusters.json").read_text())
    assert sum(map(sum, clusters["ivector_vs_gender"]["counts"])) == len(read_manifest(inputs[1]))
    pruning = _check_tiny_pruning(out, {"speaker_accuracy", "speaker_accuracy_frozen_probe"})
    assert pruning["protected_results"] == ["speaker", "ssl_cluster"]
    keep = np.load(out / "arrays" / "keep__one_shot_protected_0.5.npy")
    p_ssl, p_ive = _protected(neurons, ["ssl_cluster"]), _protected(neurons, ["speaker"])
    assert p_ssl.any() and not ((p_ssl | p_ive) & ~keep).any()
    assert "purity" in (out / "report.md").read_text() and (out / "report.html").exists()
