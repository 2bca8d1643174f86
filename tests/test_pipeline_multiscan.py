"""Multi-model scans: three families + a random twin in one call equal four single-model scans; the dataset is
decoded once; finished models are skipped and an interrupted one resumes; ``--model`` lists expand."""

from __future__ import annotations

import glob
import json
import os
import re

import numpy as np
import pytest

import jaxneurons.pipeline.scan as scan_mod
from jaxneurons.data import generate_corpus, read_manifest
from jaxneurons.features.ivector import IVectorConfig
from jaxneurons.models import SpeechConfig, build_model
from jaxneurons.models.checkpoint import save_model
from jaxneurons.pipeline.multiscan import (
    ModelSpec,
    SeparationOptions,
    expand_model_list,
    front_end_name,
    is_multi_model_arg,
    model_specs,
)
from jaxneurons.pipeline.properties import SpeakerNeuronConfig
from jaxneurons.pipeline.scan import ScanOptions, neuron_sets, plan_scan, scan, scan_statistics, score
from jaxneurons.results import load_results

POS = dict(num_conv_pos_embeddings=5, num_conv_pos_embedding_groups=2)
CONV = dict(conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4), conv_stride=(5, 4, 16))  # 320 samples per frame
CONFIGS = {
    "mel": SpeechConfig(family="melhubert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=100, num_mel_bins=16, **POS),
    "hubert": SpeechConfig(family="hubert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, **CONV, **POS),
    "wavlm": SpeechConfig(family="wavlm", hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                          intermediate_size=64, num_buckets=16, max_bucket_distance=40, **CONV, **POS),
}
OPTIONS = ScanOptions(properties=("phone_type", "gender", "pitch", "aape_speaker", "speaker"), batch_size=3,
                      speaker=SpeakerNeuronConfig(ivector=IVectorConfig(num_components=4, ivector_dim=4)))
SEPARATION = SeparationOptions(max_utterances=12, max_points=400)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return read_manifest(generate_corpus(str(out), num_speakers=2, minutes=0.4, languages=["en"], seed=5,
                                         progress=False))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: save_model(build_model(cfg, seed=k), str(root / name)) for k, (name, cfg) in
            enumerate(CONFIGS.items())}


@pytest.fixture(scope="module")
def multiscan(corpus, model_dirs, tmp_path_factory):
    specs = [ModelSpec(n, p) for n, p in model_dirs.items()] + [ModelSpec("mel-random", model_dirs["mel"], 7)]
    out = str(tmp_path_factory.mktemp("multi") / "out")
    calls = {"attach_f0": 0}
    real = scan_mod.attach_f0

    def counting(*a, **k):
        calls["attach_f0"] += 1
        return real(*a, **k)

    scan_mod.attach_f0 = counting
    try:
        summary = scan(specs, corpus, options=OPTIONS, out_dir=out, separation=SEPARATION, null_draws=200,
                       progress=False).summary
    finally:
        scan_mod.attach_f0 = real
    return specs, out, summary, calls


@pytest.mark.slow  # ~2 min CPU: 4 models x all properties, then 4 reference scans
def test_each_model_equals_its_single_scan(multiscan, corpus):
    specs, out, _, _ = multiscan
    for spec in specs:
        model = spec.load()
        plan = plan_scan(model, corpus, OPTIONS)
        stats = scan_statistics(model, corpus, plan, progress=False)
        for key, value in stats.to_numpy().items():
            saved = np.load(os.path.join(out, spec.name, "arrays", key.replace("/", "__") + ".npy"))
            np.testing.assert_array_equal(saved, value, err_msg=f"{spec.name}: {key}")
        with open(os.path.join(out, spec.name, "neurons.json")) as f:
            assert json.load(f) == neuron_sets(score(stats, plan)), spec.name
        assert load_results(os.path.join(out, spec.name))["kind"] == "scan"


@pytest.mark.slow
def test_dataset_decoded_once_and_combined_summary(multiscan, corpus):
    specs, out, summary, calls = multiscan
    dec = summary["decoding"]
    # Audio: once per utterance; F0: once per front end (log-mel, conv); i-vectors: once.
    assert dec["audio_decodes"] == len(corpus) and dec["f0_runs"] == 2 == calls["attach_f0"]
    assert dec["ivector_runs"] == 1 and dec["cached_audio_mb"] > 0
    assert sorted(summary["front_ends"].values()) == [["hubert", "wavlm"], ["mel", "mel-random"]]
    assert front_end_name(CONFIGS["hubert"]) == front_end_name(CONFIGS["wavlm"]) != front_end_name(CONFIGS["mel"])
    models = summary["models"]
    assert list(models) == ["mel", "hubert", "wavlm", "mel-random"]
    assert models["mel-random"]["random_twin_seed"] == 7 and models["wavlm"]["num_layers"] == 3
    for name, m in models.items():
        with open(os.path.join(out, name, "summary.json")) as f:
            assert m["per_layer_counts"] == json.load(f)["per_layer_counts"]
        sep = m["separation"]
        assert sep["points"] > 0 and len(sep["phone_type"]) == m["num_layers"]
        assert all(-1 <= v <= 1 for v in sep["phone_type"] + sep["gender"])
    # Overlap only within a shape (mel and its twin); a set's IoU with itself is 1 unless it is empty.
    assert {tuple(e["models"]) for e in summary["overlap"]} == {("mel", "mel-random")}
    props = {e["property"] for e in summary["overlap"]}
    assert props == {"phone_type", "gender", "pitch", "aape_speaker", "speaker", "ssl_cluster"}
    for e in summary["overlap"]:
        iou = np.asarray(e["iou"], float)
        for i, size in enumerate(e["sizes"]):
            assert (iou[i, i] == 1.0) if size else np.isnan(iou[i, i])
        assert np.asarray(e["iou_null_mean"]).shape == (2, 2) and np.asarray(e["containment"]).shape == (2, 2)
    assert load_results(out)["kind"] == "multiscan"
    for f in ("summary.json", "report.md", "report.html", "figures/profile_phone_type.png",
              "figures/separation_phone_type.png", "figures/iou_phone_type_2x100.png"):
        assert os.path.exists(os.path.join(out, f)), f
    assert not any(n.endswith(".work") or n.startswith(".tmp") for n in os.listdir(out))


def test_rerun_skips_finished_models_and_resumes_an_interrupted_one(corpus, model_dirs, tmp_path, monkeypatch):
    options = ScanOptions(properties=("phone_type", "pitch"), batch_size=3, checkpoint_every=1)
    specs = [ModelSpec("mel", model_dirs["mel"]), ModelSpec("hubert", model_dirs["hubert"])]
    out = str(tmp_path / "out")
    starts: list[tuple[str, int]] = []

    class KilledError(Exception):
        pass

    class RecordingBar:  # the scan's progress callback: records where each pass starts, kills one mid-way
        def __init__(self, total, initial=0, desc="scan", unit="it"):
            self.desc = desc
            starts.append((desc.split()[-1], initial))

        def __call__(self, done, *_):
            if self.desc.endswith("hubert") and done == 2 and len(starts) == 2:
                raise KilledError  # the second model dies after 2 batches (checkpointed after 1)

    monkeypatch.setattr(scan_mod, "ProgressBar", RecordingBar)
    with pytest.raises(KilledError):
        scan(specs, corpus, options=options, out_dir=out, separation=SeparationOptions(enabled=False))
    assert os.path.exists(os.path.join(out, "mel", "run.json")) and not os.path.exists(os.path.join(out, "hubert"))
    assert len(glob.glob(os.path.join(out, "hubert.work", "stats-*.npz"))) == 1
    result = scan(specs, corpus, options=options, out_dir=out, separation=SeparationOptions(enabled=False))
    summary = result.summary
    with open(os.path.join(out, "mel", "neurons.json")) as f:
        assert result["mel"].skipped and result["mel"].neuron_sets == json.load(f)
    assert starts == [("mel", 0), ("hubert", 0), ("hubert", 1)]  # mel skipped, hubert resumed at batch 1
    assert summary["models"]["mel"]["skipped"] and not summary["models"]["hubert"]["skipped"]
    assert summary["decoding"]["audio_decodes"] == len(corpus) and summary["decoding"]["f0_runs"] == 1
    model = specs[1].load()
    plan = plan_scan(model, corpus, options)
    ref = scan_statistics(model, corpus, plan, progress=False).to_numpy()
    for key, value in ref.items():
        np.testing.assert_array_equal(np.load(os.path.join(out, "hubert", "arrays", key.replace("/", "__") + ".npy")),
                                      value, err_msg=key)


def test_model_lists_and_twins(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / "zoo" / name).mkdir(parents=True)
        (tmp_path / "zoo" / name / "config.json").write_text("{}")
    (tmp_path / "zoo" / "not_a_model").mkdir()
    zoo = str(tmp_path / "zoo")
    assert expand_model_list(f"{zoo}/*") == [f"{zoo}/a", f"{zoo}/b", f"{zoo}/c"]
    assert expand_model_list(f"{zoo}/c,{zoo}/a,{zoo}/c") == [f"{zoo}/c", f"{zoo}/a"]
    (tmp_path / "list.txt").write_text("# models\nzoo/b\n\nzoo/[ac]  # two\n")
    assert expand_model_list(f"@{tmp_path}/list.txt") == [f"{zoo}/b", f"{zoo}/a", f"{zoo}/c"]
    with pytest.raises(ValueError, match="matches no model"):
        expand_model_list(f"{zoo}/x*")
    assert expand_model_list("default", lambda x: "/resolved" if x == "default" else x) == ["/resolved"]
    assert is_multi_model_arg("a,b") and is_multi_model_arg("m/*") and is_multi_model_arg("@f")
    assert not is_multi_model_arg("models/mine") and not is_multi_model_arg("default")
    specs = model_specs([f"{zoo}/a", f"{tmp_path}/other/a"], random_twin=True, twin_seed=3)
    assert [s.name for s in specs] == ["a", "a-random", "a-2", "a-2-random"]
    assert [s.random_seed for s in specs] == [None, 3, None, 3]


MP_WORKER = """
import sys
from jaxneurons.parallel import init_distributed, make_mesh
pid, port, manifest, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
paths = sys.argv[5:]
init_distributed(f"127.0.0.1:{port}", 2, pid, local_devices=2, cpu=True)
import jax
from jaxneurons.data import read_manifest
from jaxneurons.pipeline.multiscan import SeparationOptions, model_specs
from jaxneurons.pipeline.scan import ScanOptions, scan
assert jax.process_count() == 2 and len(jax.devices()) == 4
options = ScanOptions(properties=("phone_type", "pitch"), batch_size=4)
scan(model_specs(paths, random_twin=True), read_manifest(manifest), options=options, out_dir=out, mesh=make_mesh(),
     separation=SeparationOptions(enabled=False), progress=False)
print("done", pid)
"""


@pytest.mark.slow  # two JAX processes on loopback (gloo), ~2 min under load
def test_two_processes_equal_one_process(corpus, model_dirs, tmp_path):
    from tests.helpers import free_port, run_workers

    script = tmp_path / "worker.py"
    script.write_text(MP_WORKER)
    manifest = str(tmp_path / "manifest.jsonl")
    from jaxneurons.data import write_manifest

    write_manifest(manifest, corpus)
    port = free_port()
    paths = [model_dirs["mel"], model_dirs["hubert"]]
    out = str(tmp_path / "mp")
    run_workers(str(script), [(i, port, manifest, out, *paths) for i in range(2)], timeout=600)
    # One process, no mesh, the same global batches (4 rows x 2 processes).
    ref_out = str(tmp_path / "one")
    options = ScanOptions(properties=("phone_type", "pitch"), batch_size=8)
    scan(model_specs(paths, random_twin=True), corpus, options=options, out_dir=ref_out, process_index=0,
         process_count=1, separation=SeparationOptions(enabled=False), progress=False)
    names = ["mel", "mel-random", "hubert", "hubert-random"]
    assert load_results(out)["models"] == names  # summary.json sorts its keys; run.json keeps the order
    for name in names:
        for key in ("phone__frames", "pitch_phone__frames", "phone__topk", "pitch_phone__topk"):
            a = np.load(os.path.join(out, name, "arrays", key + ".npy"))
            b = np.load(os.path.join(ref_out, name, "arrays", key + ".npy"))
            if key.endswith("frames"):
                np.testing.assert_array_equal(a, b, err_msg=f"{name} {key}")
            else:  # different per-device batch shapes: float rounding may swap rare top-k ties
                assert np.abs(a - b).sum() <= 0.01 * b.sum(), f"{name} {key}"


@pytest.mark.slow  # a fresh `jaxneurons scan` process (imports + compiles)
def test_cli_multi_model_scan(corpus, model_dirs, tmp_path):
    from jaxneurons.data import write_manifest
    from tests.helpers import run_python

    manifest = write_manifest(str(tmp_path / "manifest.jsonl"), corpus)
    (tmp_path / "models.txt").write_text(f"# one model and its twin\n{model_dirs['hubert']}\n")
    out = str(tmp_path / "out")
    cmd = ["-m", "jaxneurons.cli", "scan", f"--model=@{tmp_path / 'models.txt'}", "--random_twin",
           "--twin_seed=4", f"--manifest={manifest}", f"--out={out}", "--properties=phone_type,gender",
           "--limit=8", "--null_draws=50"]
    proc = run_python(cmd)
    assert "multi-model scan finished: 2 models x 8 utterances" in proc.stdout
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert list(summary["models"]) == ["hubert", "hubert-random"]
    assert summary["models"]["hubert-random"]["random_twin_seed"] == 4
    assert {e["property"] for e in summary["overlap"]} == {"phone_type", "gender"}
    with open(os.path.join(out, "hubert", "run.json")) as f:
        model_id = json.load(f)["flags"]["fingerprint"]["model"]
    assert re.fullmatch(r"[0-9a-f]{16} \(/.*/hubert\)", model_id), model_id  # content hash (absolute path)
