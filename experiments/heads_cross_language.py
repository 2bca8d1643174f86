"""Cross-language attention heads (study 4, arXiv 2409.03115): an English and a Turkish model, trained alike.

    python -m experiments.heads_cross_language --out results/heads_xlang            # full size (~20-30 min, 2 cores)
    python -m experiments.heads_cross_language --out /tmp/xlang --smoke            # tiny, end to end

For each language (``--languages``, default en,tr): a synthetic espeak corpus
(:func:`jaxneurons.data.generate_corpus` with only that language, the same size and seed), a model
pre-trained from scratch with ``python -m jaxneurons.cli train`` and identical flags, then the heads analysis
(:mod:`jaxneurons.pipeline.heads`) of that model on its own language. The results directory holds one complete
heads results directory per language (``OUT/en``, ``OUT/tr``) and a side-by-side report: head-type
distribution, ablation effects and each model's frame phone accuracy on its own language.
Corpora, models and training checkpoints go to ``--workdir`` (default ``OUT.work``); rerunning resumes
(finished corpora and models are reused, a killed training continues from its checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_string("out", None, "Results directory (written atomically).")
flags.DEFINE_string("workdir", None, "Corpora, models and checkpoints (default: OUT.work).")
flags.DEFINE_list("languages", ["en", "tr"], "Languages, one model each (synthetic espeak voices: en, tr).")
flags.DEFINE_integer("num_speakers", 24, "Pseudo-speakers per language corpus.")
flags.DEFINE_float("minutes", 20.0, "Minutes of audio per language corpus.")
flags.DEFINE_integer("seed", 0, "Seed of corpora, training, split, probe and random controls (same for all).")
flags.DEFINE_enum("preset", "small", ["tiny", "small"], "Architecture (jaxneurons train --preset).")
flags.DEFINE_integer("steps", 600, "Pre-training steps per model.")
flags.DEFINE_integer("batch_size", 8, "Pre-training utterances per step.")
flags.DEFINE_float("crop_seconds", 2.0, "Pre-training crop length.")
flags.DEFINE_integer("num_clusters", 100, "k-means MFCC target clusters.")
flags.DEFINE_float("learning_rate", 7e-4, "Peak pre-training learning rate.")
flags.DEFINE_integer("warmup_steps", 60, "Pre-training warm-up steps.")
flags.DEFINE_string("probe_layer", "-1", "hidden_states index for the phone probe, or 'all'.")
flags.DEFINE_integer("probe_max_epochs", 30, "Phone-probe epochs (early stopping on the dev loss).")
flags.DEFINE_integer("probe_min_steps", 300, "Minimum phone-probe updates.")
flags.DEFINE_integer("random_controls", 5, "Random same-size head sets per type ablation.")
flags.DEFINE_bool("single_head_ablation", True, "Also remove each head alone.")
flags.DEFINE_bool("smoke", False, "Tiny sizes for a quick end-to-end check (overrides the size flags).")
FLAGS = flags.FLAGS

SMOKE = dict(num_speakers=3, minutes=0.4, preset="tiny", steps=4, batch_size=4, crop_seconds=1.0, num_clusters=8,
             warmup_steps=1, probe_max_epochs=2, probe_min_steps=5, random_controls=2)


def settings() -> dict:
    """The flags that size the run, with the smoke overrides applied."""
    names = ("num_speakers", "minutes", "preset", "steps", "batch_size", "crop_seconds", "num_clusters",
             "learning_rate", "warmup_steps", "probe_max_epochs", "probe_min_steps", "random_controls")
    out = {n: getattr(FLAGS, n) for n in names}
    if FLAGS.smoke:
        out.update(SMOKE)
    return out


def train_model(manifest: str, model_dir: str, train_dir: str, s: dict) -> float:
    """Pre-train with the project's train command (identical flags for every language); returns seconds."""
    if os.path.exists(os.path.join(model_dir, "config.json")):
        return 0.0
    cmd = [sys.executable, "-m", "jaxneurons.cli", "train", f"--manifest={manifest}", f"--out={model_dir}",
           f"--workdir={train_dir}", f"--preset={s['preset']}", f"--num_clusters={s['num_clusters']}",
           f"--steps={s['steps']}", f"--batch_size={s['batch_size']}", f"--crop_seconds={s['crop_seconds']}",
           f"--learning_rate={s['learning_rate']}", f"--warmup_steps={s['warmup_steps']}", "--mask_prob=0.7",
           "--mask_length=5", f"--seed={FLAGS.seed}", f"--checkpoint_every={max(1, min(100, s['steps']))}"]
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t0


def _training_summary(model_dir: str) -> dict:
    path = os.path.join(model_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    tail = rows[-50:]
    return {"steps": rows[-1]["step"] if rows else 0,
            "final_loss": sum(r["loss"] for r in tail) / max(len(tail), 1),
            "final_masked_accuracy": sum(r["masked_accuracy"] for r in tail) / max(len(tail), 1)}


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.out:
        sys.exit("error: --out is required")
    from jaxneurons.data import DataIssues, generate_corpus, read_manifest
    from jaxneurons.heads import HEAD_TYPES, METRIC_NAMES
    from jaxneurons.models.checkpoint import load_model
    from jaxneurons.pipeline.heads import NONE_MASK, HeadsOptions, run_heads, write_heads_results
    from jaxneurons.report import Report, grouped_bars, layer_profile
    from jaxneurons.results import ResultsDir

    s = settings()
    work = FLAGS.workdir or FLAGS.out.rstrip("/") + ".work"
    os.makedirs(work, exist_ok=True)
    layer = FLAGS.probe_layer if FLAGS.probe_layer == "all" else int(FLAGS.probe_layer)
    options = HeadsOptions(probe_layer=layer, probe_max_epochs=s["probe_max_epochs"],
                           probe_min_steps=s["probe_min_steps"], random_controls=s["random_controls"],
                           single_head_ablation=FLAGS.single_head_ablation, seed=FLAGS.seed)
    run_flags = {"settings": s, "languages": FLAGS.languages, "seed": FLAGS.seed, "smoke": FLAGS.smoke,
                 "workdir": os.path.abspath(work), "options": dataclasses.asdict(options)}
    per_lang: dict[str, dict] = {}
    with ResultsDir(FLAGS.out, "heads_cross_language", flags=run_flags) as res:
        for lang in FLAGS.languages:
            t0 = time.time()
            manifest = generate_corpus(os.path.join(work, f"corpus-{lang}"), s["num_speakers"], s["minutes"], [lang],
                                       FLAGS.seed, progress=False)
            corpus_s = time.time() - t0
            model_dir = os.path.join(work, f"model-{lang}")
            train_s = train_model(manifest, model_dir, os.path.join(work, f"train-{lang}"), s)
            model = load_model(model_dir)
            utts = read_manifest(manifest)
            issues = DataIssues()
            t1 = time.time()
            analysis = run_heads(model, utts, options, issues=issues)
            with ResultsDir(os.path.join(res.tmp, lang), "heads",
                            flags={"model": model_dir, "manifest": manifest, "language": lang,
                                   "options": dataclasses.asdict(options)}) as sub:
                sub.run["data_issues"] = issues.as_dict()
                summary = write_heads_results(
                    sub, analysis, extra_text=f"Model pre-trained on synthetic {lang} ({model_dir}); "
                    f"manifest {manifest} ({len(utts)} utterances, {sum(u.duration for u in utts) / 60:.1f} min).")
            per_lang[lang] = {
                "summary": summary, "analysis": analysis, "training": _training_summary(model_dir),
                "minutes": sum(u.duration for u in utts) / 60, "num_utterances": len(utts),
                "num_speakers": len({u.speaker for u in utts}),
                "seconds": {"corpus": round(corpus_s, 1), "train": round(train_s, 1),
                            "heads": round(time.time() - t1, 1)},
            }
            print(f"{lang}: types {summary['type_counts']}, probe accuracy "
                  f"{summary.get('ablation', {}).get('baseline_accuracy')}", file=sys.stderr, flush=True)
        side = _side_by_side(per_lang, HEAD_TYPES, NONE_MASK)
        res.save_json("comparison", side)
        report = Report("Attention heads across languages")
        report.text(
            f"One model per language, pre-trained identically ({s['preset']} preset, {s['steps']} steps, "
            f"{s['num_clusters']} MFCC k-means targets, seed {FLAGS.seed}) on a synthetic espeak corpus of that "
            f"language ({s['num_speakers']} speakers, {s['minutes']} min), analysed on its own language. "
            f"Per-model reports: {', '.join(f'{lang}/report.html' for lang in per_lang)}."
            + (" SMOKE RUN: tiny sizes, numbers are meaningless." if FLAGS.smoke else "")
        )
        langs = list(per_lang)
        report.heading("Models and data")
        report.table(["language", "utterances", "speakers", "minutes", "pre-training loss", "masked accuracy",
                      "probe split", "phone accuracy", "chance (majority)"],
                     [[lang, r["num_utterances"], r["num_speakers"], round(r["minutes"], 2),
                       side[lang].get("final_loss", "n/a"), side[lang].get("final_masked_accuracy", "n/a"),
                       side[lang].get("split", "n/a"), side[lang].get("baseline_accuracy", "n/a"),
                       side[lang].get("chance_accuracy", "n/a")] for lang, r in per_lang.items()])
        report.heading("Head types")
        kinds = [*HEAD_TYPES, "untyped"]
        report.table(["language", *kinds], [[lang, *[f"{side[lang]['type_counts'].get(k, 0)} "
                                                     f"({100 * side[lang]['type_fractions'][k]:.0f} %)"
                                                     for k in kinds]] for lang in langs],
                     caption="Heads of each type (share of all heads)")
        path = grouped_bars(res.file("figures/type_fractions.png"), kinds,
                            {lang: [side[lang]["type_fractions"][k] for k in kinds] for lang in langs},
                            "Head-type distribution", "fraction of heads")
        report.figure(path, "Share of heads of each type, per model")
        for lang in langs:
            report.figure(os.path.join(res.tmp, lang, "figures", "head_types.png"), f"{lang}: head types")
        for i, name in enumerate(METRIC_NAMES):
            series = {lang: per_lang[lang]["summary"]["mean_metrics_per_layer"][name] for lang in langs}
            path = layer_profile(res.file(f"figures/{name}_per_layer.png"), series, f"mean {name} per layer",
                                 ylabel=name, normalise_depth=True)
            if i == 0:
                report.text("Mean over the heads of each layer (depth normalised so models of any size compare).")
            report.figure(path, f"{name} per layer")
        if all("conditions" in side[lang] for lang in langs):
            report.heading("Head ablation (frame phone accuracy)")
            conds = list(dict.fromkeys(c for lang in langs for c in side[lang]["conditions"]))
            rows = []
            for c in conds:
                rows.append([c, *[side[lang]["conditions"].get(c, {}).get("accuracy", "n/a") for lang in langs],
                             *[side[lang]["conditions"].get(c, {}).get("relative", "n/a") for lang in langs]])
            report.table(["condition", *[f"{lang} accuracy" for lang in langs],
                          *[f"{lang} / unablated" for lang in langs]], rows,
                         caption="Each model on its own language; random = mean of the same-size random controls")
            path = grouped_bars(res.file("figures/ablation_relative.png"), conds,
                                {lang: [side[lang]["conditions"].get(c, {}).get("relative", float("nan"))
                                        for c in conds] for lang in langs},
                                "Phone accuracy under head ablation", "accuracy / unablated accuracy")
            report.figure(path, "Frame phone accuracy relative to each model's unablated accuracy")
        report.heading("Run time")
        report.table(["language", "corpus s", "training s", "heads analysis s"],
                     [[lang, *per_lang[lang]["seconds"].values()] for lang in langs])
        report.write(res.tmp)
    print(f"cross-language heads -> {FLAGS.out} (report: {os.path.join(FLAGS.out, 'report.html')})")


def _side_by_side(per_lang: dict[str, dict], head_types: tuple[str, ...], none: str) -> dict[str, dict]:
    """Per language: type counts and fractions, training summary, and ablation conditions (absolute and
    relative to the unablated accuracy)."""
    out = {}
    for lang, r in per_lang.items():
        summ = r["summary"]
        row = {"type_counts": summ["type_counts"], "type_fractions": summ["type_fractions"], **r["training"],
               "mean_metrics_per_layer": summ["mean_metrics_per_layer"]}
        ab = r["analysis"].ablation
        if ab is not None:
            base = ab["results"][none]["accuracy"]
            row.update(baseline_accuracy=base, chance_accuracy=ab["test_reference"]["chance"]["accuracy"],
                       split=ab["split"]["kind"])
            conds = {"unablated": base}
            for t in head_types:
                per = ab["summary"].get(t)
                conds[f"remove {t}"] = per["remove"] if per else None
                conds[f"random remove ({t} size)"] = per["random_remove_mean"] if per else None
                conds[f"keep only {t}"] = per["keep_only"] if per else None
                conds[f"random keep ({t} size)"] = per["random_keep_mean"] if per else None
            row["conditions"] = {k: {"accuracy": v, "relative": (v / base if base else None)}
                                 for k, v in conds.items() if v is not None}
        out[lang] = row
    return out


if __name__ == "__main__":
    app.run(main)
