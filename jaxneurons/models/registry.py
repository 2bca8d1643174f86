"""Config -> NNX module, and the forward pass with FFN / attention captures."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from jaxneurons.models.blocks import AttentionProbs, FFNActivation
from jaxneurons.models.config import SpeechConfig
from jaxneurons.models.wav2vec2 import EncoderOutput, Wav2Vec2Model

Array = jax.Array
SpeechModel = nnx.Module


def model_class(config: SpeechConfig) -> type[nnx.Module]:
    if config.family in ("wav2vec2", "hubert", "data2vec-audio"):
        return Wav2Vec2Model
    if config.family == "wavlm":
        from jaxneurons.models.wavlm import WavLMModel

        return WavLMModel
    if config.family == "melhubert":
        from jaxneurons.models.melhubert import MelHuBERTModel

        return MelHuBERTModel
    if config.family == "ast":
        from jaxneurons.models.ast import ASTModel

        return ASTModel
    if config.family == "whisper":
        from jaxneurons.models.whisper import WhisperModel

        return WhisperModel
    if config.family == "tera":
        from jaxneurons.models.tera import TeraModel

        return TeraModel
    raise ValueError(f"no model class for family {config.family!r}")


def build_model(config: SpeechConfig, seed: int = 0) -> nnx.Module:
    """A randomly initialised model of ``config`` (HF-style init; seeded)."""
    return model_class(config)(config, rngs=nnx.Rngs(seed))


def abstract_model(config: SpeechConfig) -> nnx.Module:
    """Shape-only model (no arrays allocated), for restoring checkpoints."""
    return nnx.eval_shape(lambda: build_model(config))


def _per_layer(state: nnx.State, name: str, num_layers: int) -> tuple[Array, ...]:
    """Pull the sown values ``encoder.layers[i].<...>.name`` out of a captured State, in layer order."""
    flat = dict(nnx.to_flat_state(state))
    found: dict[int, Array] = {}
    for path, value in flat.items():
        if path[-1] != name or "layers" not in path:
            continue
        layer = path[path.index("layers") + 1]
        if path[0] != "encoder":
            continue
        value = value.get_value() if hasattr(value, "get_value") else value
        found[int(layer)] = value[0] if isinstance(value, tuple) else value
    if sorted(found) != list(range(num_layers)):
        raise RuntimeError(f"captured {name!r} for layers {sorted(found)}, expected 0..{num_layers - 1}")
    return tuple(found[i] for i in range(num_layers))


def forward_with_captures(
    model: nnx.Module,
    audio: Array,
    audio_lengths: Array | None = None,
    *,
    capture_ffn: bool = True,
    capture_attention: bool = False,
    neuron_mask: Array | Sequence[Array] | None = None,
    neuron_offset: Array | Sequence[Array] | None = None,
    head_mask: Array | None = None,
    time_mask: Array | None = None,
) -> tuple[EncoderOutput, tuple[Array, ...] | None, tuple[Array, ...] | None]:
    """Run ``model`` and return (output, FFN ``h`` per layer (B, T, D_l), attention probs per layer (B, H, T, T)).

    Uses ``nnx.capture`` on the values the blocks ``sow``; nothing is captured that was not asked for, so
    XLA can drop the unused intermediates.
    """
    kinds = []
    if capture_ffn:
        kinds.append(FFNActivation)
    if capture_attention:
        kinds.append(AttentionProbs)
    kwargs = dict(neuron_mask=neuron_mask, neuron_offset=neuron_offset, head_mask=head_mask, time_mask=time_mask)
    # Always under nnx.capture: a plain call would store every sown value on the module itself.
    if not kinds:
        return nnx.capture(model)(audio, audio_lengths, **kwargs), None, None
    out, *states = nnx.capture(model, *kinds)(audio, audio_lengths, **kwargs)
    num_layers = model.config.num_hidden_layers
    ffn = _per_layer(states[0], "h", num_layers) if capture_ffn else None
    attn = _per_layer(states[-1], "probs", num_layers) if capture_attention else None
    # Captures have the output's frames. Whisper's encoder runs on its whole 30-s window but returns only the
    # frames of the batch's audio; for every other family the encoder's length is the output's and this is a no-op.
    t = out.frame_mask.shape[1]
    if ffn is not None and ffn[0].shape[1] != t:
        ffn = tuple(h[:, :t] for h in ffn)
    if attn is not None and attn[0].shape[-1] != t:
        attn = tuple(a[:, :, :t, :t] for a in attn)
    return out, ffn, attn
