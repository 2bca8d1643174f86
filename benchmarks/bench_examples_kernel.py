"""The max-activating examples kernel alone, on materialised activations (XLA path): compile, wall and CPU time.

Times ``jaxneurons.stats.examples.batch_examples`` (the batch's exact top-N frames of every neuron, with the
conditional phases the CPU backend uses) inside one ``jax.jit`` on random activations of L layers x D neurons
and a batch of B x T frames, without the forward: the figures say how the kernel itself runs (how many cores
its top-k calls use), which the scan-step benchmark (``bench_scan.py`` modes e and f) measures only as a
difference of two larger medians. Compare versions by running the script in two checkouts one after the other.
``--independent-topk`` instead times L independent ``lax.top_k`` calls on (D, 64) arrays in one jit, returning
only their indices or also their values: XLA:CPU runs them on one core in the first case (the unused values of
every call share one buffer, which orders the calls) and on all cores in the second.

    JAXNEURONS_NATIVE=0 python benchmarks/bench_examples_kernel.py
    python benchmarks/bench_examples_kernel.py --independent-topk
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=3072, help="neurons per layer (base-size FFN)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=249, help="frames per utterance (5 s at 50 Hz)")
    ap.add_argument("--examples", type=int, default=16, help="top-N frames per neuron")
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--independent-topk", action="store_true", help="time independent lax.top_k calls instead")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    from jaxneurons.stats.examples import batch_examples

    rng = np.random.default_rng(0)

    def timed(compiled, *operands) -> tuple[float, float]:
        jax.block_until_ready(compiled(*operands))
        wall, cpu = [], []
        for _ in range(args.repeats):
            w, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(compiled(*operands))
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        return 1e3 * float(np.median(wall)), 1e3 * float(np.median(cpu))

    if args.independent_topk:
        xs = [jnp.asarray(rng.standard_normal((args.width, 64)).astype(np.float32)) for _ in range(args.layers)]
        for what, keep in (("indices only", lambda r: r[1]), ("values and indices", lambda r: r)):
            f = jax.jit(lambda xs, keep=keep: [keep(jax.lax.top_k(x, args.examples)) for x in xs])
            wall, cpu = timed(f.lower(xs).compile(), xs)
            print(f"{args.layers} independent lax.top_k calls on ({args.width}, 64), k = {args.examples}, returning "
                  f"{what}: wall {wall:.1f} ms, CPU {cpu:.1f} ms")
        return
    layers = [jnp.asarray(rng.standard_normal((args.batch, args.frames, args.width)).astype(np.float32))
              for _ in range(args.layers)]
    valid = jnp.ones((args.batch, args.frames), bool)
    utt = jnp.arange(args.batch, dtype=jnp.int32)
    n, width = args.examples, args.width
    fn = jax.jit(lambda xs, v, u: batch_examples(xs, v, u, n, width, native=False, isolate=True))
    t = time.perf_counter()
    compiled = fn.lower(layers, valid, utt).compile()
    compile_s = time.perf_counter() - t
    wall, cpu = timed(compiled, layers, valid, utt)
    print(f"examples kernel, XLA path: {args.layers} layers x {args.width} neurons, {args.batch} x {args.frames} "
          f"frames, top {n}; {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    print(f"compile {compile_s:.2f} s; median of {args.repeats}: wall {wall:.1f} ms, CPU {cpu:.1f} ms "
          f"({cpu / wall:.2f} CPU s per wall s)")


if __name__ == "__main__":
    main()
