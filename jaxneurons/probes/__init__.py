"""Downstream probes on frozen features: extraction, splits, training, evaluation with chance baselines."""

from jaxneurons.probes.features import (
    FeatureStream,
    FrameFeatures,
    UtteranceFeatures,
    extract_features,
    resolve_layers,
)
from jaxneurons.probes.metrics import (
    confusion_matrix,
    ctc_greedy_decode,
    frame_merge,
    levenshtein,
    phone_error_rate,
)
from jaxneurons.probes.probe import (
    TASKS,
    Probe,
    ProbeConfig,
    evaluate,
    load_probe,
    predict,
    save_probe,
    train_probe,
)
from jaxneurons.probes.splits import Split, SplitError, speaker_disjoint_split, within_speaker_split
from jaxneurons.probes.suite import ProbeSuite, ProbeSuiteConfig, bootstrap_ci
from jaxneurons.probes.tasks import (
    train_frame_classifier,
    train_gender_probe,
    train_phone_probe,
    train_pitch_probe,
    train_speaker_probe,
    train_utterance_classifier,
)

__all__ = [
    "TASKS",
    "FeatureStream",
    "FrameFeatures",
    "Probe",
    "ProbeConfig",
    "ProbeSuite",
    "ProbeSuiteConfig",
    "Split",
    "SplitError",
    "UtteranceFeatures",
    "bootstrap_ci",
    "confusion_matrix",
    "ctc_greedy_decode",
    "evaluate",
    "extract_features",
    "frame_merge",
    "levenshtein",
    "load_probe",
    "phone_error_rate",
    "predict",
    "resolve_layers",
    "save_probe",
    "speaker_disjoint_split",
    "train_frame_classifier",
    "train_gender_probe",
    "train_phone_probe",
    "train_pitch_probe",
    "train_speaker_probe",
    "train_utterance_classifier",
    "train_probe",
    "within_speaker_split",
]
