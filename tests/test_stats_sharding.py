"""Data-parallel statistics over 8 virtual CPU devices equal the single-device result."""

import jax
import numpy as np
import pytest

from jaxneurons.parallel import make_mesh, shard_batch
from jaxneurons.stats import ConditionSpec, StatsConfig, run_scan
from tests.helpers import STATS_CONFIG as CONFIG
from tests.helpers import fake_forward, make_batches


def _compare(a, b):
    for key in a.arrays:
        x, y = np.asarray(a.arrays[key]), np.asarray(b.arrays[key])
        if key.endswith(("/frames", "/topk", "/positive", "/rejected")):
            np.testing.assert_array_equal(x, y, err_msg=key)  # integer counts: identical
    # moments: same values up to float32 summation order
    np.testing.assert_allclose(a.mean("phone"), b.mean("phone"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.var("phone"), b.var("phone"), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.mean("phone", absolute=True), b.mean("phone", absolute=True), rtol=1e-5)


@pytest.mark.parametrize("ndev", [8, 2])
def test_sharded_scan_equals_single_device(ndev):
    assert len(jax.devices()) >= 8, "tests/conftest.py should provide 8 virtual CPU devices"
    rng = np.random.default_rng(10)
    batches = make_batches(rng, 3, L=3, B=8, T=9, D=40)
    single, _ = run_scan(fake_forward, None, batches, CONFIG)
    mesh = make_mesh(jax.devices()[:ndev])
    sharded, _ = run_scan(fake_forward, None, batches, CONFIG, mesh=mesh)
    assert sharded.arrays["phone/topk"].sharding.is_fully_replicated
    _compare(single, sharded)


def test_sharded_unequal_widths():
    rng = np.random.default_rng(11)
    widths = (24, 40)
    cfg = StatsConfig(widths=widths, conditions=(ConditionSpec("phone", 5),), rho=0.1)
    B, T = 8, 6
    batches = [{"h0": rng.standard_normal((B, T, 24)).astype(np.float32),
                "h1": rng.standard_normal((B, T, 40)).astype(np.float32),
                "valid": np.ones((B, T), bool),
                "labels": {"phone": rng.integers(-1, 5, (B, T)).astype(np.int32)}} for _ in range(2)]

    def fwd(params, batch):
        return (batch["h0"], batch["h1"]), batch["valid"]

    single, _ = run_scan(fwd, None, batches, cfg)
    sharded, _ = run_scan(fwd, None, batches, cfg, mesh=make_mesh())
    for key in single.arrays:
        np.testing.assert_array_equal(np.asarray(single.arrays[key]), np.asarray(sharded.arrays[key]))


def test_shard_batch_rejects_indivisible_batch():
    mesh = make_mesh()
    with pytest.raises(ValueError, match="batch 7: leaf .* divisible by the 8 local 'data' shards"):
        shard_batch({"x": np.zeros((6, 3))}, mesh, source="batch 7")
