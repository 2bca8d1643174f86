"""A scan's results directory as a neuron explorer: static HTML pages that open in any browser.

``write_explorer(results_dir, stats=..., plan=...)`` writes ``results_dir/explorer/``:

- ``index.html`` (overview): model, data, data issues, neurons per layer and group of every property as
  heatmaps (a sentence instead of an empty plot), and per property group the share of its neurons' top
  examples that fall in the group's own frames (e.g. vowel neurons' top frames that are vowel frames),
  with chance (the share of all scanned frames in the group) beside it;
- ``neurons.html`` (neuron index): every neuron of any found set, filterable by layer / property / group
  and searchable by ``layer.index`` (layer 0 = first Transformer layer, as in ``neurons.json``);
- ``neurons/L.D.html`` (neuron page): the sets it belongs to, its P(active | class) profile over every
  condition the scan counted (phones, genders, pitch bins, speaker cells, utterance labels), and its
  top-N max-activating frames (``StatsConfig.examples``) with, for up to ``max_audio_neurons`` neurons and
  ``max_media_mb`` of media, a playable WAV snippet around the frame cut from the source audio at the
  scan's sample rate, a small log-mel spectrogram, the neuron's activation trace over it and the frame
  labels (phones) underneath.

Everything is generated here, so viewing needs no Python, no network and no CDN (plain HTML, one CSS and
one small script for the index filters). Traces are recomputed by one forward pass of the model over the
utterances that hold shown examples (the model and manifest are read from ``run["flags"]``, as the scan
command and the demo record them); without them the pages say so and show the examples as a table.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import wave
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxneurons.results import write_text

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # the scan decodes every file at 16 kHz (jaxneurons.pipeline.scan)
EXPLORER_DIR = "explorer"


@dataclasses.dataclass(frozen=True)
class ExplorerConfig:
    """How much the explorer renders (the media are the only part whose size grows with the settings).

    Attributes:
      snippet_seconds: audio around each top frame (centred on it; zero-padded at utterance edges).
      max_audio_neurons: neurons whose top examples get audio, spectrograms and traces (chosen round-robin
        over the sets, strongest-scored first); the others get a page with the examples as a table.
      max_media_mb: hard cap on the snippets + spectrograms written (about 19 KB per example).
      max_neuron_pages: neurons that get a page (same order; about 16 KB each with six profiles); the index
        still lists every set neuron.
      n_mels: mel bands of the spectrograms (25 ms Hann window, 10 ms hop).
    """

    snippet_seconds: float = 0.5
    max_audio_neurons: int = 120
    max_media_mb: float = 40.0
    max_neuron_pages: int = 2000
    n_mels: int = 40

    def __post_init__(self) -> None:
        if not 0.05 <= self.snippet_seconds <= 5:
            raise ValueError(f"snippet_seconds must be in [0.05, 5], got {self.snippet_seconds}")
        if self.max_audio_neurons < 0 or self.max_media_mb < 0 or self.max_neuron_pages < 0:
            raise ValueError("max_audio_neurons, max_media_mb and max_neuron_pages must be >= 0")


# ---------------------------------------------------------------- what the scan knows per frame


@dataclasses.dataclass
class _Corpus:
    """Per utterance: id, frame count, frame labels (phone names), and optionally audio / model access."""

    ids: list[str]
    num_frames: list[int]
    phone_names: list[str]
    utt_labels: list[Any]
    paths: list[str] | None = None
    frame_centres: Callable[[int], np.ndarray] | None = None
    trace_fn: Callable[[int, Sequence[tuple[int, int]]], dict] | None = None
    why_no_audio: str = ""

    def phone(self, u: int, f: int) -> str:
        if not 0 <= f < len(self.utt_labels[u].phone):
            return ""
        p = int(self.utt_labels[u].phone[f])
        return self.phone_names[p] if p >= 0 else "sil"


def _group_frame_masks(plan: Any, prop: str, group: str) -> list[np.ndarray] | None:
    """Per utterance (num_frames,) bool: the frames that belong to ``prop/group`` (None: not defined)."""
    from jaxneurons.pipeline.labels import pitch_bins

    labs = plan.utt_labels
    inv = plan.inventory
    states = getattr(plan, "states", {})
    if prop == "phone_type" and inv is not None:
        ids = np.zeros(inv.size + 1, bool)  # last entry: phone -1 (silence) -> False
        ids[inv.ids_of_type(group)] = True
        return [ids[lab.phone] for lab in labs]
    if prop == "gender":
        g = {"male": 0, "female": 1}.get(group)
        return None if g is None else [np.full(len(lab.phone), lab.gender == g) for lab in labs]
    if prop == "pitch" and inv is not None and plan.pitch_edges:
        k = ("low", "mid", "high").index(group) if group in ("low", "mid", "high") else None
        if k is None or any(lab.f0 is None for lab in labs):
            return None
        voiced = np.zeros(inv.size + 1, bool)
        voiced[inv.voiced_ids] = True
        return [(pitch_bins(lab.f0, plan.pitch_edges) == k) & voiced[lab.phone] for lab in labs]
    speaker_groups = states.get("speaker", {}).get("speaker_groups") if isinstance(states.get("speaker"), dict) \
        else None
    if prop == "speaker" and speaker_groups is not None and group.startswith("ivector_cluster"):
        g = int(group.removeprefix("ivector_cluster"))
        return [np.full(len(lab.phone), speaker_groups[i] == g) for i, lab in enumerate(labs)]
    state = states.get(prop)
    if prop.startswith("aape_") and isinstance(state, dict) and "vocab" in state and "classes" in state:
        vocab = state["vocab"]
        if group not in vocab.labels:
            return None
        c = vocab.id(group)
        return [np.full(len(lab.phone), state["classes"][i] == c) for i, lab in enumerate(labs)]
    return None


def example_group_shares(examples: Mapping[str, np.ndarray], sets: Mapping[str, Mapping[str, Mapping[str, list]]],
                         plan: Any) -> list[dict[str, Any]]:
    """Per property group: the share of its neurons' top examples whose frame is one of the group's frames,
    and chance (the share of all scanned frames that are), e.g. vowel neurons' top frames that are vowels.

    ``examples``: :meth:`NeuronStats.examples` arrays; ``sets``: the scan's ``neurons.json``.
    """
    out = []
    for prop, groups in sets.items():
        for group, layers in groups.items():
            n_neurons = sum(len(v) for v in layers.values())
            masks = _group_frame_masks(plan, prop, group) if n_neurons else None
            row = {"property": prop, "group": group, "neurons": n_neurons, "examples": 0, "share": None,
                   "chance": None}
            if masks is not None:
                hits = total = 0
                for key, idx in layers.items():
                    layer = int(key.split(".")[1])
                    utt = examples["utt"][layer, idx].ravel()
                    frame = examples["frame"][layer, idx].ravel()
                    keep = utt >= 0
                    for u, f in zip(utt[keep], frame[keep], strict=True):
                        hits += bool(masks[u][f]) if f < len(masks[u]) else 0
                        total += 1
                all_frames = sum(len(m) for m in masks)
                row.update(examples=total, share=hits / total if total else None,
                           chance=float(sum(int(m.sum()) for m in masks) / max(all_frames, 1)))
            out.append(row)
    return out


# ---------------------------------------------------------------- P(active | class) profiles


def class_profiles(stats: Any, plan: Any) -> list[dict[str, Any]]:
    """Every condition of the scan as a per-class profile source.

    Returns dicts ``{"name", "title", "labels", "counts" (L, C', D), "frames" (C',), "chance"}`` where
    composite cells are marginalised (gender x phone -> gender, pitch bin x phone -> pitch bin).
    """
    arr = stats.to_numpy()
    config = stats.config
    inv = plan.inventory
    out = []
    for c in config.conditions:
        if "topk" in c.stats:
            kind, chance = "topk", config.rho
            what = f"P(|h| in the layer's top {config.rho:.0%} | class)"
        elif "positive" in c.stats:
            kind, chance, what = "positive", None, "P(h > 0 | class)"
        else:
            continue
        counts = arr[f"{c.name}/{kind}"].astype(np.float64)
        frames = arr[f"{c.name}/frames"].astype(np.float64)
        labels = [str(i) for i in range(c.num_classes)]
        title = c.name
        if c.name == "phone" and inv is not None:
            labels, title = list(inv.vocab.labels), "phone"
        elif c.name in ("gender_phone", "pitch_phone") and inv is not None:
            names = ["male", "female"] if c.name == "gender_phone" else ["low", "mid", "high"]
            g = len(names)
            counts = counts.reshape(counts.shape[0], g, inv.size, -1).sum(2)
            frames = frames.reshape(g, inv.size).sum(1)
            labels, title = names, "gender" if c.name == "gender_phone" else "pitch bin"
        elif c.name == "speaker_cell":
            nssl = plan.options.speaker.num_ssl_clusters
            labels = [f"iv{k // nssl}/ssl{k % nssl}" for k in range(c.num_classes)]
            title = "speaker cell (i-vector group / SSL cluster)"
        elif isinstance(plan.states.get(c.name), dict) and "vocab" in plan.states[c.name]:
            labels, title = list(plan.states[c.name]["vocab"].labels), c.name.replace("_", " ", 1)
        sel = f", {c.selection} frames" if c.selection else ", every frame"
        out.append({"name": c.name, "title": f"{title}: {what}{sel}", "labels": labels, "counts": counts,
                    "frames": frames, "chance": chance})
    return out


# ---------------------------------------------------------------- media


def write_wav(path: str, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """16-bit PCM mono WAV."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def log_mel(samples: np.ndarray, n_mels: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_mels, frames) log mel energies (25 ms Hann window, 10 ms hop)."""
    from jaxneurons.features.fbank import mel_banks

    win, hop, n_fft = int(0.025 * sample_rate), int(0.010 * sample_rate), 512
    x = np.pad(samples.astype(np.float64), (win // 2, win // 2))
    n = 1 + max(0, (len(x) - win) // hop)
    frames = np.stack([x[i * hop:i * hop + win] for i in range(n)]) * np.hanning(win)
    power = np.abs(np.fft.rfft(frames, n_fft)) ** 2
    return np.log(power @ mel_banks(n_mels, n_fft, sample_rate).astype(np.float64) + 1e-10).T


def write_spectrogram_png(path: str, mel: np.ndarray) -> None:
    """The log-mel image (low frequencies at the bottom, 60 dB range), magma colours, 1 px per bin."""
    from matplotlib import colormaps
    from PIL import Image

    db = mel * (10 / np.log(10))
    db = np.clip((db - (db.max() - 60.0)) / 60.0, 0, 1)[::-1]
    rgb = (colormaps["magma"](db)[..., :3] * 255).astype(np.uint8)
    Image.fromarray(rgb).save(path, optimize=True)


def write_snippet(out: str, name: str, clip: np.ndarray, n_mels: int) -> int:
    """``out/media/name.wav`` and its log-mel ``out/media/name.png``; returns the bytes written."""
    wav, png = os.path.join(out, "media", f"{name}.wav"), os.path.join(out, "media", f"{name}.png")
    os.makedirs(os.path.dirname(wav), exist_ok=True)
    write_wav(wav, clip)
    write_spectrogram_png(png, log_mel(clip, n_mels))
    return os.path.getsize(wav) + os.path.getsize(png)


# ---------------------------------------------------------------- HTML pieces

CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#1f3b57;color:#fff;padding:.6em 1em}
header a{color:#fff;margin-right:1.2em}
main{padding:1em;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:right}
th{background:#f3f3f3}
td.l,th.l{text-align:left}
.note{color:#555;font-size:13px}
.ex{display:inline-block;vertical-align:top;margin:6px;padding:6px;border:1px solid #ddd;width:310px}
.ex img{width:300px;height:80px;image-rendering:pixelated;display:block}
.ex audio{width:300px}
.tag{display:inline-block;background:#e8eef5;border-radius:3px;padding:1px 5px;margin:1px;font-size:12px}
#filters input,#filters select{margin-right:1em}
"""

SCRIPT = """
// Neuron index filters: layer / property / group selects and a `layer.index` search box.
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll('#neurons tbody tr'));
  var layer = document.getElementById('f-layer'), prop = document.getElementById('f-prop');
  var group = document.getElementById('f-group'), query = document.getElementById('f-query');
  var shown = document.getElementById('shown');
  if (!layer) { return; }
  function apply() {
    var q = query.value.trim(), n = 0;
    rows.forEach(function (r) {
      var sets = r.getAttribute('data-sets').split(' ');
      var ok = (!layer.value || r.getAttribute('data-layer') === layer.value) &&
        (!prop.value || sets.some(function (s) { return s.split('/')[0] === prop.value; })) &&
        (!group.value || sets.indexOf(group.value) >= 0) &&
        (!q || r.getAttribute('data-id') === q || (q.slice(-1) === '.' && r.getAttribute('data-id').indexOf(q) === 0));
      r.style.display = ok ? '' : 'none';
      if (ok) { n += 1; }
    });
    shown.textContent = n;
  }
  [layer, prop, group].forEach(function (e) { e.addEventListener('change', apply); });
  query.addEventListener('input', apply);
  var start = new URLSearchParams(window.location.search);
  if (start.get('q')) { query.value = start.get('q'); }
  if (start.get('set')) { group.value = start.get('set'); }
  apply();
})();
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


NEURON_NAV = (("index.html", "Overview"), ("neurons.html", "Neuron index"))


def _page(title: str, body: str, depth: int = 0, nav: Sequence[tuple[str, str]] = NEURON_NAV) -> str:
    up = "../" * depth
    links = "".join(f"<a href=\"{up}{href}\">{_e(text)}</a>" for href, text in nav)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<link rel=\"stylesheet\" href=\"{up}style.css\"></head><body><header>"
            f"{links}<span>{_e(title)}</span></header><main>{body}</main></body></html>\n")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    head = "".join(f"<th class=\"l\">{_e(h)}</th>" if i < left else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f"<td class=\"l\">{c}</td>" if i < left else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _heatmap(per_layer: Mapping[str, Sequence[int]], num_layers: int) -> str:
    """Layers x groups counts as a coloured table (darker = more neurons)."""
    groups = list(per_layer)
    top = max((max(v) for v in per_layer.values() if len(v)), default=0) or 1
    rows = []
    for i in range(num_layers):
        cells = []
        for g in groups:
            v = per_layer[g][i]
            a = v / top
            colour = "#fff" if a > 0.55 else "#222"
            cells.append(f"<td style=\"background:rgba(31,90,160,{a:.2f});color:{colour}\">{v}</td>")
        rows.append(f"<tr><th>{i}</th>{''.join(cells)}</tr>")
    totals = "".join(f"<td><b>{sum(per_layer[g])}</b></td>" for g in groups)
    head = "".join(f"<th>{_e(g)}</th>" for g in groups)
    return (f"<table><thead><tr><th>layer</th>{head}</tr></thead><tbody>{''.join(rows)}"
            f"<tr><th>total</th>{totals}</tr></tbody></table>")


def _bar_svg(labels: Sequence[str], values: np.ndarray, chance: float | None) -> str:
    """Per-class bars (P(active | class)); classes without frames are grey dots at 0."""
    bw, h = 13, 90
    w = max(120, bw * len(labels) + 30)
    vmax = float(np.nanmax(values)) if np.isfinite(values).any() else 0.0
    vmax = max(vmax, chance or 0.0, 1e-9)
    parts = [f"<svg width=\"{w}\" height=\"{h + 46}\" role=\"img\">",
             f"<text x=\"0\" y=\"10\" font-size=\"10\">max {vmax:.3g}</text>"]
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        x = 26 + i * bw
        if np.isfinite(v):
            bh = h * v / vmax
            parts.append(f"<rect x=\"{x}\" y=\"{12 + h - bh:.1f}\" width=\"{bw - 2}\" height=\"{bh:.1f}\" "
                         f"fill=\"#1f5aa0\"><title>{_e(lab)}: {v:.4f}</title></rect>")
        else:
            parts.append(f"<circle cx=\"{x + 5}\" cy=\"{12 + h}\" r=\"2\" fill=\"#aaa\"><title>{_e(lab)}: no frames"
                         "</title></circle>")
        parts.append(f"<text x=\"{x + 8}\" y=\"{h + 16}\" font-size=\"9\" transform=\"rotate(90 {x + 8} {h + 16})\">"
                     f"{_e(lab)}</text>")
    if chance:
        y = 12 + h - h * chance / vmax
        parts.append(f"<line x1=\"24\" x2=\"{w}\" y1=\"{y:.1f}\" y2=\"{y:.1f}\" stroke=\"#c33\" "
                     "stroke-dasharray=\"3,2\"><title>chance k/D</title></line>")
    parts.append("</svg>")
    return "".join(parts)


def _trace_svg(times: np.ndarray, values: np.ndarray, phones: Sequence[str], top_time: float, span: float) -> str:
    """Activation trace over the snippet (x: seconds from the snippet start) with phone labels underneath."""
    w, h = 300, 50
    lo, hi = min(0.0, float(values.min())), float(values.max())
    scale = (hi - lo) or 1.0

    def x(t):
        return w * t / span

    pts = " ".join(f"{x(t):.1f},{4 + (h - 8) * (hi - v) / scale:.1f}" for t, v in zip(times, values, strict=True))
    zero = 4 + (h - 8) * hi / scale
    parts = [f"<svg width=\"{w}\" height=\"{h + 16}\" role=\"img\">",
             f"<line x1=\"0\" x2=\"{w}\" y1=\"{zero:.1f}\" y2=\"{zero:.1f}\" stroke=\"#bbb\"/>",
             f"<line x1=\"{x(top_time):.1f}\" x2=\"{x(top_time):.1f}\" y1=\"0\" y2=\"{h}\" stroke=\"#c33\"/>",
             f"<polyline points=\"{pts}\" fill=\"none\" stroke=\"#1f5aa0\" stroke-width=\"1.5\"/>"]
    # phone segments: runs of equal labels, boundaries halfway between frame times
    i = 0
    while i < len(phones):
        j = i
        while j + 1 < len(phones) and phones[j + 1] == phones[i]:
            j += 1
        a = x(times[i] - (times[1] - times[0]) / 2) if len(times) > 1 else 0
        b = x(times[j] + (times[1] - times[0]) / 2) if len(times) > 1 else w
        a, b = max(a, 0.0), min(b, float(w))
        parts.append(f"<line x1=\"{a:.1f}\" x2=\"{a:.1f}\" y1=\"{h}\" y2=\"{h + 14}\" stroke=\"#999\"/>")
        if phones[i] and b - a > 8:
            parts.append(f"<text x=\"{(a + b) / 2:.1f}\" y=\"{h + 12}\" font-size=\"10\" text-anchor=\"middle\">"
                         f"{_e(phones[i])}</text>")
        i = j + 1
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------- the writer


def _neuron_sets(sets_json: Mapping[str, Mapping[str, Mapping[str, list]]]) -> dict[tuple[int, int], list[str]]:
    out: dict[tuple[int, int], list[str]] = {}
    for prop, groups in sets_json.items():
        for group, layers in groups.items():
            for key, idx in layers.items():
                layer = int(key.split(".")[1])
                for d in idx:
                    out.setdefault((layer, int(d)), []).append(f"{prop}/{group}")
    return dict(sorted(out.items()))


def _media_order(sets_json: Mapping, scored: Mapping | None, top_value: np.ndarray) -> list[tuple[int, int]]:
    """Neurons in the order they get media: round-robin over the sets, each set strongest first (its score
    where the scorer has one, else the neuron's top activation)."""
    queues = []
    for prop, groups in sets_json.items():
        for group, layers in groups.items():
            members = [(int(k.split(".")[1]), int(d)) for k, idx in layers.items() for d in idx]
            score = None
            if scored and prop in scored and group in scored[prop].get("scores", {}):
                score = np.asarray(scored[prop]["scores"][group])
            key = (lambda n, s=score: -float(s[n])) if score is not None else (lambda n: -float(top_value[n]))
            queues.append(sorted(members, key=lambda n, k=key: (k(n), n)))
    order, seen = [], set()
    for i in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if i < len(q) and q[i] not in seen:
                seen.add(q[i])
                order.append(q[i])
    return order


def _corpus(plan: Any, run: Mapping[str, Any] | None, utterances: Sequence[Any] | None, model: Any) -> _Corpus:
    """What the pages can show about the scanned utterances; audio and traces when model + data are there."""
    from jaxneurons.data import read_manifest

    labs = plan.utt_labels
    names = list(plan.inventory.vocab.labels) if plan.inventory else []
    flags = dict((run or {}).get("flags", {}))
    corpus = _Corpus([str(i) for i in range(len(labs))], [len(lab.phone) for lab in labs], names, labs)
    try:
        if utterances is None:
            if not flags.get("manifest"):
                raise ValueError("the run records no manifest")
            utterances = read_manifest(flags["manifest"])[:len(labs)]
        corpus.ids = [u.utt_id for u in utterances]
        if len(utterances) != len(labs):
            raise ValueError(f"{len(utterances)} utterances, the scan labelled {len(labs)}")
        if model is None:
            if not flags.get("model"):
                raise ValueError("the run records no model")
            if flags.get("random_seed") is not None:
                from jaxneurons.pipeline.multiscan import ModelSpec

                model = ModelSpec("model", flags["model"], flags["random_seed"]).load()
            else:
                from jaxneurons.models.checkpoint import load_model

                model = load_model(flags["model"])
        for u, n in zip(utterances, corpus.num_frames, strict=True):
            if int(model.num_frames(u.num_samples)) != n:
                raise ValueError(f"utterance {u.utt_id}: the model gives {int(model.num_frames(u.num_samples))} "
                                 f"frames, the scan labelled {n} (manifest changed since the scan?)")
    except (OSError, ValueError, KeyError) as e:
        corpus.why_no_audio = f"No audio snippets or traces: {e}."
        return corpus
    corpus.paths = [u.path for u in utterances]
    from jaxneurons.data.frames import frame_centres
    from jaxneurons.pipeline.labels import frame_geometry

    geometry = frame_geometry(model.config)
    corpus.frame_centres = lambda n: frame_centres(geometry, n)
    corpus.trace_fn = _trace_function(model)
    return corpus


def _trace_function(model: Any) -> Callable[[np.ndarray, Sequence[tuple[int, int]]], dict]:
    """``fn(audio, [(layer, neuron), ...]) -> {(layer, neuron): (frames,) activations}``, one jitted forward
    per utterance (padded to whole seconds so that few shapes compile)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxneurons.models import forward_with_captures

    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, audio, lengths):
        m = nnx.merge(graphdef, state)
        _, ffn, _ = forward_with_captures(m, audio, lengths)
        return tuple(ffn)

    def fn(audio: np.ndarray, neurons: Sequence[tuple[int, int]]) -> dict:
        n = len(audio)
        padded = np.zeros(-(-n // SAMPLE_RATE) * SAMPLE_RATE, np.float32)
        padded[:n] = audio
        ffn = forward(state, jnp.asarray(padded[None]), jnp.asarray([n], jnp.int32))
        t = int(model.num_frames(n))
        return {(layer, d): np.asarray(ffn[layer][0, :t, d]) for layer, d in neurons}

    return fn


def write_explorer(
    results_dir: str,
    *,
    stats: Any,
    plan: Any,
    scored: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
    report: Any = None,
    utterances: Sequence[Any] | None = None,
    model: Any = None,
    config: ExplorerConfig = ExplorerConfig(),
) -> str:
    """Write ``results_dir/explorer/`` (see the module docstring); returns the path of its ``index.html``.

    ``results_dir`` must already hold the scan's ``neurons.json`` and ``summary.json``. ``stats``: the scan's
    :class:`~jaxneurons.stats.NeuronStats` (with ``config.examples > 0`` for top examples); ``plan``: its
    :class:`~jaxneurons.pipeline.scan.ScanPlan`; ``run``: the results directory's run record (model and
    manifest paths, data issues); ``report``: a :class:`~jaxneurons.report.Report` to add a link to.
    ``utterances`` / ``model`` default to the manifest and model named in ``run["flags"]``.
    """
    from jaxneurons.data import load_audio

    out = os.path.join(results_dir, EXPLORER_DIR)
    os.makedirs(os.path.join(out, "neurons"), exist_ok=True)
    os.makedirs(os.path.join(out, "media"), exist_ok=True)
    with open(os.path.join(results_dir, "neurons.json")) as f:
        sets_json = json.load(f)
    summary = {}
    if os.path.exists(os.path.join(results_dir, "summary.json")):
        with open(os.path.join(results_dir, "summary.json")) as f:
            summary = json.load(f)
    run = dict(run or {})
    cfg = stats.config
    num_layers = cfg.num_layers
    membership = _neuron_sets(sets_json)
    examples = stats.examples() if cfg.examples else None
    top_value = (np.nan_to_num(examples["value"][..., 0], nan=-np.inf) if examples is not None
                 else np.zeros((num_layers, cfg.max_width)))
    profiles = class_profiles(stats, plan)
    corpus = _corpus(plan, run, utterances, model) if examples is not None else None

    # ---- media: which neurons, which (utterance, frame) snippets, within the caps
    media_neurons: list[tuple[int, int]] = []
    snippets: dict[tuple[int, int], str] = {}
    traces: dict[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] = {}
    cap_bytes = int(config.max_media_mb * 2**20)
    used = 0
    half = int(round(config.snippet_seconds * SAMPLE_RATE / 2))
    capped = ""
    if corpus is not None and corpus.trace_fn is not None:
        per_example = 2 * (2 * half) + 44 + 3000  # WAV + a PNG (about 3 KB)
        for n in _media_order(sets_json, scored, top_value):
            need = {(int(u), int(f)) for u, f in zip(examples["utt"][n], examples["frame"][n], strict=True) if u >= 0}
            new = need - set(snippets)
            if len(media_neurons) >= config.max_audio_neurons:
                capped = f"the first {config.max_audio_neurons} neurons (max_audio_neurons)"
                break
            if used + per_example * len(new) > cap_bytes:
                capped = f"{config.max_media_mb:g} MB of media (max_media_mb)"
                break
            media_neurons.append(n)
            for key in new:
                snippets[key] = f"u{key[0]}_f{key[1]}"
            used += per_example * len(new)
        by_utt: dict[int, list[tuple[int, int]]] = {}
        for layer, d in media_neurons:
            for u in {int(u) for u in examples["utt"][layer, d] if u >= 0}:
                by_utt.setdefault(u, []).append((layer, d))
        written = 0
        for u, neurons in sorted(by_utt.items()):
            audio = load_audio(corpus.paths[u], SAMPLE_RATE)
            acts = corpus.trace_fn(audio, neurons)
            centres = corpus.frame_centres(corpus.num_frames[u])
            padded = np.pad(audio, (half, half))
            for (uu, f), name in snippets.items():
                if uu != u:
                    continue
                written += write_snippet(out, name, padded[centres[f]:centres[f] + 2 * half], config.n_mels)
            for layer, d in neurons:
                for uu, f in zip(examples["utt"][layer, d], examples["frame"][layer, d], strict=True):
                    if uu != u:
                        continue
                    lo, hi = centres[f] - half, centres[f] + half
                    inside = np.flatnonzero((centres >= lo) & (centres < hi))
                    traces[(layer, d, u, int(f))] = ((centres[inside] - lo) / SAMPLE_RATE, acts[(layer, d)][inside])
        used = written

    # ---- pages
    shares = example_group_shares(examples, sets_json, plan) if examples is not None else []
    paged = set(_media_order(sets_json, scored, top_value)[:config.max_neuron_pages])
    _write_overview(out, run, summary, cfg, sets_json, shares, corpus, used, config, len(media_neurons), capped,
                    len(paged), len(membership))
    _write_index(out, membership, top_value, set(media_neurons), num_layers, paged)
    for n, names in membership.items():
        if n in paged:
            _write_neuron(out, n, names, profiles, examples, corpus, snippets, traces, config,
                          n in set(media_neurons), capped)
    write_text(os.path.join(out, "style.css"), CSS)
    write_text(os.path.join(out, "explorer.js"), SCRIPT)
    if report is not None:
        report.text(f"Neuron explorer: {EXPLORER_DIR}/index.html (open it in a browser, or run "
                    "`jaxneurons view RESULTS_DIR`).")
    return os.path.join(out, "index.html")


def _write_overview(out, run, summary, cfg, sets_json, shares, corpus, media_bytes, config, n_media, capped,
                    n_pages, n_set_neurons):
    flags = run.get("flags", {})
    body = ["<h1>Neuron scan explorer</h1>"]
    model_line = _e(flags.get("model", "(not recorded)"))
    body.append(f"<h2>Model</h2><p>{model_line}: {cfg.num_layers} layers, FFN widths "
                f"{_e(', '.join(map(str, sorted(set(cfg.widths)))))}; top-k fraction rho = {cfg.rho:g}; "
                f"{cfg.examples} top examples kept per neuron.</p>")
    frames = summary.get("frames_per_condition", {})
    n_utts = len(corpus.ids) if corpus is not None else "?"
    data = [f"<h2>Data</h2><p>Manifest: {_e(flags.get('manifest', '(not recorded)'))}; {n_utts} utterances.</p>"]
    if frames:
        data.append(_table(["condition set", "frames counted"], [[_e(k), v] for k, v in frames.items()]))
    if summary.get("pitch_edges_hz"):
        lo, hi = summary["pitch_edges_hz"]
        data.append(f"<p>Pitch bins: low &lt; {lo:.1f} Hz &lt;= mid &lt; {hi:.1f} Hz &lt;= high.</p>")
    body += data
    issues = run.get("data_issues") or {}
    counts = issues.get("counts") or {}
    body.append("<h2>Data issues</h2>")
    if counts:
        rows = [[_e(k), v, _e(", ".join(map(str, (issues.get("examples") or {}).get(k, [])[:3])))]
                for k, v in counts.items()]
        body.append(_table(["issue", "files", "examples"], rows))
    else:
        body.append("<p>No data issues were recorded.</p>")
    body.append("<h2>Neurons per layer and group</h2><p class=\"note\">Layer 0 = first Transformer layer (as in "
                "neurons.json). Click a group in the neuron index to list its neurons.</p>")
    per_layer = summary.get("per_layer_counts") or {}
    for prop, groups in sets_json.items():
        counts_pl = per_layer.get(prop) or {g: [len(v.get(f"layers.{i}.ffn", [])) for i in range(cfg.num_layers)]
                                            for g, v in groups.items()}
        total = sum(sum(v) for v in counts_pl.values())
        body.append(f"<h3>{_e(prop)}</h3>")
        if not groups:
            body.append(f"<p>{_e(prop)}: no groups were scored (this property gives scores, not sets).</p>")
        elif total == 0:
            body.append(f"<p>{_e(prop)}: no neuron was found in any group ({_e(', '.join(groups))}).</p>")
        else:
            links = " ".join(f"<a class=\"tag\" href=\"neurons.html?set={_e(prop)}/{_e(g)}\">{_e(g)}: "
                             f"{sum(counts_pl[g])}</a>" for g in groups)
            body.append(_heatmap(counts_pl, cfg.num_layers) + f"<p>{links}</p>")
    body.append("<h2>Do the top examples fall in the group's own frames?</h2>")
    rows = [r for r in shares if r["share"] is not None]
    if rows:
        body.append("<p class=\"note\">For every neuron of a group, its top examples (max-activating frames of "
                    "the whole scan, every frame counted) are checked against the group's frames: phone type of "
                    "the frame's phone, the utterance's gender / i-vector group / label, the frame's pitch bin. "
                    "Chance: the share of all scanned frames that belong to the group.</p>")
        body.append(_table(["property / group", "neurons", "top examples", "share in group", "chance", "ratio"],
                           [[f"{_e(r['property'])} / {_e(r['group'])}", r["neurons"], r["examples"],
                             f"{r['share']:.3f}", f"{r['chance']:.3f}",
                             f"{r['share'] / r['chance']:.2f}" if r["chance"] else "-"] for r in rows]))
    else:
        body.append("<p>No group with neurons has frame labels to compare its top examples with.</p>")
    body.append("<h2>Media</h2>")
    if corpus is None:
        body.append("<p>This scan kept no max-activating examples (StatsConfig.examples = 0).</p>")
    elif corpus.why_no_audio:
        body.append(f"<p>{_e(corpus.why_no_audio)}</p>")
    else:
        cap = f" Capped at {capped}; the other neurons' pages list their examples without audio." if capped else ""
        body.append(f"<p>Audio snippets ({config.snippet_seconds:g} s, {SAMPLE_RATE} Hz WAV) and log-mel "
                    f"spectrograms for {n_media} neurons, {media_bytes / 2**20:.1f} MB in media/ (limits: "
                    f"{config.max_audio_neurons} neurons, {config.max_media_mb:g} MB).{cap}</p>")
    body.append(f"<p>Neuron pages: {n_pages} of the {n_set_neurons} set neurons (limit {config.max_neuron_pages}, "
                "strongest of each set first); the index lists all of them.</p>")
    write_text(os.path.join(out, "index.html"), _page("Overview", "".join(body)))


def _write_index(out, membership, top_value, with_media, num_layers, paged):
    props = sorted({s.split("/")[0] for names in membership.values() for s in names})
    groups = sorted({s for names in membership.values() for s in names})
    rows = []
    for (layer, d), names in membership.items():
        nid = f"{layer}.{d}"
        tags = "".join(f"<span class=\"tag\">{_e(s)}</span>" for s in names)
        top = f"{top_value[layer, d]:.3f}" if np.isfinite(top_value[layer, d]) else "-"
        rows.append(f"<tr data-id=\"{nid}\" data-layer=\"{layer}\" data-sets=\"{_e(' '.join(names))}\">"
                    + (f"<td class=\"l\"><a href=\"neurons/{nid}.html\">{nid}</a></td>" if (layer, d) in paged
                       else f"<td class=\"l\">{nid}</td>") + f"<td>{layer}</td>"
                    f"<td class=\"l\">{tags}</td><td>{top}</td>"
                    f"<td>{'yes' if (layer, d) in with_media else ''}</td></tr>")
    opts = "".join(f"<option>{i}</option>" for i in range(num_layers))
    popts = "".join(f"<option>{_e(p)}</option>" for p in props)
    gopts = "".join(f"<option>{_e(g)}</option>" for g in groups)
    body = (f"<h1>Neuron index</h1><p>{len(membership)} neurons in at least one set; <span id=\"shown\">"
            f"{len(membership)}</span> shown.</p>"
            "<p id=\"filters\"><label>layer <select id=\"f-layer\"><option value=\"\">all</option>" + opts +
            "</select></label><label>property <select id=\"f-prop\"><option value=\"\">all</option>" + popts +
            "</select></label><label>group <select id=\"f-group\"><option value=\"\">all</option>" + gopts +
            "</select></label><label>neuron <input id=\"f-query\" placeholder=\"layer.index, e.g. 3.127\" "
            "size=\"20\"></label></p>" if membership else "<h1>Neuron index</h1><p>No neuron was found in any set.</p>")
    if membership:
        body += ("<table id=\"neurons\"><thead><tr><th class=\"l\">neuron</th><th>layer</th><th class=\"l\">sets</th>"
                 "<th>top activation</th><th>audio</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    body += "<script src=\"explorer.js\"></script>"
    write_text(os.path.join(out, "neurons.html"), _page("Neuron index", body))


def _write_neuron(out, n, names, profiles, examples, corpus, snippets, traces, config, has_media, capped):
    layer, d = n
    nid = f"{layer}.{d}"
    body = [f"<h1>Neuron {nid}</h1><p>Layer {layer} (0 = first Transformer layer), FFN neuron {d}. Sets: " +
            " ".join(f"<a class=\"tag\" href=\"../neurons.html?set={_e(s)}\">{_e(s)}</a>" for s in names) + "</p>"]
    body.append("<h2>Activation profile</h2>")
    for p in profiles:
        with np.errstate(invalid="ignore", divide="ignore"):
            vals = np.where(p["frames"] > 0, p["counts"][layer, :, d] / np.maximum(p["frames"], 1), np.nan)
        body.append(f"<h3>{_e(p['title'])}</h3>" + _bar_svg(p["labels"], vals, p["chance"]))
    body.append("<h2>Top examples</h2>")
    if examples is None:
        body.append("<p>This scan kept no max-activating examples (StatsConfig.examples = 0).</p>")
    else:
        utt, frame, value = examples["utt"][layer, d], examples["frame"][layer, d], examples["value"][layer, d]
        shown = [(int(u), int(f), float(v)) for u, f, v in zip(utt, frame, value, strict=True) if u >= 0]
        body.append(f"<p class=\"note\">The {len(shown)} frames of the scan with the largest activation h of this "
                    "neuron (every frame counted; ties: earlier utterance, then earlier frame).</p>")
        if not has_media:
            why = corpus.why_no_audio if corpus is not None and corpus.why_no_audio else (
                f"Audio was rendered for {capped} only." if capped else "")
            if why:
                body.append(f"<p class=\"note\">{_e(why)}</p>")
        rows, cards = [], []
        for rank, (u, f, v) in enumerate(shown, 1):
            uid = corpus.ids[u] if corpus is not None else str(u)
            phone = corpus.phone(u, f) if corpus is not None else ""
            t = (f"{corpus.frame_centres(corpus.num_frames[u])[f] / SAMPLE_RATE:.2f} s"
                 if corpus is not None and corpus.frame_centres is not None else f"frame {f}")
            name = snippets.get((u, f))
            if has_media and name and (layer, d, u, f) in traces:
                times, acts = traces[(layer, d, u, f)]
                phones = [corpus.phone(u, int(i)) for i in _frames_in(corpus, u, f, config)]
                cards.append(f"<div class=\"ex\"><div>#{rank} h = {v:.3f} &middot; {_e(uid)} at {t} &middot; "
                             f"{_e(phone)}</div><audio controls preload=\"none\" src=\"../media/{name}.wav\"></audio>"
                             f"<img src=\"../media/{name}.png\" alt=\"log-mel spectrogram\">"
                             + _trace_svg(times, acts, phones, config.snippet_seconds / 2, config.snippet_seconds)
                             + "</div>")
            rows.append([rank, f"{v:.4f}", _e(uid), t, _e(phone)])
        if cards:
            body.append("<p class=\"note\">Each snippet: audio, log-mel spectrogram (40 bands, 0-8 kHz), this "
                        "neuron's activation over the snippet (red line: the top frame) and the frame phone labels."
                        "</p>" + "".join(cards))
        body.append(_table(["#", "h", "utterance", "time", "phone"], rows, left=0))
    write_text(os.path.join(out, "neurons", f"{nid}.html"), _page(f"Neuron {nid}", "".join(body), depth=1))


def _frames_in(corpus: _Corpus, u: int, f: int, config: ExplorerConfig) -> np.ndarray:
    centres = corpus.frame_centres(corpus.num_frames[u])
    half = int(round(config.snippet_seconds * SAMPLE_RATE / 2))
    return np.flatnonzero((centres >= centres[f] - half) & (centres < centres[f] + half))


def explorer_bytes(results_dir: str) -> int:
    """Total size of ``results_dir/explorer`` (what the cap bounds, plus the HTML)."""
    total = 0
    for root, _, files in os.walk(os.path.join(results_dir, EXPLORER_DIR)):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def write_multi_explorer(out_dir: str, summary: Mapping[str, Any]) -> str:
    """``out_dir/explorer/index.html`` for a multi-model scan: a link to every model's explorer (written by
    :func:`write_explorer` into ``out_dir/<model>/explorer/``; the neuron index of each model) and the
    cross-model overlap tables of ``summary["overlap"]`` (pooled IoU and containment with their
    shuffled-set null). ``summary``: the combined summary of :func:`jaxneurons.pipeline.multiscan.write_combined`.
    """
    out = os.path.join(out_dir, EXPLORER_DIR)
    os.makedirs(out, exist_ok=True)
    models = summary.get("models", {})
    rows = []
    for name, m in models.items():
        rel = m.get("results_dir", name)
        here = os.path.join(out_dir, rel, EXPLORER_DIR)
        if os.path.exists(os.path.join(here, "index.html")):
            links = (f"<a href=\"../{_e(rel)}/{EXPLORER_DIR}/index.html\">overview</a> &middot; "
                     f"<a href=\"../{_e(rel)}/{EXPLORER_DIR}/neurons.html\">neuron index</a>")
        else:
            links = "no explorer (results written before it existed)"
        totals = m.get("per_layer_counts", {})
        n = sum(sum(v) for groups in totals.values() for v in groups.values())
        rows.append([_e(name), links, n])
    body = ["<h1>Multi-model scan explorer</h1>", "<h2>Models</h2>",
            _table(["model", "explorer", "neurons in sets"], rows, left=2)]
    body.append("<h2>Cross-model overlap</h2>")
    entries = summary.get("overlap") or []
    if not entries:
        body.append("<p>No overlap tables: fewer than two models share one FFN shape.</p>")
    for e in entries:
        names = e["models"]
        body.append(f"<h3>{_e(e['property'])} / {_e(e['group'])}</h3><p class=\"note\">set sizes: " +
                    ", ".join(f"{_e(n)} {s}" for n, s in zip(names, e["sizes"], strict=True)) +
                    ". Cells: observed (shuffled-set null mean, z).</p>")
        for metric in ("iou", "containment"):
            if metric not in e:
                continue
            obs, null, z = (np.asarray(e.get(k), dtype=float) for k in (metric, f"{metric}_null_mean", f"{metric}_z"))
            cells = [[_e(a), *(f"{obs[i, j]:.3f} ({null[i, j]:.3f}, {z[i, j]:+.1f})" if i != j else "-"
                               for j in range(len(names)))] for i, a in enumerate(names)]
            body.append(f"<p>{metric}</p>" + _table([metric, *names], cells))
    write_text(os.path.join(out, "index.html"), _page("Multi-model scan", "".join(body)).replace(
        "<a href=\"neurons.html\">Neuron index</a>", ""))
    write_text(os.path.join(out, "style.css"), CSS)
    return os.path.join(out, "index.html")


# ---------------------------------------------------------------- attention heads


@dataclasses.dataclass(frozen=True)
class HeadsExplorerConfig:
    """How much of each head's top utterances the heads explorer renders.

    Attributes:
      clip_seconds: audio from the start of each shown utterance (a head's metric is a property of the whole
        utterance, so the clip is its beginning, not a frame's surroundings).
      max_media_mb: hard cap on the clips + spectrograms (about 2 * 16000 * clip_seconds bytes per WAV);
        utterances past it are listed without audio.
      n_mels: mel bands of the spectrograms (25 ms Hann window, 10 ms hop).
    """

    clip_seconds: float = 2.0
    max_media_mb: float = 20.0
    n_mels: int = 40

    def __post_init__(self) -> None:
        if not 0.1 <= self.clip_seconds <= 30 or self.max_media_mb < 0:
            raise ValueError(f"clip_seconds must be in [0.1, 30] and max_media_mb >= 0, got {self.clip_seconds}, "
                             f"{self.max_media_mb}")


HEADS_NAV = (("index.html", "Heads"),)


def write_heads_explorer(results_dir: str, analysis: Any, config: HeadsExplorerConfig = HeadsExplorerConfig()) -> str:
    """``results_dir/explorer/index.html`` for a heads analysis: every head's type and mean metrics, and per head
    and metric its top utterances (:class:`jaxneurons.heads.HeadTopUtterances`) with a playable clip and a
    log-mel spectrogram (the utterance's first ``clip_seconds``; clips within ``max_media_mb``).

    ``analysis``: a :class:`jaxneurons.pipeline.heads.HeadsAnalysis` (its ``utterances`` give ids and audio;
    without them, or without top utterances, the page says so). Returns the page's path.
    """
    from jaxneurons.data import load_audio
    from jaxneurons.heads import HEAD_TYPES, METRIC_NAMES

    out = os.path.join(results_dir, EXPLORER_DIR)
    os.makedirs(out, exist_ok=True)
    typing, metrics = analysis.typing, analysis.metrics
    types, mean = typing.types, metrics.mean
    n_layers, n_heads = types.shape
    utts = list(analysis.utterances or [])
    top = metrics.top
    type_name = [HEAD_TYPES[t] if t >= 0 else "untyped" for t in types.ravel()]

    # ---- clips: utterances in the order they first appear in the top lists (best ranks first), within the cap
    clips: dict[int, str] = {}
    capped = why = ""
    if top is None:
        why = "This analysis kept no top utterances (HeadsConfig.top_utterances = 0)."
    elif not utts:
        why = "No audio: the analysis does not carry its utterances."
    else:
        cap, used = int(config.max_media_mb * 2**20), 0
        for u in [int(u) for u in np.moveaxis(top.utt, -1, 0).ravel() if u >= 0]:
            if u in clips:
                continue
            try:
                audio = load_audio(utts[u].path, SAMPLE_RATE)
            except (OSError, ValueError) as e:
                log.warning("heads explorer: no clip for %s: %s", utts[u].utt_id, e)
                continue
            clip = audio[:int(config.clip_seconds * SAMPLE_RATE)]
            if used + 2 * len(clip) + 3044 > cap:
                capped = f"Clips capped at {config.max_media_mb:g} MB (max_media_mb): later utterances have none."
                break
            clips[u] = f"utt{u}"
            used += write_snippet(out, clips[u], clip, config.n_mels)

    body = ["<h1>Attention heads</h1>",
            f"<p>{n_layers} layers x {n_heads} heads (layer 0 = first Transformer layer), "
            f"{len(metrics.frame_lengths)} utterances. Type: the head's largest "
            + ("raw metric" if analysis.options.normalize == "none" else
               f"{_e(analysis.options.normalize)}-normalised metric (an option; the study types by raw metrics)")
            + ". Metrics: mean over utterances, valid frames only.</p>"]
    rows = []
    for layer in range(n_layers):
        for head in range(n_heads):
            link = f"<a href=\"#h{layer}.{head}\">{layer}.{head}</a>" if top is not None else f"{layer}.{head}"
            rows.append([link, _e(type_name[layer * n_heads + head]),
                         *(f"{mean[layer, head, k]:.3f}".replace("-0.000", "0.000")  # rounding noise
                           for k in range(len(METRIC_NAMES)))])
    body.append(_table(["head", "type", *METRIC_NAMES], rows, left=2))
    body.append("<h2>Top utterances per head</h2>")
    if why:
        body.append(f"<p>{_e(why)}</p>")
    else:
        n = top.value.shape[-1]
        body.append(f"<p class=\"note\">Per head and metric, the {n} utterances with the largest value (ties: "
                    f"earlier utterance in the manifest), each with its first {config.clip_seconds:g} s of audio and "
                    f"its log-mel spectrogram ({len(clips)} clips). {_e(capped)}</p>")
        for layer in range(n_layers):
            for head in range(n_heads):
                body.append(f"<h3 id=\"h{layer}.{head}\">Head {layer}.{head}: "
                            f"{_e(type_name[layer * n_heads + head])}</h3>")
                for k, metric in enumerate(METRIC_NAMES):
                    cards = []
                    for rank, (u, v) in enumerate(zip(top.utt[layer, head, k], top.value[layer, head, k],
                                                      strict=True), 1):
                        if u < 0:
                            continue
                        uid = utts[u].utt_id if u < len(utts) else str(u)
                        media = "" if u not in clips else (
                            f"<audio controls preload=\"none\" src=\"media/{clips[u]}.wav\"></audio>"
                            f"<img src=\"media/{clips[u]}.png\" alt=\"log-mel spectrogram\">")
                        cards.append(f"<div class=\"ex\"><div>#{rank} {metric} = {v:.3f} &middot; {_e(uid)}</div>"
                                     f"{media}</div>")
                    body.append(f"<p><b>{metric}</b></p>" + ("".join(cards) if cards else
                                                              "<p>No utterance with a defined value.</p>"))
    write_text(os.path.join(out, "index.html"), _page("Attention heads", "".join(body), nav=HEADS_NAV))
    write_text(os.path.join(out, "style.css"), CSS)
    return os.path.join(out, "index.html")
