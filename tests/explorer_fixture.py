"""A tiny scan results directory with an explorer (shared by the structural and the browser tests)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from flax import nnx

from jaxneurons.data import BatchLoader, generate_corpus, read_manifest
from jaxneurons.models import SpeechConfig, build_model
from jaxneurons.models.checkpoint import save_model
from jaxneurons.pipeline.scan import ScanOptions, batch_labels, make_forward, plan_scan, score
from jaxneurons.pipeline.scan_report import write_scan_results
from jaxneurons.results import ResultsDir
from jaxneurons.stats import run_scan

TINY = SpeechConfig(family="melhubert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=100, num_mel_bins=16, num_conv_pos_embeddings=5,
                    num_conv_pos_embedding_groups=2)
EXAMPLES = 6


def build_results(root: str) -> dict:
    """Corpus + tiny model + one scan pass keeping top examples -> ``root/results`` (with its explorer)."""
    manifest = generate_corpus(os.path.join(root, "corpus"), num_speakers=2, minutes=0.3, languages=["en"],
                               seed=5, progress=False)
    utts = read_manifest(manifest)
    model = build_model(TINY, seed=0)
    model_dir = save_model(model, os.path.join(root, "model"))
    options = ScanOptions(properties=("phone_type", "gender", "aape_gender"), batch_size=3)
    plan = plan_scan(model, utts, options)
    plan.stats_config = dataclasses.replace(plan.stats_config, examples=EXAMPLES)
    loader = BatchLoader(utts, options.batch_size, lambda n: int(model.num_frames(n)), pad_multiple=16000)

    def batches(start):
        for batch in loader.iterate(0, start):
            labels, selections = batch_labels(plan, batch.utt_indices, int(model.num_frames(batch.audio.shape[1])))
            yield {"audio": batch.audio, "audio_lengths": batch.audio_lengths, "labels": labels,
                   "selections": selections, "utt_index": batch.utt_indices}

    graphdef, state = nnx.split(model)
    stats, _ = run_scan(make_forward(graphdef, plan), state, batches, plan.stats_config)
    scored = score(stats, plan)
    # A random model may find no property neurons: put a few in two sets (the explorer renders any set),
    # and leave every AAPE group empty (the overview must say so instead of drawing an empty heatmap).
    vowel = np.zeros((TINY.num_hidden_layers, TINY.intermediate_size), bool)
    vowel[0, [3, 17]] = vowel[1, 40] = True
    scored["phone_type"]["groups"]["vowel"] = vowel
    male = np.zeros_like(vowel)
    male[1, [40, 41]] = True
    scored["gender"]["groups"]["male"] = male
    scored["aape_gender"]["groups"] = {g: np.zeros_like(vowel) for g in scored["aape_gender"]["groups"]}
    out = os.path.join(root, "results")
    with ResultsDir(out, "scan", flags={"model": model_dir, "manifest": manifest}) as res:
        res.run["data_issues"] = {"counts": {"unreadable": 1}, "examples": {"unreadable": ["x.wav"]}}
        _, report = write_scan_results(res, plan, stats, scored)
        report.write(res.tmp)
    return {"out": out, "stats": stats, "plan": plan, "utts": utts, "model": model}
