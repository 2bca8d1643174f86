"""Sequence metrics for phone probes: Levenshtein distance, frame-merge and CTC greedy decoding, PER.

Phone error rate (PER) = total edit distance (substitutions + deletions + insertions) between hypothesis
and reference phone sequences, divided by the total reference length, pooled over utterances (not a mean
of per-utterance rates, so long utterances weigh more, as in SUPERB / sclite).

Frame-merge decoding turns per-frame predictions into a phone sequence by collapsing runs of the same label.
Only labelled frames (label >= 0) are decoded; a gap of unlabelled frames (silence or unaligned audio, label
-1) ends a run, so ``a a _ a`` gives ``a a`` on both the reference and the hypothesis side. The reference
sequence is obtained from the frame labels with the same rule, which gives back the aligned phone segments
except that two adjacent segments with the same label (no gap between them) merge into one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def levenshtein(reference: Sequence | np.ndarray, hypothesis: Sequence | np.ndarray) -> int:
    """Edit distance (unit costs) between two sequences of hashable-comparable items.

    One numpy pass per reference item: the horizontal (insertion) chain of a DP row is a running minimum,
    ``d[j] = min_k<=j (t[k] + j - k)``, computed with ``np.minimum.accumulate``.
    """
    ref = np.asarray(reference)
    hyp = np.asarray(hypothesis)
    if ref.ndim != 1 or hyp.ndim != 1:
        raise ValueError(f"levenshtein expects 1-D sequences, got shapes {ref.shape} and {hyp.shape}")
    n, m = len(ref), len(hyp)
    if n == 0 or m == 0:
        return int(n + m)
    cols = np.arange(m + 1)
    row = cols.copy()  # distance from the empty reference prefix
    for i in range(1, n + 1):
        cost = (hyp != ref[i - 1]).astype(np.int64)
        t = np.empty(m + 1, dtype=np.int64)
        t[0] = i
        t[1:] = np.minimum(row[1:] + 1, row[:-1] + cost)  # deletion, substitution / match
        row = np.minimum.accumulate(t - cols) + cols  # insertions along the row
    return int(row[-1])


def frame_merge(frame_predictions: np.ndarray, frame_labels: np.ndarray | None = None) -> np.ndarray:
    """Collapse repeated frame predictions into a label sequence.

    Args:
      frame_predictions: (T,) int predictions of one utterance's valid frames.
      frame_labels: optional (T,) reference labels; frames with label < 0 are skipped and break runs. Without
        it, every frame is decoded and only predictions < 0 are treated as gaps.
    Returns: (U,) int64 merged sequence.
    """
    pred = np.asarray(frame_predictions).astype(np.int64)
    if pred.ndim != 1:
        raise ValueError(f"frame_merge expects a 1-D array of one utterance, got shape {pred.shape}")
    keep = pred >= 0 if frame_labels is None else np.asarray(frame_labels) >= 0
    if keep.shape != pred.shape:
        raise ValueError(f"frame labels shape {keep.shape} != predictions shape {pred.shape}")
    if not keep.any():
        return np.zeros(0, dtype=np.int64)
    prev_pred = np.concatenate([[-2], pred[:-1]])
    prev_keep = np.concatenate([[False], keep[:-1]])
    starts = keep & (~prev_keep | (pred != prev_pred))
    return pred[starts]


def ctc_greedy_decode(frame_predictions: np.ndarray, blank: int) -> np.ndarray:
    """Best-path CTC decoding: collapse repeats, then drop blanks. (T,) argmax ids -> (U,)."""
    pred = np.asarray(frame_predictions).astype(np.int64)
    if pred.ndim != 1:
        raise ValueError(f"ctc_greedy_decode expects a 1-D array, got shape {pred.shape}")
    if pred.size == 0:
        return pred
    starts = np.concatenate([[True], pred[1:] != pred[:-1]])
    out = pred[starts]
    return out[out != blank]


def phone_error_rate(references: Sequence[np.ndarray], hypotheses: Sequence[np.ndarray]) -> tuple[float, int, int]:
    """Pooled PER over utterances. Returns (per, total_edits, total_reference_length)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = sum(levenshtein(r, h) for r, h in zip(references, hypotheses, strict=True))
    total = int(sum(len(r) for r in references))
    return (edits / total if total else float("nan")), int(edits), total


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class; labels < 0 are ignored."""
    labels = np.asarray(labels).reshape(-1)
    predictions = np.asarray(predictions).reshape(-1)
    keep = labels >= 0
    idx = labels[keep].astype(np.int64) * num_classes + predictions[keep].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
