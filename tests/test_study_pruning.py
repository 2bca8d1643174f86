"""Continued pre-training after pruning regenerates the targets the model was trained on (METHODS.md §1):
the stored TargetRecipe, not fresh k-means under the old head indices; a model without one needs an explicit
choice, and the study refuses to start without it."""

from __future__ import annotations

import numpy as np
import pytest

from jaxneurons.models import build_model
from jaxneurons.models.checkpoint import save_model
from jaxneurons.studies.pruning import PruningConfig, check_cpt_targets, continued_pretraining_data
from tests.helpers import tiny_melhubert

TINY = tiny_melhubert(num_clusters=8)


@pytest.fixture(scope="module")
def audio():
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    return [(0.3 * np.sin(2 * np.pi * (100 + 40 * k) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
            for k in range(4)]


def test_cpt_uses_the_models_stored_recipe(tmp_path, audio):
    from jaxneurons.train.targets import fit_target_recipe, save_recipe

    model = build_model(TINY, seed=0)
    model_dir = save_model(model, str(tmp_path / "model"))
    # The model's own targets: k-means of its layer-1 features (an iteration-2 recipe), seed 7.
    recipe, labels = fit_target_recipe(model, audio, 8, source="layer", feature_model=model, layer=1, seed=7)
    save_recipe(recipe, model_dir, feature_model=model)
    config = PruningConfig()
    check_cpt_targets(config, model_dir)  # a recipe is there: no error
    data = continued_pretraining_data(model, audio, config, recipe_dir=model_dir)
    assert data.num_clusters == 8 and not data.reinit_head
    for got, want in zip(data.targets, labels, strict=True):
        np.testing.assert_array_equal(got, want)
    # what the launchers did before: fresh MFCC k-means under the same head indices, another objective
    fresh = continued_pretraining_data(model, audio, PruningConfig(cpt_targets="fresh_mfcc_kmeans"))
    assert fresh.reinit_head
    assert any(not np.array_equal(a, b) for a, b in zip(fresh.targets, labels, strict=True))


def test_a_model_without_a_recipe_needs_an_explicit_choice(tmp_path, audio):
    model_dir = save_model(build_model(TINY, seed=1), str(tmp_path / "model"))
    with pytest.raises(ValueError, match="no stored target recipe.*--cpt_targets fresh_mfcc_kmeans"):
        check_cpt_targets(PruningConfig(), model_dir)
    check_cpt_targets(PruningConfig(cpt_targets="fresh_mfcc_kmeans"), model_dir)
    check_cpt_targets(PruningConfig(updates_per_step=0), model_dir)  # no continued pre-training at all


class _TextReport:
    """Collects what pruning_section writes (text and table rows), draws nothing."""

    def __init__(self):
        self.texts: list[str] = []

    def heading(self, _title):
        pass

    def text(self, text):
        self.texts.append(text)

    def table(self, *_args, **_kw):
        pass

    def figure(self, *_args, **_kw):
        pass


def test_pruning_report_does_not_describe_an_iterative_run_that_did_not_happen(tmp_path):
    import dataclasses

    from jaxneurons.studies.pruning import pruning_section

    class _Res:
        def file(self, name):
            return str(tmp_path / name.replace("/", "_"))

    unpruned = {"phone_accuracy": 0.5}
    row = {"density": 0.5, "achieved_density": 0.5, "metrics": {"phone_accuracy": 0.4}}
    for iterative in (False, True):
        curves = {"settings": dataclasses.asdict(PruningConfig(iterative=iterative)), "unpruned": unpruned,
                  "one_shot": {"L1": [row]}, "iterative": {}, "notes": [], "protected_neurons": 3}
        report = _TextReport()
        pruning_section(report, _Res(), curves, "the test neurons")
        described = "updates of masked-prediction continued pre-training" in report.texts[0]
        assert described == iterative, report.texts[0]


@pytest.mark.parametrize("mode", ["reidentify", "original"])
def test_iterative_protection_reidentifies_or_keeps_the_original_set(tmp_path, mode):
    """``iterative_protect``: 'reidentify' asks identify() again on every step's pruned model (the protected set
    can drift); 'original' protects the unpruned model's set at every step and never asks again."""
    from jaxneurons.pruning.scores import l1_scores
    from jaxneurons.studies.pruning import pruning_curves

    model = build_model(TINY, seed=0)
    widths = [TINY.ffn_width(i) for i in range(TINY.num_hidden_layers)]
    calls = []

    def identify(m, keep, layer):
        # protect the 2 highest-L1 neurons still alive (L1 pruning would keep them anyway) plus, on the unpruned
        # model only, the 3 lowest-L1 ones (L1 pruning takes those first)
        rows = [np.asarray(r, bool) for r in keep] if not isinstance(keep, np.ndarray) else list(np.asarray(keep, bool))
        calls.append(m is model)
        out = []
        for l, (w, r) in enumerate(zip(widths, rows, strict=True)):
            s = np.where(r[:w], np.asarray(l1_scores(m)[l])[:w], np.nan)
            p = np.zeros(w, bool)
            p[np.argsort(np.nan_to_num(s, nan=-np.inf))[-2:]] = True
            if m is model and r.all():
                p[np.argsort(np.nan_to_num(s, nan=np.inf))[:3]] = True
            out.append(p)
        return out

    config = PruningConfig(densities=(0.5,), neurons_per_step=4, num_steps=3, updates_per_step=0,
                           iterative_protect=mode)
    out = pruning_curves(model, [], lambda m: {"x": 0.0}, identify, config, str(tmp_path), log=lambda s: None)
    original = identify(model, [np.ones(w, bool) for w in widths], None)
    final = out["keep"]["iterative_protected_final"]
    kept_original = all(np.asarray(final[l])[:w][original[l]].all() for l, w in enumerate(widths))
    asked_pruned = not all(calls[:-1])  # identify() saw a pruned model (the last call above is ours)
    if mode == "original":
        assert kept_original and not asked_pruned
    else:
        assert asked_pruned and not kept_original  # the 3 low-L1 neurons stop being protected and are pruned
