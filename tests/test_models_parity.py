"""Converted Flax models equal the HF PyTorch forward (hidden states and FFN h, every layer, valid frames)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from checkpoints_convert.convert import convert  # noqa: E402
from jaxneurons.models import forward_with_captures  # noqa: E402
from jaxneurons.models.checkpoint import load_model  # noqa: E402
from tests.helpers import PARITY_CASES, build_hf_model, hf_forward_with_hooks, padded_batch  # noqa: E402

LENGTHS = (1601, 1234, 777)  # padding and odd lengths
TOL = 1e-4


def _assert_close(name, ours, theirs, mask):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} vs {theirs.shape}"
    diff = np.abs(ours - theirs)[mask].max()
    assert diff < TOL, f"{name}: max abs diff {diff:.2e} on valid frames"


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_parity_with_transformers(case, tmp_path):
    hf = build_hf_model(case)
    hf.save_pretrained(tmp_path / "hf")
    convert(str(tmp_path / "hf"), str(tmp_path / "jax"))
    model = load_model(str(tmp_path / "jax"))
    model.config = model.config.replace(group_norm_padding="hf")  # HF's own padded-batch semantics
    audio, lengths = padded_batch(LENGTHS)
    last, layer_io, ffn = hf_forward_with_hooks(hf, audio, lengths)
    out, our_ffn, _ = forward_with_captures(model, audio, lengths)
    mask = np.asarray(out.frame_mask)
    expected_frames = hf._get_feat_extract_output_lengths(__import__("torch").tensor(lengths)).numpy()
    np.testing.assert_array_equal(np.asarray(out.frame_lengths), expected_frames)
    assert len(out.hidden_states) == len(layer_io)
    for i, (ours, theirs) in enumerate(zip(out.hidden_states, layer_io, strict=True)):
        _assert_close(f"{case} hidden_states[{i}]", ours, theirs, mask)
    for i, (ours, theirs) in enumerate(zip(our_ffn, ffn, strict=True)):
        _assert_close(f"{case} layers.{i}.ffn", ours, theirs, mask)
    _assert_close(f"{case} last_hidden_state", out.last_hidden_state, last, mask)


def test_neuron_mask_equals_zeroed_w2_column(tmp_path):
    import torch

    hf = build_hf_model("hubert-group-noprojln")
    hf.save_pretrained(tmp_path / "hf")
    convert(str(tmp_path / "hf"), str(tmp_path / "jax"))
    model = load_model(str(tmp_path / "jax"))
    model.config = model.config.replace(group_norm_padding="hf")
    layer, neuron = 1, 7
    with torch.no_grad():
        hf.encoder.layers[layer].feed_forward.output_dense.weight[:, neuron] = 0.0
    audio, lengths = padded_batch(LENGTHS, seed=3)
    last, layer_io, _ = hf_forward_with_hooks(hf, audio, lengths)
    cfg = model.config
    mask = np.ones((cfg.num_hidden_layers, cfg.intermediate_size), np.float32)
    mask[layer, neuron] = 0.0
    out, ffn, _ = forward_with_captures(model, audio, lengths, neuron_mask=mask)
    valid = np.asarray(out.frame_mask)
    _assert_close("masked last_hidden_state", out.last_hidden_state, last, valid)
    assert np.all(np.asarray(ffn[layer])[..., neuron] == 0.0)
    # ... and the mask really changed something.
    unmasked, _, _ = forward_with_captures(model, audio, lengths)
    assert np.abs(np.asarray(unmasked.last_hidden_state) - last)[valid].max() > 1e-4


@pytest.mark.parametrize("case", ["wav2vec2-group-base", "wavlm-group-base"])
def test_masked_group_norm_equals_hf_on_each_utterance_alone(case, tmp_path):
    """Default group_norm_padding='mask': a padded batch gives each utterance's unpadded HF activations."""
    hf = build_hf_model(case)
    hf.save_pretrained(tmp_path / "hf")
    convert(str(tmp_path / "hf"), str(tmp_path / "jax"))
    model = load_model(str(tmp_path / "jax"))
    assert model.config.group_norm_padding == "mask"
    audio, lengths = padded_batch(LENGTHS)
    out, ffn, _ = forward_with_captures(model, audio, lengths)
    for b, n in enumerate(LENGTHS):
        last, layer_io, hf_ffn = hf_forward_with_hooks(hf, audio[b:b + 1, :n], lengths[b:b + 1])
        t = int(out.frame_lengths[b])
        assert last.shape[1] == t
        for i, theirs in enumerate(hf_ffn):
            diff = np.abs(np.asarray(ffn[i][b, :t]) - theirs[0]).max()
            assert diff < TOL, f"{case} utterance {b} layers.{i}.ffn: {diff:.2e}"
        diff = np.abs(np.asarray(out.last_hidden_state[b, :t]) - last[0]).max()
        assert diff < TOL, f"{case} utterance {b} last_hidden_state: {diff:.2e}"
