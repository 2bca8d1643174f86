"""Max-activating examples (top-N frames per neuron) vs a NumPy reference: ties, N > frames, unequal layer
widths, padding rows, 8 virtual devices, 2 processes, resume after a kill."""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxneurons.parallel import make_mesh
from jaxneurons.stats import (
    load_checkpoint,
    merge_examples,
    native,
    reference_examples,
    run_scan,
)
from jaxneurons.stats.examples import EMPTY, _sort_rows_ascending, batch_examples, empty_examples, examples_to_numpy
from tests.helpers import EXAMPLE_WIDTHS as WIDTHS
from tests.helpers import example_batches as make_batches
from tests.helpers import example_config as config
from tests.helpers import example_forward as forward
from tests.helpers import free_port, run_workers

_NATIVE, _WHY = native.native_status()
if native.native_required() and not _NATIVE:
    raise RuntimeError(f"JAXNEURONS_REQUIRE_NATIVE=1 but the native statistics kernel is unavailable: {_WHY}")
# Both example kernels: the native FFI one (what "auto" picks on CPU) and the XLA two-stage top-n.
METHODS = [pytest.param("native", marks=pytest.mark.skipif(not _NATIVE, reason=f"native kernel: {_WHY}")), "topk"]


def reference(batches, n: int, widths=WIDTHS):
    layers = [np.concatenate([b["h"][l].reshape(-1, w) for b in batches]) for l, w in enumerate(widths)]
    valid = np.concatenate([(b["valid"] & (b["utt_index"] >= 0)[:, None]).reshape(-1) for b in batches])
    ids = np.concatenate([np.stack(np.broadcast_arrays(b["utt_index"][:, None],
                                                       np.arange(b["valid"].shape[1])[None, :]), -1).reshape(-1, 2)
                          for b in batches])
    return reference_examples(layers, valid, ids, n, max(widths))


def assert_equal_examples(got: dict, want: dict) -> None:
    np.testing.assert_array_equal(got["utt"], want["utt"])
    np.testing.assert_array_equal(got["frame"], want["frame"])
    np.testing.assert_array_equal(got["value"], want["value"])  # NaN == NaN for empty slots


@pytest.mark.parametrize(("n", "T"), [(4, 5), (16, 5), (200, 5), (5, 37), (40, 37)])
def test_examples_match_numpy_reference(n, T):
    """n = 200 > every frame of the corpus: trailing slots stay empty; T = 37: several blocks of 8 frames per
    row (the kernel's first stage) and a short last block; n = 40 > the blocks of a batch."""
    batches = make_batches(0, 3, T=T)
    stats, _ = run_scan(forward, None, batches, config(n))
    got, want = stats.examples(), reference(batches, n)
    assert_equal_examples(got, want)
    assert np.isnan(got["value"][2, 7:]).all() and (got["utt"][2, 7:] == -1).all()  # narrower layer: padding
    if n == 200:
        assert (got["utt"][:, :, -1] == -1).all()
    # ties are really exercised: some neuron has equal values at several of its kept slots
    v = got["value"][:, :, :4]
    assert (np.diff(v, axis=-1) == 0).any()
    # the values are the activations at (utt, frame)
    l, d = 1, 3
    for u, f, val in zip(got["utt"][l, d], got["frame"][l, d], got["value"][l, d], strict=True):
        if u < 0:
            continue
        b, row = next((b, int(np.flatnonzero(b["utt_index"] == u)[0])) for b in batches if u in b["utt_index"])
        assert b["h"][l][row, f, d] == val and b["valid"][row, f]


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 13, 16, 17])
def test_block_id_sorting_network_sorts_rows(m):
    """The bitonic network that orders each neuron's kept block ids (distinct ints) equals np.sort, for any
    row length (padded to a power of two internally)."""
    rng = np.random.default_rng(m)
    v = np.stack([rng.permutation(4 * m + 3)[:m] for _ in range(40)]).astype(np.int32)
    np.testing.assert_array_equal(np.asarray(_sort_rows_ascending(jnp.asarray(v))), np.sort(v, axis=1))


def test_tie_rule_prefers_lower_utterance_then_frame():
    """All activations equal: the kept frames are the lowest (utterance, frame) pairs, whatever the row order."""
    B, T, w = 4, 3, 2
    batch = {"h": (np.ones((B, T, w), np.float32),), "valid": np.ones((B, T), bool),
             "utt_index": np.array([7, 2, 9, 5], np.int32), "labels": {"phone": np.zeros((B, T), np.int32)}}
    stats, _ = run_scan(forward, None, [batch], config(5, (w,)))
    ex = stats.examples()
    np.testing.assert_array_equal(ex["utt"][0, 0], [2, 2, 2, 5, 5])
    np.testing.assert_array_equal(ex["frame"][0, 0], [0, 1, 2, 0, 1])


def test_merge_is_order_independent():
    rng = np.random.default_rng(3)
    states = []
    for _ in range(3):
        s = empty_examples(1, 4, 3)
        vals = jnp.asarray(np.round(rng.standard_normal((1, 4, 3)) * 2) / 2, jnp.float32)
        s = {"examples/value": -jnp.sort(-vals, axis=-1),
             "examples/utt": jnp.asarray(rng.integers(0, 5, (1, 4, 3)), jnp.int32),
             "examples/frame": jnp.asarray(rng.integers(0, 5, (1, 4, 3)), jnp.int32)}
        states.append(s)
    a = merge_examples(merge_examples(states[0], states[1]), states[2])
    b = merge_examples(states[2], merge_examples(states[1], states[0]))
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


@pytest.mark.parametrize("ndev", [8, 2])
def test_sharded_examples_equal_single_device(ndev):
    batches = make_batches(1, 3, B=8)
    single, _ = run_scan(forward, None, batches, config(6))
    sharded, _ = run_scan(forward, None, batches, config(6), mesh=make_mesh(jax.devices()[:ndev]))
    assert sharded.arrays["examples/utt"].sharding.is_fully_replicated
    assert_equal_examples(sharded.examples(), single.examples())
    assert_equal_examples(single.examples(), reference(batches, 6))


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    batches = make_batches(2, 6)
    full, _ = run_scan(forward, None, batches, config(5))
    ck = str(tmp_path / "scan.npz")

    def crashing():
        for i, b in enumerate(batches):
            if i == 4:
                raise KeyboardInterrupt("simulated kill")
            yield b

    with pytest.raises(KeyboardInterrupt):
        run_scan(forward, None, crashing(), config(5), checkpoint_path=ck, checkpoint_every=3)
    assert load_checkpoint(ck)[1] == 3
    resumed, n = run_scan(forward, None, batches, config(5), checkpoint_path=ck)
    assert n == 6
    for key in full.arrays:
        np.testing.assert_array_equal(np.asarray(full.arrays[key]), np.asarray(resumed.arrays[key]), err_msg=key)


def test_missing_utt_index_is_an_error():
    batch = make_batches(4, 1)[0]
    del batch["utt_index"]
    with pytest.raises(ValueError, match="batch 0: .* no 'utt_index'"):
        run_scan(forward, None, [batch], config(4))
    with pytest.raises(ValueError, match="examples must be >= 0"):
        config(-1)


WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from jaxneurons.parallel import init_distributed, make_mesh
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    init_distributed(f"127.0.0.1:{port}", 2, pid, local_devices=2, cpu=True)
    import jax
    from jaxneurons.stats import run_scan
    from tests.helpers import example_batches, example_config, example_forward
    batches = example_batches(5, 3, B=8)
    local = [jax.tree_util.tree_map(lambda x: x[4 * pid:4 * pid + 4], b) for b in batches]
    stats, n = run_scan(example_forward, None, local, example_config(6), mesh=make_mesh())
    np.savez(out, **stats.examples())
""")


def test_two_processes_equal_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    outs = [tmp_path / f"p{i}.npz" for i in range(2)]
    run_workers(str(script), [(i, port, outs[i]) for i in range(2)])
    single, _ = run_scan(forward, None, make_batches(5, 3, B=8), config(6))
    for out in outs:
        with np.load(out) as z:
            assert_equal_examples(dict(z), single.examples())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("n", "T"), [(4, 5), (40, 37)])
def test_both_kernels_match_numpy_reference(method, n, T):
    """The native kernel (running-state bound, heaps) and the XLA path give the reference bits, also when most
    frames of later batches cannot enter (6 batches: the bound from the running state rejects them)."""
    batches = make_batches(7, 6, T=T)
    stats, _ = run_scan(forward, None, batches, config(n), topk_method=method)
    assert_equal_examples(stats.examples(), reference(batches, n))


def random_state(rng, shape, n_empty):
    """A sorted example state (L, D, n) with ties in value and in utterance, and n_empty empty trailing slots."""
    v = np.round(rng.standard_normal(shape) * 2) / 2
    u = rng.integers(0, 4, shape)
    f = rng.integers(0, 50, shape)
    flat = [(-v[i], u[i], f[i]) for i in np.ndindex(shape[:-1])]
    out = {k: np.empty(shape, np.float32 if k == "value" else np.int32) for k in ("value", "utt", "frame")}
    for i, (nv, uu, ff) in zip(np.ndindex(shape[:-1]), flat, strict=True):
        o = np.lexsort((ff, uu, nv))
        out["value"][i], out["utt"][i], out["frame"][i] = -nv[o], uu[o], ff[o]
    if n_empty:
        out["value"][..., -n_empty:] = -np.inf
        out["utt"][..., -n_empty:] = EMPTY
        out["frame"][..., -n_empty:] = EMPTY
    return {f"examples/{k}": jnp.asarray(x) for k, x in out.items()}


@pytest.mark.skipif(not _NATIVE, reason=f"native kernel: {_WHY}")
def test_native_merge_equals_xla_merge():
    rng = np.random.default_rng(8)
    for n_empty_a, n_empty_b in ((0, 0), (2, 5), (6, 6)):
        a = random_state(rng, (2, 9, 6), n_empty_a)
        b = random_state(rng, (2, 9, 6), n_empty_b)
        # distinct keys as in a scan: b's frames are offset so that no (utt, frame) is in both
        b["examples/frame"] = jnp.where(b["examples/frame"] == EMPTY, EMPTY, b["examples/frame"] + 100)
        want = merge_examples(a, b, native=False)
        for got in (merge_examples(a, b, native=True), merge_examples(b, a, native=True)):
            for k in want:
                np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)


@pytest.mark.skipif(not _NATIVE, reason=f"native kernel: {_WHY}")
def test_native_kernel_keeps_exactly_the_frames_before_the_running_bound():
    """With a running state, the native batch candidates are the frames that come strictly before the state's
    n-th entry (value ties broken by utterance, then frame), best first; merged, they give the reference."""
    n = 3
    first, second = make_batches(9, 2, T=6, widths=(10,))
    running = merge_examples(empty_examples(1, 10, n), batch_examples(
        [jnp.asarray(first["h"][0])], jnp.asarray(first["valid"]), jnp.asarray(first["utt_index"]), n, 10),
        native=False)
    part = batch_examples([jnp.asarray(second["h"][0])], jnp.asarray(second["valid"]),
                          jnp.asarray(second["utt_index"]), n, 10, native=True, running=running)
    h, valid, utt = second["h"][0], second["valid"] & (second["utt_index"] >= 0)[:, None], second["utt_index"]
    bv, bu, bf = (np.asarray(running[f"examples/{k}"])[0, :, n - 1] for k in ("value", "utt", "frame"))
    kept = 0
    for d in range(10):
        cands = [(float(h[b, t, d]) + 0.0, int(utt[b]), t) for b in range(h.shape[0]) for t in range(h.shape[1])
                 if valid[b, t] and (h[b, t, d] > bv[d] or (h[b, t, d] == bv[d] and (utt[b], t) < (bu[d], bf[d])))]
        cands.sort(key=lambda e: (-e[0], e[1], e[2]))
        cands = cands[:n]
        kept += len(cands)
        got = [(float(v), int(u), int(f)) for v, u, f in zip(
            *(np.asarray(part[f"examples/{k}"])[0, d] for k in ("value", "utt", "frame")), strict=True) if u != EMPTY]
        assert got == cands, d
    assert 0 < kept < 10 * n  # the bound really rejected frames, and some entered
    merged = merge_examples(running, part, native=False)
    assert_equal_examples(examples_to_numpy(merged), reference([first, second], n, widths=(10,)))


def test_xla_path_late_in_a_scan_is_exact():
    """Late in a scan most neurons' running n-th value beats every frame of a batch; the XLA path still offers
    its batch top-n of every neuron, and the merge keeps the running entries. Here the second batch is scaled
    down except in 3 of 20 neurons; merged, it gives the reference."""
    n, d = 3, 20
    first, second = make_batches(10, 2, T=6, widths=(d,))
    second["h"] = (np.where(np.arange(d) < 3, 1.0, 0.01).astype(np.float32) * second["h"][0],)

    def candidates(b, running):
        return batch_examples([jnp.asarray(b["h"][0])], jnp.asarray(b["valid"]), jnp.asarray(b["utt_index"]), n, d,
                              running=running)

    running = merge_examples(empty_examples(1, d, n), candidates(first, None), native=False)
    part = candidates(second, running)
    merged = merge_examples(running, part, native=False)
    assert_equal_examples(examples_to_numpy(merged), reference([first, second], n, widths=(d,)))


@pytest.mark.parametrize("isolate", [True, False])
def test_xla_path_with_and_without_the_conditional_boundary(isolate):
    """The XLA path runs each device's candidates inside a ``lax.cond`` on CPU (``isolate``, so that XLA reads
    the materialised h); with and without it, sharded over 8 devices of which two hold only padding rows
    (their branch returns empty slots) and one only padded frames, the result is the reference."""
    from jax.sharding import PartitionSpec as P

    n = 5
    (batch,) = make_batches(11, 1, B=16)
    batch["utt_index"][[2, 3, 6, 7]] = -1  # devices 1 and 3 (rows 2-3, 6-7): padding rows only
    batch["valid"][[10, 11]] = False       # device 5: rows whose frames are all padding
    mesh = make_mesh(jax.devices()[:8])

    def per_device(hs, valid, utt):
        return batch_examples(list(hs), valid, utt, n, max(WIDTHS), axis_name="data", native=False,
                              isolate=isolate)

    fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P("data"), P("data"), P("data")), out_specs=P()))
    got = fn(tuple(jnp.asarray(h) for h in batch["h"]), jnp.asarray(batch["valid"]), jnp.asarray(batch["utt_index"]))
    assert_equal_examples(examples_to_numpy(got), reference([batch], n))
