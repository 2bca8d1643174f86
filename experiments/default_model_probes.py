"""Probe table of a model vs its random-init twin (the bundled default model's quality check).

    python experiments/default_model_probes.py --model default --out docs/default_model_probes.json

On a held-out synthetic corpus (speakers the model never heard), the :class:`jaxneurons.probes.ProbeSuite` (the
one split policy and training recipe of every study) on a SUPERB-style learned weighted sum of all layers:
frame phone accuracy and PER (frame-merge), utterance-level gender (speaker-disjoint) and speaker
identification (within-speaker, utterance-disjoint), each with a 95 % CI over test utterances and its chance
level. The same architecture with random weights is probed identically. Flags: DefaultModelProbesConfig.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
from absl import app, flags, logging

from jaxneurons.config_flags import config_from_flags, define_config_flags, field_help
from jaxneurons.probes import ProbeSuite, ProbeSuiteConfig
from jaxneurons.studies.common import DataConfig, corpus_summary, load_setup


@dataclasses.dataclass(frozen=True)
class DefaultModelProbesConfig:
    """The quality table of docs/default_model.md: a held-out synthetic corpus (32 speakers: about 90 test
    utterances for speaker ID; seed 777, the default model was trained on seed 1), the ProbeSuite on all layers."""

    data: DataConfig = DataConfig(workdir="runs/default_model_probes", num_speakers=32, minutes=24.0,
                                  corpus_seed=777)
    curve: str = field_help("", "PNG file for the model's training curve (from its metrics.jsonl), if any.")
    curve_window: int = field_help(50, "Steps of the running mean drawn in the training curve.")
    probe: ProbeSuiteConfig = ProbeSuiteConfig(tasks=("phone", "gender", "speaker"), layer="all")


def probe_model(model, utts, config: ProbeSuiteConfig) -> dict:
    """The suite's clean results (value, 95 % CI, chance per task), trained and tested on ``model``."""
    suite = ProbeSuite(utts, config)
    results = suite.fit(model)
    out = {"results": results, "split": {t: {"kind": k, **s.sizes()} for t, (s, k) in suite.splits.items()}}
    if "phone" in suite.probes:
        out["phone_layer_weights"] = np.asarray(suite.probes["phone"].layer_weights).round(3).tolist()
    return out


def plot_training_curve(model_dir: str, path: str, window: int) -> str:
    """Running means of loss and masked accuracy over the model's metrics.jsonl, one line per iteration."""
    import json

    from jaxneurons.report import training_curve

    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    panels: dict[str, dict] = {"masked-frame cross-entropy (nats)": {}, "masked-frame accuracy": {}}
    offset = 0
    for it in sorted({r.get("iteration", 1) for r in rows}):
        part = [r for r in rows if r.get("iteration", 1) == it]
        steps = np.array([r["step"] for r in part]) + offset
        for panel, key in zip(panels.values(), ("loss", "masked_accuracy"), strict=True):
            v = np.convolve([r[key] for r in part], np.ones(window) / window, mode="valid")
            panel[f"iteration {it}"] = (steps[window - 1:], v)
        offset = int(steps[-1])
    return training_curve(path, panels, f"training curve ({window}-step running mean)",
                          xlabel="optimizer step (both iterations)")


def _cell(r: dict, key: str = "value", chance: str = "chance") -> str:
    return f"{r[key]:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] ({r[chance]:.3f})" if key == "value" else \
        f"{r[key]:.3f} ({r[chance]:.3f})"


def main(_: list[str]) -> None:
    logging.set_verbosity(logging.WARNING)
    from jaxneurons.models import build_model
    from jaxneurons.results import write_json

    # The corpus flags have no prefix (--model, --workdir, --num_speakers ...), as in the study launchers.
    cfg = config_from_flags(DefaultModelProbesConfig, skip=("data",), data=config_from_flags(DataConfig))
    t0 = time.time()
    setup = load_setup(cfg.data, FLAGS.out or cfg.data.workdir)
    utts, path, trained = setup.utts, setup.model_path, setup.model
    rows = {"trained": probe_model(trained, utts, cfg.probe),
            "random init": probe_model(build_model(trained.config, seed=0), utts, cfg.probe)}
    info = corpus_summary(utts)
    table = {"model": cfg.data.model if cfg.data.model == "default" else path,
             "corpus": {"manifest": setup.manifest, "utterances": len(utts), "speakers": info["speakers"],
                        "minutes": info["minutes"], "seed": cfg.data.corpus_seed},
             "config": dataclasses.asdict(cfg),
             "command": "python experiments/default_model_probes.py " + " ".join(sys.argv[1:]),
             "wall_seconds": round(time.time() - t0), "results": rows}
    tasks = cfg.probe.tasks
    lines = ["| model | " + " | ".join(f"{t} acc. [95 % CI] (chance)" for t in tasks)
             + (" | PER (chance) |" if "phone" in tasks else " |"),
             "|---|" + "---|" * (len(tasks) + ("phone" in tasks))]
    for name, r in rows.items():
        res = r["results"]
        cells = [_cell(res[t]) for t in tasks] + ([_cell(res["phone"], "per", "per_chance")] if "phone" in tasks
                                                  else [])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table["markdown"] = "\n".join(lines)
    print(table["markdown"])
    if cfg.curve:
        table["curve"] = plot_training_curve(path, cfg.curve, cfg.curve_window)
    if FLAGS.out:
        write_json(FLAGS.out, table)


FLAGS = flags.FLAGS

if __name__ == "__main__":
    flags.DEFINE_string("out", None, "JSON file for the table (also printed as Markdown).")
    define_config_flags(DefaultModelProbesConfig, skip=("data",))
    define_config_flags(DataConfig, defaults=DefaultModelProbesConfig().data)
    from jaxneurons.errors import parse_flags, user_errors

    app.run(user_errors(main), flags_parser=parse_flags)  # bad input: one 'error:' line, exit 1
