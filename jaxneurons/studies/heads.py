"""Study 4: attention-head types across languages (arXiv 2409.03115), as a library.

    from jaxneurons.studies import heads
    result = heads.run(heads.HeadsStudyConfig(), "results/heads_xlang")

For each language (default en, tr): a synthetic espeak corpus (:func:`jaxneurons.data.generate_corpus`, only
that language, the same size and seed), a model pre-trained from scratch with ``jaxneurons train`` and
identical settings (the study compares two models pretrained the same way on two languages), then the heads
analysis (:func:`jaxneurons.pipeline.heads.run_heads`: raw-metric head types, type ablation with the one
ProbeSuite phone probe) of that model on its own language. ``out_dir`` holds one heads results directory per
language and a side-by-side report. Corpora, models and checkpoints go to ``workdir`` (default OUT.work);
rerunning resumes (finished corpora and models are reused, a killed training continues from its checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Any

from jaxneurons.config_flags import field_help
from jaxneurons.pipeline.heads import HeadsConfig


@dataclasses.dataclass(frozen=True)
class HeadsStudyConfig:
    """The cross-language heads study (arXiv 2409.03115: two models pretrained identically on two languages,
    heads typed by their raw diagonality / verticality / globalness, types ablated and measured with a phone
    probe). The paper used TERA models on real English and Turkish speech; here the corpora are synthetic
    espeak voices and the models and corpora are scaled to a 2-core CPU (``preset`` small, 600 steps, 24
    speakers, 20 minutes per language). The analysis settings are :class:`HeadsConfig` (``heads``)."""

    languages: tuple[str, ...] = field_help(("en", "tr"), "Languages, one model each (synthetic voices: en, tr).")
    workdir: str = field_help("", "Corpora, models and checkpoints (empty: OUT.work).")
    num_speakers: int = field_help(24, "Pseudo-speakers per language corpus.")
    minutes: float = field_help(20.0, "Minutes of audio per language corpus.")
    seed: int = field_help(0, "Seed of corpora and training (the same for every language).")
    preset: str = field_help("small", "Architecture (jaxneurons train --preset).", choices=("tiny", "small"))
    steps: int = field_help(600, "Pre-training steps per model.")
    batch_size: int = field_help(8, "Pre-training utterances per step.")
    crop_seconds: float = field_help(2.0, "Pre-training crop length.")
    num_clusters: int = field_help(100, "k-means MFCC target clusters.")
    learning_rate: float = field_help(7e-4, "Peak pre-training learning rate.")
    warmup_steps: int = field_help(60, "Pre-training warm-up steps.")
    smoke: bool = field_help(False, "Marks a tiny end-to-end run (smoke_config()); numbers are meaningless.")
    heads: HeadsConfig = HeadsConfig(single_head_ablation=True)


def smoke_config(**overrides: Any) -> HeadsStudyConfig:
    """Tiny sizes for a quick end-to-end check."""
    from jaxneurons.probes import ProbeSuiteConfig

    heads = HeadsConfig(random_controls=2, single_head_ablation=True,
                        probe=ProbeSuiteConfig(tasks=("phone",), epochs=2, min_steps=5, bootstrap_draws=50))
    base = dict(num_speakers=3, minutes=0.4, preset="tiny", steps=4, batch_size=4, crop_seconds=1.0,
                num_clusters=8, warmup_steps=1, smoke=True, heads=heads)
    return HeadsStudyConfig(**{**base, **overrides})


@dataclasses.dataclass
class HeadsStudyResult:
    out_dir: str
    comparison: dict[str, dict]  # per language: type counts / fractions, training, ablation conditions
    seconds: float


def train_model(manifest: str, model_dir: str, train_dir: str, s: HeadsStudyConfig) -> float:
    """Pre-train with the project's train command (identical flags for every language); returns seconds."""
    if os.path.exists(os.path.join(model_dir, "config.json")):
        return 0.0
    cmd = [sys.executable, "-m", "jaxneurons.cli", "train", f"--manifest={manifest}", f"--out={model_dir}",
           f"--workdir={train_dir}", f"--preset={s.preset}", f"--num_clusters={s.num_clusters}",
           f"--steps={s.steps}", f"--batch_size={s.batch_size}", f"--crop_seconds={s.crop_seconds}",
           f"--learning_rate={s.learning_rate}", f"--warmup_steps={s.warmup_steps}", "--mask_prob=0.7",
           "--mask_length=5", f"--seed={s.seed}", f"--checkpoint_every={max(1, min(100, s.steps))}"]
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


def run(s: HeadsStudyConfig, out_dir: str, *, progress: bool = True) -> HeadsStudyResult:
    """Corpus, model and heads analysis per language, then the side-by-side report (module docstring)."""
    from jaxneurons.data import DataIssues, generate_corpus, read_manifest
    from jaxneurons.heads import HEAD_TYPES, METRIC_NAMES
    from jaxneurons.models.checkpoint import load_model
    from jaxneurons.pipeline.heads import NONE_MASK, run_heads, write_heads_results
    from jaxneurons.report import Report, grouped_bars, layer_profile
    from jaxneurons.results import ResultsDir

    def say(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr, flush=True)

    t_start = time.time()
    work = s.workdir or out_dir.rstrip("/") + ".work"
    os.makedirs(work, exist_ok=True)
    run_flags = {"config": dataclasses.asdict(s), "workdir": os.path.abspath(work)}
    per_lang: dict[str, dict] = {}
    with ResultsDir(out_dir, "heads_cross_language", flags=run_flags) as res:
        for lang in s.languages:
            t0 = time.time()
            manifest = generate_corpus(os.path.join(work, f"corpus-{lang}"), s.num_speakers, s.minutes, [lang],
                                       s.seed, progress=False)
            corpus_s = time.time() - t0
            model_dir = os.path.join(work, f"model-{lang}")
            train_s = train_model(manifest, model_dir, os.path.join(work, f"train-{lang}"), s)
            model = load_model(model_dir)
            utts = read_manifest(manifest)
            issues = DataIssues()
            t1 = time.time()
            analysis = run_heads(model, utts, s.heads, issues=issues)
            with ResultsDir(os.path.join(res.tmp, lang), "heads",
                            flags={"model": model_dir, "manifest": manifest, "language": lang,
                                   "options": dataclasses.asdict(s.heads)}) as sub:
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
            say(f"{lang}: types {summary['type_counts']}, probe accuracy "
                  f"{summary.get('ablation', {}).get('baseline_accuracy')}")
        side = _side_by_side(per_lang, HEAD_TYPES, NONE_MASK)
        res.save_json("comparison", side)
        report = Report("Attention heads across languages")
        report.text(
            f"One model per language, pre-trained identically ({s.preset} preset, {s.steps} steps, "
            f"{s.num_clusters} MFCC k-means targets, seed {s.seed}) on a synthetic espeak corpus of that "
            f"language ({s.num_speakers} speakers, {s.minutes} min), analysed on its own language. "
            f"Per-model reports: {', '.join(f'{lang}/report.html' for lang in per_lang)}."
            + (" SMOKE RUN: tiny sizes, numbers are meaningless." if s.smoke else "")
        )
        langs = list(per_lang)
        report.heading("Models and data")
        report.table(["language", "utterances", "speakers", "minutes", "pre-training loss", "masked accuracy",
                      "probe split", "phone accuracy", "95 % CI", "chance (majority)"],
                     [[lang, r["num_utterances"], r["num_speakers"], round(r["minutes"], 2),
                       side[lang].get("final_loss", "n/a"), side[lang].get("final_masked_accuracy", "n/a"),
                       side[lang].get("split", "n/a"), side[lang].get("baseline_accuracy", "n/a"),
                       side[lang].get("baseline_ci95", "n/a"),
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
    return HeadsStudyResult(os.path.abspath(out_dir), side, time.time() - t_start)


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
            row.update(baseline_accuracy=base, baseline_ci95=ab["results"][none]["ci95"],
                       chance_accuracy=ab["test_reference"]["chance"], split=ab["split"]["kind"])
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
