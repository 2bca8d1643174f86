"""Two JAX processes on loopback (gloo CPU collectives, 2 devices each) give the single-process statistics."""

import textwrap

import numpy as np

from jaxneurons.stats import run_scan
from tests.helpers import STATS_CONFIG as CONFIG
from tests.helpers import fake_forward, free_port, make_batches, run_workers

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    from jaxneurons.parallel import init_distributed, make_mesh
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    init_distributed(f"127.0.0.1:{port}", 2, pid, local_devices=2, cpu=True)
    import jax
    from jaxneurons.stats import run_scan
    from tests.helpers import STATS_CONFIG as CONFIG
    from tests.helpers import fake_forward, make_batches
    assert jax.process_count() == 2 and len(jax.devices()) == 4 and len(jax.local_devices()) == 2
    batches = make_batches(np.random.default_rng(30), 3, L=3, B=8, T=9, D=40)
    # each process feeds its own rows of every global batch
    local = [jax.tree_util.tree_map(lambda x: x[4 * pid:4 * pid + 4], b) for b in batches]
    stats, n = run_scan(fake_forward, None, local, CONFIG, mesh=make_mesh())
    np.savez(out, **stats.to_numpy())
    print("done", pid, n)
""")


def test_two_processes_equal_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    outs = [tmp_path / f"p{i}.npz" for i in range(2)]
    run_workers(str(script), [(i, port, outs[i]) for i in range(2)])
    batches = make_batches(np.random.default_rng(30), 3, L=3, B=8, T=9, D=40)
    single, _ = run_scan(fake_forward, None, batches, CONFIG)
    ref = single.to_numpy()
    for out in outs:  # both processes hold the replicated result
        with np.load(out) as z:
            assert set(z.files) == set(ref)
            for key in ref:
                if key.endswith(("/frames", "/topk", "/positive", "/rejected")):
                    np.testing.assert_array_equal(z[key], ref[key], err_msg=key)
                else:
                    np.testing.assert_allclose(z[key], ref[key], rtol=1e-4, atol=1e-5, err_msg=key)
