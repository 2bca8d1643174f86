"""A scan stopped (or killed) after n batches resumes from its checkpoint to the uninterrupted result."""

import os

import numpy as np
import pytest

from jaxneurons.stats import load_checkpoint, run_scan, save_checkpoint, uniform_config
from tests.helpers import STATS_CONFIG as CONFIG
from tests.helpers import fake_forward, make_batches


def _equal(a, b):
    assert a.arrays.keys() == b.arrays.keys()
    for key in a.arrays:
        np.testing.assert_array_equal(np.asarray(a.arrays[key]), np.asarray(b.arrays[key]), err_msg=key)


def test_stop_and_resume_equals_uninterrupted(tmp_path):
    rng = np.random.default_rng(20)
    batches = make_batches(rng, 5, L=3, B=4, T=9, D=40)
    full, n = run_scan(fake_forward, None, batches, CONFIG)
    ck = str(tmp_path / "scan.npz")
    part, n1 = run_scan(fake_forward, None, batches, CONFIG, checkpoint_path=ck, max_batches=2)
    assert (n, n1) == (5, 2)
    _, cursor, _ = load_checkpoint(ck)
    assert cursor == 2
    # resume with a callable that starts at the cursor (no re-loading of done batches)
    starts = []

    def from_(start):
        starts.append(start)
        return iter(batches[start:])

    resumed, n2 = run_scan(fake_forward, None, from_, CONFIG, checkpoint_path=ck)
    assert (starts, n2) == ([2], 5)
    _equal(full, resumed)


def test_killed_scan_resumes(tmp_path):
    rng = np.random.default_rng(21)
    batches = make_batches(rng, 5, L=3, B=4, T=9, D=40)
    full, _ = run_scan(fake_forward, None, batches, CONFIG)
    ck = str(tmp_path / "scan.npz")

    def crashing():
        for i, b in enumerate(batches):
            if i == 3:
                raise KeyboardInterrupt("simulated kill")
            yield b

    with pytest.raises(KeyboardInterrupt):
        run_scan(fake_forward, None, crashing(), CONFIG, checkpoint_path=ck, checkpoint_every=2)
    assert load_checkpoint(ck)[1] == 2
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    resumed, n = run_scan(fake_forward, None, batches, CONFIG, checkpoint_path=ck)  # iterable: skips 2
    assert n == 5
    _equal(full, resumed)


def test_checkpoint_mismatch_errors(tmp_path):
    rng = np.random.default_rng(22)
    batches = make_batches(rng, 1, L=3, B=4, T=9, D=40)
    ck = str(tmp_path / "scan.npz")
    run_scan(fake_forward, None, batches, CONFIG, checkpoint_path=ck, fingerprint={"model": "a"})
    with pytest.raises(ValueError, match="fingerprint"):
        run_scan(fake_forward, None, batches, CONFIG, checkpoint_path=ck, fingerprint={"model": "b"})
    with pytest.raises(ValueError, match="config"):
        run_scan(fake_forward, None, batches, uniform_config(3, 40, CONFIG.conditions, rho=0.2), checkpoint_path=ck)
    bad = str(tmp_path / "bad.npz")
    with open(bad, "wb") as fh:
        fh.write(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz: not a readable statistics checkpoint"):
        load_checkpoint(bad)
    stats, _, _ = load_checkpoint(ck)
    np.savez(str(tmp_path / "x.npz"), a=np.zeros(1))
    with pytest.raises(ValueError, match="no __meta__"):
        load_checkpoint(str(tmp_path / "x.npz"))
    save_checkpoint(ck, stats, 1)
    assert load_checkpoint(ck)[1] == 1
