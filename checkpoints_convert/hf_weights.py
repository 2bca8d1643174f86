"""Reading HF PyTorch speech checkpoints as NumPy arrays, and the HF <-> NNX parameter name map.

Checkpoints are untrusted input: ``model.safetensors`` (single or sharded) is read by default; a
``pytorch_model.bin`` is read only with ``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint we cannot convert faithfully (the message names the file and the problem)."""


# Prefixes HF task classes put in front of the base model's keys.
BASE_PREFIXES = ("wav2vec2.", "hubert.", "wavlm.", "data2vec_audio.", "model.", "audio_spectrogram_transformer.")
# First component of a base-model key right after the prefix (AST's new-style keys have no `encoder.`).
_BASE_ROOTS = ("encoder", "layers", "embeddings")

# AST (ViT-style) key names -> ours. HF has two styles: the legacy ViT one that released checkpoints carry
# (`encoder.layer.{i}.attention.attention.query`, `intermediate.dense`, ...) and the transformers>=5 one
# (`layers.{i}.attention.q_proj`, `mlp.fc1`, ...). Ours is the layout every family shares
# (`encoder.layers.{i}.feed_forward.intermediate_dense`, ...), so pruning and scoring code needs no AST case.
_AST_LAYER_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.out_proj."),
    ("attention.o_proj.", "attention.out_proj."),
    ("intermediate.dense.", "feed_forward.intermediate_dense."),
    ("output.dense.", "feed_forward.output_dense."),
    ("mlp.fc1.", "feed_forward.intermediate_dense."),
    ("mlp.fc2.", "feed_forward.output_dense."),
    ("layernorm_before.", "layer_norm."),
    ("layernorm_after.", "final_layer_norm."),
)
# Ours -> transformers>=5 AST names (the style `save_pretrained` writes today).
_AST_LAYER_EXPORT = (
    ("attention.out_proj.", "attention.o_proj."),
    ("feed_forward.intermediate_dense.", "mlp.fc1."),
    ("feed_forward.output_dense.", "mlp.fc2."),
    ("final_layer_norm.", "layernorm_after."),
    ("layer_norm.", "layernorm_before."),
)

# Top-level modules of HF task/pre-training heads: dropped from the encoder conversion and reported.
HEAD_MODULES = (
    "lm_head", "quantizer", "project_q", "project_hid", "final_proj", "label_embeddings_concat", "label_embs_concat",
    "classifier", "projector", "tdnn", "feature_extractor", "objective", "layer_weights", "dropout_features",
)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from e


def _read_torch_bin(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(
            f"{path}: reading a PyTorch .bin needs torch (pip install 'jaxneurons[convert]'); prefer safetensors"
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        raise CheckpointError(f"{path}: cannot load as a weights-only PyTorch checkpoint ({e})") from e
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key] = value.detach().to(torch.float32 if value.is_floating_point() else value.dtype).numpy()
    return out


def read_hf_weights(model_dir: str) -> tuple[dict[str, np.ndarray], str]:
    """All tensors of a HF model directory and the file(s) they came from."""
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    torch_bin = os.path.join(model_dir, "pytorch_model.bin")
    if os.path.exists(single):
        return _read_safetensors(single), single
    if os.path.exists(index):
        with open(index) as f:
            try:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
        weights: dict[str, np.ndarray] = {}
        for shard in shards:
            weights.update(_read_safetensors(os.path.join(model_dir, shard)))
        return weights, index
    if os.path.exists(torch_bin):
        return _read_torch_bin(torch_bin), torch_bin
    raise CheckpointError(f"{model_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def fold_weight_norm(weights: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Replace weight-norm pairs (both key styles) by the plain weight ``g * v / ||v||``.

    HF applies ``weight_norm(conv, dim=2)``: ``g`` has shape (1, 1, K) and the norm of ``v`` is taken over the
    output and input channel axes, separately for each kernel tap.
    """
    out = dict(weights)
    styles = (("weight_g", "weight_v"), ("parametrizations.weight.original0", "parametrizations.weight.original1"))
    for g_suffix, v_suffix in styles:
        for key in [k for k in weights if k.endswith("." + g_suffix)]:
            base = key[: -len(g_suffix)]
            v_key = base + v_suffix
            if v_key not in weights:
                raise CheckpointError(f"{source}: {key} has no matching {v_key}")
            g, v = weights[key].astype(np.float64), weights[v_key].astype(np.float64)
            dims = tuple(i for i in range(v.ndim) if g.shape[i] == 1)
            norm = np.sqrt(np.sum(v * v, axis=dims, keepdims=True))
            out[base + "weight"] = (g * v / norm).astype(np.float32)
            del out[key], out[v_key]
    return out


def unfold_weight_norm(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`fold_weight_norm` for ``dim=2``: (g (1, 1, K), v) with ``g * v/||v|| == weight``."""
    g = np.sqrt(np.sum(weight.astype(np.float64) ** 2, axis=(0, 1), keepdims=True)).astype(np.float32)
    return g, weight


def split_base_and_heads(
    weights: dict[str, np.ndarray], source: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """Separate the base model's tensors (prefix stripped) from task/pre-training head tensors."""
    prefix = ""
    for candidate in BASE_PREFIXES:
        if any(k.startswith(candidate) and k[len(candidate):].split(".")[0] in _BASE_ROOTS for k in weights):
            prefix = candidate
            break
    base: dict[str, np.ndarray] = {}
    heads: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    for key, value in weights.items():
        if prefix and key.startswith(prefix):
            base[key[len(prefix):]] = value
        elif not prefix:
            base[key] = value
        elif key.split(".")[0] in HEAD_MODULES or key == "masked_spec_embed":
            heads[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: unexpected weights outside the base model {prefix!r}: {sorted(unknown)}")
    if any(k.startswith("embeddings.patch_embeddings.") for k in base):
        base = ast_keys_from_hf(base)
    return base, heads, prefix


def _split_layer_key(key: str, layer_roots: tuple[str, ...]) -> tuple[str, str] | None:
    """``'<root>.{i}.rest'`` -> (``'{i}'``, ``'rest'``) for the first matching root, else None."""
    for root in layer_roots:
        if key.startswith(root + "."):
            index, _, rest = key[len(root) + 1:].partition(".")
            if index.isdigit():
                return index, rest
    return None


def ast_keys_from_hf(base: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename AST base-model keys (either HF style, prefix stripped) to our ``encoder.layers.{i}`` names."""
    out = {}
    for key, value in base.items():
        split = _split_layer_key(key, ("encoder.layer", "layers"))
        if split is not None:
            index, rest = split
            for old, new in _AST_LAYER_RENAMES:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            key = f"encoder.layers.{index}.{rest}"
        out[key] = value
    return out


def ast_key_to_hf(key: str) -> str:
    """Inverse of :func:`ast_keys_from_hf` for one key, in the transformers>=5 style (``layers.{i}.mlp.fc1``)."""
    split = _split_layer_key(key, ("encoder.layers",))
    if split is None:
        return key
    index, rest = split
    for ours, theirs in _AST_LAYER_EXPORT:
        if rest.startswith(ours):
            rest = theirs + rest[len(ours):]
            break
    return f"layers.{index}.{rest}"


_RENAME = {"kernel": "weight", "scale": "weight", "embedding": "weight", "mean": "running_mean", "var": "running_var"}


def hf_key(path: tuple) -> str:
    """NNX parameter path -> HF state-dict key (without the base-model prefix)."""
    *parents, leaf = (str(p) for p in path)
    return ".".join([*parents, _RENAME.get(leaf, leaf)])


def to_nnx_layout(path: tuple, value: np.ndarray) -> np.ndarray:
    """HF tensor layout -> NNX layout: Linear (out, in) -> (in, out); Conv1d (out, in, k) -> (k, in, out);
    Conv2d (out, in, kh, kw) -> (kh, kw, in, out)."""
    if path[-1] == "kernel":
        if value.ndim == 2:
            return value.T
        if value.ndim == 3:
            return np.transpose(value, (2, 1, 0))
        if value.ndim == 4:
            return np.transpose(value, (2, 3, 1, 0))
    return value


def to_hf_layout(path: tuple, value: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_nnx_layout`."""
    if path[-1] == "kernel":
        if value.ndim == 2:
            return value.T
        if value.ndim == 3:
            return np.transpose(value, (2, 1, 0))
        if value.ndim == 4:
            return np.transpose(value, (3, 2, 0, 1))
    return value
