"""The authors' MelHuBERT checkpoints (nervjack2/MelHuBERT): format, conversion and parity with an independent
PyTorch re-statement of their code (tests/s3prl_reference.py) run on the checkpoint's own tensors.

Checkpoints are written in the original format (``model`` state dict + ``Upstream_Config["melhubert"]``, with the
``Optimizer``, ``Args`` namespace and ``Step`` the authors' trainer saves) by the project's exporter from random
weights. Parity against the original repository's code itself was checked outside the test suite (see the
README section on supported checkpoints).
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from checkpoints_convert.convert import convert  # noqa: E402
from checkpoints_convert.hf_weights import CheckpointError  # noqa: E402
from checkpoints_convert.s3prl_checkpoints import (  # noqa: E402
    melhubert_checkpoint,
    melhubert_config,
)
from jaxneurons.models import build_model  # noqa: E402
from jaxneurons.models.checkpoint import load_model, read_provenance  # noqa: E402
from tests.s3prl_reference import jax_forward, melhubert_forward, rel_error  # noqa: E402

LENGTHS = (8871, 12345)  # 53 (odd: a zero-padded last 20 ms frame) and 76 fbank frames
TOL = 1e-4


def _upstream(frame_ms: int) -> dict:
    return {"feat_emb_dim": 80 if frame_ms == 20 else 40, "encoder_layers": 2, "encoder_embed_dim": 32,
            "encoder_ffn_embed_dim": 64, "encoder_attention_heads": 4, "conv_pos": 8, "conv_pos_groups": 4,
            "num_cluster": 10, "mask_prob": 0.7, "mask_length": 5, "dropout": 0.1}


def _audio(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(max(LENGTHS)) / 16000
    out = []
    for i, n in enumerate(LENGTHS):
        x = 0.3 * np.sin(2 * np.pi * (150 + 60 * i) * t[:n]) + 0.05 * rng.standard_normal(n)
        out.append((x * np.hanning(n) ** 0.1).astype(np.float32))
    return out


def _mean_std(path) -> np.ndarray:
    rng = np.random.default_rng(3)
    data = np.stack([rng.normal(12.0, 2.0, 40), rng.uniform(2.0, 4.0, 40)]).astype(np.float32)
    np.save(path, data)
    return data


def _random_checkpoint(tmp_path, frame_ms: int, mean_std: np.ndarray) -> tuple[str, dict]:
    upstream = _upstream(frame_ms)
    config = melhubert_config(upstream, (tuple(mean_std[0]), tuple(mean_std[1])), "test")
    model = build_model(config, seed=frame_ms)
    from flax import nnx

    rng = np.random.default_rng(frame_ms)
    state = jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32),
                         nnx.state(model, nnx.Param))  # every weight random, LayerNorms too
    nnx.update(model, state)
    training = {k: v for k, v in upstream.items() if k.startswith(("mask", "drop"))}
    ckpt = melhubert_checkpoint(model, extra_config=training)
    ckpt["Optimizer"] = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))]).state_dict()
    ckpt["Args"] = argparse.Namespace(frame_period=frame_ms, expdir="exp")
    ckpt["Runner"] = {"optimizer": {"lr": 1e-4}}
    path = str(tmp_path / f"melhubert-{frame_ms}ms.ckpt")
    torch.save(ckpt, path)
    return path, ckpt


@pytest.fixture(scope="module", params=(20, 10))
def converted(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"mh{request.param}")
    mean_std = _mean_std(tmp / "mean-std.npy")
    path, ckpt = _random_checkpoint(tmp, request.param, mean_std)
    report = convert(path, str(tmp / "jax"), str(tmp / "mean-std.npy"))
    return request.param, ckpt, mean_std, report, load_model(str(tmp / "jax")), tmp


def _batch(waves):
    n = max(len(w) for w in waves)
    audio = np.zeros((len(waves), n), np.float32)
    for i, w in enumerate(waves):
        audio[i, : len(w)] = w
    return jnp.asarray(audio), jnp.asarray([len(w) for w in waves])


def test_config_follows_the_checkpoint(converted):
    frame_ms, ckpt, mean_std, report, model, tmp = converted
    c = model.config
    assert (c.family, c.frame_stacking, c.frame_stacking_pad, c.input_layer_norm) == ("melhubert", frame_ms // 10,
                                                                                      True, False)
    assert (c.fbank_window, c.waveform_scale, c.num_mel_bins) == ("hamming", 32768.0, 40)
    np.testing.assert_array_equal(np.float32(c.fbank_mean), mean_std[0])  # stored with the model, exactly
    np.testing.assert_array_equal(np.float32(c.fbank_std), mean_std[1])
    assert (c.num_conv_pos_embeddings, c.num_conv_pos_embedding_groups, c.num_clusters) == (8, 4, 10)
    assert model.masked_spec_embed is None and c.mask_before_proj  # learnable_mask_emb False: zeros, before proj
    provenance = read_provenance(str(tmp / "jax"))["conversion"]
    assert provenance["source_config"]["mask_prob"] == 0.7 and provenance["mean_std_sha256"]
    assert report["num_tensors"] == len(ckpt["model"]) - 1  # weight_g + weight_v fold into one kernel


def test_parity_with_the_authors_forward_single_and_padded(converted):
    frame_ms, ckpt, mean_std, _, model, _ = converted
    waves = _audio()
    upstream = ckpt["Upstream_Config"]["melhubert"]
    refs = [melhubert_forward(ckpt["model"], upstream, w, mean_std) for w in waves]
    batch_out, batch_ffn = jax_forward(model, waves)
    single_out, single_ffn = jax_forward(model, waves[:1])  # the odd-length one alone
    cases = [(single_out, single_ffn, 0, 0)] + [(batch_out, batch_ffn, i, i) for i in range(len(waves))]
    for out, ffn, row, i in cases:
        ref_hidden, ref_ffn = refs[i]
        n = ref_hidden[0].shape[0]
        assert int(out.frame_lengths[row]) == n
        for layer, ref in enumerate(ref_hidden):
            assert rel_error(ref, np.asarray(out.hidden_states[layer][row, :n])) < TOL, (i, layer)
        for layer, ref in enumerate(ref_ffn):
            assert rel_error(ref, np.asarray(ffn[layer][row, :n])) < TOL, (i, layer)
    # the prediction head final_proj is converted too (masked-prediction continued pre-training)
    w, b = ckpt["model"]["final_proj.weight"].numpy(), ckpt["model"]["final_proj.bias"].numpy()
    logits = np.asarray(model.predict(batch_out))[0, : refs[0][0][0].shape[0]]
    np.testing.assert_allclose(logits, refs[0][0][-1] @ w.T + b, rtol=1e-4, atol=1e-4)


def test_time_mask_zeroes_input_frames_before_the_projection(converted):
    frame_ms, ckpt, mean_std, _, model, _ = converted
    wave = _audio()[0]
    audio, lengths = _batch([wave])
    n = int(model.num_frames(len(wave)))
    time_mask = np.zeros((1, n), bool)
    time_mask[0, 5:15] = True
    masked = model(audio, lengths, time_mask=jnp.asarray(time_mask))
    clean = model(audio, lengths)
    assert not np.allclose(np.asarray(masked.hidden_states[-1]), np.asarray(clean.hidden_states[-1]))
    # the authors' apply_mask: x[mask_indices] = mask_emb (0, not learnt) on the stacked input, before
    # pre_extract_proj: the same layers run on the zeroed input must give the masked output
    stacked, _ = model.features(audio, lengths)
    hidden = model.feature_projection.projection(jnp.where(jnp.asarray(time_mask)[:, :, None], 0.0, stacked))
    last, _ = model.encoder(hidden, clean.frame_mask, None, None, None)
    np.testing.assert_allclose(np.asarray(masked.last_hidden_state), np.asarray(last), rtol=1e-5, atol=1e-5)


def test_mean_std_is_required_and_checked(tmp_path):
    mean_std = _mean_std(tmp_path / "ok.npy")
    path, _ = _random_checkpoint(tmp_path, 20, mean_std)
    with pytest.raises(CheckpointError, match="needs --mean_std"):
        convert(path, str(tmp_path / "out"))
    np.save(tmp_path / "bad.npy", np.zeros((2, 80), np.float32))
    with pytest.raises(CheckpointError, match="bad.npy.*40 bins"):
        convert(path, str(tmp_path / "out"), str(tmp_path / "bad.npy"))
    assert not (tmp_path / "out").exists()


def test_unknown_config_key_and_unsupported_settings_are_errors(tmp_path):
    mean_std = _mean_std(tmp_path / "ms.npy")
    path, ckpt = _random_checkpoint(tmp_path, 20, mean_std)
    for change, message in (({"relative_position": True}, r"unknown MelHuBERT config keys \(.*\): relative_position"),
                            ({"activation_fn": "tanh"}, "activation_fn 'tanh'"),
                            ({"feat_emb_dim": 120}, "feat_emb_dim 120"),
                            ({"pos_conv_depth": 2}, "pos_conv_depth 2")):
        bad = dict(ckpt, Upstream_Config={"melhubert": {**ckpt["Upstream_Config"]["melhubert"], **change}})
        torch.save(bad, tmp_path / "bad.ckpt")
        with pytest.raises(CheckpointError, match=message):
            convert(str(tmp_path / "bad.ckpt"), str(tmp_path / "out"), str(tmp_path / "ms.npy"))


def test_pruned_checkpoint_with_per_layer_widths(tmp_path):
    # nervjack2/s3prl-pruning: the config lists one FFN width per layer and lives under "hubert"
    mean_std = _mean_std(tmp_path / "ms.npy")
    path, ckpt = _random_checkpoint(tmp_path, 20, mean_std)
    upstream = {**ckpt["Upstream_Config"]["melhubert"], "encoder_ffn_embed_dim": [64, 40]}
    state = dict(ckpt["model"])
    state["encoder.layers.1.fc1.weight"] = state["encoder.layers.1.fc1.weight"][:40]
    state["encoder.layers.1.fc1.bias"] = state["encoder.layers.1.fc1.bias"][:40]
    state["encoder.layers.1.fc2.weight"] = state["encoder.layers.1.fc2.weight"][:, :40]
    torch.save({"model": state, "Upstream_Config": {"hubert": upstream}}, tmp_path / "pruned.ckpt")
    convert(str(tmp_path / "pruned.ckpt"), str(tmp_path / "out"), str(tmp_path / "ms.npy"))
    model = load_model(str(tmp_path / "out"))
    assert model.config.intermediate_sizes == (64, 40)
    wave = _audio()[0]
    ref_hidden, ref_ffn = melhubert_forward(state, upstream, wave, mean_std)
    out, ffn = jax_forward(model, [wave])
    assert ffn[1].shape[-1] == 40
    assert rel_error(ref_hidden[-1], np.asarray(out.hidden_states[-1][0])) < TOL
    assert json.loads((tmp_path / "out" / "config.json").read_text())["intermediate_sizes"] == [64, 40]


def test_stacked_positional_convs_follow_fairseq():
    # conv_pos_depth > 1: fairseq's `depth` convs of kernel max(3, conv_pos // depth), LN without affine, GELU
    from jaxneurons.models import SpeechConfig

    config = SpeechConfig(family="melhubert", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=16, num_mel_bins=40, frame_stacking=1, num_conv_pos_embeddings=8,
                          num_conv_pos_embedding_groups=4, conv_pos_depth=3, input_layer_norm=False)
    model = build_model(config)
    layers = model.encoder.pos_conv_embed.layers
    assert len(layers) == 3 and all(layer.conv.kernel.shape == (3, 4, 16) for layer in layers)
    assert all(layer.layer_norm.scale is None for layer in layers)
    out, _ = jax_forward(model, [_audio()[0]])
    assert np.isfinite(np.asarray(out.last_hidden_state)).all()
