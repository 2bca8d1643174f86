"""HF PyTorch speech checkpoint -> jaxneurons (Flax NNX + orbax) model directory.

Usage::

    jaxneurons-convert --source path/to/hf_model_dir --out models/hubert-base
    jaxneurons-convert --source facebook/hubert-base-ls960 --out models/hubert-base   # needs a network

The authors' PyTorch checkpoints of MelHuBERT and TERA / Mockingjay (a ``.ckpt`` file, read without running
pickled code, see :mod:`checkpoints_convert.safe_pickle`)::

    jaxneurons-convert --source melhubert-20ms-360h.ckpt --mean_std libri-360-mean-std.npy --out models/melhubert
    jaxneurons-convert --source tera-states-1000000.ckpt --out models/tera

A HF directory written by ``checkpoints_convert.export_hf`` with zero-padded FFNs (its ``jaxneurons_export.json``
sidecar lists the true per-layer widths) comes back at those widths, never with the padding as "neurons".

Every tensor of the base model must be used exactly once and every parameter of our model must be filled:
missing, unexpected or wrongly shaped weights are an error listing all of them. Weights of task or
pre-training heads (``lm_head``, ``quantizer``, ``project_q``, ...) are dropped and listed in the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from checkpoints_convert.hf_weights import (
    CheckpointError,
    fold_weight_norm,
    hf_key,
    read_hf_weights,
    split_base_and_heads,
    to_nnx_layout,
)
from checkpoints_convert.whisper import whisper_encoder_weights, whisper_ignored_config
from jaxneurons.config_flags import field_help
from jaxneurons.models.checkpoint import save_model
from jaxneurons.models.config import SpeechConfig, load_hf_config
from jaxneurons.models.registry import abstract_model


def state_from_hf_weights(
    config: SpeechConfig, weights: dict[str, np.ndarray], source: str
) -> tuple[nnx.Module, dict[str, Any]]:
    """Fill a model of ``config`` from HF tensors; returns the model and a conversion report."""
    had_weight_norm = any("weight_g" in k or "parametrizations.weight" in k for k in weights)
    weights = fold_weight_norm(weights, source)
    base, heads, prefix = split_base_and_heads(weights, source)
    model = abstract_model(config)
    graphdef, state = nnx.split(model)
    missing, bad_shape, used = [], [], set()
    filled = {}
    for path, var in nnx.to_flat_state(state):
        key = hf_key(path)
        if key not in base:
            missing.append(key)
            continue
        value = to_nnx_layout(path, base[key])
        expected = tuple(var.get_value().shape)
        used.add(key)
        if tuple(value.shape) != expected:
            bad_shape.append(f"{key}: checkpoint {tuple(base[key].shape)}, model expects {expected} (NNX layout)")
            continue
        filled[path] = jnp.asarray(value, dtype=var.get_value().dtype)
    ignored = {k for k in base if k.endswith("num_batches_tracked")}
    unexpected = sorted(set(base) - used - ignored)
    problems = []
    if missing:
        problems.append(f"missing weights: {missing}")
    if unexpected:
        problems.append(f"unexpected weights: {unexpected}")
    if bad_shape:
        problems.append(f"wrongly shaped weights: {bad_shape}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    for path, var in nnx.to_flat_state(state):
        var.set_value(filled[path])
    report = {
        "source": source,
        "base_prefix": prefix,
        "num_tensors": len(used),
        "num_parameters": int(sum(int(np.prod(v.shape)) for v in filled.values())),
        "dropped_head_weights": sorted(heads),
    }
    if had_weight_norm:
        report["weight_norm"] = "folded into encoder.pos_conv_embed.conv.kernel"
    return nnx.merge(graphdef, state), report


def resolve_source(source: str) -> str:
    """A local HF model directory, or a hub id downloaded with ``huggingface_hub`` where a network exists."""
    if os.path.isdir(source):
        return source
    if os.path.exists(source):
        raise CheckpointError(f"{source}: expected a HF model directory, found a file")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise CheckpointError(f"{source}: not a local directory, and huggingface_hub is not installed") from e
    try:
        return snapshot_download(source, allow_patterns=["config.json", "*.safetensors", "*.json", "*.bin"])
    except Exception as e:  # network, auth and not-found errors all end here
        raise CheckpointError(f"{source}: not a local directory and could not be downloaded ({e})") from e


# ------------------------------------------------------------------ HF export sidecar (round trip of pruned models)
_FFN_KEY = re.compile(r"(^|\.)encoder\.layers\.(\d+)\.feed_forward\.(intermediate_dense|output_dense)\.(weight|bias)$")


def apply_export_sidecar(
    config: SpeechConfig, weights: dict[str, np.ndarray], model_dir: str
) -> tuple[SpeechConfig, dict[str, np.ndarray], dict[str, Any] | None]:
    """Undo ``export_hf``'s FFN zero padding: true per-layer widths from its sidecar, padding checked and cut.

    Without a sidecar nothing changes. A sidecar that does not fit the checkpoint, or "padding" that is not
    zero, is an error (the directory would otherwise be read as something it is not).
    """
    from checkpoints_convert.export_hf import SIDECAR

    path = os.path.join(model_dir, SIDECAR)
    if not os.path.exists(path):
        return config, weights, None
    with open(path) as f:
        try:
            sidecar = json.load(f)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    widths = sidecar.get("ffn_widths")
    if (sidecar.get("format") != "hf-transformers" or not isinstance(widths, list)
            or len(widths) != config.num_hidden_layers
            or not all(isinstance(w, int) and 0 < w <= config.intermediate_size for w in widths)):
        raise CheckpointError(f"{path}: expected ffn_widths, one width <= intermediate_size "
                              f"{config.intermediate_size} per layer ({config.num_hidden_layers}), got {widths!r}")
    if sidecar.get("family") not in (None, config.family):
        raise CheckpointError(f"{path}: written for family {sidecar.get('family')!r}, config.json is {config.family!r}")
    if all(w == config.intermediate_size for w in widths):
        return config, weights, sidecar
    out = dict(weights)
    for key, value in weights.items():
        m = _FFN_KEY.search(key)
        if m is None:
            continue
        d = widths[int(m.group(2))]
        if m.group(3) == "intermediate_dense":  # weight (D, C) rows, bias (D,)
            kept, pad = value[:d], value[d:]
        elif m.group(4) == "weight":  # output_dense weight (C, D) columns
            kept, pad = value[:, :d], value[:, d:]
        else:
            continue
        if np.any(pad != 0):
            raise CheckpointError(f"{path}: {key} is not zero beyond the sidecar's width {d}: not an export's padding")
        out[key] = np.ascontiguousarray(kept)
    widths_t = tuple(widths)
    new = config.replace(intermediate_size=max(widths_t), intermediate_sizes=None if len(set(widths_t)) == 1
                         else widths_t)
    return new, out, sidecar


# ------------------------------------------------------------- the authors' pickled checkpoints (MelHuBERT, TERA)
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_kind(checkpoint: Any) -> str:
    """'melhubert' or 'tera' from the top-level entries of an authors' checkpoint, else ''."""
    if not isinstance(checkpoint, dict):
        return ""
    if "model" in checkpoint and isinstance(checkpoint.get("Upstream_Config"), dict):
        return "melhubert"
    if "Transformer" in checkpoint:
        return "tera"
    return ""


def convert_pickled_checkpoint(source: str, mean_std: str | None = None) -> tuple[nnx.Module, dict[str, Any]]:
    """Read a MelHuBERT or TERA/Mockingjay ``.ckpt`` into our model; returns the model and a conversion report."""
    from checkpoints_convert import s3prl_checkpoints as s3
    from checkpoints_convert.safe_pickle import load_torch_checkpoint, tensors_of

    checkpoint, skipped = load_torch_checkpoint(source)
    kind = checkpoint_kind(checkpoint)
    if not kind:
        keys = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{source}: neither a MelHuBERT checkpoint (model + Upstream_Config) nor an s3prl "
                              f"TERA/Mockingjay one (Transformer + config); found {keys}")
    report: dict[str, Any] = {"checkpoint_kind": kind, "skipped_training_state": skipped}
    if kind == "melhubert":
        if not mean_std:
            raise CheckpointError(
                f"{source}: a MelHuBERT checkpoint needs --mean_std, the .npy of the feature mean/std it was trained "
                "with (the authors ship example/libri-100/360/960-mean-std.npy)")
        upstream = s3.melhubert_upstream_config(checkpoint, source)
        config = s3.melhubert_config(upstream, s3.load_mean_std(mean_std), source)
        weights = s3.melhubert_weights_to_ours(tensors_of(checkpoint["model"], source, "model"), config)
        report.update(source_config=upstream, mean_std=os.path.abspath(mean_std), mean_std_sha256=_sha256(mean_std))
    else:
        upstream, layout = s3.tera_upstream_config(checkpoint, source)
        head = tensors_of(checkpoint["SpecHead"], source, "SpecHead") if "SpecHead" in checkpoint else None
        head_dim = int(head["output.weight"].shape[0]) if head and "output.weight" in head else 0
        config = s3.tera_config(upstream, source, spec_head_dim=head_dim)
        transformer = tensors_of(checkpoint["Transformer"], source, "Transformer")
        weights = s3.tera_weights_to_ours(transformer, head, source)
        report.update(source_config=upstream, config_layout=layout,
                      share_layer=bool(upstream["transformer"].get("share_layer", False)))
    model, fill = state_from_hf_weights(config, weights, source)
    report.update(fill)
    return model, report


def convert(source: str, out_dir: str, mean_std: str | None = None) -> dict[str, Any]:
    """Convert a HF checkpoint (directory or hub id), or a MelHuBERT / TERA ``.ckpt`` file, into a jaxneurons
    model directory at ``out_dir``."""
    if os.path.isfile(source):
        model, report = convert_pickled_checkpoint(source, mean_std)
    else:
        if mean_std:
            raise CheckpointError(f"{mean_std}: --mean_std is for MelHuBERT checkpoints only, {source} is a HF model")
        model_dir = resolve_source(source)
        config = load_hf_config(model_dir)
        weights, weights_file = read_hf_weights(model_dir)
        dropped: dict[str, Any] = {}
        if config.family == "whisper":  # keep the encoder only (the decoder and heads are reported)
            weights, dropped = whisper_encoder_weights(weights, weights_file)
            dropped["ignored_config"] = whisper_ignored_config(model_dir)
        config, weights, sidecar = apply_export_sidecar(config, weights, model_dir)
        model, report = state_from_hf_weights(config, weights, weights_file)
        report.update(dropped)
        if sidecar is not None:
            report["export_sidecar"] = sidecar
    report["family"] = model.config.family
    save_model(model, out_dir, provenance={"converted_from": source, "conversion": report})
    return report


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """Flags of ``jaxneurons-convert``."""

    source: str = field_help("", "HF model directory (config.json + weights) or hub id, or a MelHuBERT / "
                             "TERA / Mockingjay .ckpt file.")
    out: str = field_help("", "Output jaxneurons model directory.")
    mean_std: str = field_help("", "MelHuBERT only: the .npy of feature mean/std the checkpoint was trained with "
                               "(nervjack2/MelHuBERT example/libri-{100,360,960}-mean-std.npy).")


def run(argv: list[str] | None = None) -> None:
    """Console entry point (absl flags)."""
    from absl import app

    from jaxneurons.config_flags import config_from_flags, define_config_flags, register_as_key_flags

    define_config_flags(ConvertConfig, module_name=__name__)

    def main(_: list[str]) -> None:
        options = config_from_flags(ConvertConfig)
        if not options.source or not options.out:
            raise CheckpointError("--source and --out are required")
        report = convert(options.source, options.out, options.mean_std or None)
        print(
            f"converted {report['family']} ({report['num_parameters']:,} parameters, {report['num_tensors']} tensors)"
            f" -> {options.out}"
        )
        if report["dropped_head_weights"]:
            print(f"dropped head weights: {', '.join(report['dropped_head_weights'])}")
        if report.get("skipped_training_state"):
            print(f"skipped training state (not unpickled): {', '.join(report['skipped_training_state'])}")

    from jaxneurons.errors import parse_flags, user_errors

    argv = list(argv or sys.argv)
    sys.argv[0] = argv[0] = "jaxneurons-convert"  # absl's --help lists the key flags of the module named sys.argv[0]
    register_as_key_flags([__name__])
    app.run(user_errors(main), argv=argv, flags_parser=parse_flags)  # bad input: one line, exit 1


if __name__ == "__main__":
    run()
