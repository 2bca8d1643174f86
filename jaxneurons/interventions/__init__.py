"""Neuron and head ablations: sets -> masks (zero / mean ablation, head removal, random controls), and
evaluation of many masks with one compiled function."""

from jaxneurons.interventions.evaluate import evaluate_masks, make_mask_evaluator, model_metric_fn
from jaxneurons.interventions.masks import (
    InterventionError,
    head_mask_keep_only,
    head_mask_remove,
    head_selection,
    indices_from_selection,
    mean_ablation,
    protected_from_json,
    random_controls,
    selection_from_indices,
    selections_from_json,
    union,
    zero_ablation,
)
from jaxneurons.interventions.sets import Ablation, NeuronSets

__all__ = [
    "Ablation",
    "InterventionError",
    "NeuronSets",
    "evaluate_masks",
    "head_mask_keep_only",
    "head_mask_remove",
    "head_selection",
    "indices_from_selection",
    "make_mask_evaluator",
    "mean_ablation",
    "model_metric_fn",
    "protected_from_json",
    "random_controls",
    "selection_from_indices",
    "selections_from_json",
    "union",
    "zero_ablation",
]
