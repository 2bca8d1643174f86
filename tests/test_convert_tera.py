"""s3prl TERA / Mockingjay checkpoints: legacy (``Config``) and new (``Upstream_Config``) layouts, ``gamma``/``beta``
LayerNorm names, pre-/post-LN, chunked long inputs, both s3prl front ends, the spectrogram head, and parity with an
independent PyTorch re-statement of s3prl's code (tests/s3prl_reference.py) run on the checkpoint's tensors.

Checkpoints are written in s3prl's format by the project's exporter from random weights; parity with s3prl's own
code was checked outside the test suite (README, supported checkpoints).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flax import nnx  # noqa: E402

from checkpoints_convert.convert import convert  # noqa: E402
from checkpoints_convert.hf_weights import CheckpointError  # noqa: E402
from checkpoints_convert.s3prl_checkpoints import tera_checkpoint  # noqa: E402
from jaxneurons.models import SpeechConfig, build_model, forward_with_captures  # noqa: E402
from jaxneurons.models.checkpoint import load_model  # noqa: E402
from tests.s3prl_reference import jax_forward, legacy_optimizers_module, rel_error, tera_forward  # noqa: E402

TOL = 1e-4
LENGTHS = (9000, 13577)  # 57 / 85 frames (online mel)
BASE = dict(family="tera", hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            layer_norm_eps=1e-12, has_masked_spec_embed=False)
CASES = {
    # released TERA: online log-mel 80, CMVN, post-LN, new layout, with SpecHead
    "mel-postln-new": (dict(num_mel_bins=80, spec_head_dim=80), dict()),
    # oldest checkpoints: legacy Config, gamma/beta, pickled scheduler; pre-LN and chunks of 40 frames
    "mel-preln-legacy-chunked": (dict(num_mel_bins=40, do_stable_layer_norm=True, chunk_length=40),
                                 dict(legacy=True, old_layer_norm_names=True)),
    # s3prl kaldi extracter: fbank 24 + 2 delta orders + CMVN
    "fbank-delta": (dict(num_mel_bins=24, s3prl_features="kaldi_fbank", feature_delta=2, target_level_db=None),
                    dict()),
}


def _audio() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    t = np.arange(max(LENGTHS)) / 16000
    return [(0.2 * np.sin(2 * np.pi * (200 + 90 * i) * t[:n]) + 0.03 * rng.standard_normal(n)).astype(np.float32)
            for i, n in enumerate(LENGTHS)]


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, tmp_path_factory):
    name = request.param
    fields, layout = CASES[name]
    tmp = tmp_path_factory.mktemp(name)
    model = build_model(SpeechConfig(**BASE, **fields), seed=len(name))
    rng = np.random.default_rng(len(name))
    nnx.update(model, jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32),
                                   nnx.state(model, nnx.Param)))
    ckpt = tera_checkpoint(model, **layout)
    if layout.get("legacy"):
        with legacy_optimizers_module() as module:  # the converter must not need it: removed before convert
            ckpt["Scheduler"] = module.WarmupLinearSchedule()
            torch.save(ckpt, tmp / "states.ckpt")
    else:
        torch.save(ckpt, tmp / "states.ckpt")
    report = convert(str(tmp / "states.ckpt"), str(tmp / "jax"))
    return name, ckpt, report, load_model(str(tmp / "jax"))


def test_checkpoint_layout_and_config(converted):
    name, ckpt, report, model = converted
    fields, layout = CASES[name]
    assert report["config_layout"] == ("legacy" if layout.get("legacy") else "new")
    assert report["skipped_training_state"] == (["optimizers.WarmupLinearSchedule"] if layout.get("legacy") else [])
    assert any(("gamma" in k) for k in ckpt["Transformer"]) == bool(layout.get("old_layer_norm_names"))
    for key, value in fields.items():
        assert getattr(model.config, key) == value, key
    assert (model.spec_head is not None) == ("SpecHead" in ckpt)


def test_parity_with_s3prl_forward_single_and_padded(converted):
    name, ckpt, _, model = converted
    upstream = ckpt.get("Upstream_Config") or ckpt["Config"]
    waves = _audio()
    refs = [tera_forward(ckpt["Transformer"], upstream, w, ckpt.get("SpecHead")) for w in waves]
    batch_out, batch_ffn = jax_forward(model, waves)
    single_out, single_ffn = jax_forward(model, waves[1:])
    cases = ((single_out, single_ffn, 0, 1), (batch_out, batch_ffn, 0, 0), (batch_out, batch_ffn, 1, 1))
    for out, ffn, row, i in cases:
        ref_hidden, ref_ffn, ref_head = refs[i]
        n = ref_hidden[0].shape[0]
        assert int(out.frame_lengths[row]) == n
        for layer, ref in enumerate(ref_hidden):
            assert rel_error(ref, np.asarray(out.hidden_states[layer][row, :n])) < TOL, (i, layer)
        for layer, ref in enumerate(ref_ffn):
            assert rel_error(ref, np.asarray(ffn[layer][row, :n])) < TOL, (i, layer)
        if ref_head is not None:
            assert rel_error(ref_head, np.asarray(model.predict(out))[row, :n]) < TOL


def test_chunked_model_attends_within_chunks_only(converted):
    name, ckpt, _, model = converted
    if not model.config.chunk_length:
        pytest.skip("no chunking in this case")
    # 85 frames, chunk_length 40 -> torch.chunk(x, 3): 29 + 29 + 27 frames, each its own sequence in s3prl
    _, _, attn = forward_with_captures(model, jnp.asarray(_audio()[1][None]), capture_ffn=False,
                                       capture_attention=True)
    probs = np.asarray(attn[0][0])  # (H, T, T)
    blocks = np.repeat(np.arange(3), (29, 29, 27))
    same = blocks[:, None] == blocks[None, :]
    assert probs.shape[-1] == 85 and np.all(probs[:, ~same] == 0.0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_unsupported_checkpoints_are_errors(tmp_path):
    model = build_model(SpeechConfig(**BASE, num_mel_bins=40), seed=0)
    ckpt = tera_checkpoint(model)
    for change, message in (({"feat_type": "mfcc"}, "feat_type 'mfcc'"),):
        bad = dict(ckpt)
        bad["Upstream_Config"] = {**ckpt["Upstream_Config"],
                                  "audio": {**ckpt["Upstream_Config"]["audio"],
                                            "input": {**ckpt["Upstream_Config"]["audio"]["input"], **change}}}
        torch.save(bad, tmp_path / "bad.ckpt")
        with pytest.raises(CheckpointError, match=message):
            convert(str(tmp_path / "bad.ckpt"), str(tmp_path / "out"))
    no_audio = dict(ckpt, Upstream_Config={k: v for k, v in ckpt["Upstream_Config"].items() if k != "audio"})
    torch.save(no_audio, tmp_path / "no_audio.ckpt")
    with pytest.raises(CheckpointError, match="pre-extracted features"):
        convert(str(tmp_path / "no_audio.ckpt"), str(tmp_path / "out"))
    wrong = dict(ckpt, Transformer={**ckpt["Transformer"],
                                    "input_representations.spec_transform.weight": torch.zeros(32, 7)})
    torch.save(wrong, tmp_path / "wrong.ckpt")
    with pytest.raises(CheckpointError, match="wrongly shaped.*spec_transform"):
        convert(str(tmp_path / "wrong.ckpt"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
