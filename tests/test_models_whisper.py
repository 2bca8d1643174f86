"""Whisper encoder: converted Flax models equal HF ``WhisperModel.encoder`` (every layer's hidden states and FFN h),
from HF's ``input_features`` over the whole window and from raw audio (single utterances and padded batches)
through our log-mel front end vs HF's ``WhisperFeatureExtractor``; masks, captures and real-audio frames.

Tolerance: 1e-4 of each tensor's max |value| (measured <= 4e-7 on these random configs).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import save_file  # noqa: E402

from checkpoints_convert.convert import convert  # noqa: E402
from checkpoints_convert.hf_weights import CheckpointError  # noqa: E402
from checkpoints_convert.whisper import whisper_encoder_weights  # noqa: E402
from jaxneurons.models import ConfigError, config_from_hf_dict, forward_with_captures  # noqa: E402
from jaxneurons.models.checkpoint import load_model  # noqa: E402
from jaxneurons.models.config import load_hf_config  # noqa: E402

TOL = 1e-4
DECODER = dict(decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=16, vocab_size=60, max_target_positions=16,
               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
# name -> (HF class, WhisperConfig kwargs, window in seconds = 2 * max_source_positions * 160 / 16000)
CASES = {
    "model-80-gelu": ("WhisperModel", dict(
        d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=48, num_mel_bins=80,
        max_source_positions=50, **DECODER), 1),
    # model.encoder.* keys, a decoder and a proj_out head to drop; large-v3's 128 bins.
    "generation-128-gelu-new": ("WhisperForConditionalGeneration", dict(
        d_model=24, encoder_layers=3, encoder_attention_heads=3, encoder_ffn_dim=40, num_mel_bins=128,
        max_source_positions=100, activation_function="gelu_new", **DECODER), 2),
}
LENGTHS = (40000, 9000, 3001)  # longer than every window (truncated: the batch has all P frames), padded, short


def build_hf(case: str, seed: int = 0):
    class_name, kwargs, _ = CASES[case]
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(transformers.WhisperConfig(**kwargs))
    # Random init leaves LayerNorms at identity and biases at zero: perturb them so the test sees every parameter.
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    model.config._attn_implementation = "eager"
    return model.eval()


def extractor(case: str):
    _, kwargs, seconds = CASES[case]
    return transformers.WhisperFeatureExtractor(feature_size=kwargs["num_mel_bins"], chunk_length=seconds)


@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, tmp_path_factory):
    case = request.param
    hf = build_hf(case)
    root = tmp_path_factory.mktemp(case)
    if CASES[case][0] == "WhisperModel":
        hf.save_pretrained(root / "hf")
    else:  # the full state dict, with the (tied) proj_out head that save_pretrained leaves out
        (root / "hf").mkdir()
        hf.config.to_json_file(str(root / "hf" / "config.json"))
        save_file({k: v.detach().numpy().copy() for k, v in hf.state_dict().items()},
                  str(root / "hf" / "model.safetensors"))
    extractor(case).save_pretrained(root / "hf")
    report = convert(str(root / "hf"), str(root / "ours"))
    return case, hf, load_model(str(root / "ours")), report


def hf_encoder(hf):
    return hf.model.encoder if hasattr(hf, "model") else hf.encoder


def hf_forward(hf, features: np.ndarray, attentions: bool = False):
    """HF encoder with hooks: (last hidden, [layer-0 input, layer outputs...], per-layer FFN h, attentions)."""
    enc = hf_encoder(hf)
    layer_io: list = [None] * (len(enc.layers) + 1)
    ffn: list = [None] * len(enc.layers)
    handles = []
    for i, layer in enumerate(enc.layers):
        def layer_hook(mod, args, kwargs, out, i=i):
            if i == 0:
                layer_io[0] = (args[0] if args else kwargs["hidden_states"]).detach().numpy().copy()
            layer_io[i + 1] = (out[0] if isinstance(out, tuple) else out).detach().numpy().copy()

        def fc2_pre_hook(mod, args, i=i):
            ffn[i] = args[0].detach().numpy().copy()

        handles.append(layer.register_forward_hook(layer_hook, with_kwargs=True))
        handles.append(layer.fc2.register_forward_pre_hook(fc2_pre_hook))
    with torch.no_grad():
        out = enc(torch.from_numpy(features), output_attentions=attentions)
    for h in handles:
        h.remove()
    attn = [a.numpy() for a in out.attentions] if attentions else None
    return out.last_hidden_state.numpy(), layer_io, ffn, attn


def audio_batch(lengths=LENGTHS, seed=0):
    rng = np.random.default_rng(seed)
    audio = np.zeros((len(lengths), max(lengths)), np.float32)
    for i, n in enumerate(lengths):
        audio[i, :n] = rng.standard_normal(n).astype(np.float32) * 0.3
    return audio, np.asarray(lengths, np.int32)


def hf_features(case, audio, lengths):
    return extractor(case)([audio[i, :n] for i, n in enumerate(lengths)], sampling_rate=16000,
                           return_tensors="np").input_features


def _close(name, ours, theirs, tol=TOL):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} vs {theirs.shape}"
    rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert rel <= tol, f"{name}: max |ours - HF| / max |HF| = {rel:.2e}"


def test_conversion_keeps_the_encoder_only(converted):
    case, hf, model, report = converted
    n_layers = hf.config.encoder_layers
    assert report["family"] == "whisper"
    # conv1/conv2 weight + bias, positions, final LN (7); per layer q/v/out weight + bias, a bias-free k, 4 LN/FFN pairs
    assert report["num_tensors"] == 7 + 15 * n_layers
    assert report["dropped_decoder_tensors"] > 0
    assert report["ignored_config"]["decoder_layers"] == 1 and "d_model" not in report["ignored_config"]
    assert report["dropped_head_weights"] == (["proj_out.weight"] if "Generation" in CASES[case][0] else [])
    enc = hf_encoder(hf)
    np.testing.assert_array_equal(np.asarray(model.encoder.embed_positions.embedding[...]),
                                  enc.embed_positions.weight.detach().numpy())


def jit_forward(model):
    """One compiled forward with FFN and attention captures (eager dispatch would compile op by op)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, audio, lengths, masks):
        return forward_with_captures(nnx.merge(graphdef, state), audio, lengths, capture_attention=True, **masks)

    return lambda audio, lengths=None, **masks: run(state, jnp.asarray(audio), lengths, masks)


@pytest.fixture(scope="module")
def runs(converted):
    """HF and our outputs on the padded batch (its longest row fills the window) and on its shortest row alone."""
    case, hf, model, _ = converted
    audio, lengths = audio_batch()
    features = hf_features(case, audio, lengths)
    forward = jit_forward(model)
    return dict(case=case, hf=hf, model=model, forward=forward, audio=audio, lengths=lengths, features=features,
                theirs=hf_forward(hf, features, attentions=True), batch=forward(audio, jnp.asarray(lengths)),
                single=forward(audio[2:, : lengths[2]]))


def test_full_window_parity_from_hf_input_features(runs):
    last, layer_io, _, _ = runs["theirs"]
    graphdef, state = nnx.split(runs["model"])
    encode = jax.jit(lambda state, features: nnx.merge(graphdef, state).encode_features(features))
    out = encode(state, jnp.asarray(runs["features"].transpose(0, 2, 1)))
    _close("last_hidden_state", out.last_hidden_state, last)
    assert len(out.hidden_states) == len(layer_io)
    for i, (a, b) in enumerate(zip(out.hidden_states, layer_io, strict=True)):
        _close(f"hidden_states[{i}]", a, b)


def test_raw_audio_parity_padded_batch_and_single(runs):
    last, layer_io, ffn, attn = runs["theirs"]
    out, ours_ffn, ours_attn = runs["batch"]
    assert out.last_hidden_state.shape[1] == runs["hf"].config.max_source_positions  # HF's whole output
    _close("padded last_hidden_state", out.last_hidden_state, last)
    for i, (a, b) in enumerate(zip(out.hidden_states, layer_io, strict=True)):
        _close(f"padded hidden_states[{i}]", a, b)
    for i, (a, b) in enumerate(zip(ours_ffn, ffn, strict=True)):
        _close(f"padded ffn[{i}]", a, b)
    for i, (a, b) in enumerate(zip(ours_attn, attn, strict=True)):
        _close(f"padded attention[{i}]", a, b)
    # The short row alone: outputs, FFN values and attention maps are HF's, cut to the frames of its audio.
    single, single_ffn, single_attn = runs["single"]
    n = int(single.frame_lengths[0])
    assert single.last_hidden_state.shape[1] == n == int(out.frame_lengths[2]) == -(-int(runs["lengths"][2]) // 320)
    for i, (a, b) in enumerate(zip(single.hidden_states, layer_io, strict=True)):
        _close(f"single hidden_states[{i}]", a, b[2:, :n])
    for i, (a, b) in enumerate(zip(single_ffn, ffn, strict=True)):
        _close(f"single ffn[{i}]", a, b[2:, :n])
    for i, (a, b) in enumerate(zip(single_attn, attn, strict=True)):
        _close(f"single attention[{i}]", a, b[2:, :, :n, :n])


def test_frames_covering_audio_follow_hf_attention_mask(runs):
    model = runs["model"]
    lengths = (1, 159, 160, 161, 320, 321, 3001, 9000, 30000, 40000)
    audio, lengths = audio_batch(lengths)
    feats = extractor(runs["case"])([audio[i, :n] for i, n in enumerate(lengths)], sampling_rate=16000,
                                    return_attention_mask=True, return_tensors="pt")
    hf_lengths = hf_encoder(runs["hf"])._get_feat_extract_output_lengths(feats.attention_mask.sum(-1)).numpy()
    np.testing.assert_array_equal([model.num_frames(int(n)) for n in lengths], hf_lengths)
    np.testing.assert_array_equal(np.asarray(model.num_frames(jnp.asarray(lengths))), hf_lengths)
    out = runs["batch"][0]
    expected = hf_lengths[[lengths.tolist().index(n) for n in runs["lengths"]]]  # HF's rule on the batch's rows
    np.testing.assert_array_equal(np.asarray(out.frame_lengths), expected)
    np.testing.assert_array_equal(np.asarray(out.frame_mask), np.arange(out.frame_mask.shape[1]) < expected[:, None])


def test_neuron_and_head_masks_equal_hf_weight_surgery(runs):
    """Zeroing FFN neurons == zeroing their fc2 columns; zeroing a head == zeroing its out_proj input columns."""
    model, case = runs["model"], runs["case"]
    cfg = model.config
    neuron_mask = np.ones((cfg.num_hidden_layers, cfg.intermediate_size), np.float32)
    neuron_mask[0, [1, 5, 7]] = 0.0
    head_mask = np.ones((cfg.num_hidden_layers, cfg.num_attention_heads), np.float32)
    head_mask[-1, 1] = 0.0
    out, ffn, attn = runs["forward"](runs["audio"], jnp.asarray(runs["lengths"]), neuron_mask=neuron_mask,
                                     neuron_offset=np.zeros_like(neuron_mask), head_mask=head_mask)
    assert np.all(np.asarray(ffn[0])[..., [1, 5, 7]] == 0.0) and np.all(np.asarray(attn[-1])[:, 1] == 0.0)
    cut = build_hf(case)
    enc = hf_encoder(cut)
    d = cfg.head_dim
    with torch.no_grad():
        enc.layers[0].fc2.weight[:, [1, 5, 7]] = 0.0
        enc.layers[-1].self_attn.out_proj.weight[:, d:2 * d] = 0.0
    last, *_ = hf_forward(cut, runs["features"])
    _close("masked last_hidden_state", out.last_hidden_state, last)
    assert np.abs(np.asarray(runs["batch"][0].last_hidden_state) - np.asarray(out.last_hidden_state)).max() > 1e-3


def test_physical_pruning_equals_masking(runs):
    from jaxneurons.pruning.slim import slim_model

    model = runs["model"]
    cfg = model.config
    keep = np.random.default_rng(0).random((cfg.num_hidden_layers, cfg.intermediate_size)) > 0.3
    ones = np.ones((cfg.num_hidden_layers, cfg.num_attention_heads), np.float32)
    masked, *_ = runs["forward"](runs["audio"], jnp.asarray(runs["lengths"]), neuron_mask=keep.astype(np.float32),
                                 neuron_offset=np.zeros(keep.shape, np.float32), head_mask=ones)
    slim = slim_model(model, keep)
    assert slim.config.intermediate_sizes == tuple(int(k.sum()) for k in keep)
    out, ffn, _ = jit_forward(slim)(runs["audio"], jnp.asarray(runs["lengths"]))
    assert [h.shape[-1] for h in ffn] == list(slim.config.intermediate_sizes)
    _close("slimmed vs masked", out.last_hidden_state, masked.last_hidden_state, 1e-5)


def test_config_keys():
    hf = transformers.WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=48,
                                    num_mel_bins=128, max_source_positions=50, **DECODER).to_dict()
    config = config_from_hf_dict(hf)
    assert (config.family, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.intermediate_size, config.num_mel_bins, config.max_source_positions) == ("whisper", 32, 2, 4, 48,
                                                                                            128, 50)
    assert config.do_stable_layer_norm and not config.has_masked_spec_embed
    # Only the encoder's keys matter: a different decoder gives the same config.
    assert config_from_hf_dict({**hf, "decoder_layers": 7, "decoder_ffn_dim": 99}) == config
    # WhisperConfig's defaults fill absent keys (whisper-tiny's encoder).
    tiny = config_from_hf_dict({"model_type": "whisper"})
    assert (tiny.hidden_size, tiny.num_hidden_layers, tiny.num_attention_heads, tiny.intermediate_size,
            tiny.num_mel_bins, tiny.max_source_positions) == (384, 4, 6, 1536, 80, 1500)
    with pytest.raises(ConfigError, match="unknown config keys.*encoder_new_thing"):
        config_from_hf_dict({**hf, "encoder_new_thing": 1})


def test_preprocessor_config_mismatch_is_an_error(tmp_path):
    hf = build_hf("model-80-gelu")
    hf.config.to_json_file(str(tmp_path / "config.json"))
    extractor("model-80-gelu").save_pretrained(tmp_path)
    assert load_hf_config(str(tmp_path)).num_mel_bins == 80
    pre = json.loads((tmp_path / "preprocessor_config.json").read_text())
    for key, value in (("feature_size", 128), ("chunk_length", 30), ("hop_length", 320)):
        (tmp_path / "preprocessor_config.json").write_text(json.dumps({**pre, key: value}))
        with pytest.raises(ConfigError, match=f"preprocessor_config.json: {key}="):
            load_hf_config(str(tmp_path))


def test_unexpected_weights_are_an_error():
    weights = {"encoder.conv1.weight": np.zeros((4, 80, 3), np.float32), "lm_head.weight": np.zeros(1, np.float32)}
    with pytest.raises(CheckpointError, match=r"model.safetensors: unexpected weights.*lm_head.weight"):
        whisper_encoder_weights(weights, "model.safetensors")
