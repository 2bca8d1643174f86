"""Scan benchmark: statistics overhead of the fused JAX scan step, and JAX scan vs a PyTorch hook scan.

Base-size random HuBERT (``transformers.HubertConfig()``: hidden 768, 12 layers, FFN 3072), batches of
4 x 10 s of 16 kHz audio with synthetic labels: a phone-like label per frame (40 classes, runs of 3-15
frames, ~10 % unlabelled = -1) and a gender-like label per utterance (2 classes). Statistics (the
property-neuron and AAPE statistics of ``jaxneurons scan``, every valid frame):
  phone        (40 classes): top-1 % |h| membership counts + h > 0 counts
  gender_phone (80 classes): top-1 % |h| membership counts
  gender       (2 classes):  h > 0 counts

Timed in ONE process, repetitions interleaved (a, b, c, d, a, b, c, d, ...), medians reported:
  (a) JAX forward alone (jit, no captures);
  (b) JAX scan step: forward + statistics fused in one jit (``make_stats_step`` with the pipeline's
      ``make_forward``, exactly what ``run_scan`` executes per batch; ``--topk-method``, default "auto" =
      the native FFI counting kernel on CPU when it builds, recorded in the output);
  (c) transformers PyTorch forward with forward hooks on every layer's FFN activation computing the same
      counts (``torch.topk`` over |h| per frame, ``bincount`` into (C, D) counts, one-hot matmul for h > 0),
      ``torch.inference_mode``, torch threads = CPU cores;
  (d) the same PyTorch forward without hooks (reference for the hooks' own cost);
  (e) as (b), plus the max-activating examples (``StatsConfig.examples``, default 16: the exact top-16
      frames of every neuron, ``jaxneurons.stats.examples``) in the same jit, late in a scan: the running
      state's 16th value of every neuron is above every frame of the batch (set to 1e30), so no frame can
      enter (the native kernel then only compares; the XLA path runs its top-16 on the neurons that can
      gain, here none);
  (f) as (e) from an empty state at every call (the first batch of a scan: every frame is offered to
      every neuron's top 16; the XLA path runs its full two-stage top-16 on every neuron).
``--modes`` picks a subset (e.g. ``abef``: no PyTorch, so no count comparison).
The PyTorch model is saved with ``save_pretrained`` and converted with our converter, so (b) and (c)
count the same activations up to float rounding; the counts are compared entry by entry.

    python benchmarks/bench_scan.py --out benchmarks/scan.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NUM_PHONES, NUM_GENDERS = 40, 2


def synthetic_labels(rng: np.random.Generator, batch: int, frames: int) -> dict[str, np.ndarray]:
    """Phone-like runs per frame (-1 = unlabelled) and a gender-like label per utterance."""
    phone = np.empty((batch, frames), np.int32)
    for b in range(batch):
        t = 0
        while t < frames:
            n = int(rng.integers(3, 16))
            phone[b, t:t + n] = -1 if rng.random() < 0.1 else int(rng.integers(0, NUM_PHONES))
            t += n
    gender = rng.integers(0, NUM_GENDERS, batch).astype(np.int32)
    gender_phone = np.where(phone >= 0, gender[:, None] * NUM_PHONES + phone, -1).astype(np.int32)
    return {"phone": phone, "gender_phone": gender_phone, "gender": gender}


class TorchCounter:
    """Forward hooks on each layer's FFN activation accumulating the same counts as the JAX kernel."""

    def __init__(self, torch, layers, k: int, width: int):
        self.torch, self.k, self.D, self.layers = torch, k, width, layers
        L = len(layers)
        z = lambda c: torch.zeros((L, c, width), dtype=torch.int64)  # noqa: E731
        self.counts = {"phone/topk": z(NUM_PHONES), "gender_phone/topk": z(2 * NUM_PHONES),
                       "phone/positive": z(NUM_PHONES), "gender/positive": z(NUM_GENDERS)}
        self.rows: dict = {}
        self.capture: list | None = None  # set to a list to keep each layer's h (verification only)

    def set_batch(self, labels: dict[str, np.ndarray], frames: int) -> None:
        """Per-frame count rows of the next batch (ignored frames -> the dump row C)."""
        t = self.torch
        ph = labels["phone"].reshape(-1)
        gp = labels["gender_phone"].reshape(-1)
        g = np.repeat(labels["gender"], frames)
        self.rows = {
            "phone": t.from_numpy(np.where(ph >= 0, ph, NUM_PHONES).astype(np.int64)),
            "gender_phone": t.from_numpy(np.where(gp >= 0, gp, 2 * NUM_PHONES).astype(np.int64)),
        }
        oh = np.concatenate([np.eye(NUM_PHONES + 1, dtype=np.float32)[np.where(ph >= 0, ph, NUM_PHONES)][:, :-1],
                             np.eye(NUM_GENDERS, dtype=np.float32)[g]], axis=1)
        self.ohT = t.from_numpy(np.ascontiguousarray(oh.T))  # (40 + 2, N)

    def install(self) -> list:
        """Hook every layer's FFN activation (the per-layer dropout after the activation: identity in eval)."""
        return [layer.feed_forward.intermediate_dropout.register_forward_hook(self._hook(i))
                for i, layer in enumerate(self.layers)]

    def _hook(self, layer: int):
        def hook(module, inputs, output):
            t, D, k = self.torch, self.D, self.k
            h = output.reshape(-1, D)
            if self.capture is not None:
                self.capture.append(h.clone())
            idx = t.topk(h.abs(), k, dim=1, sorted=False).indices  # (N, k)
            for name, C in (("phone", NUM_PHONES), ("gender_phone", 2 * NUM_PHONES)):
                flat = (self.rows[name][:, None] * D + idx).reshape(-1)
                self.counts[f"{name}/topk"][layer] += t.bincount(flat, minlength=(C + 1) * D)[:C * D].view(C, D)
            pos = t.round(self.ohT @ (h > 0).to(t.float32)).to(t.int64)  # (42, D)
            self.counts["phone/positive"][layer] += pos[:NUM_PHONES]
            self.counts["gender/positive"][layer] += pos[NUM_PHONES:]
        return hook


def near_ties(h: np.ndarray, k: int, rel: float) -> tuple[int, int]:
    """Frames whose k-th and (k+1)-th largest |h| differ by < rel (relative), and |h| entries < rel near 0."""
    a = np.abs(h)
    part = -np.partition(-a, (k - 1, k), axis=1)
    gap = (part[:, k - 1] - part[:, k]) / np.maximum(part[:, k - 1], 1e-30)
    return int((gap < rel).sum()), int((np.abs(h) < rel).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4, help="utterances per batch")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per utterance")
    ap.add_argument("--batches", type=int, default=2, help="distinct batches, each timed once per repetition")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timed repetitions (after a warm-up pass)")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: CPU cores)")
    ap.add_argument("--topk-method", default="auto", choices=("auto", "native", "topk", "blocked"),
                    help="top-k / h>0 counting method of the scan step (auto: native on CPU when it builds)")
    ap.add_argument("--examples", type=int, default=16, help="top-N examples per neuron of modes (e) and (f)")
    ap.add_argument("--modes", default="abcdef", help="modes to time, a subset of abcdef (a is always timed)")
    ap.add_argument("--out", default=None, help="Markdown file to write")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import torch
    import transformers
    from flax import nnx

    from checkpoints_convert.convert import convert
    from jaxneurons.models import forward_with_captures
    from jaxneurons.models.checkpoint import load_model
    from jaxneurons.pipeline.scan import make_forward
    from jaxneurons.stats import ConditionSpec, NeuronStats, StatsConfig, init_stats, make_stats_step, topk_size
    from jaxneurons.stats.native import native_status, resolve_topk_method

    load_start = os.getloadavg()
    threads = args.torch_threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    hf_config = transformers.HubertConfig()
    torch.manual_seed(0)
    hf = transformers.HubertModel(hf_config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(os.path.join(tmp, "hf"))
        convert(os.path.join(tmp, "hf"), os.path.join(tmp, "jax"))
        model = load_model(os.path.join(tmp, "jax"))
    graphdef, state = nnx.split(model)
    L, D = model.config.num_hidden_layers, model.config.ffn_width(0)
    k = topk_size(D, 0.01)

    n = int(args.seconds * 16000)
    T = int(model.num_frames(n))
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(args.batches):
        audio = (rng.standard_normal((args.batch, n)) * 0.1).astype(np.float32)
        batches.append({"audio": audio, "audio_lengths": np.full((args.batch,), n, np.int32),
                        "labels": synthetic_labels(rng, args.batch, T),
                        "utt_index": np.arange(len(batches) * args.batch, (len(batches) + 1) * args.batch,
                                               dtype=np.int32)})
    jbatches = [jax.tree.map(jnp.asarray, b) for b in batches]

    config = StatsConfig(widths=(D,) * L, conditions=(
        ConditionSpec("phone", NUM_PHONES, stats=("topk", "positive")),
        ConditionSpec("gender_phone", 2 * NUM_PHONES, stats=("topk",)),
        ConditionSpec("gender", NUM_GENDERS, stats=("positive",)),
    ))

    @jax.jit
    def jax_forward(state, batch):
        out, _, _ = forward_with_captures(nnx.merge(graphdef, state), batch["audio"], batch["audio_lengths"],
                                          capture_ffn=False)
        return out.last_hidden_state

    method = resolve_topk_method(args.topk_method)  # what the step below traces with
    native_ok, native_detail = native_status() if method == "native" or args.topk_method == "auto" else (False, "")
    step = make_stats_step(make_forward(graphdef), config, topk_method=args.topk_method)
    config_ex = dataclasses.replace(config, examples=args.examples)
    step_ex = make_stats_step(make_forward(graphdef), config_ex, topk_method=args.topk_method)
    counter = TorchCounter(torch, hf.encoder.layers, k, D)
    audio_t = [torch.from_numpy(b["audio"]) for b in batches]

    def run_torch(i: int, hooks: bool) -> None:
        handles = []
        if hooks:
            counter.set_batch(batches[i]["labels"], T)
            handles = counter.install()
        try:
            with torch.inference_mode():
                hf(audio_t[i])
        finally:
            for h_ in handles:
                h_.remove()

    stats_box = [init_stats(config)]
    empty_ex = init_stats(config_ex)
    late_ex = NeuronStats({**empty_ex.arrays, **{k: jnp.full_like(v, 1e30 if k == "examples/value" else 0)
                                                 for k, v in empty_ex.arrays.items() if k.startswith("examples/")}},
                          config_ex)

    def run_step(i: int) -> None:
        stats_box[0] = jax.block_until_ready(step(stats_box[0], state, jbatches[i]))

    def run_step_examples(i: int) -> None:
        jax.block_until_ready(step_ex(late_ex, state, jbatches[i]))

    def run_step_examples_empty(i: int) -> None:
        jax.block_until_ready(step_ex(empty_ex, state, jbatches[i]))

    modes = {
        "a": ("JAX forward alone (jit)", lambda i: jax.block_until_ready(jax_forward(state, jbatches[i]))),
        "b": ("JAX scan step: forward + statistics, one jit", run_step),
        "c": ("PyTorch forward + counting hooks (inference_mode)", lambda i: run_torch(i, True)),
        "d": ("PyTorch forward, no hooks", lambda i: run_torch(i, False)),
        "e": (f"JAX scan step + top-{args.examples} max-activating examples per neuron, one jit (late in a scan)",
              run_step_examples),
        "f": ("as (e), from an empty example state (a scan's first batch)", run_step_examples_empty),
    }
    modes = {key: v for key, v in modes.items() if key in set(args.modes) | {"a"}}
    with_torch = "c" in modes
    # Warm-up pass (compiles JAX; accumulates the counts of every batch once for the comparison).
    compile_s = {}
    for key in modes:
        t0 = time.perf_counter()
        for i in range(args.batches):
            modes[key][1](i)
        compile_s[key] = time.perf_counter() - t0
        print(f"warm-up {key}: {compile_s[key]:.1f} s", flush=True)
    has_b = "b" in modes
    jax_counts = {name: np.asarray(stats_box[0].arrays[name]) for name in counter.counts} if has_b else {}
    torch_counts = {name: v.numpy().copy() for name, v in counter.counts.items()}
    frames = {c: np.asarray(stats_box[0].frames(c)) for c in ("phone", "gender_phone", "gender")} if has_b else {}

    times: dict[str, list[tuple[float, float]]] = {key: [] for key in modes}
    for _ in range(args.repeats):
        for key, (_, fn) in modes.items():
            for i in range(args.batches):
                c0, t0 = time.process_time(), time.perf_counter()
                fn(i)
                times[key].append((time.perf_counter() - t0, time.process_time() - c0))
        print(f"repetition done; load {os.getloadavg()[0]:.1f}", flush=True)
    load_end = os.getloadavg()

    med = {key: statistics.median(t for t, _ in v) for key, v in times.items()}
    cpu = {key: statistics.median(c for _, c in v) for key, v in times.items()}

    def rel(x: str, y: str, base: str = "a") -> str:
        """(x - y) / base in wall and CPU seconds."""
        return (f"**{100 * (med[x] - med[y]) / med[base]:+.1f} %** wall, "
                f"**{100 * (cpu[x] - cpu[y]) / cpu[base]:+.1f} %** CPU s")

    dev = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"
    audio_s = args.batch * args.seconds
    flags = "".join(f" --{name} {getattr(args, name.replace('-', '_'))}" for name in ("batch", "seconds", "batches",
                                                                                        "repeats"))
    flags += f"{' --topk-method ' + args.topk_method if args.topk_method != 'auto' else ''}"
    flags += f"{' --modes ' + args.modes if args.modes != 'abcdef' else ''}{' --out ' + args.out if args.out else ''}"
    env = " (JAXNEURONS_NATIVE=0)" if os.environ.get("JAXNEURONS_NATIVE", "1").strip() in ("0", "false", "no",
                                                                                        "off") else ""
    lines = [
        "# Scan: statistics overhead and JAX vs PyTorch",
        "",
        f"Command: `python benchmarks/bench_scan.py{flags}`{env}",
        "",
        f"Machine: {dev}; Python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()}), "
        f"torch {torch.__version__} ({threads} threads), transformers {transformers.__version__}. "
        f"Load average (1/5/15 min) at start {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f}, "
        f"at end {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f} on {os.cpu_count()} cores: the machine "
        "is shared, so wall times are inflated and noisy; CPU seconds (all threads of this process) are "
        "reported too. Compare ratios within this run only.",
        "",
        f"Model: base-size HuBERT (hidden 768, {L} layers, FFN {D}, random weights; PyTorch -> save_pretrained -> "
        f"our converter -> JAX). Batch: {args.batch} x {args.seconds:g} s at 16 kHz ({T} frames each); "
        f"{args.batches} distinct batches with synthetic labels. Statistics: phone (40 classes, top-k + h>0), "
        f"gender x phone (80, top-k), gender (2, h>0); k = {k} (top 1 %) per frame, every frame.",
        "",
        f"Counting method of the scan step (top-k and h>0 counts, and the examples' kernel and merge): "
        f"`topk_method={args.topk_method}` -> **{method}**"
        + (f" (native XLA FFI kernel {native_detail})" if method == "native" else
           f" (native kernel not used: {native_detail})" if native_detail else "") + ".",
        "",
        f"Median over {args.repeats} interleaved repetitions x {args.batches} batches (after a warm-up pass):",
        "",
        "| | what | median wall s / batch | median CPU s / batch | all wall times (s) |",
        "|---|---|---|---|---|",
    ]
    for key, (what, _) in modes.items():
        lines.append(f"| ({key}) | {what} | {med[key]:.2f} | {cpu[key]:.2f} | "
                     f"{', '.join(f'{t:.2f}' for t, _ in times[key])} |")
    lines.append("")
    if has_b:
        lines.append(f"- **Statistics overhead** (b - a) / a: {rel('b', 'a')} (target <= 5 %).")
    if has_b and with_torch:
        lines.append(f"- **Speed ratio** PyTorch-with-hooks / JAX scan step (c) / (b): **{med['c'] / med['b']:.2f}** "
                     f"wall, **{cpu['c'] / cpu['b']:.2f}** CPU s (target >= 1.0; > 1 means the JAX scan is faster).")
    for key, when in (("e", "late in a scan"), ("f", "first batch, empty state")):
        if key in modes and has_b:
            lines.append(f"- **Top-{args.examples} examples alone, {when}** ({key} - b) / a: {rel(key, 'b')} "
                         f"(target <= 5 %); statistics + examples ({key} - a) / a: {rel(key, 'a')}.")
    if "e" in modes:
        lines.append(f"- Example state: {L} x {D} x {args.examples} x 3 arrays = "
                     f"{L * D * args.examples * 12 / 2**20:.1f} MB.")
    if "d" in modes and with_torch:
        lines.append(f"- PyTorch hooks' own cost (c - d) / d: {100 * (med['c'] - med['d']) / med['d']:+.1f} % wall.")
    if has_b:
        lines.append(f"- JAX scan step throughput: {audio_s / med['b']:.1f} x real time (wall, under this load).")
    total_diff = total_events = 0
    if has_b and with_torch:
        # Near-tie diagnosis on batch 0 (not timed): PyTorch's h of every layer.
        counter.capture = []
        run_torch(0, True)
        hs = [x.numpy() for x in counter.capture]
        counter.capture = None
        ties = [near_ties(x, k, 1e-5) for x in hs]
        tie_frames, tiny_h = sum(t[0] for t in ties), sum(t[1] for t in ties)
        # Count comparison: both were accumulated over exactly one pass (the warm-up) over every batch.
        lines += [
            "",
            f"Counts, JAX (b) vs PyTorch (c), one pass over the {args.batches} batches "
            f"(frames per class agree by construction):",
            "",
            "| statistic | entries | differing entries | sum abs diff | max abs diff | events counted |",
            "|---|---|---|---|---|---|",
        ]
        for name, jc in jax_counts.items():
            tc = torch_counts[name]
            d = np.abs(jc.astype(np.int64) - tc)
            events = int(tc.sum())
            total_diff += int(d.sum())
            total_events += events
            lines.append(f"| {name} | {jc.size} | {int((d > 0).sum())} | {int(d.sum())} | {int(d.max())} | {events} |")
        lines += [
            "",
            f"Total: {total_diff} of {total_events} counted events differ ({total_diff / max(total_events, 1):.1e}). "
            "Differences come from float near-ties, not from the counting: the two forwards differ by float "
            "rounding (~1e-6 relative), which can swap the k-th and (k+1)-th neuron of a frame (2 entries move by "
            f"1) or flip the sign of an |h| ~ 1e-7. In batch 0, {tie_frames} frame-layers (of "
            f"{len(hs) * hs[0].shape[0]}) have a relative gap < 1e-5 between the k-th and (k+1)-th |h|, and "
            f"{tiny_h} activations have |h| < 1e-5.",
            f"Frames per class (JAX): phone {int(frames['phone'].sum())}, gender x phone "
            f"{int(frames['gender_phone'].sum())}, gender {int(frames['gender'].sum())}.",
        ]
    lines.append("Warm-up pass (compile included for JAX), s: "
                 + ", ".join(f"({k_}) {v:.1f}" for k_, v in compile_s.items()) + ".")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        from jaxneurons.results import write_text

        write_text(args.out, text)
    if total_diff > max(10, total_events * 1e-4):
        raise SystemExit(f"JAX and PyTorch counts disagree beyond float near-ties: {total_diff} of {total_events}")


if __name__ == "__main__":
    main()
