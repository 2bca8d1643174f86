"""Attention-head metrics (diagonality, verticality, globalness), streaming statistics, typing.

Study 4 (arXiv 2409.03115, after Yang, Liu & Lee 2020). Figures live in
``jaxneurons.heads.plots`` (imported on demand, it pulls in matplotlib).
"""

from jaxneurons.heads.accumulate import (
    HeadStats,
    HeadTopUtterances,
    finalize_head_stats,
    init_head_stats,
    init_head_top,
    merge_head_stats,
    merge_head_top,
    reference_head_top,
    update_head_stats,
    update_head_top,
)
from jaxneurons.heads.classify import (
    HEAD_TYPES,
    UNTYPED,
    head_types,
    normalize_metrics,
    type_head_mask,
    type_masks,
)
from jaxneurons.heads.metrics import (
    DIAGONALITY_KINDS,
    GLOBALNESS_KINDS,
    METRIC_NAMES,
    VERTICALITY_KINDS,
    attention_map_metrics,
    head_metrics,
)

__all__ = [
    "DIAGONALITY_KINDS",
    "GLOBALNESS_KINDS",
    "HEAD_TYPES",
    "METRIC_NAMES",
    "UNTYPED",
    "VERTICALITY_KINDS",
    "HeadStats",
    "HeadTopUtterances",
    "attention_map_metrics",
    "finalize_head_stats",
    "head_metrics",
    "head_types",
    "init_head_stats",
    "init_head_top",
    "merge_head_stats",
    "merge_head_top",
    "normalize_metrics",
    "reference_head_top",
    "type_head_mask",
    "type_masks",
    "update_head_stats",
    "update_head_top",
]
