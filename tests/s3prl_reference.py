"""Independent PyTorch re-statements of the authors' forward passes, run on a checkpoint's tensors directly.

Written from the original code (nervjack2/MelHuBERT ``extract_feature.py`` / ``module.py``; s3prl
``upstream/mockingjay/{builder,model}.py`` and ``upstream/baseline/{extracter,preprocessor}.py``; torchaudio's
``compliance.kaldi.fbank``, ``melscale_fbanks`` and ``compute_deltas``), one utterance at a time, with none of
jaxneurons' code: the tests compare the converted JAX model against these. (Only :func:`jax_forward`, the JAX
side of the comparison, calls jaxneurons.)
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F


def kaldi_fbank(wave: torch.Tensor, num_mel_bins: int, window: str = "povey") -> torch.Tensor:
    """torchaudio.compliance.kaldi.fbank defaults (25/10 ms, snip_edges, DC removal, pre-emphasis 0.97, 512 FFT)."""
    size, shift, n_fft = 400, 160, 512
    m = 1 + (wave.numel() - size) // shift
    x = wave.as_strided((m, size), (shift, 1))
    x = x - x.mean(dim=1, keepdim=True)
    x = x - 0.97 * F.pad(x.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)[:, :-1]
    if window == "hamming":
        w = torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
    else:
        w = torch.hann_window(size, periodic=False).pow(0.85)
    x = F.pad(x * w, (0, n_fft - size))
    power = torch.fft.rfft(x).abs().pow(2.0)

    def mel(f):
        return 1127.0 * torch.log(1.0 + f / 700.0)

    lo, hi = 1127.0 * math.log(1.0 + 20.0 / 700.0), 1127.0 * math.log(1.0 + 8000.0 / 700.0)
    delta = (hi - lo) / (num_mel_bins + 1)
    b = torch.arange(num_mel_bins).unsqueeze(1)
    left, centre, right = lo + b * delta, lo + (b + 1.0) * delta, lo + (b + 2.0) * delta
    mels = mel(16000 / n_fft * torch.arange(n_fft // 2)).unsqueeze(0)
    banks = torch.clamp(torch.min((mels - left) / (centre - left), (right - mels) / (right - centre)), min=0.0)
    banks = F.pad(banks, (0, 1))
    return torch.clamp(power @ banks.T, min=torch.finfo(torch.float32).eps).log()


def compute_deltas(feat: torch.Tensor, win_length: int = 5) -> torch.Tensor:
    """torchaudio compute_deltas on (T, D) along time with replicate padding."""
    n = (win_length - 1) // 2
    x = F.pad(feat.T.unsqueeze(0), (n, n), mode="replicate")
    kernel = torch.arange(-n, n + 1, dtype=feat.dtype).repeat(feat.shape[1], 1, 1)
    return (F.conv1d(x, kernel, groups=feat.shape[1]) / (n * (n + 1) * (2 * n + 1) / 3)).squeeze(0).T


def online_mel(wave: torch.Tensor, n_mels: int, target_level: float, log: bool, delta: int, cmvn: bool):
    """s3prl OnlinePreprocessor (mel input) of one utterance: (T, n_mels * (1 + delta))."""
    wave = wave * (10 ** (target_level / 20)) / (wave.pow(2).mean().pow(0.5) + 1e-10)
    spec = torch.stft(wave, n_fft=400, hop_length=160, win_length=400, window=torch.hann_window(400), center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    linear = spec.abs().pow(2)  # (201, T)
    all_freqs = torch.linspace(0, 8000, 201)
    m_pts = torch.linspace(0.0, 2595.0 * math.log10(1.0 + 8000 / 700.0), n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    fb = torch.clamp(torch.min(-slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]), min=0.0)
    feat = (linear.T @ fb)  # (T, n_mels)
    if log:
        feat = (feat + 1e-10).log()
    parts = [feat]
    for _ in range(delta):
        parts.append(compute_deltas(parts[-1]))
    feat = torch.cat(parts, dim=-1)
    if cmvn:
        feat = (feat - feat.mean(0, keepdim=True)) / (feat.std(0, keepdim=True) + 1e-10)
    return feat


def _linear(w: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, w[prefix + ".weight"], w[prefix + ".bias"])


def _ln(w: dict, prefix: str, x: torch.Tensor, eps: float, names=("weight", "bias")) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], w[f"{prefix}.{names[0]}"], w[f"{prefix}.{names[1]}"], eps)


def _attention(q, k, v, heads: int, additive_mask: torch.Tensor | None = None) -> torch.Tensor:
    *lead, t, d = q.shape  # (T, D) or (B, T, D)
    q, k, v = (z.reshape(*lead, t, heads, d // heads).transpose(-2, -3) for z in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    if additive_mask is not None:
        scores = scores + additive_mask
    return (scores.softmax(-1) @ v).transpose(-2, -3).reshape(*lead, t, d)


def melhubert_forward(state: dict, cfg: dict, wave: np.ndarray, mean_std: np.ndarray):
    """The authors' extract_fbank + MelHuBERTModel on one utterance: (hidden states [h0..hL], FFN per layer)."""
    w = {k: v.float() for k, v in state.items()}
    y = kaldi_fbank(torch.from_numpy(wave) * 2**15, 40, window="hamming")
    y = (y - torch.from_numpy(mean_std[0].reshape(-1))) / torch.from_numpy(mean_std[1].reshape(-1))
    if cfg["feat_emb_dim"] == 80:  # 20 ms: concatenate even and odd frames, zero-padding a missing odd one
        odd, even = y[::2], y[1::2]
        if odd.shape[0] != even.shape[0]:
            even = torch.cat([even, torch.zeros(1, even.shape[1])])
        y = torch.cat([odd, even], dim=1)
    hidden, ffn = melhubert_encoder(w, cfg, y.unsqueeze(0))
    return [t[0].numpy() for t in hidden], [t[0].numpy() for t in ffn]


def melhubert_encoder(w: dict, cfg: dict, feats: torch.Tensor):
    """MelHuBERTModel from its (stacked, normalised) input features ``(B, T, feat_emb_dim)``, no padding:
    (hidden states [h0..hL], FFN per layer), each ``(B, T, .)``. ``w``: the state dict as float tensors."""
    x = _linear(w, "pre_extract_proj", feats)
    g, v = w["encoder.pos_conv.0.weight_g"], w["encoder.pos_conv.0.weight_v"]
    kernel = g * v / v.norm(dim=(0, 1), keepdim=True)
    conv = F.conv1d(x.transpose(1, 2), kernel, w["encoder.pos_conv.0.bias"], padding=cfg["conv_pos"] // 2,
                    groups=cfg["conv_pos_groups"])
    if cfg["conv_pos"] % 2 == 0:
        conv = conv[..., :-1]
    x = F.layer_norm(x + F.gelu(conv.transpose(1, 2)), x.shape[-1:], w["encoder.layer_norm.weight"],
                     w["encoder.layer_norm.bias"], 1e-5)
    hidden, ffn = [x], []
    for i in range(cfg["encoder_layers"]):
        p = f"encoder.layers.{i}."
        att = _attention(*(_linear(w, p + f"self_attn.{n}_proj", x) for n in "qkv"), cfg["encoder_attention_heads"])
        x = _ln(w, p + "self_attn_layer_norm", x + _linear(w, p + "self_attn.out_proj", att), 1e-5)
        h = F.gelu(_linear(w, p + "fc1", x))
        ffn.append(h)
        x = _ln(w, p + "final_layer_norm", x + _linear(w, p + "fc2", h), 1e-5)
        hidden.append(x)
    return hidden, ffn


@functools.lru_cache(maxsize=8)  # a pure-Python table: build each size once
def _sinusoid(t: int, d: int) -> torch.Tensor:
    table = np.array([[pos / np.power(10000, 2 * (j // 2) / d) for j in range(d)] for pos in range(t)])
    table[:, 0::2], table[:, 1::2] = np.sin(table[:, 0::2]), np.cos(table[:, 1::2])
    return torch.FloatTensor(table)


def tera_encoder(w: dict, t: dict, feat: torch.Tensor):
    """s3prl TransformerModel (with its sinusoid positions) from input features ``(T, D)`` or ``(B, T, D)``, no
    padding: (hidden states [h0..hL], FFN per layer). ``w``: float tensors, LayerNorms named weight/bias."""
    eps, pre_ln = float(t["layer_norm_eps"]), bool(t["pre_layer_norm"])
    x = F.layer_norm(_linear(w, "input_representations.spec_transform", feat) + _sinusoid(feat.shape[-2],
                     t["hidden_size"]), (t["hidden_size"],), w["input_representations.LayerNorm.weight"],
                     w["input_representations.LayerNorm.bias"], eps)
    hidden, ffn = [], []
    for i in range(t["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        hidden.append(_ln(w, f"encoder.LayerNorm.{i}", x, eps) if pre_ln else x)
        a_in = _ln(w, p + "attention.output.LayerNorm", x, eps) if pre_ln else x
        att = _attention(*(_linear(w, p + f"attention.self.{n}", a_in) for n in ("query", "key", "value")),
                         t["num_attention_heads"])
        a = _linear(w, p + "attention.output.dense", att) + x
        a = a if pre_ln else _ln(w, p + "attention.output.LayerNorm", a, eps)
        f_in = _ln(w, p + "output.LayerNorm", a, eps) if pre_ln else a
        h = F.gelu(_linear(w, p + "intermediate.dense", f_in))
        ffn.append(h)
        x = _linear(w, p + "output.dense", h) + a
        x = x if pre_ln else _ln(w, p + "output.LayerNorm", x, eps)
    hidden.append(_ln(w, f"encoder.LayerNorm.{t['num_hidden_layers']}", x, eps) if pre_ln else x)
    return hidden, ffn


def tera_weights(transformer: dict) -> dict:
    """An s3prl ``Transformer`` state dict as float tensors with LayerNorms named weight/bias (not gamma/beta)."""
    return {k.replace("gamma", "weight").replace("beta", "bias"): v.float() for k, v in transformer.items()}


def tera_forward(transformer: dict, upstream: dict, wave: np.ndarray, spec_head: dict | None = None):
    """s3prl PretrainedTransformer(WithHead) on one utterance: (hidden states [h0..hL], FFN per layer, head out)."""
    w = tera_weights(transformer)
    t, audio, task = upstream["transformer"], upstream["audio"], upstream.get("task", {})
    eps = float(t["layer_norm_eps"])
    wav = torch.from_numpy(wave)
    if "kaldi" in audio:
        feat = kaldi_fbank(wav, audio["kaldi"]["fbank"]["num_mel_bins"])
        parts = [feat]
        for _ in range(audio["delta"]["order"]):
            parts.append(compute_deltas(parts[-1], audio["delta"]["win_length"]))
        feat = torch.cat(parts, dim=-1)
        if audio["cmvn"]["use_cmvn"]:
            feat = (feat - feat.mean(0, keepdim=True)) / (1e-10 + feat.std(0, keepdim=True))
    else:
        inp = audio["input"]
        feat = online_mel(wav, audio["n_mels"], audio["target_level"], inp["log"], inp["delta"], inp["cmvn"])
    limit = task.get("sequence_length", 0)
    chunks = [feat] if limit == 0 or len(feat) <= limit else torch.chunk(feat, math.ceil(len(feat) / limit))
    outs = []
    for chunk in chunks:  # s3prl runs each chunk as its own sequence
        hidden, ffn = tera_encoder(w, t, chunk)
        outs.append((hidden, ffn))
    hidden = [torch.cat([o[0][i] for o in outs]) for i in range(len(outs[0][0]))]
    ffn = [torch.cat([o[1][i] for o in outs]) for i in range(len(outs[0][1]))]
    head = None
    if spec_head is not None:
        s = {k: v.float() for k, v in spec_head.items()}
        z = F.layer_norm(F.gelu(_linear(s, "dense", hidden[-1])), (t["hidden_size"],), s["LayerNorm.weight"],
                         s["LayerNorm.bias"], eps)
        head = _linear(s, "output", z).numpy()
    return [h.numpy() for h in hidden], [f.numpy() for f in ffn], head


def jax_forward(model, waves: list[np.ndarray]):
    """Our model on ``waves`` zero-padded into one batch (jit-compiled once per shape): (output, FFN per layer)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxneurons.models import forward_with_captures

    n = max(len(w) for w in waves)
    audio = np.zeros((len(waves), n), np.float32)
    for i, w in enumerate(waves):
        audio[i, : len(w)] = w
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state, audio, lengths):
        out, ffn, _ = forward_with_captures(nnx.merge(graphdef, state), audio, lengths)
        return out, ffn

    return run(state, jnp.asarray(audio), jnp.asarray([len(w) for w in waves], jnp.int32))


def rel_error(ref: np.ndarray, ours: np.ndarray) -> float:
    """max |ref - ours| relative to the reference tensor's max |ref|."""
    return float(np.abs(ref - ours).max() / np.abs(ref).max())


@contextlib.contextmanager
def legacy_optimizers_module():
    """A module ``optimizers`` with a scheduler class, importable only inside the block: old s3prl checkpoints
    pickle such an object (s3prl's builder maps ``optimizers`` to ``s3prl.optimizers`` to unpickle it)."""
    module = types.ModuleType("optimizers")

    class WarmupLinearSchedule:
        def __init__(self):
            self.warmup, self.t_total = 0.07, 1000

    WarmupLinearSchedule.__module__ = "optimizers"
    WarmupLinearSchedule.__qualname__ = "WarmupLinearSchedule"
    module.WarmupLinearSchedule = WarmupLinearSchedule
    sys.modules["optimizers"] = module
    try:
        yield module
    finally:
        del sys.modules["optimizers"]
