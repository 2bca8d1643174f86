"""Streaming activation statistics: per-layer, per-neuron, per-condition counts and moments.

Typical use::

    config = uniform_config(12, 3072, [ConditionSpec("phone", 41, selection="mid")])
    stats, n = run_scan(forward_fn, params, batches, config, mesh=make_mesh(), checkpoint_path="scan.npz")
    P = stats.topk_counts("phone") / stats.frames("phone")[None, :, None]

With ``StatsConfig(..., examples=16)`` the same pass keeps every neuron's 16 max-activating frames
(``stats.examples()``; batches then carry ``utt_index``), see :mod:`jaxneurons.stats.examples`.
"""

from jaxneurons.stats.examples import merge_examples, reference_examples
from jaxneurons.stats.kernels import batch_partials, stack_activations, update_stats
from jaxneurons.stats.scan import (
    check_labels,
    load_checkpoint,
    make_stats_step,
    run_scan,
    save_checkpoint,
)
from jaxneurons.stats.spec import (
    DEFAULT_EXAMPLES,
    ConditionSpec,
    ContinuousSpec,
    StatsConfig,
    topk_size,
    uniform_config,
)
from jaxneurons.stats.state import NeuronStats, init_stats, merge_stats, stats_from_numpy, width_mask
from jaxneurons.stats.topk import topk_indices

__all__ = [
    "DEFAULT_EXAMPLES",
    "ConditionSpec",
    "ContinuousSpec",
    "NeuronStats",
    "StatsConfig",
    "batch_partials",
    "check_labels",
    "init_stats",
    "load_checkpoint",
    "make_stats_step",
    "merge_examples",
    "merge_stats",
    "reference_examples",
    "run_scan",
    "save_checkpoint",
    "stack_activations",
    "stats_from_numpy",
    "topk_indices",
    "topk_size",
    "uniform_config",
    "update_stats",
    "width_mask",
]
