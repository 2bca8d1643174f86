"""AST: converted Flax models equal HF ``ASTModel`` (every layer's hidden states and FFN h), from HF's
``input_values`` and from raw audio through our log-mel front end vs HF's ``ASTFeatureExtractor``.

Tolerances. Encoder: 1e-4 max abs, like the other families. Front end: 5e-5 max abs in log-mel units (the
``input_values`` difference times ``2 std``; 5.5e-6 on AudioSet-normalised values). Both sides compute the
same Kaldi fbank, but HF's feature extractor (numpy path; torchaudio is not installed) frames and FFTs in
float64 and stores the spectrum as complex64, while ours is float32 end to end. FFT rounding is relative to a
frame's total energy, so weaker mel bins get relative errors up to ~1e-5, i.e. ~1e-5 in log-mel (measured:
<= 9e-6). 5e-5 leaves a ~5x margin; a convention error (window, pre-emphasis, mel scale, padding before vs
after normalisation) is >= 1e-2. The raw-audio encoder comparison keeps 1e-4 (measured <= 5e-7).
"""

from __future__ import annotations

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from flax import nnx  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from checkpoints_convert.convert import convert  # noqa: E402
from checkpoints_convert.hf_weights import ast_key_to_hf, hf_key  # noqa: E402
from jaxneurons.features.fbank import num_frames as fbank_frames  # noqa: E402
from jaxneurons.models import ConfigError, config_from_hf_dict, forward_with_captures  # noqa: E402
from jaxneurons.models.checkpoint import load_model  # noqa: E402
from jaxneurons.models.config import load_hf_config  # noqa: E402
from tests.helpers import padded_batch, recorded_layers  # noqa: E402

TOL = 1e-4
LOGMEL_TOL = 5e-5
LENGTHS = (8000, 5000, 2345)  # truncated to max_length, padded, and mostly padding

# name -> (HF class, how the weights are written, ASTConfig kwargs, preprocessor_config.json overrides or None)
CASES = {
    # save_pretrained writes the legacy ViT key style (encoder.layer.N.attention.attention.query, ...).
    "cls-legacy-keys": ("ASTForAudioClassification", "save_pretrained", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, patch_size=8,
        frequency_stride=6, time_stride=5, max_length=40, num_mel_bins=32, num_labels=5), None),
    "base-noqkvbias-gelu-new": ("ASTModel", "save_pretrained", dict(
        hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=40, patch_size=6,
        frequency_stride=4, time_stride=6, max_length=64, num_mel_bins=20, qkv_bias=False, hidden_act="gelu_new",
        layer_norm_eps=1e-6), dict(mean=-6.845978, std=5.5654526)),  # the Speech Commands AST's statistics
    # transformers>=5 module names (layers.N.mlp.fc1, attention.o_proj), as in the in-memory state dict.
    "base-new-keys-unnormalised": ("ASTModel", "state_dict", dict(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, patch_size=4,
        frequency_stride=4, time_stride=3, max_length=30, num_mel_bins=16), dict(do_normalize=False)),
}


def build_hf(case: str, seed: int = 0):
    class_name, _, kwargs, _ = CASES[case]
    config = transformers.ASTConfig(**kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, class_name)(config)
    # HF zero-initialises the tokens, position embeddings and biases and leaves LayerNorms at identity:
    # perturb them so the comparison sees every parameter.
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name or "token" in name or "position_embeddings" in name:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    model.config._attn_implementation = "eager"
    return model.eval()


def save_hf(case: str, hf, path):
    _, style, _, pre = CASES[case]
    if style == "save_pretrained":
        hf.save_pretrained(path)
    else:
        path.mkdir(parents=True)
        hf.config.to_json_file(str(path / "config.json"))
        save_file({k: v.detach().contiguous().numpy() for k, v in hf.state_dict().items()},
                  str(path / "model.safetensors"))
    if pre is not None:
        cfg = hf.config
        extractor = transformers.ASTFeatureExtractor(num_mel_bins=cfg.num_mel_bins, max_length=cfg.max_length, **pre)
        extractor.save_pretrained(path)


def hf_extractor(case: str, hf):
    pre = CASES[case][3] or {}
    return transformers.ASTFeatureExtractor(num_mel_bins=hf.config.num_mel_bins, max_length=hf.config.max_length,
                                            **pre)


def hf_forward(model, input_values: np.ndarray):
    """HF forward with hooks: (last hidden, [layer-0 input, layer outputs...], per-layer FFN h (input of fc2))."""
    base = getattr(model, model.base_model_prefix, model)
    with recorded_layers(base.layers, lambda layer: layer.mlp.fc2, ffn_is_input=True) as (layer_io, ffn), \
            torch.no_grad():
        out = base(torch.from_numpy(input_values))
    return out.last_hidden_state.numpy(), out.pooler_output.numpy(), layer_io, ffn


def batch(lengths=LENGTHS, seed=0):
    return padded_batch(lengths, seed)


def _close(name, ours, theirs, tol=TOL):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} vs {theirs.shape}"
    diff = np.abs(ours - theirs).max()
    assert diff < tol, f"{name}: max abs diff {diff:.2e}"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """case -> (HF model, our converted model, conversion report); built once per module."""
    cache = {}

    def get(case):
        if case not in cache:
            tmp = tmp_path_factory.mktemp(case)
            hf = build_hf(case)
            save_hf(case, hf, tmp / "hf")
            report = convert(str(tmp / "hf"), str(tmp / "jax"))
            cache[case] = (hf, load_model(str(tmp / "jax")), report)
        return cache[case]

    return get


def _compare_all(case, out, ffn, last, pooled, layer_io, hf_ffn, model):
    assert len(out.hidden_states) == len(layer_io)
    for i, (ours, theirs) in enumerate(zip(out.hidden_states, layer_io, strict=True)):
        _close(f"{case} hidden_states[{i}]", ours, theirs)
    for i, (ours, theirs) in enumerate(zip(ffn, hf_ffn, strict=True)):
        _close(f"{case} layers.{i}.ffn", ours, theirs)
    _close(f"{case} last_hidden_state", out.last_hidden_state, last)
    _close(f"{case} pooled", model.pooled(out), pooled)


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_from_input_values(case, converted):
    hf, model, report = converted(case)
    cfg = model.config
    assert report["family"] == "ast"
    if CASES[case][0] == "ASTForAudioClassification":
        assert report["base_prefix"] == "audio_spectrogram_transformer."
        assert report["dropped_head_weights"] == sorted(
            f"classifier.{m}.{p}" for m in ("dense", "layernorm") for p in ("bias", "weight"))
    x = np.random.default_rng(1).standard_normal((2, cfg.max_length, cfg.num_mel_bins)).astype(np.float32)
    last, pooled, layer_io, hf_ffn = hf_forward(hf, x)
    captured = nnx.capture(model.encode_features, *_kinds())(jnp.asarray(x))
    out, ffn = captured[0], _ffn_from_state(captured[1], cfg.num_hidden_layers)
    assert last.shape[1] == model.num_frames(16000) == out.frame_lengths[0]
    assert np.asarray(out.frame_mask).all()
    _compare_all(case, out, ffn, last, pooled, layer_io, hf_ffn, model)


def _kinds():
    from jaxneurons.models import FFNActivation

    return (FFNActivation,)


def _ffn_from_state(state, num_layers):
    from jaxneurons.models.registry import _per_layer

    return _per_layer(state, "h", num_layers)


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_from_raw_audio(case, converted):
    hf, model, _ = converted(case)
    audio, lengths = batch()
    # HF: each utterance alone through the feature extractor (it pads / truncates to max_length itself).
    extractor = hf_extractor(case, hf)
    x = extractor([audio[b, :n] for b, n in enumerate(lengths)], sampling_rate=16000,
                  return_tensors="np")["input_values"].astype(np.float32)
    scale = 2 * model.config.feature_std  # back to log-mel units
    ours = np.asarray(model.features(jnp.asarray(audio), jnp.asarray(lengths)))
    _close(f"{case} input_values (log-mel units)", ours * scale, x * scale, LOGMEL_TOL)
    last, pooled, layer_io, hf_ffn = hf_forward(hf, x)
    out, ffn, _ = forward_with_captures(model, audio, lengths)
    np.testing.assert_array_equal(np.asarray(out.extract_features), ours)
    _compare_all(case, out, ffn, last, pooled, layer_io, hf_ffn, model)


def test_preprocessor_config_sets_normalisation(converted):
    _, model, _ = converted("base-noqkvbias-gelu-new")
    assert (model.config.feature_mean, model.config.feature_std) == (-6.845978, 5.5654526)
    _, model, _ = converted("base-new-keys-unnormalised")
    assert (model.config.feature_mean, model.config.feature_std) == (0.0, 0.5)
    _, model, _ = converted("cls-legacy-keys")  # no preprocessor_config.json: AudioSet statistics
    assert (model.config.feature_mean, model.config.feature_std) == (-4.2677393, 4.5689974)


def test_neuron_mask_equals_zeroed_w2_column(converted):
    hf, model, _ = converted("cls-legacy-keys")
    cfg = model.config
    layer, neuron = 1, 7
    x = np.random.default_rng(3).standard_normal((2, cfg.max_length, cfg.num_mel_bins)).astype(np.float32)
    hf = copy.deepcopy(hf)  # edit a copy: the fixture's model is shared
    with torch.no_grad():
        hf.audio_spectrogram_transformer.layers[layer].mlp.fc2.weight[:, neuron] = 0.0
    last, _, _, _ = hf_forward(hf, x)
    mask = np.ones((cfg.num_hidden_layers, cfg.intermediate_size), np.float32)
    mask[layer, neuron] = 0.0
    captured = nnx.capture(model.encode_features, *_kinds())(jnp.asarray(x), neuron_mask=jnp.asarray(mask))
    out, ffn = captured[0], _ffn_from_state(captured[1], cfg.num_hidden_layers)
    _close("masked last_hidden_state", out.last_hidden_state, last)
    assert np.all(np.asarray(ffn[layer])[..., neuron] == 0.0)
    unmasked = model.encode_features(jnp.asarray(x))  # ... and the mask really changed something
    assert np.abs(np.asarray(unmasked.last_hidden_state) - last).max() > 1e-4


def test_head_mask_equals_zeroed_out_proj_columns(converted):
    hf, model, _ = converted("base-noqkvbias-gelu-new")
    cfg = model.config
    layer, head, d = 2, 1, model.config.head_dim
    audio, lengths = batch(seed=4)
    hf = copy.deepcopy(hf)
    with torch.no_grad():  # a head whose probabilities are 0 adds nothing to o_proj's input
        hf.layers[layer].attention.o_proj.weight[:, head * d:(head + 1) * d] = 0.0
    x = hf_extractor("base-noqkvbias-gelu-new", hf)(
        [audio[b, :n] for b, n in enumerate(lengths)], sampling_rate=16000, return_tensors="np")["input_values"]
    last, _, _, _ = hf_forward(hf, x.astype(np.float32))
    head_mask = np.ones((cfg.num_hidden_layers, cfg.num_attention_heads), np.float32)
    head_mask[layer, head] = 0.0
    out, _, attn = forward_with_captures(model, audio, lengths, capture_ffn=False, capture_attention=True,
                                         head_mask=jnp.asarray(head_mask))
    _close("head-masked last_hidden_state", out.last_hidden_state, last)
    t = model.num_frames(int(lengths[0]))
    assert attn[layer].shape == (len(lengths), cfg.num_attention_heads, t, t)
    assert np.all(np.asarray(attn[layer])[:, head] == 0.0)
    np.testing.assert_allclose(np.asarray(attn[0]).sum(-1), 1.0, atol=1e-5)


def test_jit_and_physical_pruning_equal_masking(converted):
    from jaxneurons.pruning.slim import slim_model

    _, model, _ = converted("cls-legacy-keys")
    cfg = model.config
    audio, lengths = batch((6000, 3000), seed=5)
    keep = np.random.default_rng(0).random((cfg.num_hidden_layers, cfg.intermediate_size)) > 0.3
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, audio, lengths, mask):
        return nnx.merge(graphdef, state)(audio, lengths, neuron_mask=mask).last_hidden_state

    masked = run(state, jnp.asarray(audio), jnp.asarray(lengths), jnp.asarray(keep, jnp.float32))
    slim = slim_model(model, keep)
    assert slim.config.intermediate_sizes == tuple(int(k.sum()) for k in keep)
    _close("slimmed vs masked", slim(jnp.asarray(audio), jnp.asarray(lengths)).last_hidden_state, masked, 1e-5)


def test_frames_tokens_and_content_mask(converted):
    hf, model, _ = converted("cls-legacy-keys")
    cfg = model.config
    f_rows, t_cols = model.patch_grid()
    assert (f_rows, t_cols) == hf.audio_spectrogram_transformer.embeddings.get_shape(hf.config)
    n_tokens = 2 + f_rows * t_cols
    assert model.num_frames(123) == n_tokens
    np.testing.assert_array_equal(np.asarray(model.num_frames(jnp.asarray(LENGTHS))), n_tokens)
    audio, lengths = batch()
    out = model(jnp.asarray(audio), jnp.asarray(lengths))
    assert out.last_hidden_state.shape == (len(LENGTHS), n_tokens, cfg.hidden_size)
    assert np.asarray(out.frame_mask).all() and np.all(np.asarray(out.frame_lengths) == n_tokens)
    content = np.asarray(model.content_mask(jnp.asarray(lengths)))
    assert content.shape == (len(LENGTHS), n_tokens) and content[:, :2].all()
    feats = np.asarray(out.extract_features)
    pad_value = -cfg.feature_mean / (2 * cfg.feature_std)
    n_frames = np.minimum(fbank_frames(lengths), cfg.max_length)
    p, ts = cfg.patch_size, cfg.time_stride
    for b in range(len(LENGTHS)):
        for j in range(f_rows * t_cols):
            t = j % t_cols  # mel-row-major token order
            frames = feats[b, t * ts:t * ts + p]
            only_padding = t * ts >= n_frames[b]
            assert content[b, 2 + j] == (not only_padding)
            assert np.allclose(frames, pad_value, rtol=0, atol=1e-6) == only_padding
    assert content[0].all() and not content[2].all()  # the truncated utterance fills every patch
    with pytest.raises(ValueError, match="time_mask"):
        model(jnp.asarray(audio), jnp.asarray(lengths), time_mask=jnp.zeros((3, n_tokens), bool))
    with pytest.raises(ValueError, match="AST features"):
        model.encode_features(jnp.zeros((1, cfg.max_length + 1, cfg.num_mel_bins)))


def test_key_names_both_ways(converted):
    hf, model, _ = converted("base-new-keys-unnormalised")
    ours = {ast_key_to_hf(hf_key(path)) for path, _ in nnx.to_flat_state(nnx.state(model))}
    assert ours == set(hf.state_dict())


def test_hf_config_reading(tmp_path):
    minimal = config_from_hf_dict({"model_type": "audio-spectrogram-transformer"})
    assert minimal.family == "ast" and minimal.do_stable_layer_norm  # pre-LN ViT blocks
    # HF's ASTConfig defaults, not SpeechConfig's, for keys a config.json leaves out.
    defaults = transformers.ASTConfig()
    for key in ("layer_norm_eps", "num_mel_bins", "max_length", "patch_size", "frequency_stride", "time_stride",
                "qkv_bias", "hidden_size", "intermediate_size"):
        assert getattr(minimal, key) == getattr(defaults, key), key
    full = json.loads(transformers.ASTConfig(max_length=100).to_json_string())
    assert config_from_hf_dict(full).max_length == 100  # AST's max_length is architecture, not generation
    with pytest.raises(ConfigError, match="unknown config keys"):
        config_from_hf_dict({**full, "use_mask_token": True})
    with pytest.raises(ConfigError, match="patch_size"):
        config_from_hf_dict({**full, "patch_size": [16, 16]})
    (tmp_path / "config.json").write_text(json.dumps(full))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"feature_extractor_type": "ASTFeatureExtractor", "num_mel_bins": 64, "max_length": 100}))
    with pytest.raises(ConfigError, match="num_mel_bins=64"):
        load_hf_config(str(tmp_path))
