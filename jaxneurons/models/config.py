"""Model configuration: one dataclass for every supported family, read from a HF ``config.json``.

Unknown keys are an error (a key we do not know may change the forward pass and silently break parity).
Keys that only matter to PyTorch training, generation or task heads are listed in ``_IGNORED_HF_KEYS``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

FAMILIES = ("wav2vec2", "hubert", "data2vec-audio", "wavlm", "melhubert", "ast", "whisper", "tera")

# HF `model_type` -> our family name.
_MODEL_TYPES = {
    "wav2vec2": "wav2vec2",
    "hubert": "hubert",
    "data2vec-audio": "data2vec-audio",
    "wavlm": "wavlm",
    "melhubert": "melhubert",
    "audio-spectrogram-transformer": "ast",
    "whisper": "whisper",
}

_ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "swish", "silu")


class ConfigError(ValueError):
    """A model configuration that we cannot build faithfully."""


@dataclasses.dataclass(frozen=True)
class SpeechConfig:
    """Architecture of a speech Transformer encoder (HF naming where HF has a name).

    ``family`` picks the implementation; fields that a family does not use are ignored by it.
    """

    family: str = "hubert"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    do_stable_layer_norm: bool = False
    # Convolutional waveform front end (wav2vec2-style families).
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_proj_layer_norm: bool = True
    # 'group' front ends normalise each channel over time. "mask": statistics over each utterance's valid
    # samples only, so an utterance's activations do not depend on the padding its batch needs (equal to HF
    # run on the utterance alone). "hf": over the padded length, exactly like HF on a padded batch.
    group_norm_padding: str = "mask"
    # Convolutional positional embedding.
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    conv_pos_batch_norm: bool = False
    conv_pos_kernel_size: int = 19  # data2vec-audio: kernel of each stacked positional conv
    # WavLM gated relative position bias.
    num_buckets: int = 320
    max_bucket_distance: int = 800
    # Masked-prediction embedding (present in checkpoints trained with time masking).
    has_masked_spec_embed: bool = True
    # MelHuBERT-style front end and head.
    num_mel_bins: int = 40
    frame_stacking: int = 2
    num_clusters: int = 0  # 0: no masked-prediction head
    sample_rate: int = 16000
    # Audio Spectrogram Transformer (AST; HF `audio-spectrogram-transformer`). Its log-mel front end uses
    # `num_mel_bins` (128 in every released AST) and pads/truncates to `max_length` fbank frames; patches are
    # `patch_size` squared with strides `frequency_stride` (mel axis) and `time_stride` (frame axis).
    # `feature_mean`/`feature_std` are the HF ASTFeatureExtractor's normalisation, (x - mean) / (2 std); they
    # live in HF's preprocessor_config.json, not config.json (AudioSet values by default).
    patch_size: int = 16
    frequency_stride: int = 10
    time_stride: int = 10
    max_length: int = 1024
    qkv_bias: bool = True
    feature_mean: float = -4.2677393
    feature_std: float = 4.5689974
    # Whisper encoder (HF `WhisperModel.encoder`; Radford et al. 2022). Its log-mel front end uses
    # `num_mel_bins` (80, or 128 for large-v3) and every input is padded to the window of
    # 2 * `max_source_positions` mel frames (3000 frames = 30 s for 1500 positions), as HF does.
    max_source_positions: int = 1500
    # --- Authors' checkpoints (jaxneurons-convert of nervjack2/MelHuBERT and s3prl mockingjay/TERA) ---
    # Every default keeps the models that existed before these fields (our "MelHuBERT-style" family) unchanged.
    # MelHuBERT (Lin et al., ASRU 2023, arXiv:2211.09944; code nervjack2/MelHuBERT extract_feature.py): Kaldi
    # fbank with a Hamming window on the waveform scaled by 2^15, normalised by the corpus mean/std the
    # checkpoint was trained with, no LayerNorm before `pre_extract_proj`, and for 20 ms frames an odd last
    # fbank frame kept with a zero second half.
    fbank_window: str = "povey"  # Kaldi window of the fbank front end (melhubert: "hamming")
    waveform_scale: float = 1.0  # waveform multiplied by this before the fbank (melhubert: 32768)
    fbank_mean: tuple[float, ...] | None = None  # per-bin mean/std (the checkpoint's .npy); None: per-utterance MVN
    fbank_std: tuple[float, ...] | None = None
    input_layer_norm: bool = True  # LayerNorm on the stacked frames before the input projection (melhubert: no)
    frame_stacking_pad: bool = False  # keep an incomplete last stacked frame, zero-padded (melhubert: yes)
    mask_before_proj: bool = False  # time_mask replaces input frames (True) or projected frames (False)
    conv_pos_depth: int = 1  # >1: fairseq's stack of convs (kernel max(3, K // depth), LN without affine, GELU)
    # TERA / Mockingjay (Liu et al., TASLP 2021 arXiv:2007.06028; s3prl upstream/mockingjay): frames of an s3prl
    # feature front end -> Linear `spec_transform` + sinusoidal position encoding -> LayerNorm -> BERT layers.
    # "online_mel": s3prl OnlinePreprocessor (torch.stft centre/reflect, Hann 400/160, HTK mel, log(x + 1e-10));
    # "kaldi_fbank": s3prl's kaldi extracter (torchaudio.compliance.kaldi.fbank defaults). Then `feature_delta`
    # orders of deltas (window `delta_win_length`) and per-utterance CMVN with the unbiased std + 1e-10.
    s3prl_features: str = "online_mel"
    feature_log: bool = True
    feature_delta: int = 0
    delta_win_length: int = 5
    feature_cmvn: bool = True
    target_level_db: float | None = -25.0  # waveform scaled to this RMS level (online_mel only); None: not scaled
    chunk_length: int = 0  # s3prl task.sequence_length: longer inputs run in equal chunks of at most this (0: no)
    spec_head_dim: int = 0  # TERA's spectrogram prediction head output size (0: no head)
    # Bookkeeping: per-layer FFN widths after physical pruning (None: all equal intermediate_size).
    intermediate_sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"unknown model family {self.family!r}; supported: {', '.join(FAMILIES)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) not in _ACTIVATIONS:
                raise ConfigError(f"unsupported {name} {getattr(self, name)!r}; supported: {_ACTIVATIONS}")
        if self.feat_extract_norm not in ("group", "layer"):
            raise ConfigError(f"feat_extract_norm must be 'group' or 'layer', got {self.feat_extract_norm!r}")
        if self.group_norm_padding not in ("mask", "hf"):
            raise ConfigError(f"group_norm_padding must be 'mask' or 'hf', got {self.group_norm_padding!r}")
        if not (len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride)):
            raise ConfigError("conv_dim, conv_kernel and conv_stride must have the same length")
        if self.family == "ast":
            for name in ("patch_size", "frequency_stride", "time_stride", "max_length", "num_mel_bins"):
                value = getattr(self, name)
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ConfigError(f"AST {name} must be a positive int, got {value!r}")
            if self.num_mel_bins < self.patch_size or self.max_length < self.patch_size:
                raise ConfigError(
                    f"AST patch_size {self.patch_size} is larger than num_mel_bins {self.num_mel_bins} or "
                    f"max_length {self.max_length}"
                )
            if not self.feature_std > 0:
                raise ConfigError(f"AST feature_std must be > 0, got {self.feature_std}")
        if self.family == "whisper":
            for name in ("max_source_positions", "num_mel_bins"):
                value = getattr(self, name)
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ConfigError(f"Whisper {name} must be a positive int, got {value!r}")
            if self.hidden_size % 2:
                raise ConfigError(f"Whisper hidden_size must be even (sinusoidal positions), got {self.hidden_size}")
        self._check_s3prl_fields()
        if self.intermediate_sizes is not None and len(self.intermediate_sizes) != self.num_hidden_layers:
            raise ConfigError(
                f"intermediate_sizes has {len(self.intermediate_sizes)} entries for {self.num_hidden_layers} layers"
            )

    def _check_s3prl_fields(self) -> None:
        if self.fbank_window not in ("povey", "hanning", "hamming", "rectangular"):
            raise ConfigError(f"unknown fbank_window {self.fbank_window!r}")
        if (self.fbank_mean is None) != (self.fbank_std is None):
            raise ConfigError("fbank_mean and fbank_std must be given together")
        if self.fbank_mean is not None:
            if not (len(self.fbank_mean) == len(self.fbank_std) == self.num_mel_bins):
                raise ConfigError(f"fbank_mean/fbank_std need {self.num_mel_bins} values (num_mel_bins), got "
                                  f"{len(self.fbank_mean)}/{len(self.fbank_std)}")
            if min(self.fbank_std) <= 0:
                raise ConfigError("fbank_std must be > 0 in every bin")
        if self.conv_pos_depth < 1:
            raise ConfigError(f"conv_pos_depth must be >= 1, got {self.conv_pos_depth}")
        if self.s3prl_features not in ("online_mel", "kaldi_fbank"):
            raise ConfigError(f"s3prl_features must be 'online_mel' or 'kaldi_fbank', got {self.s3prl_features!r}")
        if self.feature_delta < 0 or self.delta_win_length < 3 or self.chunk_length < 0 or self.spec_head_dim < 0:
            raise ConfigError("feature_delta, chunk_length and spec_head_dim must be >= 0, delta_win_length >= 3")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def ffn_width(self, layer: int) -> int:
        """FFN width of ``layer`` (differs per layer only after physical pruning)."""
        if self.intermediate_sizes is None:
            return self.intermediate_size
        return self.intermediate_sizes[layer]

    @property
    def uniform_ffn(self) -> bool:
        return self.intermediate_sizes is None or len(set(self.intermediate_sizes)) == 1

    def replace(self, **changes: Any) -> SpeechConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpeechConfig:
        """Inverse of :meth:`to_dict` (our own format, not HF's)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"unknown jaxneurons config keys: {', '.join(unknown)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: str) -> SpeechConfig:
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: not valid JSON ({e})") from e
        try:
            return cls.from_dict(data)
        except (ConfigError, TypeError) as e:
            raise ConfigError(f"{path}: {e}") from e


# Keys of HF configs that do not change the encoder's forward pass in inference or continued
# pre-training with our code: dropout rates, masking (SpecAugment) settings, task heads, generation and
# bookkeeping fields, including the legacy names of older `transformers` releases.
_IGNORED_HF_KEYS = frozenset({
    '_name_or_path', 'activation_dropout', 'adapter_kernel_size', 'adapter_stride', 'apply_spec_augment',
    'architectures', 'attention_dropout', 'bos_token_id', 'chunk_size_feed_forward', 'classifier_proj_size',
    'codevector_dim', 'contrastive_logits_temperature', 'ctc_loss_reduction', 'ctc_zero_infinity',
    'diversity_loss_weight', 'dtype', 'eos_token_id', 'feat_proj_dropout', 'feat_quantizer_dropout',
    'final_dropout', 'id2label', 'initializer_range', 'is_encoder_decoder', 'label2id', 'layerdrop',
    'mask_feature_length', 'mask_feature_min_masks', 'mask_feature_prob', 'mask_time_length', 'mask_time_min_masks',
    'mask_time_prob', 'num_adapter_layers', 'num_codevector_groups', 'num_codevectors_per_group', 'num_ctc_classes',
    'num_negatives', 'output_attentions', 'output_hidden_size', 'output_hidden_states', 'pad_token_id',
    'problem_type', 'proj_codevector_dim', 'return_dict', 'tdnn_dilation', 'tdnn_dim', 'tdnn_kernel',
    'transformers_version', 'use_weighted_layer_sum', 'vocab_size', 'xvector_output_dim', 'model_type',
    'torch_dtype', 'gradient_checkpointing', 'feat_extract_dropout', 'hidden_dropout', 'hidden_dropout_prob',
    'mask_channel_length', 'mask_channel_min_space', 'mask_channel_other', 'mask_channel_prob',
    'mask_channel_selection', 'mask_time_min_space', 'mask_time_other', 'mask_time_selection',
    'no_mask_channel_overlap', 'no_mask_time_overlap', 'add_cross_attention', 'bad_words_ids',
    'begin_suppress_tokens', 'cross_attention_hidden_size', 'decoder_start_token_id', 'diversity_penalty',
    'do_sample', 'early_stopping', 'encoder_no_repeat_ngram_size', 'exponential_decay_length_penalty',
    'finetuning_task', 'forced_bos_token_id', 'forced_eos_token_id', 'is_decoder', 'length_penalty', 'max_length',
    'min_length', 'no_repeat_ngram_size', 'num_beam_groups', 'num_beams', 'num_return_sequences', 'output_scores',
    'prefix', 'pruned_heads', 'remove_invalid_values', 'repetition_penalty', 'return_dict_in_generate',
    'sep_token_id', 'suppress_tokens', 'task_specific_params', 'temperature', 'tf_legacy_loss',
    'tie_encoder_decoder', 'tie_word_embeddings', 'tokenizer_class', 'top_k', 'top_p', 'torchscript', 'typical_p',
    'use_bfloat16', 'use_cache', 'feat_extract_dim', 'conv_feature_layers',
})

# HF keys that map onto SpeechConfig fields (same name).
_MAPPED_HF_KEYS = (
    'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size', 'hidden_act', 'layer_norm_eps',
    'do_stable_layer_norm', 'feat_extract_norm', 'feat_extract_activation', 'conv_dim', 'conv_kernel',
    'conv_stride', 'conv_bias', 'feat_proj_layer_norm', 'num_conv_pos_embeddings', 'num_conv_pos_embedding_groups',
    'conv_pos_batch_norm', 'conv_pos_kernel_size', 'num_buckets', 'max_bucket_distance',
)


# HF ASTConfig: its defaults (applied to keys a config.json leaves out; they differ from SpeechConfig's, e.g.
# layer_norm_eps 1e-12 and 128 mel bins) and the keys that do not change the encoder's forward pass.
_AST_HF_DEFAULTS = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "layer_norm_eps": 1e-12, "patch_size": 16, "qkv_bias": True, "frequency_stride": 10,
    "time_stride": 10, "max_length": 1024, "num_mel_bins": 128,
}
_AST_IGNORED_HF_KEYS = frozenset({"hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range"})


def _ast_config_from_hf_dict(hf: Mapping[str, Any], source: str) -> SpeechConfig:
    # `max_length` is a generation key for the other families but AST's spectrogram length (position
    # embeddings), so AST keys are matched before the generic ignore list.
    unknown = sorted(k for k in hf if k not in _AST_HF_DEFAULTS and k not in _AST_IGNORED_HF_KEYS
                     and k not in _IGNORED_HF_KEYS and k != "head_dim")
    if unknown:
        raise ConfigError(f"{source}: unknown config keys (they may change the forward pass): {', '.join(unknown)}")
    kwargs: dict[str, Any] = {"family": "ast", "has_masked_spec_embed": False, "do_stable_layer_norm": True}
    for key, default in _AST_HF_DEFAULTS.items():
        kwargs[key] = hf.get(key, default)
    if not isinstance(kwargs["patch_size"], int):
        raise ConfigError(f"{source}: AST patch_size must be an int (HF builds square patches), "
                          f"got {kwargs['patch_size']!r}")
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim * kwargs["num_attention_heads"] != kwargs["hidden_size"]:
        raise ConfigError(f"{source}: head_dim {head_dim} * num_attention_heads != hidden_size is not supported")
    try:
        return SpeechConfig(**kwargs)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from e


# HF WhisperConfig: the encoder's keys -> SpeechConfig fields, with WhisperConfig's defaults for keys a config.json
# leaves out. The encoder's LayerNorms are PyTorch defaults (eps 1e-5); no key sets them.
_WHISPER_ENCODER_KEYS = {
    "d_model": ("hidden_size", 384), "encoder_layers": ("num_hidden_layers", 4),
    "encoder_attention_heads": ("num_attention_heads", 6), "encoder_ffn_dim": ("intermediate_size", 1536),
    "activation_function": ("hidden_act", "gelu"), "num_mel_bins": ("num_mel_bins", 80),
    "max_source_positions": ("max_source_positions", 1500),
}
# Keys that do not change the encoder's forward pass: the decoder's architecture, generation and tokens (the
# converter drops the decoder), training-only settings (dropouts, layer drop, SpecAugment on the input features),
# the audio-classification head, and `scale_embedding` (HF applies it to the decoder's token embeddings only).
# Old configs also carry `num_hidden_layers` (a copy of encoder_layers, which is what the encoder uses).
WHISPER_IGNORED_HF_KEYS = frozenset({
    "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim", "decoder_layerdrop", "decoder_start_token_id",
    "max_target_positions", "scale_embedding", "forced_decoder_ids", "alignment_heads", "lang_ids",
    "no_timestamps_token_id", "max_initial_timestamp_index", "is_multilingual", "median_filter_width",
    "encoder_layerdrop", "dropout", "init_std", "apply_spec_augment", "num_hidden_layers",
    "use_weighted_layer_sum", "classifier_proj_size",
})


def _whisper_config_from_hf_dict(hf: Mapping[str, Any], source: str) -> SpeechConfig:
    unknown = sorted(k for k in hf if k not in _WHISPER_ENCODER_KEYS and k not in WHISPER_IGNORED_HF_KEYS
                     and k not in _IGNORED_HF_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown config keys (they may change the forward pass): {', '.join(unknown)}")
    kwargs: dict[str, Any] = {"family": "whisper", "do_stable_layer_norm": True, "has_masked_spec_embed": False,
                              "layer_norm_eps": 1e-5}
    for key, (field, default) in _WHISPER_ENCODER_KEYS.items():
        kwargs[field] = hf.get(key, default)
    try:
        return SpeechConfig(**kwargs)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from e


def config_from_hf_dict(hf: Mapping[str, Any], source: str = "config.json") -> SpeechConfig:
    """Build a :class:`SpeechConfig` from a HF config dict; ``source`` names the file in errors."""
    model_type = hf.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise ConfigError(
            f"{source}: unsupported model_type {model_type!r}; supported: {', '.join(sorted(_MODEL_TYPES))}"
        )
    family = _MODEL_TYPES[model_type]
    if family == "melhubert":
        # Our own architecture: its config.json is our SpeechConfig format plus model_type.
        return SpeechConfig.from_dict({k: v for k, v in hf.items() if k != "model_type"})
    if family == "ast":
        return _ast_config_from_hf_dict(hf, source)
    if family == "whisper":
        return _whisper_config_from_hf_dict(hf, source)
    unknown = sorted(k for k in hf if k not in _IGNORED_HF_KEYS and k not in _MAPPED_HF_KEYS
                     and k not in ("add_adapter", "adapter_attn_dim", "num_feat_extract_layers"))
    if unknown:
        raise ConfigError(f"{source}: unknown config keys (they may change the forward pass): {', '.join(unknown)}")
    if hf.get("add_adapter"):
        raise ConfigError(f"{source}: add_adapter=True (a convolutional adapter after the encoder) is not supported")
    if hf.get("adapter_attn_dim") is not None:
        raise ConfigError(f"{source}: adapter_attn_dim is set (attention adapters) which is not supported")
    kwargs: dict[str, Any] = {"family": family}
    for key in _MAPPED_HF_KEYS:
        if key in hf:
            value = hf[key]
            kwargs[key] = tuple(value) if isinstance(value, list) else value
    n_feat = hf.get("num_feat_extract_layers")
    if n_feat is not None and "conv_dim" in kwargs and n_feat != len(kwargs["conv_dim"]):
        raise ConfigError(f"{source}: num_feat_extract_layers={n_feat} but conv_dim has {len(kwargs['conv_dim'])}")
    if family == "data2vec-audio":
        kwargs["feat_extract_norm"] = "layer"
        kwargs.setdefault("num_conv_pos_embeddings", 5)
    # HF creates `masked_spec_embed` only when time or feature masking is on.
    kwargs["has_masked_spec_embed"] = bool(hf.get("mask_time_prob", 0.05) > 0 or hf.get("mask_feature_prob", 0) > 0)
    try:
        return SpeechConfig(**kwargs)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{source}: {e}") from e


def load_hf_config(model_dir: str) -> SpeechConfig:
    """Read ``model_dir/config.json`` (a HF model directory)."""
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(f"{path}: no config.json in the model directory")
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
    config = config_from_hf_dict(data, source=path)
    if config.family == "ast":
        config = _with_ast_preprocessor(config, model_dir)
    if config.family == "whisper":
        _check_whisper_preprocessor(config, model_dir)
    return config


def _read_preprocessor(model_dir: str) -> tuple[str, dict[str, Any] | None]:
    """(path, contents) of ``model_dir/preprocessor_config.json``; contents None when there is no such file."""
    path = os.path.join(model_dir, "preprocessor_config.json")
    if not os.path.exists(path):
        return path, None
    with open(path) as f:
        try:
            return path, json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e


def _check_whisper_preprocessor(config: SpeechConfig, model_dir: str) -> None:
    """Refuse a ``preprocessor_config.json`` whose front end differs from the one we compute (HF's defaults).

    Without the file HF's defaults apply, which are ours. (Old files also store ``mel_filters``; current HF
    recomputes them and so do we.)
    """
    path, pre = _read_preprocessor(model_dir)
    if pre is None:
        return
    kind = pre.get("feature_extractor_type", "WhisperFeatureExtractor")
    if kind != "WhisperFeatureExtractor":
        raise ConfigError(f"{path}: feature_extractor_type {kind!r}, expected 'WhisperFeatureExtractor'")
    n_samples = 2 * config.max_source_positions * 160
    checks = {"feature_size": config.num_mel_bins, "sampling_rate": config.sample_rate, "hop_length": 160,
              "n_fft": 400, "n_samples": n_samples, "nb_max_frames": n_samples // 160, "padding_value": 0.0,
              "dither": 0.0}
    for key, expected in checks.items():
        if key in pre and pre[key] != expected:
            raise ConfigError(f"{path}: {key}={pre[key]!r} but the model needs {expected!r}")
    if "chunk_length" in pre and pre["chunk_length"] * config.sample_rate != n_samples:
        raise ConfigError(f"{path}: chunk_length={pre['chunk_length']!r} s does not give the encoder's window of "
                          f"{n_samples} samples (2 * max_source_positions * 160)")


def _with_ast_preprocessor(config: SpeechConfig, model_dir: str) -> SpeechConfig:
    """Take AST's normalisation from ``preprocessor_config.json`` (checkpoints differ: AudioSet, Speech Commands).

    Without the file the AudioSet defaults stay. Settings our front end does not reproduce are an error.
    """
    path, pre = _read_preprocessor(model_dir)
    if pre is None:
        return config
    kind = pre.get("feature_extractor_type", "ASTFeatureExtractor")
    if kind != "ASTFeatureExtractor":
        raise ConfigError(f"{path}: feature_extractor_type {kind!r}, expected 'ASTFeatureExtractor'")
    checks = {"num_mel_bins": config.num_mel_bins, "max_length": config.max_length,
              "sampling_rate": config.sample_rate, "feature_size": 1, "padding_value": 0.0}
    for key, expected in checks.items():
        if key in pre and pre[key] != expected:
            raise ConfigError(f"{path}: {key}={pre[key]!r} but the model needs {expected!r}")
    if not pre.get("do_normalize", True):
        # (x - 0) / (2 * 0.5) == x exactly: no normalisation.
        return config.replace(feature_mean=0.0, feature_std=0.5)
    try:
        return config.replace(feature_mean=float(pre.get("mean", config.feature_mean)),
                              feature_std=float(pre.get("std", config.feature_std)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
