"""Wall time of one 4-model scan (shared decoding) vs 4 separate single-model scans of the same models.

    python benchmarks/bench_multiscan.py --out /tmp/bench_multiscan [--minutes 0.6 --speakers 4]

Models: two tiny MelHuBERTs (one log-mel front end) and a tiny HuBERT + WavLM (one conv front end), random
init, saved to disk. Properties: phone_type, gender, pitch, aape_gender, speaker (YIN F0 and i-vectors are
the model-independent work the multi-model scan shares). "Separate" is what four ``jaxneurons scan --model
DIR`` runs do (one single-model ``scan()`` each, each decoding the corpus itself), in
one process; "multi" is ``scan(list of models)`` (cluster-separation pass off, so both do the same work). Each mode
runs in its own fresh Python process so neither reuses the other's compiled functions; times exclude
interpreter start-up and imports. The neuron sets of both modes are checked to be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

PROPERTIES = ("phone_type", "gender", "pitch", "aape_gender", "speaker")


def _configs():
    from jaxneurons.models import SpeechConfig

    common = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                  num_conv_pos_embeddings=5, num_conv_pos_embedding_groups=2)
    conv = dict(conv_dim=(32, 32, 32), conv_kernel=(10, 8, 4), conv_stride=(5, 4, 16))
    return {
        "mel-a": (SpeechConfig(family="melhubert", num_mel_bins=40, **common), 0),
        "mel-b": (SpeechConfig(family="melhubert", num_mel_bins=40, **common), 1),
        "hubert": (SpeechConfig(family="hubert", **conv, **common), 2),
        "wavlm": (SpeechConfig(family="wavlm", num_buckets=32, max_bucket_distance=100, **conv, **common), 3),
    }


def _options():
    from jaxneurons.features.ivector import IVectorConfig
    from jaxneurons.pipeline.properties import SpeakerNeuronConfig
    from jaxneurons.pipeline.scan import ScanOptions

    return ScanOptions(properties=PROPERTIES, batch_size=8,
                       speaker=SpeakerNeuronConfig(ivector=IVectorConfig(num_components=16, ivector_dim=16)))


def setup(out: str, minutes: float, speakers: int) -> tuple[str, list[str]]:
    from jaxneurons.data import generate_corpus
    from jaxneurons.models import build_model
    from jaxneurons.models.checkpoint import save_model

    manifest = generate_corpus(os.path.join(out, "corpus"), num_speakers=speakers, minutes=minutes,
                               languages=["en"], seed=3, progress=False)
    paths = []
    for name, (cfg, seed) in _configs().items():
        path = os.path.join(out, "models", name)
        if not os.path.exists(os.path.join(path, "config.json")):
            save_model(build_model(cfg, seed), path)
        paths.append(path)
    return manifest, paths


def run_separate(manifest: str, paths: list[str], out: str) -> dict:
    from jaxneurons.data import read_manifest
    from jaxneurons.pipeline.scan import scan

    utts, options = read_manifest(manifest), _options()
    t0 = time.perf_counter()
    per_model = {}
    for path in paths:  # one single-model scan() each: every model decodes the dataset again
        t = time.perf_counter()
        scan(path, utts, options=options, out_dir=os.path.join(out, os.path.basename(path)), progress=False)
        per_model[os.path.basename(path)] = time.perf_counter() - t
    return {"total_s": time.perf_counter() - t0, "per_model_s": per_model}


def run_multi(manifest: str, paths: list[str], out: str) -> dict:
    from jaxneurons.data import read_manifest
    from jaxneurons.pipeline.multiscan import SeparationOptions, model_specs
    from jaxneurons.pipeline.scan import scan

    utts = read_manifest(manifest)
    t0 = time.perf_counter()
    summary = scan(model_specs(paths), utts, options=_options(), out_dir=out,
                   separation=SeparationOptions(enabled=False), progress=False).summary
    return {"total_s": time.perf_counter() - t0, "per_model_s": {n: m["scan_seconds"] for n, m in
                                                                summary["models"].items()},
            "decoding": summary["decoding"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/bench_multiscan")
    ap.add_argument("--minutes", type=float, default=0.6)
    ap.add_argument("--speakers", type=int, default=4)
    ap.add_argument("--mode", choices=["driver", "separate", "multi"], default="driver")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.mode != "driver":
        manifest, paths = setup(args.out, args.minutes, args.speakers)
        fn = run_separate if args.mode == "separate" else run_multi
        result = fn(manifest, paths, os.path.join(args.out, args.mode))
        print("RESULT " + json.dumps(result))
        return
    manifest, paths = setup(args.out, args.minutes, args.speakers)
    from jaxneurons.data import read_manifest

    utts = read_manifest(manifest)
    seconds = sum(u.num_samples for u in utts) / 16000
    results = {"utterances": len(utts), "audio_seconds": round(seconds, 1), "load_before": os.getloadavg(),
               "cpus": os.cpu_count()}
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    for mode in ("separate", "multi"):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--mode", mode, "--out", args.out, "--minutes",
                               str(args.minutes), "--speakers", str(args.speakers)], env=env, capture_output=True,
                              text=True, check=False)
        if proc.returncode:
            sys.exit(f"{mode} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        results[mode] = {**json.loads(line[7:]), "process_wall_s": time.perf_counter() - t}
    results["load_after"] = os.getloadavg()
    same = all(_read(os.path.join(args.out, "separate", n)) == _read(os.path.join(args.out, "multi", n))
               for n in results["multi"]["per_model_s"])
    results["identical_neuron_sets"] = same
    results["speedup"] = results["separate"]["total_s"] / results["multi"]["total_s"]
    print(json.dumps(results, indent=2))


def _read(path: str) -> dict:
    with open(os.path.join(path, "neurons.json")) as f:
        return json.load(f)


if __name__ == "__main__":
    main()
