"""Model directories: save/load round trip, float16 storage, atomic replacement, bad directories."""

from __future__ import annotations

import numpy as np
import pytest

from jaxneurons.models import ConfigError, build_model, forward_with_captures
from jaxneurons.models.checkpoint import load_model, save_model
from tests.helpers import TINY_MELHUBERT as TINY


def test_round_trip_and_float16_storage(tmp_path):
    model = build_model(TINY, seed=3)
    audio = np.random.default_rng(0).standard_normal((1, 4000)).astype(np.float32)
    ref = np.asarray(forward_with_captures(model, audio, capture_ffn=False)[0].last_hidden_state)
    save_model(model, str(tmp_path / "fp32"), provenance={"why": "test"})
    same = np.asarray(forward_with_captures(load_model(str(tmp_path / "fp32")), audio, capture_ffn=False)[0]
                      .last_hidden_state)
    np.testing.assert_array_equal(same, ref)
    save_model(model, str(tmp_path / "fp16"), storage_dtype="float16")
    half = load_model(str(tmp_path / "fp16"))
    kernel = half.encoder.layers[0].feed_forward.intermediate_dense.kernel[...]
    assert kernel.dtype == np.float32
    np.testing.assert_array_equal(
        np.asarray(kernel),
        np.asarray(model.encoder.layers[0].feed_forward.intermediate_dense.kernel[...]).astype(np.float16))
    out = np.asarray(forward_with_captures(half, audio, capture_ffn=False)[0].last_hidden_state)
    assert np.abs(out - ref).max() < 0.05


def test_overwrite_is_atomic_and_errors_name_the_directory(tmp_path):
    save_model(build_model(TINY, seed=1), str(tmp_path / "m"))
    save_model(build_model(TINY, seed=2), str(tmp_path / "m"))  # replaces the old directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"family": "hubert", "bogus": 1}')
    (tmp_path / "bad" / "state").mkdir()
    with pytest.raises(ConfigError, match="bad/config.json: unknown jaxneurons config keys: bogus"):
        load_model(str(tmp_path / "bad"))
