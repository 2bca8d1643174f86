"""Structured FFN pruning: L1 scores, protected selection to an exact density, strategies (all / each),
one-shot and iterative schedules, and physical slimming of the weights."""

from jaxneurons.pruning.schedule import PruneStep, iterative_prune, protected_prune
from jaxneurons.pruning.scores import l1_scores
from jaxneurons.pruning.select import PruningError, keep_count, prune_to_density, select_keep
from jaxneurons.pruning.slim import keep_neuron_mask, slim_model, zero_pruned

__all__ = [
    "PruneStep",
    "PruningError",
    "iterative_prune",
    "keep_count",
    "keep_neuron_mask",
    "l1_scores",
    "protected_prune",
    "prune_to_density",
    "select_keep",
    "slim_model",
    "zero_pruned",
]
