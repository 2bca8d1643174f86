"""Time the statistics kernel on base-size shapes and write benchmarks/stats_kernel.md.

Run:  python benchmarks/bench_stats_kernel.py [--reps 5] [--out benchmarks/stats_kernel.md]

Shapes: L=12 layers, B=4 utterances x T=499 frames (10 s at 50 Hz), D=3072 FFN neurons, k=31 (top 1%).
Condition sets (a typical property + speaker + AAPE + selective scan): phone (41 classes, every frame,
top-k and h > 0 counts), gender x phone (82, mid-phone frames, top-k), pitch-bin x phone (123, mid-phone
frames, top-k), i-vector x SSL cluster (6, every frame, top-k), dataset (2, moments of h and |h|).
Compares: top-k formulations, the native FFI counting kernel, a plain matmul of the kernel's size, the
whole kernel per top-k method, and a
fused step (a 12-layer random-weight Transformer encoder proxy with the statistics in the same jit)
against the same forward without statistics.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxneurons.stats.kernels import update_stats  # noqa: E402
from jaxneurons.stats.native import native_status, neuron_counts, resolve_topk_method  # noqa: E402
from jaxneurons.stats.spec import ConditionSpec, uniform_config  # noqa: E402
from jaxneurons.stats.state import init_stats  # noqa: E402
from jaxneurons.stats.topk import topk_indices  # noqa: E402

L, B, T, D, H = 12, 4, 499, 3072, 768


def timeit(f, *args, reps: int) -> tuple[float, float]:
    """(best wall s, CPU s of that run) after one warm-up call."""
    jax.block_until_ready(f(*args))
    best = (float("inf"), 0.0)
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(f(*args))
        t, c = time.perf_counter() - t0, time.process_time() - c0
        best = min(best, (t, c))
    return best


def config():
    return uniform_config(L, D, [
        ConditionSpec("phone", 41, stats=("topk", "positive")),
        ConditionSpec("gender_phone", 82, selection="mid"),
        ConditionSpec("pitch_phone", 123, selection="mid"),
        ConditionSpec("ivec_ssl", 6, stats=("topk",)),
        ConditionSpec("dataset", 2, stats=("moments",)),
    ])


def batch(rng):
    valid = np.arange(T)[None, :] < np.array([[T], [T - 37], [T - 120], [T - 250]])
    labels = {
        "phone": rng.integers(-1, 41, (B, T)),
        "gender_phone": rng.integers(-1, 82, (B, T)),
        "pitch_phone": rng.integers(-1, 123, (B, T)),
        "ivec_ssl": rng.integers(0, 6, (B, T)),
        "dataset": rng.integers(0, 2, (B,)),
    }
    sel = {"mid": rng.random((B, T)) < 0.15}
    return (jnp.asarray(valid), {k: jnp.asarray(v, jnp.int32) for k, v in labels.items()},
            {k: jnp.asarray(v) for k, v in sel.items()})


def encoder_params(key):
    ks = jax.random.split(key, 6)
    s = 0.02
    return {
        "qkv": s * jax.random.normal(ks[0], (L, H, 3 * H)), "o": s * jax.random.normal(ks[1], (L, H, H)),
        "w1": s * jax.random.normal(ks[2], (L, H, D)), "b1": jnp.zeros((L, D)),
        "w2": s * jax.random.normal(ks[3], (L, D, H)), "b2": jnp.zeros((L, H)),
    }


def encoder(params, x, valid):
    """A post-LN Transformer encoder proxy (12 heads, exact GELU); returns FFN activations (L,B,T,D)."""
    def ln(z):
        m = z.mean(-1, keepdims=True)
        return (z - m) * lax.rsqrt(((z - m) ** 2).mean(-1, keepdims=True) + 1e-5)

    def layer(x, p):
        q, k, v = jnp.split(x @ p["qkv"], 3, axis=-1)
        split = lambda z: z.reshape(B, T, 12, H // 12).transpose(0, 2, 1, 3)  # noqa: E731
        att = jnp.einsum("bhqd,bhkd->bhqk", split(q), split(k)) / 8.0
        att = jax.nn.softmax(jnp.where(valid[:, None, None, :], att, -1e9), axis=-1)
        a = jnp.einsum("bhqk,bhkd->bhqd", att, split(v)).transpose(0, 2, 1, 3).reshape(B, T, H)
        x = ln(x + a @ p["o"])
        h = jax.nn.gelu(x @ p["w1"] + p["b1"], approximate=False)
        return ln(x + h @ p["w2"] + p["b2"]), h

    _, hs = lax.scan(layer, x, params)
    return hs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "stats_kernel.md"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cfg = config()
    k = cfg.ks[0]
    h = jnp.asarray(rng.standard_normal((L, B, T, D), dtype=np.float32))
    valid, labels, sel = batch(rng)
    rows = []

    def rec(name, f, *a):
        t, c = timeit(f, *a, reps=args.reps)
        rows.append((name, t, c))
        print(f"{name:70s} {t:8.4f} s wall {c:8.4f} s cpu", flush=True)
        return t, c

    a = jnp.abs(h).reshape(L, B * T, D)
    rec(f"lax.top_k indices, |h| (L*B*T={L * B * T} rows x {D}), k={k}",
        jax.jit(lambda a: topk_indices(a, k, method="topk")), a)
    rec("blocked two-stage top-k indices (same result)", jax.jit(lambda a: topk_indices(a, k, method="blocked")), a)
    if native_status()[0]:
        rows1 = jnp.asarray(np.stack([rng.integers(-1, 41, B * T), rng.integers(-1, 41, B * T)]), jnp.int32)
        rec(f"native FFI kernel, top-k + h>0 counts (1 set each, 41 classes), {L} layers",
            jax.jit(lambda x, r: neuron_counts(x, r, k=k, n_topk=1, topk_rows=41, positive_rows=41)),
            h.reshape(L, B * T, D), rows1)
    c_tot = sum(c.num_classes for c in cfg.conditions if "positive" in c.stats)
    oh = jnp.asarray(rng.random((B * T, c_tot)) < 0.01, jnp.float32)
    x = h.reshape(L, B * T, D)
    rec(f"plain matmul one_hot^T @ x (the h>0 counts), {L} x ({c_tot},{B * T})@({B * T},{D})",
        jax.jit(lambda oh, x: jnp.einsum("nc,lnd->lcd", oh, x)), oh, x)
    s0 = init_stats(cfg)
    methods = ("topk", "blocked", "native") if native_status()[0] else ("topk", "blocked")
    for m in methods:
        rec(f"whole stats kernel (5 condition sets), top-k method={m}",
            jax.jit(lambda s, h, v, lab, sl, m=m: update_stats(s, h, v, lab, sl, topk_method=m)),
            s0, h, valid, labels, sel)
    params = encoder_params(jax.random.PRNGKey(0))
    xin = jnp.asarray(rng.standard_normal((B, T, H), dtype=np.float32))
    t_fwd = rec("encoder proxy forward alone (12 layers, H=768, D=3072)",
                jax.jit(lambda p, x, v: encoder(p, x, v).sum((1, 2))), params, xin, valid)
    if native_status()[0]:
        rec("encoder proxy forward + stats fused in one jit, top-k method=topk (XLA path)",
            jax.jit(lambda s, p, x, v, lab, sl: update_stats(s, encoder(p, x, v), v, lab, sl, topk_method="topk")),
            s0, params, xin, valid, labels, sel)
    t_fused = rec(f"encoder proxy forward + stats fused in one jit, top-k method=auto ({resolve_topk_method('auto')})",
                  jax.jit(lambda s, p, x, v, lab, sl: update_stats(s, encoder(p, x, v), v, lab, sl)),
                  s0, params, xin, valid, labels, sel)
    (t_fwd, c_fwd), (t_fused, c_fused) = t_fwd, t_fused
    overhead, c_over = t_fused - t_fwd, c_fused - c_fwd
    lines = [
        "# Statistics kernel timings",
        "",
        f"Command: `python benchmarks/bench_stats_kernel.py --reps {args.reps}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, "
        f"JAX {jax.__version__}, backend {jax.default_backend()}. Best of {args.reps} runs after warm-up; "
        f"1-min load average at the end: {os.getloadavg()[0]:.1f}. The machine is shared: wall times under "
        "load are inflated, so compare ratios (and CPU seconds) within one run.",
        "",
        f"Native kernel: {'built, ' if native_status()[0] else 'unavailable, '}{native_status()[1]}.",
        "",
        f"Shapes: L={L}, B={B}, T={T}, D={D}, k={k}; condition sets: "
        + ", ".join(f"{c.name} ({c.num_classes}, {'+'.join(c.stats)}{', ' + c.selection if c.selection else ''})"
                    for c in cfg.conditions) + ".",
        "",
        "| what | wall s | CPU s |",
        "|---|---|---|",
        *[f"| {n} | {t:.4f} | {c:.4f} |" for n, t, c in rows],
        "",
        f"Statistics overhead inside the fused step: {overhead:.3f} s wall = {100 * overhead / t_fwd:.1f} % of "
        f"the encoder-proxy forward ({t_fwd:.2f} s wall); {c_over:.3f} CPU s = {100 * c_over / c_fwd:.1f} % of "
        f"its {c_fwd:.2f} CPU s. The real base-size forward also runs the conv front end (about a third of "
        "its time), so the share of a full forward is smaller. This configuration is heavier than the "
        "issue's benchmark (it adds per-class moments, which need the stacked activations, and three more "
        "condition sets); the issue's configuration, timed end to end against the real forward, is in "
        "benchmarks/scan.md.",
        "",
    ]
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
