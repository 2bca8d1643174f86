"""The one helpers module of the test suite: tiny configs, the tiny corpus, child processes, shared references.

Test modules import from here (or use the fixtures of ``tests/conftest.py``), never from another ``test_*.py``.
Sections: tiny model configs; the tiny synthetic corpus and a learnable tone corpus; running child processes
(every subprocess of the suite); the statistics kernel's NumPy reference; tiny random HF PyTorch models for the
parity tests; a scan results directory with an explorer. ``tests/s3prl_reference.py`` stays a module of its
own: it is the PyTorch re-statement of s3prl's models that the conversion tests compare against, not a helper.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html.parser
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from jaxneurons.models import SpeechConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the tree under test

# ------------------------------------------------------------------------------------------- tiny model configs

# The tiny MelHuBERT every pipeline, study and training test builds (random init: a forward takes milliseconds).
TINY_MELHUBERT = SpeechConfig(family="melhubert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, num_mel_bins=16, num_conv_pos_embeddings=5,
                              num_conv_pos_embedding_groups=2)


def tiny_melhubert(**changes) -> SpeechConfig:
    """``TINY_MELHUBERT`` with the fields a test needs changed (e.g. ``num_clusters`` for training)."""
    return dataclasses.replace(TINY_MELHUBERT, **changes)


# Smaller still, for tests that run several child processes of it (SIGKILL resumes, multi-model fingerprints).
MICRO_MELHUBERT = tiny_melhubert(hidden_size=16, intermediate_size=24, num_mel_bins=8)
# Training, pruning and resume tests: 4 clusters, the classes of ``tone_corpus``.
TINY_MEL = tiny_melhubert(num_clusters=4)

# ------------------------------------------------------------------------------------------------- tiny corpora

# The one tiny synthetic corpus (session fixtures ``tiny_manifest`` / ``tiny_corpus`` of conftest.py): 4 speakers
# (2 per gender, enough for the probes' speaker-disjoint split), 9 utterances of <= 4.4 s, 18 s in all.
TINY_CORPUS = dict(num_speakers=4, minutes=0.3, languages=["en"], seed=5)
TINY_CORPUS_SPEAKERS = TINY_CORPUS["num_speakers"]


def make_tiny_corpus(out_dir: str) -> str:
    """Synthesise ``TINY_CORPUS`` into ``out_dir`` (reused when complete); returns its manifest path."""
    from jaxneurons.data import generate_corpus

    return generate_corpus(str(out_dir), progress=False, **TINY_CORPUS)


def tone_corpus(n_utts=12, seed=0):
    """Each 20 ms frame is a tone from one of 4 frequencies; the target is which one (learnable)."""
    from jaxneurons.train.pretrain import TrainData

    rng = np.random.default_rng(seed)
    freqs = np.array([300.0, 700.0, 1500.0, 3000.0])
    audio, targets = [], []
    for _ in range(n_utts):
        frames = int(rng.integers(60, 120))
        labels = np.repeat(rng.integers(0, 4, frames // 5 + 1), 5)[:frames]
        t = np.arange(frames * 320 + 240) / 16000
        f = np.repeat(freqs[labels], 320)
        f = np.concatenate([f, np.full(240, f[-1])])
        audio.append((0.3 * np.sin(2 * np.pi * np.cumsum(f) / 16000) + 0.01 * rng.standard_normal(len(t)))
                     .astype(np.float32))
        targets.append(labels.astype(np.int32))
    return TrainData(audio, targets, num_clusters=4)


# --------------------------------------------------------------------------------------------- child processes

CHILD_TIMEOUT = 600  # seconds: far above any child's run on a loaded 2-core machine, so a hang fails, not stalls
PASSED_THROUGH = ("JAXNEURONS_REQUIRE_NATIVE",)  # CI sets it; the native kernel must build in children too
_DEVICE_FLAG = "--xla_force_host_platform_device_count"


def child_env(devices: int = 1, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every child process: CPU JAX with ``devices`` host devices (1: as on a user's
    machine; the suite itself forces 8), this tree first on PYTHONPATH, and no inherited ``JAXNEURONS_*``
    setting except those in ``PASSED_THROUGH``; ``extra`` is applied last."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXNEURONS_") or k in PASSED_THROUGH}
    env["JAX_PLATFORMS"] = "cpu"
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_FLAG)]
    if devices > 1:
        flags.append(f"{_DEVICE_FLAG}={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != ROOT]
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *rest])
    env.update(extra or {})
    return env


def _tail(text: str | bytes | None, chars: int) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-chars:]


def failure_message(args: Sequence[str], what: str, stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    """``python ARGS <what>`` and the tails of its stderr and stdout, for an assertion message."""
    shown = " ".join(str(a) if len(str(a)) < 200 else str(a)[:200] + "..." for a in args)
    return (f"python {shown} {what}\n--- stderr (tail) ---\n{_tail(stderr, 6000)}"
            f"\n--- stdout (tail) ---\n{_tail(stdout, 2000)}")


def run_python(args: Sequence[str], *, returncodes: Sequence[int] | None = (0,), timeout: float = CHILD_TIMEOUT,
               devices: int = 1, env: Mapping[str, str] | None = None, cwd: str = ROOT,
               input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` (e.g. ``["-m", "jaxneurons.cli", "scan", ...]``) in ``child_env(devices, env)``, text
    output captured. Fails the test, with the child's stderr tail, on a timeout or a status outside
    ``returncodes`` (``None``: any status; the caller checks it)."""
    args = [str(a) for a in args]
    try:
        done = subprocess.run([sys.executable, *args], cwd=cwd, env=child_env(devices, env), capture_output=True,
                              text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(failure_message(args, f"ran past its {timeout:.0f} s timeout", e.stdout,
                                             e.stderr)) from None
    if returncodes is not None:
        assert done.returncode in returncodes, failure_message(args, f"exited with status {done.returncode}",
                                                               done.stdout, done.stderr)
    return done


def start_python(args: Sequence[str], *, devices: int = 1, env: Mapping[str, str] | None = None, cwd: str = ROOT,
                 **popen_kwargs) -> subprocess.Popen:
    """``python ARGS`` started in the same environment as ``run_python`` (for tests that signal or wait on it);
    the caller waits with a timeout and reports with ``failure_message``."""
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=cwd, env=child_env(devices, env),
                            **popen_kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(script: str, args_per_process: Sequence[Sequence[str]], timeout: float = CHILD_TIMEOUT) -> None:
    """Start ``python script ARGS`` once per entry (JAX worker processes on loopback, gloo CPU collectives), wait
    for all, assert every one exited 0. Each worker sets its own device count (``init_distributed``)."""
    procs = [start_python([script, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for args in args_per_process]
    logs = []
    try:
        for p in procs:
            try:
                logs.append(p.communicate(timeout=timeout)[0])
            except subprocess.TimeoutExpired as e:
                raise AssertionError(failure_message([script], f"ran past its {timeout:.0f} s timeout", e.stdout,
                                                     "")) from None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, args, log in zip(procs, args_per_process, logs, strict=True):
        assert p.returncode == 0, failure_message([script, *args], f"exited with status {p.returncode}", "", log)


# ------------------------------------------------------------------- statistics kernel: the NumPy reference

def ref_topk(a: np.ndarray, k: int) -> np.ndarray:
    """Top-k by value, ties -> lower index: a stable sort of -a."""
    return np.argsort(-a, axis=-1, kind="stable")[..., :k]


def ref_counts(hs, valid, labels, selections, config):
    """Per-frame loops: hs is a list of (B, T, D_l) arrays (one per layer)."""
    from jaxneurons.stats import topk_size

    L, D = config.num_layers, config.max_width
    out = {}
    for c in config.conditions:
        C = c.num_classes
        out[c.name] = dict(frames=np.zeros(C, np.int64), topk=np.zeros((L, C, D), np.int64),
                           positive=np.zeros((L, C, D), np.int64), vals=[[] for _ in range(C)])
    B, T = valid.shape
    for b in range(B):
        for t in range(T):
            if not valid[b, t]:
                continue
            for c in config.conditions:
                lab = labels[c.name]
                y = lab[b] if lab.ndim == 1 else lab[b, t]
                if y < 0 or (c.selection is not None and not selections[c.selection][b, t]):
                    continue
                o = out[c.name]
                o["frames"][y] += 1
                o["vals"][y].append((b, t))
                for l, h in enumerate(hs):
                    k = topk_size(h.shape[-1], config.rho)
                    o["topk"][l, y, ref_topk(np.abs(h[b, t]), k)] += 1
                    o["positive"][l, y, : h.shape[-1]] += h[b, t] > 0
    return out


def reference_over(batches, config):
    """``ref_counts`` summed over batches made by ``make_batches``."""
    tot = None
    for bt in batches:
        hs = [bt["h"][:, l] for l in range(config.num_layers)]
        r = ref_counts(hs, bt["valid"], bt["labels"], bt["selections"], config)
        if tot is None:
            tot = r
        else:
            for c in r:
                for key in ("frames", "topk", "positive"):
                    tot[c][key] += r[c][key]
    return tot


def fake_forward(params, batch):
    """The batch carries activations as (B, L, T, D) so that its leading axis is the batch axis."""
    import jax.numpy as jnp

    return jnp.moveaxis(batch["h"], 1, 0), batch["valid"]


def make_batches(rng, n, L, B, T, D, *, ties=True):
    """``n`` batches of random activations with the labels of ``STATS_CONFIG`` (many exact ties if ``ties``)."""
    out = []
    for _ in range(n):
        h = rng.standard_normal((B, L, T, D)).astype(np.float32)
        if ties:  # many exact ties in |h| and exact zeros (ReLU-like)
            h = (np.round(h * 2) / 2).astype(np.float32)
            h[:, :, :3] = np.maximum(h[:, :, :3], 0)
        lengths = rng.integers(T // 2, T + 1, B)
        lengths[0] = T
        out.append({
            "h": h,
            "valid": np.arange(T)[None, :] < lengths[:, None],
            "labels": {"phone": rng.integers(-1, 5, (B, T)).astype(np.int32),
                       "gender": rng.integers(-1, 2, (B,)).astype(np.int32),
                       "pitch": rng.integers(-1, 3, (B, T)).astype(np.int32)},
            "selections": {"mid": rng.random((B, T)) < 0.4},
        })
    return out


def _stats_config():
    from jaxneurons.stats import ConditionSpec, uniform_config

    return uniform_config(3, 40, [
        ConditionSpec("phone", 5, stats=("topk", "positive", "moments")),
        ConditionSpec("gender", 2, selection="mid", stats=("topk", "positive")),
        ConditionSpec("pitch", 3, selection="mid"),
    ], rho=0.1)


# The conditions ``make_batches`` labels: 3 layers of 40 neurons, top 10 %.
STATS_CONFIG = _stats_config()


# ---------------------------------------------------------- tiny random HF PyTorch models (parity tests)

HF_TINY_CONV = dict(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2))
HF_TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48, **HF_TINY_CONV)

# name -> (HF config class name, HF model class name, config kwargs)
PARITY_CASES = {
    "wav2vec2-group-base": ("Wav2Vec2Config", "Wav2Vec2Model", dict(
        HF_TINY, feat_extract_norm="group", conv_bias=False, num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2)),
    "wav2vec2-layer-stable": ("Wav2Vec2Config", "Wav2Vec2Model", dict(
        HF_TINY, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, num_conv_pos_embeddings=5,
        num_conv_pos_embedding_groups=4)),
    "hubert-group-noprojln": ("HubertConfig", "HubertModel", dict(
        HF_TINY, feat_extract_norm="group", feat_proj_layer_norm=False, num_conv_pos_embeddings=6,
        num_conv_pos_embedding_groups=2, conv_kernel=(11, 3, 2))),
    "hubert-layer-stable-bn": ("HubertConfig", "HubertModel", dict(
        HF_TINY, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, conv_pos_batch_norm=True,
        num_conv_pos_embeddings=3, num_conv_pos_embedding_groups=1)),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel", dict(
        HF_TINY, num_conv_pos_embeddings=3, conv_pos_kernel_size=5, num_conv_pos_embedding_groups=2, conv_bias=True)),
    "wavlm-group-base": ("WavLMConfig", "WavLMModel", dict(
        HF_TINY, feat_extract_norm="group", num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
        num_buckets=16, max_bucket_distance=40)),
    "wavlm-layer-stable": ("WavLMConfig", "WavLMModel", dict(
        HF_TINY, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, num_conv_pos_embeddings=5,
        num_conv_pos_embedding_groups=2, num_buckets=32, max_bucket_distance=100)),
}


def build_hf_model(case: str, seed: int = 0, model_class: str | None = None):
    import torch
    import transformers

    config_name, model_name, kwargs = PARITY_CASES[case]
    config = getattr(transformers, config_name)(**kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_class or model_name)(config)
    # Random init leaves LayerNorm/BatchNorm at identity; perturb them so the test sees every parameter.
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name or "batch_norm" in name or "gru_rel_pos_const" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(1.0 + 0.2 * torch.rand(b.shape, generator=gen))
    model.config._attn_implementation = "eager"
    return model.eval()


def padded_batch(lengths: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    audio = np.zeros((len(lengths), max(lengths)), np.float32)
    for i, n in enumerate(lengths):
        audio[i, :n] = rng.standard_normal(n).astype(np.float32) * 0.3
    return audio, np.asarray(lengths, np.int32)


@contextlib.contextmanager
def recorded_layers(layers, ffn_module, ffn_is_input: bool = False):
    """Within the block, a PyTorch forward records ``layer_io`` (layer 0's input, then every layer's output) and
    ``ffn`` (each layer's FFN h: the output of ``ffn_module(layer)``, or its input if ``ffn_is_input``), as NumPy.
    """
    layer_io: list = [None] * (len(layers) + 1)
    ffn: list = [None] * len(layers)
    handles = []
    for i, layer in enumerate(layers):
        def layer_hook(mod, args, kwargs, out, i=i):
            if i == 0:
                layer_io[0] = (args[0] if args else kwargs["hidden_states"]).detach().numpy().copy()
            layer_io[i + 1] = (out[0] if isinstance(out, tuple) else out).detach().numpy().copy()

        def ffn_hook(mod, args, out=None, i=i):
            ffn[i] = (args[0] if ffn_is_input else out).detach().numpy().copy()

        handles.append(layer.register_forward_hook(layer_hook, with_kwargs=True))
        module = ffn_module(layer)
        handles.append(module.register_forward_pre_hook(ffn_hook) if ffn_is_input
                       else module.register_forward_hook(ffn_hook))
    try:
        yield layer_io, ffn
    finally:
        for h in handles:
            h.remove()


def hf_forward_with_hooks(model, audio: np.ndarray, lengths: np.ndarray):
    """HF forward; returns (last hidden, per-layer inputs + outputs, per-layer FFN h) as NumPy arrays."""
    import torch

    base = getattr(model, model.base_model_prefix, model)
    attention_mask = (np.arange(audio.shape[1])[None] < lengths[:, None]).astype(np.int64)
    with recorded_layers(base.encoder.layers, lambda layer: layer.feed_forward.intermediate_dropout) as (
            layer_io, ffn), torch.no_grad():
        out = model(torch.from_numpy(audio), attention_mask=torch.from_numpy(attention_mask))
    last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return last.detach().numpy(), layer_io, ffn


# ------------------------------------------------------------------ a scan results directory with an explorer

EXPLORER_EXAMPLES = 6  # top examples the explorer's scan keeps per neuron


def build_results(root: str, manifest: str | None = None) -> dict:
    """The tiny corpus (``manifest``, or made under ``root``) + a tiny model + one scan pass keeping top examples
    -> ``root/results`` with its explorer (the explorer's structural and browser tests)."""
    from flax import nnx

    from jaxneurons.data import BatchLoader, read_manifest
    from jaxneurons.models import build_model
    from jaxneurons.models.checkpoint import save_model
    from jaxneurons.pipeline.scan import ScanOptions, batch_labels, make_forward, plan_scan, score
    from jaxneurons.pipeline.scan_report import write_scan_results
    from jaxneurons.results import ResultsDir
    from jaxneurons.stats import run_scan

    config = tiny_melhubert(intermediate_size=100)
    manifest = manifest or make_tiny_corpus(os.path.join(root, "corpus"))
    utts = read_manifest(manifest)
    model = build_model(config, seed=0)
    model_dir = save_model(model, os.path.join(root, "model"))
    options = ScanOptions(properties=("phone_type", "gender", "aape_gender"), batch_size=3)
    plan = plan_scan(model, utts, options)
    plan.stats_config = dataclasses.replace(plan.stats_config, examples=EXPLORER_EXAMPLES)
    loader = BatchLoader(utts, options.batch_size, lambda n: int(model.num_frames(n)), pad_multiple=16000)

    def batches(start):
        for batch in loader.iterate(0, start):
            labels, selections = batch_labels(plan, batch.utt_indices, int(model.num_frames(batch.audio.shape[1])))
            yield {"audio": batch.audio, "audio_lengths": batch.audio_lengths, "labels": labels,
                   "selections": selections, "utt_index": batch.utt_indices}

    graphdef, state = nnx.split(model)
    stats, _ = run_scan(make_forward(graphdef, plan), state, batches, plan.stats_config)
    scored = score(stats, plan)
    # What a random model finds depends on the corpus: set the sets by hand (the explorer renders any set), a
    # few neurons in two of them, every other set and every AAPE group empty (the overview must say so instead
    # of drawing an empty heatmap).
    empty = np.zeros((config.num_hidden_layers, config.intermediate_size), bool)
    for prop in ("phone_type", "gender", "aape_gender"):
        scored[prop]["groups"] = {g: empty.copy() for g in scored[prop]["groups"]}
    scored["phone_type"]["groups"]["vowel"][0, [3, 17]] = True
    scored["phone_type"]["groups"]["vowel"][1, 40] = True
    scored["gender"]["groups"]["male"][1, [40, 41]] = True
    out = os.path.join(root, "results")
    with ResultsDir(out, "scan", flags={"model": model_dir, "manifest": manifest}) as res:
        res.run["data_issues"] = {"counts": {"unreadable": 1}, "examples": {"unreadable": ["x.wav"]}}
        _, report = write_scan_results(res, plan, stats, scored)
        report.write(res.tmp)
    return {"out": out, "stats": stats, "plan": plan, "utts": utts, "model": model}


# ------------------------------------------------------------------ explorer HTML: references, heads results

class HtmlRefs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.ids, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if "id" in a:
            self.ids.append(a["id"])
        for key in ("href", "src"):
            if a.get(key) is not None:
                self.refs.append((tag, key, a[key]))


def parse(path):
    """The references (href/src), ids and tags of the HTML file at ``path``."""
    p = HtmlRefs()
    p.feed(read(path))
    return p


def read(path):
    with open(path) as f:
        return f.read()


def build_heads_results(root: str) -> dict:
    """A heads results directory (tiny random model, small synthetic corpus, no ablation) under ``root``."""
    from jaxneurons.data import generate_corpus, read_manifest
    from jaxneurons.models import build_model
    from jaxneurons.pipeline.heads import HeadsConfig, run_heads, write_heads_results
    from jaxneurons.results import ResultsDir

    corpus = read_manifest(generate_corpus(os.path.join(root, "corpus"), num_speakers=2, minutes=0.15,
                                           languages=["en"], seed=3, progress=False))
    options = HeadsConfig(batch_size=3, ablation=False, top_utterances=3)
    analysis = run_heads(build_model(TINY_MELHUBERT, seed=0), corpus, options, show_progress=False)
    out = os.path.join(root, "results")
    with ResultsDir(out, "heads", flags={}) as res:
        write_heads_results(res, analysis)
    return {"out": out, "analysis": analysis, "corpus": corpus}


# ------------------------------------------------------------------ max-activating examples: tied activations

EXAMPLE_WIDTHS = (12, 20, 7)


def example_batches(seed: int, n: int, *, B: int = 8, T: int = 5, widths=EXAMPLE_WIDTHS, num_utts: int = 64):
    """Batches of per-layer activations with many exact ties (values on a 0.5 grid, zeros, -0.0), rows in
    shuffled utterance order, padding rows (-1) and padded frames."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_utts)
    out = []
    for i in range(n):
        utt = order[i * B:(i + 1) * B].astype(np.int32)
        utt[rng.random(B) < 0.2] = -1  # padding rows
        hs = []
        for w in widths:
            h = (np.round(rng.standard_normal((B, T, w)) * 2) / 2).astype(np.float32)
            h[h == 0] = np.where(rng.random(int((h == 0).sum())) < 0.5, -0.0, 0.0)
            hs.append(h)
        lengths = rng.integers(1, T + 1, B)
        out.append({"h": tuple(hs), "valid": np.arange(T)[None, :] < lengths[:, None], "utt_index": utt,
                    "labels": {"phone": rng.integers(-1, 3, (B, T)).astype(np.int32)}})
    return out


def example_forward(params, batch):
    """The scan's forward for precomputed activations: the batch carries them."""
    return batch["h"], batch["valid"]


def example_config(n: int, widths=EXAMPLE_WIDTHS):
    """Statistics with ``n`` top examples per neuron and one 3-class condition."""
    from jaxneurons.stats import ConditionSpec, StatsConfig

    return StatsConfig(widths=widths, conditions=(ConditionSpec("phone", 3),), rho=0.2, examples=n)
