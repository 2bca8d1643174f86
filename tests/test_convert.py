"""Converter input handling: key styles, prefixes, .bin, and clear errors for bad checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402

from checkpoints_convert.convert import convert  # noqa: E402
from checkpoints_convert.hf_weights import CheckpointError  # noqa: E402
from jaxneurons.models import ConfigError, forward_with_captures  # noqa: E402
from jaxneurons.models.checkpoint import load_model, read_provenance  # noqa: E402
from tests.helpers import build_hf_model, hf_forward_with_hooks, padded_batch  # noqa: E402

CASE = "wav2vec2-group-base"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf")
    build_hf_model(CASE).save_pretrained(path)
    return path


def _copy_dir(src, dst, edit_weights=None, edit_config=None):
    dst.mkdir()
    config = json.loads((src / "config.json").read_text())
    if edit_config:
        edit_config(config)
    (dst / "config.json").write_text(json.dumps(config))
    weights = load_file(str(src / "model.safetensors"))
    if edit_weights:
        edit_weights(weights)
    save_file(weights, str(dst / "model.safetensors"))
    return dst


def _check_matches(hf, out_dir):
    model = load_model(str(out_dir))
    model.config = model.config.replace(group_norm_padding="hf")
    audio, lengths = padded_batch((900, 700))
    last, _, _ = hf_forward_with_hooks(hf, audio, lengths)
    out, _, _ = forward_with_captures(model, audio, lengths, capture_ffn=False)
    valid = np.asarray(out.frame_mask)
    assert np.abs(np.asarray(out.last_hidden_state) - last)[valid].max() < 1e-4


def test_old_weight_norm_key_style(hf_dir, tmp_path):
    def rename(w):
        for new, old in (("weight_g", "parametrizations.weight.original0"),
                         ("weight_v", "parametrizations.weight.original1")):
            key = "encoder.pos_conv_embed.conv." + old
            w["encoder.pos_conv_embed.conv." + new] = w.pop(key)

    src = _copy_dir(hf_dir, tmp_path / "old", edit_weights=rename)
    convert(str(src), str(tmp_path / "out"))
    _check_matches(build_hf_model(CASE), tmp_path / "out")


def test_pytorch_bin_with_task_head_prefix(tmp_path):
    hf = build_hf_model(CASE, model_class="Wav2Vec2ForCTC")
    import torch

    # transformers v5 writes only safetensors; a .bin is the plain torch.save of the state dict.
    (tmp_path / "ctc").mkdir()
    hf.config.to_json_file(str(tmp_path / "ctc" / "config.json"))
    torch.save(hf.state_dict(), tmp_path / "ctc" / "pytorch_model.bin")
    report = convert(str(tmp_path / "ctc"), str(tmp_path / "out"))
    assert report["base_prefix"] == "wav2vec2."
    assert report["dropped_head_weights"] == ["lm_head.bias", "lm_head.weight"]
    assert read_provenance(str(tmp_path / "out"))["conversion"]["base_prefix"] == "wav2vec2."
    _check_matches(hf.wav2vec2, tmp_path / "out")


def test_missing_weight_is_listed(hf_dir, tmp_path):
    src = _copy_dir(hf_dir, tmp_path / "m", edit_weights=lambda w: w.pop("encoder.layers.1.attention.q_proj.bias"))
    with pytest.raises(CheckpointError, match=r"missing weights: \['encoder.layers.1.attention.q_proj.bias'\]"):
        convert(str(src), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_unexpected_and_misshaped_weights_are_listed(hf_dir, tmp_path):
    def edit(w):
        w["encoder.extra.weight"] = np.zeros(3, np.float32)
        w["encoder.layers.0.feed_forward.output_dense.bias"] = np.zeros(5, np.float32)

    src = _copy_dir(hf_dir, tmp_path / "u", edit_weights=edit)
    with pytest.raises(CheckpointError) as err:
        convert(str(src), str(tmp_path / "out"))
    msg = str(err.value)
    assert "model.safetensors" in msg
    assert "unexpected weights: ['encoder.extra.weight']" in msg
    assert "encoder.layers.0.feed_forward.output_dense.bias: checkpoint (5,)" in msg


def test_unknown_architecture_and_config_keys(hf_dir, tmp_path):
    src = _copy_dir(hf_dir, tmp_path / "a", edit_config=lambda c: c.update(model_type="bert"))
    with pytest.raises(ConfigError, match="config.json: unsupported model_type 'bert'"):
        convert(str(src), str(tmp_path / "out"))
    src = _copy_dir(hf_dir, tmp_path / "k", edit_config=lambda c: c.update(rotary_dim=8))
    with pytest.raises(ConfigError, match="unknown config keys .*rotary_dim"):
        convert(str(src), str(tmp_path / "out"))


def test_corrupt_and_absent_weights(hf_dir, tmp_path):
    src = tmp_path / "c"
    src.mkdir()
    (src / "config.json").write_text((hf_dir / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        convert(str(src), str(tmp_path / "out"))
    (src / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read safetensors"):
        convert(str(src), str(tmp_path / "out"))
    (src / "model.safetensors").unlink()
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: cannot load as a weights-only"):
        convert(str(src), str(tmp_path / "out"))


def test_bin_with_pickled_code_is_refused(hf_dir, tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    src = tmp_path / "evil"
    src.mkdir()
    (src / "config.json").write_text((hf_dir / "config.json").read_text())
    with open(src / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        convert(str(src), str(tmp_path / "out"))


def test_load_model_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a jaxneurons model directory"):
        load_model(str(tmp_path))
