"""HF PyTorch speech checkpoint -> jaxneurons (Flax NNX + orbax) model directory.

Usage::

    jaxneurons-convert --source path/to/hf_model_dir --out models/hubert-base
    jaxneurons-convert --source facebook/hubert-base-ls960 --out models/hubert-base   # needs a network

Every tensor of the base model must be used exactly once and every parameter of our model must be filled:
missing, unexpected or wrongly shaped weights are an error listing all of them. Weights of task or
pre-training heads (``lm_head``, ``quantizer``, ``project_q``, ...) are dropped and listed in the report.
"""

from __future__ import annotations

import os
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


def convert(source: str, out_dir: str) -> dict[str, Any]:
    """Convert a HF checkpoint (directory or hub id) into a jaxneurons model directory at ``out_dir``."""
    model_dir = resolve_source(source)
    config = load_hf_config(model_dir)
    weights, weights_file = read_hf_weights(model_dir)
    dropped: dict[str, Any] = {}
    if config.family == "whisper":  # keep the encoder only (the decoder and heads are reported)
        weights, dropped = whisper_encoder_weights(weights, weights_file)
        dropped["ignored_config"] = whisper_ignored_config(model_dir)
    model, report = state_from_hf_weights(config, weights, weights_file)
    report.update(dropped)
    report["family"] = config.family
    save_model(model, out_dir, provenance={"converted_from": source, "conversion": report})
    return report


def run(argv: list[str] | None = None) -> None:
    """Console entry point (absl flags)."""
    from absl import app, flags

    flags.DEFINE_string("source", None, "HF model directory (config.json + weights) or hub id.")
    flags.DEFINE_string("out", None, "Output jaxneurons model directory.")
    flags.mark_flags_as_required(["source", "out"])

    def main(_: list[str]) -> None:
        report = convert(flags.FLAGS.source, flags.FLAGS.out)
        print(
            f"converted {report['family']} ({report['num_parameters']:,} parameters, {report['num_tensors']} tensors)"
            f" -> {flags.FLAGS.out}"
        )
        if report["dropped_head_weights"]:
            print(f"dropped head weights: {', '.join(report['dropped_head_weights'])}")

    from jaxneurons.config_flags import register_as_key_flags
    from jaxneurons.errors import user_errors

    argv = list(argv or sys.argv)
    sys.argv[0] = argv[0] = "jaxneurons-convert"  # absl's --help lists the key flags of the module named sys.argv[0]
    register_as_key_flags([__name__])
    app.run(user_errors(main), argv=argv)  # bad input: one line, exit 1


if __name__ == "__main__":
    run()
