"""Tiny random HF PyTorch speech models for parity tests (built from configs, saved locally)."""

from __future__ import annotations

import numpy as np

TINY_CONV = dict(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2))
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48, **TINY_CONV)

# name -> (HF config class name, HF model class name, config kwargs)
PARITY_CASES = {
    "wav2vec2-group-base": ("Wav2Vec2Config", "Wav2Vec2Model", dict(
        TINY, feat_extract_norm="group", conv_bias=False, num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2)),
    "wav2vec2-layer-stable": ("Wav2Vec2Config", "Wav2Vec2Model", dict(
        TINY, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, num_conv_pos_embeddings=5,
        num_conv_pos_embedding_groups=4)),
    "hubert-group-noprojln": ("HubertConfig", "HubertModel", dict(
        TINY, feat_extract_norm="group", feat_proj_layer_norm=False, num_conv_pos_embeddings=6,
        num_conv_pos_embedding_groups=2, conv_kernel=(11, 3, 2))),
    "hubert-layer-stable-bn": ("HubertConfig", "HubertModel", dict(
        TINY, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, conv_pos_batch_norm=True,
        num_conv_pos_embeddings=3, num_conv_pos_embedding_groups=1)),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel", dict(
        TINY, num_conv_pos_embeddings=3, conv_pos_kernel_size=5, num_conv_pos_embedding_groups=2, conv_bias=True)),
    "wavlm-group-base": ("WavLMConfig", "WavLMModel", dict(
        TINY, feat_extract_norm="group", num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
        num_buckets=16, max_bucket_distance=40)),
    "wavlm-layer-stable": ("WavLMConfig", "WavLMModel", dict(
        TINY, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, num_conv_pos_embeddings=5,
        num_conv_pos_embedding_groups=2, num_buckets=32, max_bucket_distance=100)),
}


def build_hf_model(case: str, seed: int = 0, model_class: str | None = None):
    import torch
    import transformers

    config_name, model_name, kwargs = PARITY_CASES[case]
    config = getattr(transformers, config_name)(**kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_class or model_name)(config)
    # Random init leaves LayerNorm/BatchNorm at identity; perturb them so the test sees every parameter.
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name or "batch_norm" in name or "gru_rel_pos_const" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(1.0 + 0.2 * torch.rand(b.shape, generator=gen))
    model.config._attn_implementation = "eager"
    return model.eval()


def padded_batch(lengths: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    audio = np.zeros((len(lengths), max(lengths)), np.float32)
    for i, n in enumerate(lengths):
        audio[i, :n] = rng.standard_normal(n).astype(np.float32) * 0.3
    return audio, np.asarray(lengths, np.int32)


def hf_forward_with_hooks(model, audio: np.ndarray, lengths: np.ndarray):
    """HF forward; returns (last hidden, per-layer inputs + outputs, per-layer FFN h) as NumPy arrays."""
    import torch

    base = getattr(model, model.base_model_prefix, model)
    layers = base.encoder.layers
    layer_io: list = [None] * (len(layers) + 1)
    ffn: list = [None] * len(layers)
    handles = []
    for i, layer in enumerate(layers):
        def layer_hook(mod, args, kwargs, out, i=i):
            if i == 0:
                layer_io[0] = (args[0] if args else kwargs["hidden_states"]).detach().numpy().copy()
            layer_io[i + 1] = (out[0] if isinstance(out, tuple) else out).detach().numpy().copy()

        def ffn_hook(mod, args, out, i=i):
            ffn[i] = out.detach().numpy().copy()

        handles.append(layer.register_forward_hook(layer_hook, with_kwargs=True))
        handles.append(layer.feed_forward.intermediate_dropout.register_forward_hook(ffn_hook))
    attention_mask = (np.arange(audio.shape[1])[None] < lengths[:, None]).astype(np.int64)
    with torch.no_grad():
        out = model(torch.from_numpy(audio), attention_mask=torch.from_numpy(attention_mask))
    for h in handles:
        h.remove()
    last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return last.detach().numpy(), layer_io, ffn
