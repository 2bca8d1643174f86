"""The named probes of the studies, as thin defaults over :func:`train_probe`.

Which split each needs (see :mod:`jaxneurons.probes.splits`): phones, gender and pitch are trained and tested
on disjoint speakers (``speaker_disjoint_split``; gender stratified by gender); speaker identification on
disjoint utterances of the same speakers (``within_speaker_split``).

Extra keyword arguments (``learning_rate``, ``weight_decay``, ``batch_size``, ``max_epochs``, ``patience``,
``seed``, ...) go to :func:`train_probe`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxneurons.probes.probe import Probe, Source, train_probe


def train_phone_probe(
    train: Source,
    dev: Source,
    *,
    label_key: str = "phone",
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    hidden: int = 0,
    ctc: bool = False,
    **kwargs: Any,
) -> Probe:
    """Frame-level phone classification (frame accuracy, per-class accuracy, PER by frame merging).

    ``ctc=True`` trains a CTC probe (blank added) on the merged reference phone sequences instead, and PER
    comes from greedy decoding; it has no frame accuracy.
    """
    task = "ctc" if ctc else "frame_classification"
    return train_probe(task, train, dev, label_key=label_key, class_names=class_names, num_classes=num_classes,
                       hidden=hidden, per=not ctc, **kwargs)


def train_speaker_probe(train: Source, dev: Source, *, label_key: str = "speaker", **kwargs: Any) -> Probe:
    """Speaker identification: mean over valid frames, linear classifier; accuracy."""
    kwargs.setdefault("max_epochs", 200)
    kwargs.setdefault("patience", 10)
    return train_probe("utterance_classification", train, dev, label_key=label_key, **kwargs)


def train_gender_probe(
    train: Source, dev: Source, *, label_key: str = "gender", level: str = "utterance", **kwargs: Any
) -> Probe:
    """Gender classification per utterance (pooled) or per frame (utterance label on every frame)."""
    if level not in ("utterance", "frame"):
        raise ValueError(f"level must be 'utterance' or 'frame', got {level!r}")
    task = "utterance_classification" if level == "utterance" else "frame_classification"
    if level == "utterance":
        kwargs.setdefault("max_epochs", 200)
        kwargs.setdefault("patience", 10)
    return train_probe(task, train, dev, label_key=label_key, **kwargs)


def train_pitch_probe(train: Source, dev: Source, *, label_key: str = "f0", log: bool = True, **kwargs: Any) -> Probe:
    """Frame-level F0 regression on voiced frames (labels in Hz, 0 / NaN = unvoiced); MSE of log-F0 by default."""
    return train_probe("frame_regression", train, dev, label_key=label_key, log_target=log, **kwargs)


def train_frame_classifier(train: Source, dev: Source, *, label_key: str, per: bool = False, **kwargs: Any) -> Probe:
    """Any per-frame label (AAPE: per-class accuracy drop under ablation)."""
    return train_probe("frame_classification", train, dev, label_key=label_key, per=per, **kwargs)


def train_utterance_classifier(train: Source, dev: Source, *, label_key: str, **kwargs: Any) -> Probe:
    """Any per-utterance label, from mean-pooled frames."""
    kwargs.setdefault("max_epochs", 200)
    kwargs.setdefault("patience", 10)
    return train_probe("utterance_classification", train, dev, label_key=label_key, **kwargs)
