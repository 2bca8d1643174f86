"""HF Whisper checkpoints -> the encoder's tensors under our names (the decoder and heads are dropped, and listed).

HF key styles: ``WhisperModel`` (``encoder.*``, ``decoder.*``), ``WhisperForConditionalGeneration``
(``model.encoder.*``, ``model.decoder.*``, ``proj_out``), ``WhisperForAudioClassification`` (``encoder.*``,
``projector``, ``classifier``, ``layer_weights``). Encoder layers are renamed to the layout every family shares
(:mod:`jaxneurons.models.whisper`); ``conv1``, ``conv2``, ``embed_positions`` and ``layer_norm`` keep HF's names.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from checkpoints_convert.hf_weights import CheckpointError
from jaxneurons.models.config import WHISPER_IGNORED_HF_KEYS

_PREFIXES = ("model.encoder.", "encoder.")
_DECODER_PREFIXES = ("model.decoder.", "decoder.")
_HEAD_KEYS = ("proj_out.", "projector.", "classifier.", "layer_weights")
_LAYER_RENAMES = (
    ("self_attn_layer_norm.", "layer_norm."),
    ("self_attn.", "attention."),
    ("fc1.", "feed_forward.intermediate_dense."),
    ("fc2.", "feed_forward.output_dense."),
)


def whisper_encoder_weights(
    weights: dict[str, np.ndarray], source: str
) -> tuple[dict[str, np.ndarray], dict[str, list[str] | int]]:
    """(encoder tensors as ``encoder.*`` keys in our layout, report of what was dropped)."""
    encoder: dict[str, np.ndarray] = {}
    decoder: list[str] = []
    heads: list[str] = []
    unknown: list[str] = []
    for key, value in weights.items():
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            rest = key[len(prefix):]
            if rest.startswith("layers."):
                index, _, tail = rest[len("layers."):].partition(".")
                for old, new in _LAYER_RENAMES:
                    if tail.startswith(old):
                        tail = new + tail[len(old):]
                        break
                rest = f"layers.{index}.{tail}"
            encoder["encoder." + rest] = value
        elif key.startswith(_DECODER_PREFIXES):
            decoder.append(key)
        elif key.startswith(_HEAD_KEYS):
            heads.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{source}: unexpected weights outside the Whisper encoder and decoder: "
                              f"{sorted(unknown)}")
    if not encoder:
        raise CheckpointError(f"{source}: no Whisper encoder weights (encoder.* or model.encoder.*)")
    return encoder, {"dropped_decoder_tensors": len(decoder), "dropped_head_weights": sorted(heads)}


def whisper_ignored_config(model_dir: str) -> dict[str, Any]:
    """The keys of ``config.json`` the encoder ignores (decoder, generation, training), kept in the provenance."""
    with open(os.path.join(model_dir, "config.json")) as f:
        hf = json.load(f)  # already parsed once by load_hf_config: valid JSON
    return {k: hf[k] for k in sorted(hf) if k in WHISPER_IGNORED_HF_KEYS}
