"""Study 4 (attention heads across languages, arXiv 2409.03115) as a library: config, launcher, smoke run."""

from __future__ import annotations

import json

import pytest

from jaxneurons.results import load_results
from jaxneurons.studies.heads import HeadsStudyConfig, smoke_config
from tests.helpers import run_python


def test_study_defaults_type_heads_raw_and_use_the_one_probe_recipe():
    config = HeadsStudyConfig()
    assert config.languages == ("en", "tr")
    assert config.heads.normalize == "none" and config.heads.thresholds == {}  # largest raw metric
    assert config.heads.probe.tasks == ("phone",) and config.heads.probe.epochs == 50  # the ProbeSuite recipe
    assert smoke_config(seed=3).seed == 3 and smoke_config().smoke


def test_launcher_flags_come_from_the_config():
    proc = run_python(["-m", "experiments.heads_cross_language", "--help"], returncodes=(0, 1))  # absl: exits 1
    assert not proc.stderr.strip(), proc.stderr[-2000:]
    out = proc.stdout
    for flag in ("--heads_normalize: <zscore|minmax|none>", "--heads_min_globalness", "--heads_probe_epochs",
                 "--num_speakers", "--[no]smoke"):
        assert flag in out, flag
    assert "(default: 'none')" in out


@pytest.mark.slow
def test_cross_language_study_smoke(tmp_path):
    out = tmp_path / "xlang"
    run_python(["-m", "experiments.heads_cross_language", f"--out={out}", "--smoke"])
    comparison = json.loads((out / "comparison.json").read_text())
    assert set(comparison) == {"en", "tr"}
    for lang in ("en", "tr"):
        assert load_results(str(out / lang))["kind"] == "heads"
        assert comparison[lang]["split"] == "speaker_disjoint"
        lo, hi = comparison[lang]["baseline_ci95"]
        assert lo <= comparison[lang]["baseline_accuracy"] <= hi
        assert sum(comparison[lang]["type_counts"].values()) == 4  # tiny preset: 2 layers x 2 heads
    assert (out / "report.html").exists() and (out / "figures" / "type_fractions.png").exists()
