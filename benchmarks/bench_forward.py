"""Forward-pass speed: jaxneurons (JAX/XLA) vs HF ``transformers`` PyTorch, same weights, same process.

Base-size HuBERT config (hidden 768, 12 layers, FFN 3072, random weights), a batch of 4 x 10 s of 16 kHz
audio. The PyTorch model is saved with ``save_pretrained``, converted with our converter and both run on the
same batch; the outputs are compared, then each forward is timed (median of ``--repeats`` after a warm-up).

    python benchmarks/bench_forward.py --out benchmarks/forward.md

``--family=whisper``: a base-size Whisper encoder (d_model 512, 6 layers, 8 heads, FFN 2048, 80 mel bins,
30-s window; random weights) from ``WhisperModel``, our encoder on the same log-mel ``input_features`` as HF's
``WhisperEncoder``, plus both front ends (our jitted log-mel vs ``WhisperFeatureExtractor``). With ``--out`` it
replaces only its own block of the file (between ``<!-- whisper -->`` markers):

    python benchmarks/bench_forward.py --family=whisper --out benchmarks/forward.md
``--family melhubert`` / ``--family tera`` time a base-size MelHuBERT (20 ms) / TERA (3 layers, 80 log-mel) against
the project's own independent PyTorch re-statement of the authors' models (``tests/s3prl_reference.py``, the
reference the conversion tests check against; no code of the authors is imported or run). A random-weight model is
written in the authors' checkpoint format by ``checkpoints_convert.s3prl_checkpoints``, converted with
``checkpoints_convert.convert.convert`` and both run on the same batch. The PyTorch side runs the encoder on
precomputed input features (the front end is not part of its timing); the JAX side is timed twice, from the
waveform (its own front end included) and from the same features. With ``--out`` it replaces only its own block of
the file (between ``<!-- melhubert -->`` / ``<!-- tera -->`` markers), so notes around the block are kept.

    python benchmarks/bench_forward.py --family melhubert --batch 2 --seconds 10 --repeats 2 --out benchmarks/forward.md
    python benchmarks/bench_forward.py --family tera --batch 2 --seconds 10 --repeats 2 --out benchmarks/forward.md
"""

from __future__ import annotations

import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

flags.DEFINE_integer("batch", 4, "Utterances per batch.")
flags.DEFINE_float("seconds", 10.0, "Seconds of audio per utterance.")
flags.DEFINE_integer("repeats", 3, "Timed repetitions (after one warm-up).")
flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: number of CPU cores).")
flags.DEFINE_string("out", None, "Markdown file to write the figures to.")
flags.DEFINE_enum("family", "hubert", ["hubert", "whisper", "melhubert", "tera"],
                  "hubert / whisper: HF transformers (whisper replaces only its block of --out); melhubert / tera: "
                  "the project's PyTorch re-statement of the authors' models (tests/s3prl_reference.py).")
FLAGS = flags.FLAGS


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up (and compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _converted(hf):
    """``hf`` saved with ``save_pretrained`` and converted by our converter: the same weights in JAX."""
    from checkpoints_convert.convert import convert
    from jaxneurons.models.checkpoint import load_model

    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(os.path.join(tmp, "hf"))
        convert(os.path.join(tmp, "hf"), os.path.join(tmp, "jax"))
        return load_model(os.path.join(tmp, "jax"))


def main(_: list[str]) -> None:
    if FLAGS.family != "hubert":
        return bench_s3prl_family(FLAGS.family)
    import jax
    import jax.numpy as jnp
    import torch
    import transformers
    from flax import nnx

    from jaxneurons.models import forward_with_captures

    threads = FLAGS.torch_threads or os.cpu_count()
    torch.set_num_threads(threads)
    if FLAGS.family == "whisper":
        return _whisper_main(threads)
    config = transformers.HubertConfig()  # base: 768 hidden, 12 layers, 3072 FFN, group-norm front end
    torch.manual_seed(0)
    hf = transformers.HubertModel(config).eval()
    n = int(FLAGS.seconds * 16000)
    audio = np.random.default_rng(0).standard_normal((FLAGS.batch, n)).astype(np.float32) * 0.1
    lengths = np.full((FLAGS.batch,), n, np.int32)

    graphdef, state = nnx.split(_converted(hf))

    @jax.jit
    def jax_forward(state, audio, lengths):
        out, _, _ = forward_with_captures(nnx.merge(graphdef, state), audio, lengths, capture_ffn=False)
        return out.last_hidden_state

    @jax.jit
    def jax_front_end(state, audio):
        return nnx.merge(graphdef, state).feature_extractor(audio)

    audio_j, lengths_j = jnp.asarray(audio), jnp.asarray(lengths)

    def flops(fn, *args) -> float:
        cost = fn.lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return float(cost.get("flops", float("nan")))

    total_flops = flops(jax_forward, state, audio_j, lengths_j)
    front_flops = flops(jax_front_end, state, audio_j)
    audio_t = torch.from_numpy(audio)

    def run_jax():
        return jax_forward(state, audio_j, lengths_j).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            return hf(audio_t).last_hidden_state

    diff = float(np.abs(np.asarray(run_jax()) - run_torch().numpy()).max())
    t_jax = _time(run_jax, FLAGS.repeats)
    t_torch = _time(run_torch, FLAGS.repeats)
    t_front = _time(lambda: jax_front_end(state, audio_j).block_until_ready(), FLAGS.repeats)
    med_jax, med_torch = statistics.median(t_jax), statistics.median(t_torch)
    med_front = statistics.median(t_front)
    load = os.getloadavg()[0]
    gflop_total, gflop_front = total_flops / 1e9, front_flops / 1e9
    share_flops, share_time = 100 * front_flops / total_flops, 100 * med_front / med_jax
    audio_s = FLAGS.batch * FLAGS.seconds
    lines = [
        "# Forward pass: jaxneurons (JAX) vs transformers (PyTorch)",
        "",
        f"Command: `python benchmarks/bench_forward.py{' --out ' + FLAGS.out if FLAGS.out else ''}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; "
        f"Python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()}), "
        f"torch {torch.__version__} ({threads} threads), transformers {transformers.__version__}.",
        "",
        f"Model: base-size HuBERT (hidden 768, 12 layers, FFN 3072, random weights). "
        f"Batch: {FLAGS.batch} x {FLAGS.seconds:g} s at 16 kHz. Median of {FLAGS.repeats} runs after a warm-up.",
        "",
        "| implementation | median s / batch | all runs (s) | x real time |",
        "|---|---|---|---|",
        f"| JAX (jit) | {med_jax:.2f} | {', '.join(f'{t:.2f}' for t in t_jax)} | {audio_s / med_jax:.1f} |",
        f"| PyTorch (inference_mode) | {med_torch:.2f} | {', '.join(f'{t:.2f}' for t in t_torch)} "
        f"| {audio_s / med_torch:.1f} |",
        "",
        f"Speed ratio PyTorch time / JAX time: **{med_torch / med_jax:.2f}** (> 1 means JAX is faster).",
        f"Max abs difference of the last hidden state: {diff:.2e}.",
        "",
        "What limits it (XLA's own FLOP count of the compiled programs, same run):",
        f"- whole forward: {gflop_total:.0f} GFLOP per batch, {gflop_total / med_jax:.0f} GFLOP/s achieved;",
        f"- conv front end alone: {gflop_front:.0f} GFLOP ({share_flops:.0f} % of the FLOPs) in {med_front:.2f} s "
        f"({share_time:.0f} % of the time, {gflop_front / med_front:.0f} GFLOP/s).",
        f"Load average when the run ended: {load:.1f} (2 cores; other jobs inflate every time above equally).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if FLAGS.out:
        from jaxneurons.results import write_text

        write_text(FLAGS.out, text)


WHISPER_BEGIN, WHISPER_END = "<!-- whisper -->", "<!-- /whisper -->"


def _whisper_main(threads: int) -> None:
    import jax
    import jax.numpy as jnp
    import torch
    import transformers
    from flax import nnx

    # whisper-base's encoder; a 1-layer decoder keeps the checkpoint small (the converter drops it anyway).
    config = transformers.WhisperConfig(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                                        num_mel_bins=80, decoder_layers=1, decoder_attention_heads=8,
                                        decoder_ffn_dim=64)
    torch.manual_seed(0)
    hf = transformers.WhisperModel(config).eval()
    hf.config._attn_implementation = "eager"
    encoder = hf.encoder
    n = int(FLAGS.seconds * 16000)
    audio = np.random.default_rng(0).standard_normal((FLAGS.batch, n)).astype(np.float32) * 0.1
    lengths = np.full((FLAGS.batch,), n, np.int32)
    extractor = transformers.WhisperFeatureExtractor()
    graphdef, state = nnx.split(_converted(hf))

    @jax.jit
    def jax_encoder(state, features):
        return nnx.merge(graphdef, state).encode_features(features).last_hidden_state

    @jax.jit
    def jax_front_end(state, audio, lengths):
        return nnx.merge(graphdef, state).features(audio, lengths)

    audio_j, lengths_j = jnp.asarray(audio), jnp.asarray(lengths)
    hf_features = extractor(list(audio), sampling_rate=16000, return_tensors="np").input_features
    features_j, features_t = jnp.asarray(hf_features.transpose(0, 2, 1)), torch.from_numpy(hf_features)

    def run_jax():
        return jax_encoder(state, features_j).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            return encoder(features_t).last_hidden_state

    def run_jax_front():
        return jax_front_end(state, audio_j, lengths_j).block_until_ready()

    def run_hf_front():
        return extractor(list(audio), sampling_rate=16000, return_tensors="np").input_features

    reference = run_torch().numpy()
    diff = float(np.abs(np.asarray(run_jax()) - reference).max() / np.abs(reference).max())
    mel_diff = float(np.abs(np.asarray(run_jax_front()) - hf_features.transpose(0, 2, 1)).max())
    runs = {name: _time(fn, FLAGS.repeats) for name, fn in (
        ("jax", run_jax), ("torch", run_torch), ("jax_front", run_jax_front), ("hf_front", run_hf_front))}
    med = {name: statistics.median(t) for name, t in runs.items()}
    audio_s = FLAGS.batch * FLAGS.seconds
    load = os.getloadavg()[0]
    out = f" --out {FLAGS.out}" if FLAGS.out else ""

    def row(label: str, name: str) -> str:
        times = ", ".join(f"{t:.2f}" for t in runs[name])
        return f"| {label} | {med[name]:.2f} | {times} | {audio_s / med[name]:.1f} |"

    lines = [
        WHISPER_BEGIN,
        "## Whisper encoder: jaxneurons (JAX) vs transformers `WhisperEncoder` (PyTorch)",
        "",
        f"Command: `python benchmarks/bench_forward.py --family=whisper --batch={FLAGS.batch} "
        f"--seconds={FLAGS.seconds:g} --repeats={FLAGS.repeats}{out}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, shared with other "
        f"jobs (load average {load:.1f} when the run ended: every time below is inflated, both sides alike); "
        f"Python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()}), "
        f"torch {torch.__version__} ({threads} threads), transformers {transformers.__version__}.",
        "",
        "Model: base-size Whisper encoder (d_model 512, 6 layers, 8 heads, FFN 2048, 80 mel bins, random weights). "
        f"Batch: {FLAGS.batch} x {FLAGS.seconds:g} s at 16 kHz, each padded to the 30-s window (3000 mel frames, "
        f"1500 encoder frames) as Whisper requires. Median of {FLAGS.repeats} runs after a warm-up. x real time "
        "counts the audio (not the padding).",
        "",
        "| implementation | median s / batch | all runs (s) | x real time |",
        "|---|---|---|---|",
        row("JAX encoder (jit), log-mel in", "jax"),
        row("PyTorch `WhisperEncoder` (inference_mode, eager attention), log-mel in", "torch"),
        row("JAX log-mel front end (jit)", "jax_front"),
        row("HF `WhisperFeatureExtractor` (torch STFT)", "hf_front"),
        "",
        f"Encoder speed ratio PyTorch time / JAX time: **{med['torch'] / med['jax']:.2f}** (> 1 means JAX is "
        f"faster). Max |JAX - PyTorch| of the last hidden state / its max: {diff:.1e}; of the log-mel input: "
        f"{mel_diff:.1e}.",
        WHISPER_END,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if FLAGS.out:
        _replace_block(FLAGS.out, WHISPER_BEGIN, WHISPER_END, text)


def _replace_block(path: str, begin: str, end: str, block: str) -> None:
    """Write ``block`` (which starts with ``begin`` and ends with ``end``) over the same block of ``path``, keeping
    everything around it; append it when the file has none."""
    from jaxneurons.results import write_text

    previous = pathlib.Path(path).read_text() if os.path.exists(path) else ""
    if begin in previous and end in previous:
        head, rest = previous.split(begin, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        block = head + block + ("\n" + after if after else "")
    elif previous:
        block = previous.rstrip("\n") + "\n\n" + block
    write_text(path, block)


def _reference_model(family: str, tmp: str):
    """A random-weight model in the authors' checkpoint format, written to ``tmp``: (checkpoint path, mean-std path or
    None, description, features -> last hidden state with the PyTorch re-statement in tests/s3prl_reference.py)."""
    import torch

    from checkpoints_convert.s3prl_checkpoints import melhubert_checkpoint, melhubert_config, tera_checkpoint
    from jaxneurons.models import SpeechConfig, build_model
    from tests.s3prl_reference import melhubert_encoder, tera_encoder, tera_weights

    path = os.path.join(tmp, "model.ckpt")
    if family == "melhubert":
        upstream = {"feat_emb_dim": 80, "encoder_layers": 12, "encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072,
                    "encoder_attention_heads": 12, "conv_pos": 128, "conv_pos_groups": 16, "num_cluster": 512}
        mean_std = np.stack([np.full(40, 12.0), np.full(40, 3.0)]).astype(np.float32)
        mean_std_path = os.path.join(tmp, "mean-std.npy")
        np.save(mean_std_path, mean_std)
        model = build_model(melhubert_config(upstream, (tuple(mean_std[0]), tuple(mean_std[1])), "bench"), seed=0)
        checkpoint = melhubert_checkpoint(model)
        torch.save(checkpoint, path)
        weights = {k: v.float() for k, v in checkpoint["model"].items()}
        cfg = checkpoint["Upstream_Config"]["melhubert"]

        def run(feats):
            return melhubert_encoder(weights, cfg, feats)[0][-1]

        return path, mean_std_path, "MelHuBERT base, 20 ms (hidden 768, 12 layers, FFN 3072, conv_pos 128/16)", run
    config = SpeechConfig(family="tera", hidden_size=768, num_hidden_layers=3, num_attention_heads=12,
                          intermediate_size=3072, layer_norm_eps=1e-12, num_mel_bins=80, has_masked_spec_embed=False)
    checkpoint = tera_checkpoint(build_model(config, seed=0))
    torch.save(checkpoint, path)
    weights, transformer = tera_weights(checkpoint["Transformer"]), checkpoint["Upstream_Config"]["transformer"]

    def run(feats):
        return tera_encoder(weights, transformer, feats)[0][-1]

    return path, None, "TERA base (hidden 768, 3 layers, FFN 3072, 80 log-mel, post-LN)", run


def bench_s3prl_family(family: str) -> None:
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx

    from checkpoints_convert.convert import convert
    from jaxneurons.models import forward_with_captures
    from jaxneurons.models.checkpoint import load_model

    threads = FLAGS.torch_threads or os.cpu_count()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    n = int(FLAGS.seconds * 16000)
    audio = np.random.default_rng(0).standard_normal((FLAGS.batch, n)).astype(np.float32) * 0.1
    lengths = np.full((FLAGS.batch,), n, np.int32)
    with tempfile.TemporaryDirectory() as tmp:
        path, mean_std, description, run_reference = _reference_model(family, tmp)
        convert(path, os.path.join(tmp, "jax"), mean_std)
        model = load_model(os.path.join(tmp, "jax"))
    graphdef, state = nnx.split(model)

    @jax.jit
    def jax_forward(state, audio, lengths):
        out, _, _ = forward_with_captures(nnx.merge(graphdef, state), audio, lengths, capture_ffn=False)
        return out.last_hidden_state, out.extract_features, out.frame_mask

    audio_j, lengths_j = jnp.asarray(audio), jnp.asarray(lengths)
    _, feats, mask = jax_forward(state, audio_j, lengths_j)
    if not bool(np.asarray(mask).all()):  # the reference encoder takes unpadded batches only
        sys.exit("error: equal-length utterances must give a batch without padded frames")

    @jax.jit
    def jax_from_features(state, feats, mask):  # the same encoder, without the front end
        m = nnx.merge(graphdef, state)
        if family == "melhubert":
            hidden, _ = m.feature_projection(feats)
            return m.encoder(hidden, mask)[0]
        from jaxneurons.models.tera import sinusoid_table

        hidden = m.input_representations(feats, jnp.asarray(sinusoid_table(feats.shape[1], 768))[None])
        return m.encoder(hidden, mask, None)[0]

    feats_t = torch.from_numpy(np.array(feats))

    def run_torch():
        with torch.inference_mode():
            return run_reference(feats_t)

    diff = float(np.abs(np.asarray(jax_from_features(state, feats, mask)) - run_torch().numpy()).max())
    t_jax = _time(lambda: jax_forward(state, audio_j, lengths_j)[0].block_until_ready(), FLAGS.repeats)
    t_jax_feats = _time(lambda: jax_from_features(state, feats, mask).block_until_ready(), FLAGS.repeats)
    t_torch = _time(run_torch, FLAGS.repeats)
    med = {k: statistics.median(v) for k, v in (("jax", t_jax), ("feats", t_jax_feats), ("torch", t_torch))}
    audio_s = FLAGS.batch * FLAGS.seconds
    name = "MelHuBERT" if family == "melhubert" else "TERA"
    begin, end = f"<!-- {family} -->", f"<!-- /{family} -->"
    lines = [
        begin,
        f"## {name}: jaxneurons (JAX) vs a PyTorch re-statement of the authors' model", "",
        f"Command: `PYTHONPATH=$PWD python benchmarks/bench_forward.py --family {family} --batch {FLAGS.batch} "
        f"--seconds {FLAGS.seconds:g} --repeats {FLAGS.repeats}{' --out ' + FLAGS.out if FLAGS.out else ''}`", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, shared with other "
        f"jobs (load average {os.getloadavg()[0]:.1f} when the run ended: every time below is inflated, both sides "
        f"alike); Python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()}), "
        f"torch {torch.__version__} ({threads} threads).", "",
        f"Model: {description}, random weights, written in the authors' checkpoint format "
        "(`checkpoints_convert/s3prl_checkpoints.py`) and converted with `checkpoints_convert.convert.convert`. "
        "PyTorch side: the project's own re-statement of the authors' forward pass (`tests/s3prl_reference.py`, the "
        "reference of the conversion tests), batched, from the input features. Batch: "
        f"{FLAGS.batch} x {FLAGS.seconds:g} s. Median of {FLAGS.repeats} runs after a warm-up.", "",
        "| implementation | median s / batch | all runs (s) | x real time |",
        "|---|---|---|---|",
        *(f"| {label} | {med[k]:.2f} | {', '.join(f'{x:.2f}' for x in ts)} | {audio_s / med[k]:.1f} |"
          for label, k, ts in (("JAX (jit), waveform in (front end included)", "jax", t_jax),
                               ("JAX (jit), features in", "feats", t_jax_feats),
                               ("PyTorch re-statement, features in (inference_mode)", "torch", t_torch))),
        "",
        f"Speed ratio PyTorch time / JAX time, features in: **{med['torch'] / med['feats']:.2f}** (> 1 means JAX is "
        f"faster). Max abs difference of the last hidden state: {diff:.2e}.",
        end,
    ]
    section = "\n".join(lines) + "\n"
    print(section)
    if FLAGS.out:
        _replace_block(FLAGS.out, begin, end, section)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
