"""The README's main job: a neuron scan + report on the bundled default model and a fresh synthetic corpus.

    python -m jaxneurons.demo                      # writes runs/demo/, prints where the report is
    python -m jaxneurons.demo --manifest M.jsonl   # the same on your own corpus (flags: studies.common.DataConfig)

Steps: synthesise a held-out English corpus with espeak-ng (speakers the default model never heard);
one :func:`jaxneurons.scan` pass (the function ``jaxneurons scan`` calls) for property neurons (phone type,
gender, pitch; arXiv 2409.05910), label-free speaker neurons (i-vector x SSL clusters; arXiv 2506.21712) and
AAPE gender/speaker neurons (arXiv 2602.15307); a short ablation (zero each property's neurons vs a random
same-size set, measured by one :class:`~jaxneurons.probes.ProbeSuite`); one report. Rerunning reuses the corpus
and resumes an interrupted scan.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from absl import app, flags, logging

from jaxneurons.config_flags import config_from_flags, define_config_flags
from jaxneurons.studies.common import DataConfig

# The studies' corpus set-up (16 held-out speakers, 10 min, seed 12345; or --manifest), written under runs/demo.
DEMO_DATA = DataConfig(workdir="runs/demo")
DEMO_PROPERTIES = ("phone_type", "gender", "pitch", "speaker", "aape_gender", "aape_speaker")
define_config_flags(DataConfig, defaults=DEMO_DATA)
FLAGS = flags.FLAGS


def demo_options():
    """The scan settings of the demo: the studies' defaults, with the pitch-aware i-vector options (espeak
    voices differ in F0, not in their MFCCs: benchmarks/ivector.md)."""
    from jaxneurons.features.ivector import IVectorConfig
    from jaxneurons.pipeline.properties import SpeakerNeuronConfig
    from jaxneurons.pipeline.scan import ScanOptions

    return ScanOptions(properties=DEMO_PROPERTIES,
                       speaker=SpeakerNeuronConfig(ivector=IVectorConfig(pitch_weight=4.0, space="supervector")))


def ablation_probes(model, utts, result, *, seed: int = 0) -> dict:
    """Zero each property's neurons (and each gender / AAPE-gender group) vs a random same-size set outside all
    of them; phone and gender probes of one ProbeSuite trained on the unablated model."""
    from jaxneurons.probes import ProbeSuite, ProbeSuiteConfig

    sets = result.to_neuron_sets("phone_type", "gender", "pitch", "aape_gender")
    rows = {f"{p} neurons": [n for n in sets.names() if n.startswith(f"{p}/")]
            for p in ("phone_type", "gender", "pitch")}
    rows.update({f"{n} neurons": [n] for n in sets.names() if n.split("/")[0] in ("gender", "aape_gender")})
    suite = ProbeSuite(utts, ProbeSuiteConfig(tasks=("phone", "gender"), seed=seed))
    suite.fit(model)
    ablations, empty, sizes = {}, [], {}
    union = sets.selection()
    for k, (label, names) in enumerate(rows.items()):
        sizes[label] = sets.size(names)
        if not sizes[label]:
            empty.append(label)  # zeroing nothing measures nothing
            continue
        ablations[label] = sets.to_ablation(model, names, label=label)
        control = sets.random_control(names, seed + 1000 + k, exclude=union)
        ablations[f"{label} (random)"] = sets.selection_ablation(model, control, label=f"{label} (random)")
    out = suite.drops(model, ablations)
    out.update(sizes=sizes, empty_sets=empty,
               split={t: {"kind": kind, **split.sizes()} for t, (split, kind) in suite.splits.items()})
    return out


def main(_: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    from jaxneurons.pipeline.scan import scan
    from jaxneurons.results import ResultsDir
    from jaxneurons.studies.common import load_setup

    cfg = config_from_flags(DataConfig)
    t0 = time.time()
    cfg = dataclasses.replace(cfg, workdir=os.path.abspath(cfg.workdir or DEMO_DATA.workdir))
    work, out_dir = cfg.workdir, os.path.join(cfg.workdir, "results")
    print(f"[1/4] corpus: {cfg.manifest}" if cfg.manifest else
          f"[1/4] synthetic corpus: {cfg.num_speakers} speakers, {cfg.minutes:g} min (espeak-ng)", flush=True)
    setup = load_setup(cfg, out_dir)  # the corpus goes to WORKDIR/corpus (reused on rerun)
    model, utts, model_path = setup.model, setup.utts, setup.model_path
    mc = model.config
    print(f"[2/4] scan of {len(utts)} utterances with {model_path} ({mc.family}, {mc.num_hidden_layers} layers, "
          f"{mc.intermediate_size} FFN neurons each)", flush=True)
    issues = setup.issues
    result = scan(model, utts, options=demo_options(), work_dir=os.path.join(work, "scan.work"),
                  model_id=model_path, decoded=setup.decoded, issues=issues)
    print("[3/4] ablation: zero each property's neurons vs a random same-size set; phone and gender probes",
          flush=True)
    ablation = ablation_probes(model, utts, result)
    print("[4/4] report", flush=True)
    with ResultsDir(out_dir, "demo", flags=dataclasses.asdict(cfg)) as res:
        res.run["data_issues"] = issues.as_dict()
        res.save_json("ablation", ablation)
        text = f"{setup.description} Data issues: {issues.summary()}."
        summary, report = result.write(res, extra_text=text)
        _ablation_section(report, res, ablation)
        report.write(res.tmp)
    print(f"done in {time.time() - t0:.0f} s")
    for prop, groups in summary["totals"].items():
        if groups:
            print(f"  {prop}: " + ", ".join(f"{g} {n}" for g, n in groups.items()))
    print("  ablation (test accuracy phone / gender): " + "; ".join(
        f"{k} {_fmt(ablation[k])}" for k in _measured(ablation)))
    print(f"report: {os.path.join(out_dir, 'report.html')} (and report.md)")
    print(f"explorer: {os.path.join(out_dir, 'explorer', 'index.html')} (or serve it: jaxneurons view {out_dir})")
    if not os.path.exists(os.path.join(out_dir, "report.html")):
        sys.exit("report missing")


def _measured(ablation: dict) -> list[str]:
    """The clean model and every ablation (entries with probe results, not the sizes / split records)."""
    return [k for k, v in ablation.items()
            if isinstance(v, dict) and isinstance(v.get("phone"), dict) and "value" in v["phone"]]


def _fmt(m: dict) -> str:
    return f"{m['phone']['value']:.3f}/{m.get('gender', {}).get('value', float('nan')):.3f}"


def _ablation_section(report, res, ablation: dict) -> None:
    """Ablation table and figure, appended to the scan report."""
    import numpy as np

    from jaxneurons.report import grouped_bars

    names = _measured(ablation)
    clean = ablation["clean"]
    report.heading("Ablation")
    report.text("Probes (one ProbeSuite: speaker-disjoint split) trained on the unablated model's last layer, "
                "evaluated on the test speakers with the neurons zeroed; 95 % CIs by a bootstrap over test "
                f"utterances. Chance: phone {clean['phone']['chance']:.3f}, gender "
                f"{clean.get('gender', {}).get('chance', float('nan')):.3f}. Sets without neurons (not ablated): "
                f"{', '.join(ablation['empty_sets']) or 'none'}.")

    def cell(v: dict, task: str) -> str:
        t = v.get(task)
        return "" if t is None else f"{t['value']:.3f} [{t['ci95'][0]:.3f}, {t['ci95'][1]:.3f}]"

    rows = [[n, ablation["sizes"].get(n.removesuffix(" (random)"), ""), cell(ablation[n], "phone"),
             cell(ablation[n], "gender")] for n in names]
    report.table(["neurons zeroed", "count", "phone accuracy", "gender accuracy"], rows)
    fig = grouped_bars(res.file("figures/ablation.png"), names,
                       {"phone accuracy": [ablation[n]["phone"]["value"] for n in names],
                        "gender accuracy": [ablation[n].get("gender", {}).get("value", np.nan) for n in names]},
                       "Probe accuracy after zeroing neurons", "test accuracy")
    report.figure(fig, "Probe accuracy after zeroing each neuron set and a random set of the same size")


if __name__ == "__main__":
    from jaxneurons.errors import parse_flags, user_errors

    app.run(user_errors(main), flags_parser=parse_flags)  # bad input: one 'error:' line, exit 1
