"""Peak memory of a statistics scan over N and 10 N batches: it must stay flat.

Each scan runs in a fresh subprocess (so peaks are not shared): a small random HuBERT-like model (4 layers,
hidden 256, FFN 1024, 4 heads), batches of 2 x 2 s of 16 kHz audio generated on the fly (nothing is kept),
``run_scan`` with phone-like (40 classes, top-k + h>0) and gender-like (2 classes, h>0) labels. The child
reports ``getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident set) and its resident set after the first
batch and after the last one (``/proc/self/status`` VmRSS). The accumulators are O(layers x neurons x
classes), so the peak must not grow with the number of batches.

    python benchmarks/bench_scan_memory.py --out benchmarks/scan_memory.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAYERS, HIDDEN, FFN, HEADS = 4, 256, 1024, 4
BATCH, SECONDS = 2, 2.0


def _vmrss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(num_batches: int) -> dict:
    import jax
    import transformers
    from flax import nnx

    from jaxneurons.models import build_model, config_from_hf_dict
    from jaxneurons.pipeline.scan import make_forward
    from jaxneurons.stats import ConditionSpec, StatsConfig, run_scan

    hf = transformers.HubertConfig(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                   intermediate_size=FFN)
    model = build_model(config_from_hf_dict(hf.to_dict()), seed=0)
    graphdef, state = nnx.split(model)
    n = int(SECONDS * 16000)
    T = int(model.num_frames(n))
    config = StatsConfig(widths=(FFN,) * LAYERS, conditions=(
        ConditionSpec("phone", 40, stats=("topk", "positive")),
        ConditionSpec("gender", 2, stats=("positive",)),
    ))

    def batches():
        rng = np.random.default_rng(0)
        for _ in range(num_batches):
            yield {"audio": (rng.standard_normal((BATCH, n)) * 0.1).astype(np.float32),
                   "audio_lengths": np.full((BATCH,), n, np.int32),
                   "labels": {"phone": rng.integers(-1, 40, (BATCH, T)).astype(np.int32),
                              "gender": rng.integers(0, 2, BATCH).astype(np.int32)}}

    rss: list[float] = []

    def on_batch(i: int, stats) -> None:
        jax.block_until_ready(stats.arrays)
        rss.append(_vmrss_mib())

    t0 = time.perf_counter()
    stats, cursor = run_scan(make_forward(graphdef), state, batches(), config, on_batch=on_batch)
    jax.block_until_ready(stats.arrays)
    seconds = time.perf_counter() - t0
    state_bytes = sum(int(np.asarray(v).nbytes) for v in stats.arrays.values())
    return {"batches": cursor, "frames": int(np.asarray(stats.frames("gender")).sum()),
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_after_first_mib": rss[0], "rss_after_last_mib": rss[-1], "rss_max_during_mib": max(rss),
            "state_mib": state_bytes / 2**20, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=5, help="N: the scans run N and 10 N batches")
    ap.add_argument("--out", default=None, help="Markdown file to write")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print("RESULT " + json.dumps(child(args.child)), flush=True)
        return

    load_start = os.getloadavg()
    results = []
    for nb in (args.batches, 10 * args.batches):
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(nb)], capture_output=True,
                              text=True, check=False)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"child scan of {nb} batches failed:\n{proc.stderr[-3000:]}")
        r = json.loads(lines[-1][len("RESULT "):])
        results.append(r)
        print(r, flush=True)
    load_end = os.getloadavg()
    import jax

    small, big = results
    growth = big["maxrss_mib"] - small["maxrss_mib"]
    lines = [
        "# Scan memory: peak RSS over N and 10 N batches",
        "",
        f"Command: `python benchmarks/bench_scan_memory.py --batches {args.batches}"
        f"{' --out ' + args.out if args.out else ''}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; Python "
        f"{platform.python_version()}, jax {jax.__version__}. Load average (1 min) {load_start[0]:.1f} at start, "
        f"{load_end[0]:.1f} at end (memory figures do not depend on load).",
        "",
        f"Model: random HuBERT-like, {LAYERS} layers, hidden {HIDDEN}, FFN {FFN}, {HEADS} heads. Batches: "
        f"{BATCH} x {SECONDS:g} s at 16 kHz, generated on the fly. Statistics: phone (40 classes, top-k + h>0), "
        "gender (2, h>0). Each scan runs in a fresh subprocess (`run_scan`, the pipeline's `make_forward`).",
        "",
        "| batches | frames counted | peak RSS (ru_maxrss) MiB | RSS after batch 1 MiB | max RSS during scan MiB "
        "| RSS after last batch MiB | accumulator state MiB | scan s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['batches']} | {r['frames']} | {r['maxrss_mib']:.1f} | {r['rss_after_first_mib']:.1f} | "
                     f"{r['rss_max_during_mib']:.1f} | {r['rss_after_last_mib']:.1f} | {r['state_mib']:.2f} | "
                     f"{r['seconds']:.1f} |")
    lines += [
        "",
        f"Peak RSS growth from {small['batches']} to {big['batches']} batches: **{growth:+.1f} MiB** "
        f"({100 * growth / small['maxrss_mib']:+.1f} %); RSS growth from batch 1 to the last batch of the "
        f"{big['batches']}-batch scan: {big['rss_after_last_mib'] - big['rss_after_first_mib']:+.1f} MiB. "
        f"The accumulators ({big['state_mib']:.2f} MiB = layers x classes x neurons counts) are the only state "
        "carried between batches.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from jaxneurons.results import write_text

        write_text(args.out, text)


if __name__ == "__main__":
    main()
