"""The native XLA FFI counting kernel: same counts as the XLA path and NumPy (ties included), fallbacks."""

import logging
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxneurons.parallel import make_mesh
from jaxneurons.stats import ConditionSpec, StatsConfig, init_stats, native, run_scan, update_stats
from tests.helpers import fake_forward, make_batches, reference_over

COUNT_KEYS = ("/frames", "/topk", "/positive", "/rejected")
# tests/helpers.STATS_CONFIG without the moments (which the native kernel does not touch): faster jit
CONFIG = StatsConfig(widths=(40,) * 3, rho=0.1, conditions=(
    ConditionSpec("phone", 5, stats=("topk", "positive")),
    ConditionSpec("gender", 2, selection="mid", stats=("topk", "positive")),
    ConditionSpec("pitch", 3, selection="mid"),
))

_AVAILABLE, _DETAIL = native.native_status()
if native.native_required() and not _AVAILABLE:
    # CI sets JAXNEURONS_REQUIRE_NATIVE=1: on CPU the kernel is the default path, so a failed build must fail
    # the run (a collection error), never turn every equality test below into a skip.
    raise RuntimeError(f"JAXNEURONS_REQUIRE_NATIVE=1 but the native statistics kernel is unavailable: {_DETAIL}")
needs_native = pytest.mark.skipif(not _AVAILABLE, reason=f"native kernel unavailable: {_DETAIL}")


def tied_rows(rng, n, d):
    """Activations with heavy exact ties: few levels, zeros, -0.0, negatives, all-equal rows, big scale jumps
    (the kernel's threshold guess from the previous row fails and must fall back)."""
    h = (np.round(rng.standard_normal((n, d)) * 2) / 2).astype(np.float32)
    h[0] = 0.0
    h[1] = -0.0
    h[2] = 1.5
    h[3] = -1.5
    h[4] = np.where(np.arange(d) % 2, 2.0, -2.0)  # equal |h| everywhere, alternating sign
    h[5:9] *= np.float32(50.0)
    h[9:12] *= np.float32(0.01)
    h[12:] *= np.exp(rng.standard_normal((n - 12, 1))).astype(np.float32)  # per-frame scales
    return h


@needs_native
@pytest.mark.parametrize("d,k", [(40, 4), (7, 1), (7, 7), (203, 13), (600, 31), (300, 299), (300, 300), (33, 1)])
def test_kernel_matches_numpy_with_ties(d, k):
    rng = np.random.default_rng(d * 1000 + k)
    n = 64
    h = tied_rows(rng, n, d)
    # three top-k sets (two share a count array range), two positive sets; -1 = not counted
    rows = np.stack([rng.integers(-1, 5, n), rng.integers(-1, 3, n) + 5, np.full(n, -1),
                     rng.integers(-1, 4, n), rng.integers(0, 2, n) + 4]).astype(np.int32)
    rows[2, 10:20] = 7
    kw = dict(k=k, n_topk=3, topk_rows=8, positive_rows=6)
    got = jax.jit(lambda h, r: native.neuron_counts(h, r, **kw))(h, rows)
    ref = native.reference_counts(h, rows, **kw)
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(g), r)
    # the reference agrees with lax.top_k (the XLA path's tie rule) on these rows
    idx = np.asarray(jax.lax.top_k(jnp.abs(jnp.asarray(h)), k)[1])
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(np.argsort(-np.abs(h), 1, kind="stable")[:, :k], 1))


@needs_native
def test_kernel_positive_only_and_vmap():
    rng = np.random.default_rng(1)
    h = tied_rows(rng, 30, 50)
    rows = rng.integers(-1, 3, (1, 30)).astype(np.int32)
    kw = dict(k=1, n_topk=0, topk_rows=0, positive_rows=3)
    t, p = jax.jit(lambda h, r: native.neuron_counts(h, r, **kw))(h, rows)
    assert t.shape == (0, 50)
    np.testing.assert_array_equal(np.asarray(p), native.reference_counts(h, rows, **kw)[1])
    # vmap (sequential) over a leading axis
    hs = np.stack([h, -h])
    kw = dict(k=5, n_topk=1, topk_rows=3, positive_rows=0)
    t2, _ = jax.vmap(lambda x: native.neuron_counts(x, jnp.asarray(rows), **kw))(hs)
    for i in range(2):
        np.testing.assert_array_equal(np.asarray(t2[i]), native.reference_counts(hs[i], rows, **kw)[0])


def _equal_counts(a, b):
    for key in a.arrays:
        if key.endswith(COUNT_KEYS):
            np.testing.assert_array_equal(np.asarray(a.arrays[key]), np.asarray(b.arrays[key]), err_msg=key)


@needs_native
def test_native_scan_equals_xla_and_numpy():
    rng = np.random.default_rng(2)
    batches = make_batches(rng, 2, L=3, B=4, T=9, D=40)
    assert native.resolve_topk_method("auto") == "native"  # what run_scan uses by default on CPU
    nat, _ = run_scan(fake_forward, None, batches, CONFIG, topk_method="native")
    xla, _ = run_scan(fake_forward, None, batches, CONFIG, topk_method="topk")
    _equal_counts(nat, xla)
    ref = reference_over(batches, CONFIG)
    for c in CONFIG.conditions:
        np.testing.assert_array_equal(np.asarray(nat.topk_counts(c.name)), ref[c.name]["topk"])
        if "positive" in c.stats:
            np.testing.assert_array_equal(np.asarray(nat.positive_counts(c.name)), ref[c.name]["positive"])


@needs_native
def test_native_unequal_widths_k1_and_k_equal_d():
    """Per-layer widths 24 / 40 / 3 with rho = 1/3: k = 8, 13 and 1; a 1-wide layer has k = D = 1."""
    rng = np.random.default_rng(3)
    widths = (24, 40, 3, 1)
    cfg = StatsConfig(widths=widths, rho=1 / 3, conditions=(
        ConditionSpec("phone", 5, stats=("topk", "positive")),
        ConditionSpec("spk", 3, selection="mid", stats=("topk",)),
        ConditionSpec("g", 2, stats=("positive",)),
    ))
    assert cfg.ks == (8, 13, 1, 1)
    B, T = 3, 7
    hs = tuple(jnp.asarray(tied_rows(rng, B * T, w).reshape(B, T, w)) for w in widths)
    valid = jnp.asarray(np.arange(T)[None] < np.array([[7], [5], [2]]))
    labels = {"phone": rng.integers(-1, 5, (B, T)).astype(np.int32), "spk": rng.integers(-1, 3, (B,)).astype(np.int32),
              "g": rng.integers(0, 2, (B, T)).astype(np.int32)}
    sels = {"mid": rng.random((B, T)) < 0.5}
    step = jax.jit(update_stats, static_argnames="topk_method")
    nat = step(init_stats(cfg), hs, valid, labels, sels, topk_method="native")
    xla = step(init_stats(cfg), hs, valid, labels, sels, topk_method="topk")
    _equal_counts(nat, xla)
    assert int(np.asarray(nat.topk_counts("phone")).sum()) > 0


@needs_native
def test_native_under_shard_map():
    assert len(jax.devices()) >= 8, "tests/conftest.py should provide 8 virtual CPU devices"
    rng = np.random.default_rng(4)
    batches = make_batches(rng, 2, L=3, B=8, T=9, D=40)
    single, _ = run_scan(fake_forward, None, batches, CONFIG, topk_method="topk")
    sharded, _ = run_scan(fake_forward, None, batches, CONFIG, mesh=make_mesh(), topk_method="native")
    assert sharded.arrays["phone/topk"].sharding.is_fully_replicated
    _equal_counts(single, sharded)


# ---------------------------------------------------------------- fallbacks

@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """A clean build status and a private cache; restored (status forgotten) afterwards."""
    monkeypatch.setenv("JAXNEURONS_CACHE_DIR", str(tmp_path / "cache"))
    native.reset()
    yield monkeypatch
    native.reset()


def test_env_var_forces_xla_path(fresh_native, caplog):
    fresh_native.setenv("JAXNEURONS_NATIVE", "0")
    with caplog.at_level(logging.WARNING, logger="jaxneurons.stats.native"):
        assert native.resolve_topk_method("auto") == "topk"
    assert not caplog.records  # disabled on purpose: no warning
    with pytest.raises(RuntimeError, match="JAXNEURONS_NATIVE=0"):
        native.resolve_topk_method("native")
    rng = np.random.default_rng(5)
    batches = make_batches(rng, 1, L=3, B=4, T=9, D=40)
    forced, _ = run_scan(fake_forward, None, batches, CONFIG)
    ref = reference_over(batches, CONFIG)
    np.testing.assert_array_equal(np.asarray(forced.topk_counts("phone")), ref["phone"]["topk"])


def test_build_failure_falls_back_with_one_warning(fresh_native, caplog):
    fresh_native.setenv("JAXNEURONS_CXX", "/nonexistent/c++")
    with caplog.at_level(logging.WARNING, logger="jaxneurons.stats.native"):
        assert native.resolve_topk_method("auto") == "topk"
        assert native.resolve_topk_method("auto") == "topk"
        rng = np.random.default_rng(6)
        batches = make_batches(rng, 1, L=3, B=4, T=9, D=40)
        stats, _ = run_scan(fake_forward, None, batches, CONFIG)  # "auto": falls back, does not crash
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "/nonexistent/c++" in warnings[0].getMessage()
    ok, why = native.native_status()
    assert not ok and "no C++ compiler" in why
    ref = reference_over(batches, CONFIG)
    np.testing.assert_array_equal(np.asarray(stats.topk_counts("phone")), ref["phone"]["topk"])
    with pytest.raises(RuntimeError, match="unavailable"):
        native.resolve_topk_method("native")


def test_compile_error_falls_back(fresh_native, tmp_path):
    fake = tmp_path / "fake-cxx"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo fake 1.0 && exit 0\necho 'boom' >&2\nexit 1\n")
    fake.chmod(0o755)
    fresh_native.setenv("JAXNEURONS_CXX", str(fake))
    ok, why = native.native_status()
    assert not ok and "boom" in why
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written left behind
    assert len(list((tmp_path / "cache").glob("*.so.failed"))) == 2  # -march=native, then portable
    native.reset()  # a later process does not compile again
    ok, why = native.native_status()
    assert not ok and "failed before" in why


def test_non_cpu_backend_uses_xla_path(fresh_native, caplog):
    fresh_native.setattr(jax, "default_backend", lambda: "gpu")
    with caplog.at_level(logging.WARNING, logger="jaxneurons.stats.native"):
        assert native.resolve_topk_method("auto") == "topk"
    assert "CPU-only" in caplog.text
    with pytest.raises(RuntimeError, match="CPU-only"):
        native.resolve_topk_method("native")
    assert native.resolve_topk_method("blocked") == "blocked"
    with pytest.raises(ValueError, match="unknown top-k method"):
        native.resolve_topk_method("bogus")


@needs_native
def test_concurrent_builds_share_one_library(tmp_path):
    """Two builders at once into an empty cache (as two pytest-xdist workers would): one library, whole."""
    cache = str(tmp_path / "cache")
    paths, errors = [], []

    def build():
        try:
            paths.append(native._build(cache, native._compiler()))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(paths) == 2 and paths[0] == paths[1]
    libs = [p.name for p in (tmp_path / "cache").iterdir() if p.suffix == ".so"]
    assert libs == [paths[0].rsplit("/", 1)[1]]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".build-")]
