"""group_norm_padding="mask" (the default): an utterance's activations do not depend on its batch's padding.

For every family, a padded batch of utterances of different lengths gives, on each utterance's valid frames,
the activations of that utterance run alone (every hidden state and every FFN ``h``). Small random configs,
no HF needed (tests/test_models_parity.py checks "hf" against transformers).
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxneurons.models import SpeechConfig, build_model, forward_with_captures

CONV = dict(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2))
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)
POS = dict(num_conv_pos_embeddings=5, num_conv_pos_embedding_groups=2)
CONFIGS = {
    "wav2vec2-group": SpeechConfig(family="wav2vec2", feat_extract_norm="group", **SMALL, **CONV, **POS),
    "wav2vec2-layer-stable": SpeechConfig(family="wav2vec2", feat_extract_norm="layer", do_stable_layer_norm=True,
                                          conv_bias=True, **SMALL, **CONV, **POS),
    "hubert-group-bn": SpeechConfig(family="hubert", feat_extract_norm="group", conv_pos_batch_norm=True,
                                    **SMALL, **CONV, **POS),
    # Three stacked positional convs of kernel 5: padded frames re-enter the utterance through each of them.
    "data2vec-audio": SpeechConfig(family="data2vec-audio", feat_extract_norm="layer", conv_bias=True,
                                   num_conv_pos_embeddings=3, num_conv_pos_embedding_groups=2,
                                   conv_pos_kernel_size=5, **SMALL, **CONV),
    "wavlm-group": SpeechConfig(family="wavlm", feat_extract_norm="group", num_buckets=16, max_bucket_distance=40,
                                **SMALL, **CONV, **POS),
    "melhubert": SpeechConfig(family="melhubert", num_mel_bins=16, **SMALL, **POS),
    "ast": SpeechConfig(family="ast", hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, patch_size=4, frequency_stride=4, time_stride=3, max_length=30,
                        num_mel_bins=16, has_masked_spec_embed=False, do_stable_layer_norm=True),
}
LENGTHS = (4000, 2345, 1111)  # the longest sets the padded length; the others get a lot of padding
TOL = 1e-4


def _relative_error(ours: np.ndarray, alone: np.ndarray) -> float:
    return float(np.abs(ours - alone).max() / max(np.abs(alone).max(), 1e-6))


def _max_padding_error(model, audio: np.ndarray, lengths: np.ndarray) -> tuple[float, str]:
    out, ffn, _ = forward_with_captures(model, audio, lengths)
    worst, where = 0.0, ""
    for b, n in enumerate(lengths):
        alone, alone_ffn, _ = forward_with_captures(model, audio[b:b + 1, :n], lengths[b:b + 1])
        t = int(alone.frame_lengths[0])
        assert int(out.frame_lengths[b]) == t
        pairs = [(f"hidden_states[{i}]", h[b, :t], a[0, :t]) for i, (h, a) in
                 enumerate(zip(out.hidden_states, alone.hidden_states, strict=True))]
        pairs += [(f"layers.{i}.ffn", h[b, :t], a[0, :t]) for i, (h, a) in enumerate(zip(ffn, alone_ffn, strict=True))]
        for name, ours, theirs in pairs:
            err = _relative_error(np.asarray(ours), np.asarray(theirs))
            if err > worst:
                worst, where = err, f"utterance {b} {name}"
    return worst, where


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    audio = np.zeros((len(LENGTHS), max(LENGTHS)), np.float32)
    for b, n in enumerate(LENGTHS):
        audio[b, :n] = 0.1 * rng.standard_normal(n)
    return audio, np.asarray(LENGTHS, np.int32)


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_padded_batch_equals_each_utterance_alone(case):
    model = build_model(CONFIGS[case], seed=1)
    assert model.config.group_norm_padding == "mask"
    err, where = _max_padding_error(model, *_batch())
    assert err < TOL, f"{case}: relative error {err:.2e} at {where} between the padded batch and the utterance alone"


def test_hf_padding_semantics_differ_for_stacked_positional_convs():
    """The "hf" setting keeps HF's behaviour, where padding leaks into data2vec-audio's last frames; this is
    what "mask" removes (and shows the test above can fail)."""
    model = build_model(CONFIGS["data2vec-audio"], seed=1)
    model.config = model.config.replace(group_norm_padding="hf")
    err, where = _max_padding_error(model, *_batch())
    assert err > 1e-2, f"expected padding to leak with group_norm_padding='hf', got {err:.2e} at {where}"
