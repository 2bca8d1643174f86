"""The authors' PyTorch checkpoints of MelHuBERT (nervjack2/MelHuBERT) and TERA / Mockingjay (s3prl
``upstream/mockingjay``) <-> jaxneurons configs and parameter names.

Both are pickles (read only through :mod:`checkpoints_convert.safe_pickle`):

* MelHuBERT: ``{"model": state dict, "Upstream_Config": {"melhubert": {...}}, "Optimizer", "Args", ...}``
  (nervjack2/s3prl-pruning's pruned ones keep the config under ``"hubert"`` and may list one FFN width per layer).
  Its front end normalises with the corpus mean/std ``.npy`` the model was trained with, which the checkpoint
  does not contain: the caller passes it (the authors ship LibriSpeech 100/360/960 h statistics).
* TERA / Mockingjay / Audio ALBERT: ``{"Transformer": state dict, "SpecHead": state dict, ...}`` with the
  upstream config (``transformer``, ``audio``, ``task``) under ``"Config"`` in legacy checkpoints and under
  ``"Upstream_Config"`` in new ones; old checkpoints spell LayerNorm parameters ``gamma`` / ``beta``.

The ``*_checkpoint`` writers do the inverse (our model -> the original format), so tests exercise the readers on
the original key names and layouts without the original code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from checkpoints_convert.hf_weights import CheckpointError, hf_key, to_hf_layout, unfold_weight_norm
from jaxneurons.models.config import ConfigError, SpeechConfig

# ---------------------------------------------------------------------------------------------------- MelHuBERT
MELHUBERT_MEL_BINS = 40  # extract_fbank: num_mel_bins=40 for both frame periods
MELHUBERT_WAVEFORM_SCALE = 2.0**15  # extract_fbank: waveform * 2**15
# MelHuBERTConfig keys that only matter to pre-training losses, masking or dropout (not to the forward pass).
_MELHUBERT_TRAINING_KEYS = frozenset({
    "final_dim", "pred_masked_weight", "pred_nomask_weight", "mask_prob", "mask_length", "mask_selection",
    "mask_other", "no_mask_overlap", "mask_min_space", "skip_masked", "skip_nomask", "dropout",
    "attention_dropout", "activation_dropout", "encoder_layerdrop",
})
# MelHuBERTConfig defaults (nervjack2/MelHuBERT model.py) for keys a checkpoint's config leaves out.
_MELHUBERT_DEFAULTS = {
    "feat_emb_dim": 40, "pos_emb_type": "conv", "pos_conv_depth": 1, "conv_pos": 128, "conv_pos_groups": 16,
    "encoder_layers": 1, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12,
    "activation_fn": "gelu", "layer_norm_first": False, "attention_type": "original", "num_cluster": 512,
    "learnable_mask_emb": False, "mask_before_proj": True,
}
_FAIRSEQ_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_accurate": "gelu_new"}
# (theirs, ours) inside `encoder.layers.{i}.`; the longer prefix first.
_MELHUBERT_LAYER = (
    ("self_attn_layer_norm.", "layer_norm."),
    ("self_attn.", "attention."),
    ("fc1.", "feed_forward.intermediate_dense."),
    ("fc2.", "feed_forward.output_dense."),
    ("final_layer_norm.", "final_layer_norm."),
)


def load_mean_std(path: str, num_bins: int = MELHUBERT_MEL_BINS) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The authors' ``mean-std.npy``: row 0 the per-bin mean, row 1 the std (``load_mean_std`` in their code)."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read as a NumPy .npy mean/std file ({e})") from e
    if data.shape[0] != 2 or data[0].size != num_bins or data[1].size != num_bins:
        raise CheckpointError(f"{path}: expected a mean row and a std row of {num_bins} bins, got shape {data.shape}")
    mean, std = data[0].reshape(-1).astype(np.float32), data[1].reshape(-1).astype(np.float32)
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise CheckpointError(f"{path}: mean/std must be finite and the std > 0 in every bin")
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def melhubert_upstream_config(checkpoint: Mapping, path: str) -> dict[str, Any]:
    upstream = checkpoint.get("Upstream_Config")
    if not isinstance(upstream, Mapping):
        raise CheckpointError(f"{path}: no Upstream_Config in the checkpoint")
    for key in ("melhubert", "hubert"):  # nervjack2/s3prl-pruning stores pruned models under "hubert"
        if isinstance(upstream.get(key), Mapping):
            return dict(upstream[key])
    raise CheckpointError(f"{path}: Upstream_Config has no 'melhubert' section")


def melhubert_config(upstream: Mapping[str, Any], mean_std: tuple, path: str) -> SpeechConfig:
    """SpeechConfig of a MelHuBERT checkpoint; every forward-pass key is mapped, unknown keys are an error."""
    unknown = sorted(set(upstream) - set(_MELHUBERT_DEFAULTS) - _MELHUBERT_TRAINING_KEYS)
    if unknown:
        raise CheckpointError(f"{path}: unknown MelHuBERT config keys (they may change the forward pass): "
                              f"{', '.join(unknown)}")
    c = {**_MELHUBERT_DEFAULTS, **upstream}
    if c["pos_emb_type"] != "conv":
        raise CheckpointError(f"{path}: pos_emb_type {c['pos_emb_type']!r} is not supported (MelHuBERT has 'conv')")
    if c["attention_type"] != "original":
        raise CheckpointError(f"{path}: attention_type {c['attention_type']!r} is not supported ('original')")
    if c["activation_fn"] not in _FAIRSEQ_ACTIVATIONS:
        raise CheckpointError(f"{path}: activation_fn {c['activation_fn']!r} is not supported; "
                              f"supported: {', '.join(_FAIRSEQ_ACTIVATIONS)}")
    feat_dim, hidden = int(c["feat_emb_dim"]), int(c["encoder_embed_dim"])
    if feat_dim % MELHUBERT_MEL_BINS or feat_dim // MELHUBERT_MEL_BINS not in (1, 2):
        raise CheckpointError(f"{path}: feat_emb_dim {feat_dim} is neither 40 (10 ms frames) nor 80 (20 ms frames)")
    if feat_dim == hidden:
        raise CheckpointError(f"{path}: feat_emb_dim == encoder_embed_dim (no pre_extract_proj) is not supported")
    if int(c["pos_conv_depth"]) != 1:
        # Both nervjack2/MelHuBERT and nervjack2/s3prl-pruning build depth > 1 with an undefined `LayerNorm`
        # (module.py), so no such checkpoint can come from their code.
        raise CheckpointError(f"{path}: pos_conv_depth {c['pos_conv_depth']} (the authors' code only builds 1)")
    if int(c["encoder_layers"]) < 1:
        raise CheckpointError(f"{path}: encoder_layers must be >= 1")
    ffn = c["encoder_ffn_embed_dim"]
    widths = tuple(int(w) for w in ffn) if isinstance(ffn, list | tuple) else None
    mean, std = mean_std
    try:
        return SpeechConfig(
            family="melhubert", hidden_size=hidden, num_hidden_layers=int(c["encoder_layers"]),
            num_attention_heads=int(c["encoder_attention_heads"]),
            intermediate_size=max(widths) if widths else int(ffn), intermediate_sizes=widths,
            hidden_act=_FAIRSEQ_ACTIVATIONS[c["activation_fn"]], layer_norm_eps=1e-5,
            do_stable_layer_norm=bool(c["layer_norm_first"]), num_conv_pos_embeddings=int(c["conv_pos"]),
            num_conv_pos_embedding_groups=int(c["conv_pos_groups"]), conv_pos_depth=int(c["pos_conv_depth"]),
            num_mel_bins=MELHUBERT_MEL_BINS, frame_stacking=feat_dim // MELHUBERT_MEL_BINS, frame_stacking_pad=True,
            num_clusters=int(c["num_cluster"]), has_masked_spec_embed=bool(c["learnable_mask_emb"]),
            mask_before_proj=bool(c["mask_before_proj"]), input_layer_norm=False, fbank_window="hamming",
            waveform_scale=MELHUBERT_WAVEFORM_SCALE, fbank_mean=mean, fbank_std=std,
        )
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from e


def melhubert_weights_to_ours(weights: Mapping[str, np.ndarray], config: SpeechConfig) -> dict[str, np.ndarray]:
    """MelHuBERT state-dict keys -> our HF-style keys (``hf_key`` of the NNX paths)."""
    out = {}
    for key, value in weights.items():
        new = key
        if key.startswith("pre_extract_proj."):
            new = "feature_projection.projection." + key[len("pre_extract_proj."):]
        elif key == "mask_emb":
            new = "masked_spec_embed"
        elif key.startswith("encoder.pos_conv."):
            parts = key[len("encoder.pos_conv."):].split(".")
            if config.conv_pos_depth == 1 and parts[0] == "0":
                new = "encoder.pos_conv_embed.conv." + ".".join(parts[1:])
            elif config.conv_pos_depth > 1 and len(parts) == 3 and parts[1] == "0":
                new = f"encoder.pos_conv_embed.layers.{parts[0]}.conv.{parts[2]}"
        elif (m := re.match(r"encoder\.layers\.(\d+)\.(.*)$", key)) is not None:
            for theirs, ours in _MELHUBERT_LAYER:
                if m.group(2).startswith(theirs):
                    new = f"encoder.layers.{m.group(1)}.{ours}{m.group(2)[len(theirs):]}"
                    break
        out[new] = value
    return out


def _ours_to_theirs(key: str, table: tuple[tuple[str, str], ...]) -> str:
    for theirs, ours in table:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    return key


def melhubert_checkpoint(model, extra_config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Our MelHuBERT model -> the authors' checkpoint dict (``torch.save`` it): state dict and Upstream_Config.

    Only models built like the authors' (``input_layer_norm=False``, ``mask_before_proj=True``) can be written.
    """
    import torch
    from flax import nnx

    c = model.config
    if c.family != "melhubert" or c.input_layer_norm or not c.mask_before_proj or not c.frame_stacking_pad:
        raise CheckpointError("only MelHuBERT models converted from (or built like) the authors' can be written in "
                              "their format (input_layer_norm=False, mask_before_proj=True, frame_stacking_pad=True)")
    act = {v: k for k, v in _FAIRSEQ_ACTIVATIONS.items()}[c.hidden_act]
    widths = [c.ffn_width(i) for i in range(c.num_hidden_layers)]
    upstream = {
        "feat_emb_dim": c.num_mel_bins * c.frame_stacking, "pos_emb_type": "conv", "pos_conv_depth": c.conv_pos_depth,
        "conv_pos": c.num_conv_pos_embeddings, "conv_pos_groups": c.num_conv_pos_embedding_groups,
        "encoder_layers": c.num_hidden_layers, "encoder_embed_dim": c.hidden_size,
        "encoder_ffn_embed_dim": widths if c.intermediate_sizes is not None else c.intermediate_size,
        "encoder_attention_heads": c.num_attention_heads, "activation_fn": act,
        "layer_norm_first": c.do_stable_layer_norm, "attention_type": "original", "num_cluster": c.num_clusters,
        "learnable_mask_emb": c.has_masked_spec_embed, "mask_before_proj": True, **(extra_config or {}),
    }
    state = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        ours = hf_key(path)
        value = np.ascontiguousarray(to_hf_layout(path, np.asarray(var.get_value())))
        if ours.startswith("feature_projection.projection."):
            theirs = "pre_extract_proj." + ours[len("feature_projection.projection."):]
        elif ours == "masked_spec_embed":
            theirs = "mask_emb"
        elif ours == "encoder.pos_conv_embed.conv.weight":
            g, v = unfold_weight_norm(value)
            state["encoder.pos_conv.0.weight_g"], state["encoder.pos_conv.0.weight_v"] = g, np.array(v)
            continue
        elif ours.startswith("encoder.pos_conv_embed.conv."):
            theirs = "encoder.pos_conv.0." + ours[len("encoder.pos_conv_embed.conv."):]
        elif (m := re.match(r"encoder\.pos_conv_embed\.layers\.(\d+)\.conv\.(.*)$", ours)) is not None:
            theirs = f"encoder.pos_conv.{m.group(1)}.0.{m.group(2)}"
        elif (m := re.match(r"encoder\.layers\.(\d+)\.(.*)$", ours)) is not None:
            theirs = f"encoder.layers.{m.group(1)}.{_ours_to_theirs(m.group(2), _MELHUBERT_LAYER)}"
        else:
            theirs = ours
        state[theirs] = value
    if c.num_clusters == 0:
        raise CheckpointError("the authors' MelHuBERT always has final_proj: the model needs num_clusters > 0")
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    return {"model": tensors, "Upstream_Config": {"melhubert": upstream}, "Step": 1}


# --------------------------------------------------------------------------------------------------------- TERA
_TERA_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "swish": "swish"}
_TERA_TRANSFORMER_KEYS = frozenset({
    "input_dim", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps", "share_layer",
    "pre_layer_norm",
})
# (theirs, ours) inside `encoder.layer.{i}.` -> `encoder.layers.{i}.`.
_TERA_LAYER = (
    ("attention.self.query.", "attention.q_proj."),
    ("attention.self.key.", "attention.k_proj."),
    ("attention.self.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.out_proj."),
    ("attention.output.LayerNorm.", "layer_norm."),
    ("intermediate.dense.", "feed_forward.intermediate_dense."),
    ("output.dense.", "feed_forward.output_dense."),
    ("output.LayerNorm.", "final_layer_norm."),
)
# Pre-LN models register the same LayerNorm twice (s3prl `self.LayerNorm = self.output.LayerNorm`).
_TERA_ALIASES = (("attention.LayerNorm.", "attention.output.LayerNorm."), ("LayerNorm.", "output.LayerNorm."))
_TERA_HEAD = (("dense.", "spec_head.dense."), ("LayerNorm.", "spec_head.layer_norm."),
              ("output.", "spec_head.output."))
_KALDI_FBANK_KEYS = {"num_mel_bins", "frame_length", "frame_shift", "use_log_fbank"}


def tera_upstream_config(checkpoint: Mapping, path: str) -> tuple[dict[str, Any], str]:
    """The upstream config and which layout held it: legacy ``Config`` or new ``Upstream_Config``."""
    for key, layout in (("Config", "legacy"), ("Upstream_Config", "new")):  # s3prl's order (builder.py)
        cfg = checkpoint.get(key)
        if isinstance(cfg, Mapping) and isinstance(cfg.get("transformer"), Mapping):
            return dict(cfg), layout
    raise CheckpointError(f"{path}: neither Config nor Upstream_Config holds a 'transformer' section")


def _tera_front_end(audio: Mapping[str, Any] | None, path: str) -> dict[str, Any]:
    if not isinstance(audio, Mapping):
        raise CheckpointError(f"{path}: the config has no 'audio' section: the model reads pre-extracted features "
                              "(not a waveform front end jaxneurons can reproduce)")
    if "kaldi" in audio:  # s3prl baseline/extracter: ExtractAudioFeature -> Delta -> CMVN
        kaldi = audio["kaldi"]
        if kaldi.get("feat_type", "fbank") != "fbank":
            raise CheckpointError(f"{path}: kaldi feat_type {kaldi.get('feat_type')!r} is not supported ('fbank')")
        kwargs = dict(kaldi.get("fbank", {}))
        if set(kwargs) - _KALDI_FBANK_KEYS or float(kwargs.get("frame_length", 25.0)) != 25.0 \
                or float(kwargs.get("frame_shift", 10.0)) != 10.0:
            raise CheckpointError(f"{path}: kaldi fbank settings {kwargs} are not supported (25/10 ms frames and "
                                  f"{sorted(_KALDI_FBANK_KEYS)} only)")
        delta = dict(audio.get("delta", {}))
        if "cmvn" not in audio or "use_cmvn" not in audio["cmvn"]:
            raise CheckpointError(f"{path}: kaldi front end without cmvn.use_cmvn (s3prl cannot build it either)")
        return {"s3prl_features": "kaldi_fbank", "num_mel_bins": int(kwargs.get("num_mel_bins", 23)),
                "feature_log": bool(kwargs.get("use_log_fbank", True)), "feature_delta": int(delta.get("order", 2)),
                "delta_win_length": int(delta.get("win_length", 5)),
                "feature_cmvn": bool(audio["cmvn"]["use_cmvn"]), "target_level_db": None}
    feat = dict(audio.get("input", {}))  # s3prl baseline/preprocessor: OnlinePreprocessor
    if feat.get("feat_type") != "mel":
        raise CheckpointError(f"{path}: s3prl input feat_type {feat.get('feat_type')!r} is not supported ('mel')")
    for key, expected in (("win_ms", 25), ("hop_ms", 10), ("n_freq", 201), ("sample_rate", 16000)):
        if key in audio and float(audio[key]) != expected:
            raise CheckpointError(f"{path}: audio {key}={audio[key]} is not supported ({expected})")
    if "target_level" not in audio:
        raise CheckpointError(f"{path}: audio config has no target_level (s3prl needs it)")
    return {"s3prl_features": "online_mel", "num_mel_bins": int(audio.get("n_mels", 40)),
            "feature_log": bool(feat.get("log", False)), "feature_delta": int(feat.get("delta", 0)),
            "delta_win_length": 5, "feature_cmvn": bool(feat.get("cmvn", False)),
            "target_level_db": float(audio["target_level"])}


def tera_config(upstream: Mapping[str, Any], path: str, spec_head_dim: int = 0) -> SpeechConfig:
    t = upstream["transformer"]
    unknown = sorted(set(t) - _TERA_TRANSFORMER_KEYS)
    if unknown:
        raise CheckpointError(f"{path}: unknown transformer config keys: {', '.join(unknown)}")
    missing = sorted({"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                      "layer_norm_eps"} - set(t))
    if missing:
        raise CheckpointError(f"{path}: transformer config lacks {', '.join(missing)}")
    if t["hidden_act"] not in _TERA_ACTIVATIONS:
        raise CheckpointError(f"{path}: hidden_act {t['hidden_act']!r} is not supported; "
                              f"supported: {', '.join(_TERA_ACTIVATIONS)}")
    task = upstream.get("task", {}) if isinstance(upstream.get("task"), Mapping) else {}
    try:
        return SpeechConfig(
            family="tera", hidden_size=int(t["hidden_size"]), num_hidden_layers=int(t["num_hidden_layers"]),
            num_attention_heads=int(t["num_attention_heads"]), intermediate_size=int(t["intermediate_size"]),
            hidden_act=_TERA_ACTIVATIONS[t["hidden_act"]], layer_norm_eps=float(t["layer_norm_eps"]),
            do_stable_layer_norm=bool(t.get("pre_layer_norm", False)), has_masked_spec_embed=False,
            chunk_length=int(task.get("sequence_length", 0)), spec_head_dim=spec_head_dim,
            **_tera_front_end(upstream.get("audio"), path),
        )
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from e


def _legacy_layer_norm_names(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    # s3prl builder.load_model: every key containing gamma/beta is renamed to weight/bias.
    out = {}
    for key, value in weights.items():
        new = key.replace("gamma", "weight") if "gamma" in key else key
        new = new.replace("beta", "bias") if "beta" in new else new
        out[new] = value
    return out


def tera_weights_to_ours(transformer: Mapping[str, np.ndarray], spec_head: Mapping[str, np.ndarray] | None,
                         path: str) -> dict[str, np.ndarray]:
    """s3prl ``Transformer`` (+ ``SpecHead``) keys -> our HF-style keys; pre-LN aliases must equal their twin."""
    weights = _legacy_layer_norm_names(transformer)
    out: dict[str, np.ndarray] = {}
    for key, value in weights.items():
        if key.startswith("input_representations.LayerNorm."):
            out["input_representations.layer_norm." + key.split(".", 2)[2]] = value
        elif (m := re.match(r"encoder\.LayerNorm\.(\d+)\.(.*)$", key)) is not None:
            out[f"encoder.output_norms.{m.group(1)}.{m.group(2)}"] = value
        elif (m := re.match(r"encoder\.layer\.(\d+)\.(.*)$", key)) is not None:
            i, rest = m.groups()
            alias = next((twin for a, twin in _TERA_ALIASES if rest.startswith(a)), None)
            if alias is not None:
                twin_key = f"encoder.layer.{i}.{alias}{rest.split('LayerNorm.', 1)[1]}"
                if twin_key not in weights or not np.array_equal(weights[twin_key], value):
                    raise CheckpointError(f"{path}: {key} should be the same LayerNorm as {twin_key}")
                continue
            new = _theirs_to_ours(rest, _TERA_LAYER)
            out[f"encoder.layers.{i}.{new}"] = value
        else:
            out[key] = value
    for key, value in _legacy_layer_norm_names(spec_head or {}).items():
        out[_theirs_to_ours(key, _TERA_HEAD)] = value
    return out


def _theirs_to_ours(key: str, table: tuple[tuple[str, str], ...]) -> str:
    for theirs, ours in table:
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    return key


def tera_checkpoint(model, *, legacy: bool = False, old_layer_norm_names: bool = False) -> dict[str, Any]:
    """Our TERA model -> an s3prl checkpoint dict (``torch.save`` it): ``Transformer``, ``SpecHead``, config.

    ``legacy`` puts the upstream config under ``Config`` (old checkpoints) instead of ``Upstream_Config``;
    ``old_layer_norm_names`` spells LayerNorm parameters ``gamma``/``beta`` as the oldest checkpoints do.
    """
    import torch
    from flax import nnx

    c = model.config
    transformer, head = {}, {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        ours = hf_key(path)
        value = torch.from_numpy(np.array(to_hf_layout(path, np.asarray(var.get_value()))))
        if ours.startswith("spec_head."):
            head[_ours_to_theirs(ours, _TERA_HEAD)] = value
            continue
        if ours.startswith("input_representations.layer_norm."):
            theirs = "input_representations.LayerNorm." + ours.rsplit(".", 1)[1]
        elif (m := re.match(r"encoder\.output_norms\.(\d+)\.(.*)$", ours)) is not None:
            theirs = f"encoder.LayerNorm.{m.group(1)}.{m.group(2)}"
        elif (m := re.match(r"encoder\.layers\.(\d+)\.(.*)$", ours)) is not None:
            i, rest = m.groups()
            theirs = f"encoder.layer.{i}.{_ours_to_theirs(rest, _TERA_LAYER)}"
            if c.do_stable_layer_norm:  # the aliases s3prl's state dict also holds
                for alias, twin in _TERA_ALIASES:
                    if theirs.startswith(f"encoder.layer.{i}.{twin}"):
                        transformer[f"encoder.layer.{i}.{alias}{theirs.rsplit('.', 1)[1]}"] = value
        else:
            theirs = ours
        transformer[theirs] = value
    if old_layer_norm_names:
        transformer = {(k[:-len("weight")] + "gamma" if "LayerNorm" in k and k.endswith("weight") else
                        k[:-len("bias")] + "beta" if "LayerNorm" in k and k.endswith("bias") else k): v
                       for k, v in transformer.items()}
    if c.s3prl_features == "online_mel":
        audio = {"target_level": c.target_level_db, "win_ms": 25, "hop_ms": 10, "n_freq": 201, "n_mels": c.num_mel_bins,
                 "n_mfcc": 13, "input": {"feat_type": "mel", "channel": 0, "log": c.feature_log,
                                         "delta": c.feature_delta, "cmvn": c.feature_cmvn}}
    else:
        audio = {"kaldi": {"feat_type": "fbank", "fbank": {"num_mel_bins": c.num_mel_bins, "frame_length": 25.0,
                                                           "frame_shift": 10.0, "use_log_fbank": c.feature_log}},
                 "delta": {"order": c.feature_delta, "win_length": c.delta_win_length},
                 "cmvn": {"use_cmvn": c.feature_cmvn}}
    upstream = {
        "transformer": {"input_dim": -1, "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
                        "num_attention_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
                        "hidden_act": c.hidden_act, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
                        "initializer_range": 0.02, "layer_norm_eps": c.layer_norm_eps, "share_layer": False,
                        "pre_layer_norm": c.do_stable_layer_norm},
        "task": {"sequence_length": c.chunk_length},
        "audio": audio,
    }
    out: dict[str, Any] = {"Transformer": transformer, "Global_step": 1}
    if head:
        out["SpecHead"] = head
    if legacy:
        out["Config"] = upstream
    else:
        out["Upstream_Config"] = upstream
        out["Config"] = {"runner": {"total_steps": 1}}
    return out
