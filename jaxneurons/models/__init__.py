"""Speech Transformer encoders in Flax NNX (one implementation per family) and their checkpoints."""

from jaxneurons.models.blocks import AttentionProbs, FFNActivation
from jaxneurons.models.config import ConfigError, SpeechConfig, config_from_hf_dict, load_hf_config
from jaxneurons.models.registry import abstract_model, build_model, forward_with_captures, model_class
from jaxneurons.models.wav2vec2 import EncoderOutput

__all__ = [
    "AttentionProbs",
    "ConfigError",
    "EncoderOutput",
    "FFNActivation",
    "SpeechConfig",
    "abstract_model",
    "build_model",
    "config_from_hf_dict",
    "forward_with_captures",
    "load_hf_config",
    "model_class",
]
