"""The README's main job: a neuron scan + report on the bundled default model and a fresh synthetic corpus.

    python -m jaxneurons.demo                      # writes runs/demo/, prints where the report is

Steps: synthesise a held-out English corpus with espeak-ng (speakers the default model never heard);
one scan pass for property neurons (phone type, gender, pitch; arXiv 2409.05910), label-free speaker
neurons (i-vector x SSL clusters; arXiv 2506.21712) and AAPE gender/speaker neurons (arXiv 2602.15307);
a short ablation (zero each property's neurons vs a random same-size set, effect on phone and gender
probes); one report. Rerunning reuses the corpus and resumes an interrupted scan.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging

flags.DEFINE_string("workdir", "runs/demo", "Where the demo writes its corpus and results.")
flags.DEFINE_string("model", "default", "Model directory, or 'default' for the bundled model.")
flags.DEFINE_integer("num_speakers", 16, "Speakers of the synthetic evaluation corpus.")
flags.DEFINE_float("minutes", 10.0, "Minutes of audio of the synthetic evaluation corpus.")
flags.DEFINE_integer("seed", 12345, "Corpus seed (the default model was trained on seed 1).")
FLAGS = flags.FLAGS


def main(_: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    import numpy as np

    from jaxneurons.assets import resolve_model_path
    from jaxneurons.data import DataIssues, generate_corpus, read_manifest
    from jaxneurons.models.checkpoint import load_model
    from jaxneurons.pipeline.ablation import probe_ablation
    from jaxneurons.pipeline.scan import ScanOptions, plan_scan, scan_fingerprint, scan_statistics, score
    from jaxneurons.pipeline.scan_report import write_scan_results
    from jaxneurons.results import ResultsDir

    t0 = time.time()
    work = os.path.abspath(FLAGS.workdir)
    print(f"[1/4] synthetic corpus: {FLAGS.num_speakers} speakers, {FLAGS.minutes:g} min (espeak-ng)", flush=True)
    manifest = generate_corpus(os.path.join(work, "corpus"), FLAGS.num_speakers, FLAGS.minutes, ["en"],
                               seed=FLAGS.seed, progress=False)
    utts = read_manifest(manifest)
    model_path = resolve_model_path(FLAGS.model)
    model = load_model(model_path)
    cfg = model.config
    print(f"[2/4] scan of {len(utts)} utterances with {model_path} ({cfg.family}, {cfg.num_hidden_layers} layers, "
          f"{cfg.intermediate_size} FFN neurons each)", flush=True)
    options = ScanOptions(properties=("phone_type", "gender", "pitch", "speaker", "aape:gender", "aape:speaker"),
                          ivector_components=32, ivector_dim=40,
                          # espeak voices differ in F0, not MFCCs: the pitch-aware i-vector options
                          ivector_pitch_weight=4.0, ivector_space="supervector")
    issues = DataIssues()
    plan = plan_scan(model, utts, options, issues)
    stats = scan_statistics(model, utts, plan, checkpoint_path=os.path.join(work, "scan.work", "stats.npz"),
                            fingerprint=scan_fingerprint(model_path, utts, options), issues=issues)
    scored = score(stats, plan)
    print("[3/4] ablation: zero each property's neurons vs a random same-size set; phone and gender probes",
          flush=True)
    sets = {f"{prop} neurons": np.any(np.stack(list(scored[prop]["groups"].values())), axis=0)
            for prop in ("phone_type", "gender", "pitch") if scored[prop]["groups"]}
    sets.update({f"gender: {g} neurons": m for g, m in scored["gender"]["groups"].items()})
    sets.update({f"AAPE gender: {g} neurons": m for g, m in scored["aape:gender"]["groups"].items()})
    empty = sorted(name for name, m in sets.items() if not m.any())
    sets = {name: m for name, m in sets.items() if m.any()}  # zeroing nothing measures nothing
    ablation = probe_ablation(model, utts, plan.inventory, sets)
    ablation["empty_sets"] = empty
    print("[4/4] report", flush=True)
    out_dir = os.path.join(work, "results")
    with ResultsDir(out_dir, "demo", flags={"model": model_path, "manifest": manifest,
                                              "num_speakers": FLAGS.num_speakers, "minutes": FLAGS.minutes,
                                              "seed": FLAGS.seed}) as res:
        res.run["data_issues"] = issues.as_dict()
        res.save_json("ablation", ablation)
        text = (f"Model: {model_path}. Corpus: {len(utts)} synthetic utterances ({FLAGS.num_speakers} speakers, "
                f"{FLAGS.minutes:g} min, seed {FLAGS.seed}). Data: {issues.summary()}.")
        summary, report = write_scan_results(res, plan, stats, scored, extra_text=text)
        _ablation_section(report, res, ablation)
        report.write(res.tmp)
    took = time.time() - t0
    print(f"done in {took:.0f} s")
    for prop, groups in summary["totals"].items():
        if groups:
            print(f"  {prop}: " + ", ".join(f"{g} {n}" for g, n in groups.items()))
    print(f"  ablation (test accuracy phone / gender): clean {_fmt(ablation['clean'])}; " + "; ".join(
        f"{k} {_fmt(v)}" for k, v in ablation.items() if isinstance(v, dict) and "phone_accuracy" in v
        and k != "clean"))
    print(f"report: {os.path.join(out_dir, 'report.html')} (and report.md)")
    print(f"explorer: {os.path.join(out_dir, 'explorer', 'index.html')} (or serve it: jaxneurons view {out_dir})")
    if not os.path.exists(os.path.join(out_dir, "report.html")):
        sys.exit("report missing")


def _fmt(m: dict) -> str:
    return f"{m['phone_accuracy']:.3f}/{m.get('gender_accuracy', float('nan')):.3f}"


def _ablation_section(report, res, ablation: dict) -> None:
    """Ablation table and figure, appended to the scan report."""
    import numpy as np

    from jaxneurons.report import grouped_bars

    names = [k for k, v in ablation.items() if isinstance(v, dict) and "phone_accuracy" in v]
    report.heading("Ablation")
    rows = [[n, ablation["sizes"].get(n.removesuffix(" (random)"), ""), f"{ablation[n]['phone_accuracy']:.3f}",
             f"{ablation[n].get('gender_accuracy', float('nan')):.3f}"] for n in names]
    report.text("Probes trained on the unablated model's last layer (speaker-disjoint split), evaluated on the "
                f"test speakers with the neurons zeroed. Chance: {ablation['chance']}. Split: {ablation['split']}. "
                f"Sets without neurons (not ablated): {', '.join(ablation['empty_sets']) or 'none'}.")
    report.table(["neurons zeroed", "count", "phone accuracy", "gender accuracy"], rows)
    fig = grouped_bars(res.file("figures/ablation.png"), names,
                       {"phone accuracy": [ablation[n]["phone_accuracy"] for n in names],
                        "gender accuracy": [ablation[n].get("gender_accuracy", np.nan) for n in names]},
                       "Probe accuracy after zeroing neurons", "test accuracy")
    report.figure(fig, "Probe accuracy after zeroing each neuron set and a random set of the same size")


if __name__ == "__main__":
    app.run(main)
