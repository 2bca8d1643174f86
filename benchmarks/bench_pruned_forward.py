"""Forward time of a physically pruned model (FFN density 30 %) vs the unpruned one, and the FLOP reduction.

Base-size shapes (hidden 768, 12 layers, 12 heads, FFN 3072), random weights, a batch of 4 x 10 s of 16 kHz
audio. The pruned model keeps round(0.3 * 3072) = 922 neurons per layer (L1 scores, per layer) and is slimmed
with ``slim_model``; its output is checked against the masked unpruned model before timing. FLOPs come from
XLA's cost analysis of each compiled forward (and the FFN share from the shapes). Timings alternate between the
two models so a change in machine load hits both; the load average is recorded. Reported: the best (minimum)
wall time of the repeats (the least disturbed by other processes on a shared CPU) and the median CPU time of
this process (all XLA threads), which other processes inflate much less than wall time.

    python benchmarks/bench_pruned_forward.py --out benchmarks/pruned_forward.md
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

import numpy as np
from absl import app, flags

flags.DEFINE_list("families", ["hubert", "melhubert"], "Model families to time (base-size shapes).")
flags.DEFINE_float("density", 0.3, "FFN density of the pruned model.")
flags.DEFINE_integer("batch", 4, "Utterances per batch.")
flags.DEFINE_float("seconds", 10.0, "Seconds of audio per utterance.")
flags.DEFINE_integer("repeats", 4, "Timed repetitions per model (after one warm-up), alternating models.")
flags.DEFINE_string("out", None, "Markdown file to write the figures to.")
FLAGS = flags.FLAGS


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def _ffn_flops(config, frames: int, batch: int) -> float:
    """2 matmuls of (T, C) x (C, D_l) per layer, 2 FLOPs per multiply-add."""
    return sum(4.0 * batch * frames * config.hidden_size * config.ffn_width(i)
               for i in range(config.num_hidden_layers))


def bench_family(family: str) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxneurons.models import SpeechConfig, build_model
    from jaxneurons.pruning import keep_neuron_mask, protected_prune, slim_model

    config = SpeechConfig(family=family, num_clusters=0)  # base shapes (the defaults)
    model = build_model(config, seed=0)
    keep = protected_prune(model, FLAGS.density)
    pruned = slim_model(model, keep)
    n = int(FLAGS.seconds * 16000)
    audio = jnp.asarray(np.random.default_rng(0).standard_normal((FLAGS.batch, n)).astype(np.float32) * 0.1)
    lengths = jnp.full((FLAGS.batch,), n, jnp.int32)

    def compiled_forward(m, with_mask: bool):
        graphdef, state = nnx.split(m)

        def f(state, audio, lengths, mask):
            return nnx.merge(graphdef, state)(audio, lengths, neuron_mask=mask).last_hidden_state

        mask = jnp.asarray(keep_neuron_mask(keep)) if with_mask else None
        compiled = jax.jit(f).lower(state, audio, lengths, mask).compile()
        return (lambda: compiled(state, audio, lengths, mask).block_until_ready()), compiled

    t0 = time.perf_counter()
    run_full, c_full = compiled_forward(model, False)
    run_pruned, c_pruned = compiled_forward(pruned, False)
    run_masked, _ = compiled_forward(model, True)
    compile_s = time.perf_counter() - t0
    diff = float(jnp.abs(run_masked() - run_pruned()).max())
    del run_masked
    run_full(), run_pruned()  # warm-up
    times: dict[str, list[float]] = {"full": [], "pruned": []}
    cpu: dict[str, list[float]] = {"full": [], "pruned": []}
    for _ in range(FLAGS.repeats):
        for name, fn in (("full", run_full), ("pruned", run_pruned)):
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    frames = int(model.num_frames(n))
    return {
        "family": family,
        "frames": frames,
        "kept": int(pruned.config.ffn_width(0)),
        "max_abs_diff_vs_masked": diff,
        "compile_s": compile_s,
        "times": times,
        "cpu": cpu,
        "flops_full": _flops(c_full),
        "flops_pruned": _flops(c_pruned),
        "ffn_flops_full": _ffn_flops(config, frames, FLAGS.batch),
        "ffn_flops_pruned": _ffn_flops(pruned.config, frames, FLAGS.batch),
    }


def main(_: list[str]) -> None:
    import jax

    load_before = os.getloadavg()
    results = [bench_family(f) for f in FLAGS.families]
    load_after = os.getloadavg()
    lines = [
        "# Physically pruned forward vs unpruned",
        "",
        f"Command: `python benchmarks/bench_pruned_forward.py{' --out ' + FLAGS.out if FLAGS.out else ''}`"
        f" (families {','.join(FLAGS.families)}, density {FLAGS.density}, batch {FLAGS.batch} x {FLAGS.seconds:g} s,"
        f" {FLAGS.repeats} alternating repeats after a warm-up).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, jax {jax.__version__} "
        f"({jax.default_backend()}), Python {sys.version.split()[0]}. "
        f"Load average (1/5/15 min) before: {'/'.join(f'{x:.1f}' for x in load_before)}, after: "
        f"{'/'.join(f'{x:.1f}' for x in load_after)} (the CPU is shared: "
        "read the CPU-time ratios; wall times are inflated by the load).",
        "",
        "Base-size shapes (hidden 768, 12 layers, 12 heads, FFN 3072), random weights; pruned = "
        f"round({FLAGS.density} x 3072) neurons kept per layer by L1 score, slimmed (W1 rows, b1, W2 columns).",
        "FLOPs: XLA cost analysis of the compiled forward; FFN FLOPs from the shapes "
        "(4 x batch x frames x hidden x width per layer).",
        "",
        "Wall: best of the repeats; CPU: median process CPU seconds per forward (all threads).",
        "",
        "| model | frames | FFN width | wall full (s) | wall pruned (s) | wall speed-up | CPU full (s) | "
        "CPU pruned (s) | CPU speed-up | GFLOP full | GFLOP pruned | FLOP-predicted speed-up | FFN share of FLOPs | "
        "max abs diff vs masked |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        tf, tp = min(r["times"]["full"]), min(r["times"]["pruned"])
        cf, cp = statistics.median(r["cpu"]["full"]), statistics.median(r["cpu"]["pruned"])
        lines.append(
            f"| {r['family']} base | {r['frames']} | 3072 -> {r['kept']} | {tf:.2f} | {tp:.2f} | {tf / tp:.2f}x | "
            f"{cf:.2f} | {cp:.2f} | {cf / cp:.2f}x | "
            f"{r['flops_full'] / 1e9:.0f} | {r['flops_pruned'] / 1e9:.0f} | "
            f"{r['flops_full'] / r['flops_pruned']:.2f}x | {r['ffn_flops_full'] / r['flops_full']:.0%} | "
            f"{r['max_abs_diff_vs_masked']:.1e} |"
        )
    lines += ["", "Reading:", ""]
    for r in results:
        cf, cp = statistics.median(r["cpu"]["full"]), statistics.median(r["cpu"]["pruned"])
        predicted = r["flops_full"] / r["flops_pruned"]
        lines.append(
            f"- {r['family']}: CPU-time speed-up {cf / cp:.2f}x against {predicted:.2f}x predicted from FLOPs "
            f"({(cf / cp - 1) / (predicted - 1):.0%} of the predicted gain). Only the FFN shrinks; the rest of the "
            "forward (front end, attention, norms) keeps its cost, so the gain is bounded by the FFN's FLOP share."
        )
    lines.append("- Wall-clock ratios on a shared, loaded 2-core machine swing with the other processes; the CPU "
                 "times of this process are the stable figure.")
    lines += ["", "Raw times (s), in run order:", ""]
    for r in results:
        wall, cpu = ({k: [round(t, 2) for t in v] for k, v in r[x].items()} for x in ("times", "cpu"))
        lines.append(f"- {r['family']}: wall full {wall['full']}, pruned {wall['pruned']}; CPU full {cpu['full']}, "
                     f"pruned {cpu['pruned']}; compile of the three forwards {r['compile_s']:.0f} s")
    text = "\n".join(lines) + "\n"
    print(text)
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
    app.run(main)
