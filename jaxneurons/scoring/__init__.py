"""Neuron scorers: arrays in, arrays or JSON-able neuron sets out; they never run the model or touch files."""

from jaxneurons.scoring.common import chance_level, mask_to_sets, real_neurons, sets_to_mask
from jaxneurons.scoring.correlation import pearson_from_stats, point_biserial, point_biserial_from_stats
from jaxneurons.scoring.entropy import class_coverage, lape_neurons
from jaxneurons.scoring.moefication import balanced_kmeans, cluster_distribution, concentration, moefy
from jaxneurons.scoring.overlap import overlap_matrix, overlap_matrix_null, overlap_null, set_overlap
from jaxneurons.scoring.property import activation_probability, cross_groups, cross_labels, property_neurons
from jaxneurons.scoring.selective import (
    DEFAULT_FRACTIONS,
    selective_from_stats,
    selective_prune_masks,
    selective_scores,
)
from jaxneurons.scoring.speaker import cluster_purity, kmeans, kmeans_assign, speaker_neurons

__all__ = [
    "balanced_kmeans",
    "cluster_distribution",
    "concentration",
    "moefy",
    "overlap_matrix",
    "overlap_matrix_null",
    "overlap_null",
    "set_overlap",
    "DEFAULT_FRACTIONS",
    "activation_probability",
    "chance_level",
    "class_coverage",
    "cluster_purity",
    "cross_groups",
    "cross_labels",
    "kmeans",
    "kmeans_assign",
    "lape_neurons",
    "mask_to_sets",
    "pearson_from_stats",
    "point_biserial",
    "point_biserial_from_stats",
    "property_neurons",
    "real_neurons",
    "selective_from_stats",
    "selective_prune_masks",
    "selective_scores",
    "sets_to_mask",
    "speaker_neurons",
]
