"""Multi-model scans identify a model by its content: weights replaced in place and changed options rescan;
partial statistics of other weights are never resumed."""

from __future__ import annotations

import json
import os

import pytest

import jaxneurons.pipeline.scan as scan_module
from jaxneurons.data import generate_corpus, read_manifest
from jaxneurons.models import SpeechConfig, build_model
from jaxneurons.models.checkpoint import save_model
from jaxneurons.pipeline.multiscan import ModelSpec, SeparationOptions, model_fingerprint
from jaxneurons.pipeline.properties import PropertyNeuronConfig
from jaxneurons.pipeline.scan import ScanOptions, scan
from jaxneurons.results import RUN_FILE

CONFIG = SpeechConfig(family="melhubert", hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=24, num_mel_bins=8, num_conv_pos_embeddings=5,
                      num_conv_pos_embedding_groups=2)
OPTIONS = ScanOptions(properties=("gender",), batch_size=4)
NO_SEPARATION = SeparationOptions(enabled=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return read_manifest(generate_corpus(str(out), num_speakers=2, minutes=0.15, languages=["en"], seed=3,
                                         progress=False))


def _counting(monkeypatch):
    """Count the statistics passes a multi-model scan makes (one per model it actually scans)."""
    calls: list[str] = []
    real = scan_module.scan_statistics

    def counting(model, *args, **kwargs):
        calls.append(kwargs.get("progress_label", ""))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(scan_module, "scan_statistics", counting)
    return calls


def _multiscan(spec, corpus, options, out, **kwargs):
    return scan([spec], corpus, options=options, out_dir=out, separation=NO_SEPARATION, null_draws=10,
                progress=False, **kwargs)


def _fingerprint_on_disk(out, name="m"):
    with open(os.path.join(out, name, RUN_FILE)) as f:
        return json.load(f)["flags"]["fingerprint"]


def test_weights_replaced_in_place_and_changed_options_rescan(corpus, tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    path = save_model(build_model(CONFIG, seed=0), str(tmp_path / "model"))
    spec, out = ModelSpec("m", path), str(tmp_path / "out")
    _multiscan(spec, corpus, OPTIONS, out)
    first = _fingerprint_on_disk(out)
    _multiscan(spec, corpus, OPTIONS, out)
    assert len(calls) == 1  # same content: skipped

    save_model(build_model(CONFIG, seed=1), path)  # same path, other weights
    _multiscan(spec, corpus, OPTIONS, out)
    assert len(calls) == 2, "weights replaced in place were skipped as finished"
    assert _fingerprint_on_disk(out)["model"] != first["model"]

    changed = ScanOptions(properties=("gender",), batch_size=4, property=PropertyNeuronConfig(sigma=0.7))
    _multiscan(spec, corpus, changed, out)
    assert len(calls) == 3, "changed scan options did not cause a rescan"
    assert _fingerprint_on_disk(out)["options"] != first["options"]


def test_stale_partial_statistics_are_not_resumed(corpus, tmp_path, monkeypatch):
    import glob

    import numpy as np

    from jaxneurons.stats.scan import load_checkpoint

    path = save_model(build_model(CONFIG, seed=0), str(tmp_path / "model"))
    spec, out = ModelSpec("m", path), str(tmp_path / "out")

    # A scan of the old weights killed after its statistics pass left a checkpoint behind ...
    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scan_module, "score", killed)
    with pytest.raises(KeyboardInterrupt):
        scan([spec], corpus, options=OPTIONS, out_dir=out, separation=NO_SEPARATION, progress=False)
    monkeypatch.undo()
    (stale,) = glob.glob(os.path.join(out, "m.work", "*.npz"))
    old_fp = load_checkpoint(stale)[2]["fingerprint"]
    # ... then the weights are replaced in place: the rerun starts over (no error, no stale resume).
    save_model(build_model(CONFIG, seed=1), path)
    new_fp = model_fingerprint(spec, corpus, OPTIONS, NO_SEPARATION)
    assert new_fp["model"] != old_fp["model"]
    _multiscan(spec, corpus, OPTIONS, out)
    assert _fingerprint_on_disk(out)["model"] == new_fp["model"]
    # the rerun's counts are those of a fresh scan of the new weights, not the old ones resumed
    fresh = str(tmp_path / "fresh")
    _multiscan(ModelSpec("m", path), corpus, OPTIONS, fresh)
    for name in ("gender_phone__topk", "gender_phone__frames"):
        files = [glob.glob(os.path.join(d, "m", "arrays", f"*{name}*.npy")) for d in (out, fresh)]
        assert files[0] and len(files[0]) == len(files[1])
        for a, b in zip(sorted(files[0]), sorted(files[1]), strict=True):
            np.testing.assert_array_equal(np.load(a), np.load(b))
