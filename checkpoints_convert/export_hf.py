"""jaxneurons model (pruned or not) -> HF ``transformers`` model directory (``config.json`` + ``model.safetensors``).

Usage::

    python -m checkpoints_convert.export_hf --model models/hubert-pruned --out hf/hubert-pruned [--pad_ffn]

The directory loads with the family's base class (``Wav2Vec2Model``, ``HubertModel``, ``Data2VecAudioModel``,
``WavLMModel``) or ``AutoModel.from_pretrained`` with no missing or unexpected keys. Keys and layouts come from
:mod:`checkpoints_convert.hf_weights` (``hf_key``, ``to_hf_layout``); the positional conv of wav2vec2, WavLM and
HuBERT without ``conv_pos_batch_norm`` is written in HF's weight-norm form
(``parametrizations.weight.original0/1``, i.e. ``g`` and ``v``; ``g * v / ||v|| == kernel``).

Per-layer FFN widths. HF configs have one ``intermediate_size``, so a model pruned to unequal widths (global
scope, or protection with ``clamp``) cannot be expressed exactly. By default that is an error. With
``pad_ffn=True`` every layer is zero-padded to the largest width: the padded neurons get zero W1 rows, zero b1
and zero W2 columns. Their contribution to the output is ``h_i * W2[:, i] = 0`` whatever ``h_i`` is, so the HF
model's outputs equal the pruned model's; and because ``act(0) = 0`` for every supported activation (GELU, ReLU,
SiLU, tanh-GELU), the padded neurons' activations are 0 too (they read as silent neurons in statistics). The
padding costs the FLOPs of the widest layer. A ``jaxneurons_export.json`` beside the HF files records the true
widths and which neurons are padding, so the directory is never mistaken for an unpruned model.

Before anything is written the export is checked: the HF config is read back with our own HF config reader and
must describe the same architecture, and the tensors are read back with the converter's name map and must fill
every parameter exactly once. The directory is written to a temporary sibling and renamed when complete.

MelHuBERT is our own architecture with no HF class: it is refused (save it with ``save_model``); so is any
family without an HF export here (AST).

Padded batches: HF's group-norm front ends (``feat_extract_norm='group'``) normalise over the padded length, so
a HF model run on a padded batch equals our model with ``group_norm_padding='hf'``; our default ``'mask'``
equals HF run on each utterance alone. The exported weights are the same either way.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
from flax import nnx

from checkpoints_convert.hf_weights import CheckpointError, hf_key, to_hf_layout, unfold_weight_norm
from jaxneurons.models.config import SpeechConfig, config_from_hf_dict
from jaxneurons.results import atomic_directory

SIDECAR = "jaxneurons_export.json"

# family -> (HF model_type, HF base model class)
HF_CLASSES = {
    "wav2vec2": ("wav2vec2", "Wav2Vec2Model"),
    "hubert": ("hubert", "HubertModel"),
    "data2vec-audio": ("data2vec-audio", "Data2VecAudioModel"),
    "wavlm": ("wavlm", "WavLMModel"),
}

_COMMON_KEYS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps",
    "feat_extract_activation", "conv_dim", "conv_kernel", "conv_stride", "conv_bias", "num_conv_pos_embeddings",
    "num_conv_pos_embedding_groups",
)
# SpeechConfig fields each HF config class has (the others are fixed by the HF implementation).
_FAMILY_KEYS = {
    "wav2vec2": (*_COMMON_KEYS, "do_stable_layer_norm", "feat_extract_norm"),
    "hubert": (*_COMMON_KEYS, "do_stable_layer_norm", "feat_extract_norm", "feat_proj_layer_norm",
               "conv_pos_batch_norm"),
    "data2vec-audio": (*_COMMON_KEYS, "conv_pos_kernel_size"),
    "wavlm": (*_COMMON_KEYS, "do_stable_layer_norm", "feat_extract_norm", "num_buckets", "max_bucket_distance"),
}
# Fields our model of a family ignores (any value builds the same network), so they need not round-trip.
_IGNORED_FIELDS = {
    "wav2vec2": ("feat_proj_layer_norm", "conv_pos_kernel_size", "num_buckets", "max_bucket_distance"),
    "hubert": ("conv_pos_kernel_size", "num_buckets", "max_bucket_distance"),
    "data2vec-audio": ("feat_proj_layer_norm", "num_buckets", "max_bucket_distance"),
    "wavlm": ("feat_proj_layer_norm", "conv_pos_kernel_size"),
}
# Every architecture field some HF config of these families carries.
_HF_FIELDS = tuple(dict.fromkeys(k for keys in _FAMILY_KEYS.values() for k in keys))
_POS_CONV = ("encoder", "pos_conv_embed", "conv", "kernel")


class ExportError(ValueError):
    """A model that cannot be written as a faithful HF checkpoint (the message says why and what to do)."""


def _check_family(config: SpeechConfig) -> None:
    if config.family == "melhubert":
        raise ExportError(
            "MelHuBERT is jaxneurons' own architecture and has no HF transformers class; save it with "
            "jaxneurons.models.checkpoint.save_model instead"
        )
    if config.family not in HF_CLASSES:
        raise ExportError(f"no HF export for family {config.family!r}")


def _uses_weight_norm(config: SpeechConfig) -> bool:
    # HF: data2vec-audio's positional convs are plain; HuBERT with conv_pos_batch_norm has no weight norm.
    return config.family in ("wav2vec2", "wavlm") or (config.family == "hubert" and not config.conv_pos_batch_norm)


def _widths(config: SpeechConfig) -> list[int]:
    return [config.ffn_width(i) for i in range(config.num_hidden_layers)]


def hf_config_dict(config: SpeechConfig, intermediate_size: int | None = None) -> dict[str, Any]:
    """HF ``config.json`` contents for ``config`` (``intermediate_size`` overrides the FFN width)."""
    _check_family(config)
    model_type, class_name = HF_CLASSES[config.family]
    out: dict[str, Any] = {"model_type": model_type, "architectures": [class_name]}
    for key in _FAMILY_KEYS[config.family]:
        value = getattr(config, key)
        out[key] = list(value) if isinstance(value, tuple) else value
    out["intermediate_size"] = int(intermediate_size if intermediate_size is not None else config.intermediate_size)
    out["num_feat_extract_layers"] = len(config.conv_dim)
    # HF creates `masked_spec_embed` only when time or feature masking is on (0.05 is HF's default).
    out["mask_time_prob"] = 0.05 if config.has_masked_spec_embed else 0.0
    out["mask_feature_prob"] = 0.0
    out["dtype"] = "float32"
    return out


def _check_config_round_trip(config: SpeechConfig, hf: dict[str, Any], width: int) -> None:
    """The HF config must describe the network we export (else HF would build something else).

    Compared: every field a HF config of these families can carry, plus ``family`` and
    ``has_masked_spec_embed``, minus the fields our model of this family ignores. Run-time options of our
    own (e.g. ``group_norm_padding``) and other families' fields are not architecture and are not compared.
    """
    expected = config.replace(intermediate_size=width, intermediate_sizes=None)
    got = config_from_hf_dict(hf, source="exported config.json")
    fields = [f for f in (*_HF_FIELDS, "family", "has_masked_spec_embed")
              if f not in _IGNORED_FIELDS[config.family]]
    bad = [f"{f}={getattr(expected, f)!r} (HF would use {getattr(got, f)!r})"
           for f in fields if getattr(expected, f) != getattr(got, f)]
    if bad:
        raise ExportError(f"a HF {config.family} config cannot express this model: {'; '.join(bad)}")


def hf_state_dict(model: nnx.Module, pad_to: int | None = None) -> dict[str, np.ndarray]:
    """The model's tensors under HF base-model keys and layouts; FFNs zero-padded to ``pad_to`` if given."""
    config = model.config
    _check_family(config)
    widths = _widths(config)
    if pad_to is None and len(set(widths)) > 1:
        raise ExportError(f"unequal FFN widths {widths}: pass pad_to (pad_ffn=True) or prune per layer")
    out: dict[str, np.ndarray] = {}
    for path, var in nnx.to_flat_state(nnx.state(model)):
        value = to_hf_layout(path, np.asarray(var.get_value()))
        key = hf_key(path)
        if tuple(path) == _POS_CONV and _uses_weight_norm(config):
            g, v = unfold_weight_norm(value)
            base = key[: -len("weight")]
            out[base + "parametrizations.weight.original0"] = g
            out[base + "parametrizations.weight.original1"] = np.ascontiguousarray(v)
            continue
        if pad_to is not None and len(path) == 6 and path[3] == "feed_forward":
            d = widths[int(path[2])]
            if pad_to < d:
                raise ExportError(f"pad_to={pad_to} is smaller than layer {path[2]}'s width {d}")
            if path[4] == "intermediate_dense":  # weight (D, C) rows, bias (D,)
                pad = [(0, pad_to - d)] + [(0, 0)] * (value.ndim - 1)
                value = np.pad(value, pad)
            elif path[5] == "kernel":  # output_dense weight (C, D) columns
                value = np.pad(value, [(0, 0), (0, pad_to - d)])
        out[key] = np.ascontiguousarray(value)
    if config.conv_pos_batch_norm and config.family == "hubert":
        out["encoder.pos_conv_embed.batch_norm.num_batches_tracked"] = np.zeros((), np.int64)
    return out


def _check_weights_round_trip(hf_config: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
    """Read the tensors back with the converter's map: every parameter filled once, nothing left over."""
    from checkpoints_convert.convert import state_from_hf_weights

    try:
        state_from_hf_weights(config_from_hf_dict(hf_config), weights, "exported model.safetensors")
    except CheckpointError as e:
        raise ExportError(f"internal error, the exported tensors do not read back: {e}") from e


def export_hf(model: nnx.Module, out_dir: str, *, pad_ffn: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Write ``model`` as a HF model directory at ``out_dir``; returns what was written (also in the sidecar).

    Unequal per-layer FFN widths need ``pad_ffn=True`` (see the module docstring). An existing ``out_dir`` is
    replaced only with ``overwrite=True``.
    """
    from safetensors.numpy import save_file

    config = model.config
    _check_family(config)
    widths = _widths(config)
    uniform = len(set(widths)) == 1
    if not uniform and not pad_ffn:
        raise ExportError(
            f"FFN widths differ per layer ({widths}) and a HF config has a single intermediate_size, so HF cannot "
            "load this model as is. Pass pad_ffn=True (--pad_ffn) to zero-pad every layer to the widest "
            f"({max(widths)}; same outputs), prune with scope='layer', or keep it in jaxneurons format (save_model)"
        )
    width = max(widths)
    hf_config = hf_config_dict(config, intermediate_size=width)
    _check_config_round_trip(config, hf_config, width)
    weights = hf_state_dict(model, pad_to=None if uniform else width)
    _check_weights_round_trip(hf_config, weights)
    report = {
        "format": "hf-transformers",
        "family": config.family,
        "hf_class": HF_CLASSES[config.family][1],
        "ffn_widths": widths,
        "padded_ffn": not uniform,
        "hf_intermediate_size": width,
        "note": ("layer l's neurons [ffn_widths[l], hf_intermediate_size) are zero padding (W1 rows, b1, W2 columns "
                 "all 0): same outputs as the pruned model") if not uniform else "every layer has the full width",
    }
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)) and not overwrite:
        raise ExportError(f"{out_dir} exists and is not empty; pass overwrite=True to replace it")
    with atomic_directory(out_dir) as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(hf_config, f, indent=2, sort_keys=True)
        save_file(weights, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, SIDECAR), "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
    return report


def run(argv: list[str] | None = None) -> None:
    """Console entry point (absl flags)."""
    from absl import app, flags

    flags.DEFINE_string("model", None, "jaxneurons model directory (save_model / jaxneurons-convert output).")
    flags.DEFINE_string("out", None, "Output HF model directory.")
    flags.DEFINE_bool("pad_ffn", False, "Zero-pad unequal per-layer FFN widths to the widest (same outputs).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.")
    flags.mark_flags_as_required(["model", "out"])

    def main(_: list[str]) -> None:
        from jaxneurons.models.checkpoint import load_model

        report = export_hf(load_model(flags.FLAGS.model), flags.FLAGS.out, pad_ffn=flags.FLAGS.pad_ffn,
                           overwrite=flags.FLAGS.overwrite)
        print(f"exported {report['family']} ({report['hf_class']}, FFN widths {report['ffn_widths']}"
              f"{', zero-padded to ' + str(report['hf_intermediate_size']) if report['padded_ffn'] else ''})"
              f" -> {flags.FLAGS.out}")

    from jaxneurons.errors import parse_flags, user_errors

    app.run(user_errors(main), argv=argv or sys.argv, flags_parser=parse_flags)  # bad input: one line, exit 1


if __name__ == "__main__":
    run()
