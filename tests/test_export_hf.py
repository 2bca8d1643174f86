"""HF export: HF tiny model -> convert -> (prune) -> export -> transformers loads it, no missing/unexpected keys,
same outputs; unequal widths refused or zero-padded; MelHuBERT refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import load_file  # noqa: E402

from checkpoints_convert.convert import convert  # noqa: E402
from checkpoints_convert.export_hf import SIDECAR, ExportError, export_hf  # noqa: E402
from checkpoints_convert.hf_weights import CheckpointError  # noqa: E402
from jaxneurons.models import SpeechConfig, abstract_model, build_model, forward_with_captures  # noqa: E402
from jaxneurons.models.checkpoint import load_model  # noqa: E402
from jaxneurons.pruning import protected_prune, slim_model  # noqa: E402
from tests.helpers import PARITY_CASES, build_hf_model, hf_forward_with_hooks, padded_batch  # noqa: E402

LENGTHS = (1601, 1234)
# weight-norm pos conv (wav2vec2, wavlm), BatchNorm pos conv without weight norm (hubert), stacked convs (data2vec)
CASES = ("wav2vec2-group-base", "hubert-layer-stable-bn", "data2vec-audio", "wavlm-layer-stable")


def _load_hf(path, case):
    cls = getattr(transformers, PARITY_CASES[case][1])
    model, info = cls.from_pretrained(str(path), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info.get("mismatched_keys"), info
    model.config._attn_implementation = "eager"
    return model.eval()


def _last_hidden(hf, audio, lengths):
    last, _, _ = hf_forward_with_hooks(hf, audio, lengths)
    return last


def _valid(hf, lengths):
    frames = hf._get_feat_extract_output_lengths(torch.tensor(lengths)).numpy()
    t = int(frames.max())
    return np.arange(t)[None] < frames[:, None]


def _zero_w2_columns(hf, keep):
    """The pruned model, in HF terms: the original with W2 columns of pruned neurons zeroed."""
    with torch.no_grad():
        for l, layer in enumerate(hf.encoder.layers):
            layer.feed_forward.output_dense.weight[:, torch.from_numpy(~np.asarray(keep[l]))] = 0.0
    return hf


@pytest.fixture(scope="module", params=CASES)
def converted(request, tmp_path_factory):
    case = request.param
    root = tmp_path_factory.mktemp(case)
    hf = build_hf_model(case)
    hf.save_pretrained(root / "hf")
    convert(str(root / "hf"), str(root / "jax"))
    return case, root, hf, load_model(str(root / "jax"))


def test_unpruned_round_trip(converted):
    case, root, hf, model = converted
    report = export_hf(model, str(root / "export"))
    assert not report["padded_ffn"]
    original = load_file(str(root / "hf" / "model.safetensors"))
    exported = load_file(str(root / "export" / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for key, value in original.items():
        np.testing.assert_allclose(exported[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    reloaded = _load_hf(root / "export", case)
    audio, lengths = padded_batch(LENGTHS)
    valid = _valid(hf, lengths)
    diff = np.abs(_last_hidden(reloaded, audio, lengths) - _last_hidden(hf, audio, lengths))[valid].max()
    assert diff < 1e-5


def test_pruned_round_trip(converted):
    case, root, hf, model = converted
    keep = protected_prune(model, 0.5)
    slim = slim_model(model, keep)
    export_hf(slim, str(root / "pruned"))
    config = json.loads((root / "pruned" / "config.json").read_text())
    assert config["intermediate_size"] == 24
    reloaded = _load_hf(root / "pruned", case)
    assert reloaded.encoder.layers[0].feed_forward.intermediate_dense.weight.shape == (24, 32)
    audio, lengths = padded_batch(LENGTHS, seed=1)
    valid = _valid(hf, lengths)
    ours = _last_hidden(reloaded, audio, lengths)
    masked_hf = _last_hidden(_zero_w2_columns(build_hf_model(case), keep), audio, lengths)
    assert np.abs(ours - masked_hf)[valid].max() < 1e-4
    if case == CASES[0]:  # and against our own forward once (JAX compile is the slow part)
        slim.config = slim.config.replace(group_norm_padding="hf")  # HF's padded-batch semantics
        out, _, _ = forward_with_captures(slim, audio, lengths, capture_ffn=False)
        assert np.abs(ours - np.asarray(out.last_hidden_state))[valid].max() < 1e-4


def test_unequal_widths_refused_or_padded(converted):
    case, root, hf, model = converted
    keep = protected_prune(model, 0.4, scope="global")
    widths = [int(k.sum()) for k in keep]
    assert len(set(widths)) > 1
    slim = slim_model(model, keep)
    with pytest.raises(ExportError, match="pad_ffn=True"):
        export_hf(slim, str(root / "refused"))
    assert not (root / "refused").exists()
    report = export_hf(slim, str(root / "padded"), pad_ffn=True)
    assert report["padded_ffn"] and report["ffn_widths"] == widths
    sidecar = json.loads((root / "padded" / SIDECAR).read_text())
    assert sidecar["hf_intermediate_size"] == max(widths) and sidecar["ffn_widths"] == widths
    reloaded = _load_hf(root / "padded", case)
    audio, lengths = padded_batch(LENGTHS, seed=2)
    valid = _valid(hf, lengths)
    _, _, ffn = hf_forward_with_hooks(reloaded, audio, lengths)
    for l, w in enumerate(widths):
        assert np.all(ffn[l][..., w:] == 0.0)  # padding neurons are silent: act(0) = 0
    masked_hf = _last_hidden(_zero_w2_columns(build_hf_model(case), keep), audio, lengths)
    assert np.abs(_last_hidden(reloaded, audio, lengths) - masked_hf)[valid].max() < 1e-4


def test_melhubert_refused(tmp_path):
    cfg = SpeechConfig(family="melhubert", hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=8, num_mel_bins=4, num_conv_pos_embeddings=2, num_conv_pos_embedding_groups=2)
    with pytest.raises(ExportError, match="no HF transformers class"):
        export_hf(abstract_model(cfg), str(tmp_path / "out"))  # refused before any weight is read
    assert not (tmp_path / "out").exists()


def test_inexpressible_config_refused(tmp_path):
    # data2vec-audio in HF is always post-LN with a LayerNorm front end; a pre-LN variant has no HF config.
    cfg = SpeechConfig(family="data2vec-audio", hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=8, conv_dim=(4,), conv_kernel=(10,), conv_stride=(5,),
                       feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=2,
                       num_conv_pos_embedding_groups=2)
    with pytest.raises(ExportError, match="do_stable_layer_norm=True"):
        export_hf(abstract_model(cfg), str(tmp_path / "out"))


def test_existing_directory_needs_overwrite(tmp_path):
    cfg = SpeechConfig(family="wav2vec2", hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=8, conv_dim=(4,), conv_kernel=(10,), conv_stride=(5,),
                       num_conv_pos_embeddings=2, num_conv_pos_embedding_groups=2)
    model = build_model(cfg)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="overwrite=True"):
        export_hf(model, str(tmp_path / "busy"))
    export_hf(model, str(tmp_path / "busy"), overwrite=True)
    assert not (tmp_path / "busy" / "keep.txt").exists()
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["config.json", SIDECAR, "model.safetensors"]


def _params(model):
    from flax import nnx

    return {k: np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_jax_hf_jax_round_trip_restores_true_widths(converted, scope):
    case, root, hf, model = converted
    if case != CASES[0]:
        pytest.skip("one family is enough: the sidecar logic does not depend on it")
    keep = protected_prune(model, 0.4, scope=scope)
    widths = [int(k.sum()) for k in keep]
    assert (len(set(widths)) > 1) == (scope == "global")
    slim = slim_model(model, keep)
    export_hf(slim, str(root / f"rt-{scope}"), pad_ffn=True)
    report = convert(str(root / f"rt-{scope}"), str(root / f"rt-{scope}-jax"))
    back = load_model(str(root / f"rt-{scope}-jax"))
    assert [back.config.ffn_width(i) for i in range(back.config.num_hidden_layers)] == widths
    assert back.config.intermediate_sizes == (tuple(widths) if scope == "global" else None)
    assert report["export_sidecar"]["ffn_widths"] == widths
    ours, theirs = _params(slim), _params(back)
    assert sorted(ours) == sorted(theirs)
    for key, value in ours.items():
        np.testing.assert_allclose(theirs[key], value, rtol=1e-6, atol=1e-6, err_msg=str(key))


def test_sidecar_that_does_not_describe_padding_is_an_error(converted, tmp_path):
    case, root, hf, model = converted
    if case != CASES[0]:
        pytest.skip("one family is enough")
    keep = protected_prune(model, 0.4, scope="global")
    export_hf(slim_model(model, keep), str(tmp_path / "hf"), pad_ffn=True)
    sidecar = json.loads((tmp_path / "hf" / SIDECAR).read_text())
    sidecar["ffn_widths"] = [w - 1 for w in sidecar["ffn_widths"]]  # would cut real neurons
    (tmp_path / "hf" / SIDECAR).write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="not zero beyond the sidecar's width"):
        convert(str(tmp_path / "hf"), str(tmp_path / "jax"))
    sidecar["ffn_widths"] = [10_000] * len(sidecar["ffn_widths"])
    (tmp_path / "hf" / SIDECAR).write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="expected ffn_widths"):
        convert(str(tmp_path / "hf"), str(tmp_path / "jax"))
