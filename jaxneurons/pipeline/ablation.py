"""Ablation effects measured by probes (kept for its callers; new code uses :class:`jaxneurons.probes.ProbeSuite`
with :class:`jaxneurons.interventions.NeuronSets` directly).

Model editing as in arXiv 2409.05910: zeroing neuron ``i`` is ``h[..., i] = 0``. Every neuron set is compared
with a random control of the same size in every layer, drawn only outside the union of the sets (an
:class:`~jaxneurons.interventions.InterventionError` when a layer has too few other neurons, never a silent
overlap). The split, the training recipe, chance levels and confidence intervals are the ProbeSuite's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import nnx

from jaxneurons.data import Utterance
from jaxneurons.interventions import NeuronSets, random_controls


def random_control(mask: np.ndarray, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """A random set with the same number of neurons per layer as ``mask``, drawn outside ``mask`` and ``exclude``.

    Raises :class:`~jaxneurons.interventions.InterventionError` when a layer has too few eligible neurons.
    """
    mask = np.asarray(mask, bool)
    excluded = mask if exclude is None else mask | np.asarray(exclude, bool)
    return random_controls(mask, 1, seed=seed, exclude=excluded)[0]


def probe_ablation(
    model: nnx.Module,
    utts: Sequence[Utterance],
    inventory: Any,
    neuron_sets: Mapping[str, np.ndarray],
    *,
    batch_size: int = 8,
    seed: int = 0,
    max_epochs: int | None = None,
    tasks: Sequence[str] = ("phone", "gender"),
) -> dict[str, Any]:
    """Phone and gender probe results for the clean model, each zero-ablated set and its random control.

    ``neuron_sets``: name -> (L, D) bool. ``inventory`` is unused (the suite reads the manifest's phone set);
    kept for the callers' signature. Returns ``ProbeSuite.drops`` plus ``"sizes"`` and ``"split"``.
    """
    from jaxneurons.probes import ProbeSuite, ProbeSuiteConfig

    del inventory
    config = ProbeSuiteConfig(tasks=tuple(tasks), batch_size=batch_size, seed=seed,
                              **({"epochs": max_epochs} if max_epochs is not None else {}))
    suite = ProbeSuite(utts, config)
    suite.fit(model)
    cfg = model.config
    widths = tuple(cfg.ffn_width(i) for i in range(cfg.num_hidden_layers))
    sets = NeuronSets.from_selections({_set_name(k): v for k, v in neuron_sets.items()}, widths)
    union = sets.selection() if neuron_sets else None
    ablations = {}
    for k, (name, mask) in enumerate(neuron_sets.items()):
        ablations[name] = sets.to_ablation(model, _set_name(name), label=name)
        control = random_control(np.asarray(mask, bool), seed + 1000 + k, exclude=union)
        ablations[f"{name} (random)"] = NeuronSets.selection_ablation(model, control, label=f"{name} (random)")
    results = suite.drops(model, ablations)
    results["sizes"] = {name: int(np.asarray(m, bool).sum()) for name, m in neuron_sets.items()}
    results["split"] = {t: {"kind": kind, **split.sizes()} for t, (split, kind) in suite.splits.items()}
    return results


def _set_name(name: str) -> str:
    return name if "/" in name else f"set/{name}"
