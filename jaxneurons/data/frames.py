"""From sample segments to model frames: frame counts, receptive fields, labels and middle frames.

Two frame geometries, both with a constant hop, so frame ``t`` covers samples
``[t * hop, t * hop + size)`` and its **centre sample** is ``t * hop + size // 2``:

* ``ConvFrontEnd(kernels, strides)``: a stack of unpadded 1-D convolutions (wav2vec 2.0 / HuBERT /
  WavLM / data2vec-audio). Frame count per layer ``floor((L - k) / s) + 1`` (HF's
  ``_get_feat_extract_output_lengths``; 0 when ``L < k``). ``hop = prod(strides)``, ``size = 1 +
  sum_l (k_l - 1) * prod_{m<l} s_m``: for ``WAV2VEC2_CONV`` (kernels 10,3,3,3,3,2,2, strides
  5,2,2,2,2,2,2) hop 320, size 400, centre ``320 t + 200``.
* ``FbankFrontEnd(hop, window, stack)``: Kaldi-style filterbank frames with ``snip_edges=True``
  (frame ``i`` covers ``[i * hop, i * hop + window)``, ``1 + (N - window) // hop`` frames) stacked ``stack``
  at a time (MelHuBERT: 10 ms hop, 25 ms window, 2 frames -> 20 ms). A stacked frame covers
  ``[t * stack * hop, (t * stack + stack - 1) * hop + window)``; an incomplete last group is dropped
  (``remainder="drop"``) or kept as a shorter frame (``remainder="pad"``, for models that zero-pad it).

Labels: a frame takes the label of the segment containing its centre sample, -1 when no segment does
(gaps, or a label in ``ignore``). Middle frames: for each segment ``[s, e)`` the frame whose centre is
nearest the segment midpoint ``(s + e - 1) / 2`` (the mean of its first and last sample), provided that
frame's centre lies inside the segment; on a tie (midpoint exactly between two centres) the earlier
frame wins. Every segment is considered, including the last one of an utterance.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConvFrontEnd:
    """Frame geometry of a stack of unpadded strided convolutions."""

    kernels: tuple[int, ...]
    strides: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.kernels) != len(self.strides) or not self.kernels:
            raise ValueError(f"kernels {self.kernels} and strides {self.strides} must be non-empty and equally long")
        if min(self.kernels) < 1 or min(self.strides) < 1:
            raise ValueError("kernel sizes and strides must be >= 1")

    @property
    def hop(self) -> int:
        return math.prod(self.strides)

    @property
    def size(self) -> int:
        size, jump = 1, 1
        for k, s in zip(self.kernels, self.strides, strict=True):
            size += (k - 1) * jump
            jump *= s
        return size

    def num_frames(self, num_samples: int) -> int:
        length = int(num_samples)
        for k, s in zip(self.kernels, self.strides, strict=True):
            if length < k:
                return 0
            length = (length - k) // s + 1
        return length


@dataclass(frozen=True)
class FbankFrontEnd:
    """Frame geometry of Kaldi fbank (snip_edges) frames stacked ``stack`` at a time."""

    hop: int = 160
    window: int = 400
    stack: int = 1
    remainder: str = "drop"  # "drop" | "pad"
    snip_edges: bool = True

    def __post_init__(self) -> None:
        if not self.snip_edges:
            raise NotImplementedError("only snip_edges=True framing is implemented (the Kaldi/torchaudio default)")
        if self.remainder not in ("drop", "pad"):
            raise ValueError(f"remainder must be 'drop' or 'pad', got {self.remainder!r}")
        if self.hop < 1 or self.window < 1 or self.stack < 1:
            raise ValueError("hop, window and stack must be >= 1")

    def num_base_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.window else 1 + (int(num_samples) - self.window) // self.hop

    def num_frames(self, num_samples: int) -> int:
        n = self.num_base_frames(num_samples)
        return n // self.stack if self.remainder == "drop" else -(-n // self.stack)

    @property
    def size(self) -> int:
        """Span of a complete stacked frame in samples."""
        return (self.stack - 1) * self.hop + self.window

    @property
    def frame_hop(self) -> int:
        return self.stack * self.hop


def _hop_size(geometry: ConvFrontEnd | FbankFrontEnd) -> tuple[int, int]:
    if isinstance(geometry, FbankFrontEnd):
        return geometry.frame_hop, geometry.size
    return geometry.hop, geometry.size


def frame_spans(geometry: ConvFrontEnd | FbankFrontEnd, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) in samples of each frame's receptive field, int64 arrays of length num_frames."""
    hop, size = _hop_size(geometry)
    starts = np.arange(num_frames, dtype=np.int64) * hop
    return starts, starts + size


def frame_centres(geometry: ConvFrontEnd | FbankFrontEnd, num_frames: int) -> np.ndarray:
    """Centre sample ``start + size // 2`` of each frame (int64)."""
    hop, size = _hop_size(geometry)
    return np.arange(num_frames, dtype=np.int64) * hop + size // 2


WAV2VEC2_CONV = ConvFrontEnd((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
MELHUBERT_FBANK = FbankFrontEnd(hop=160, window=400, stack=2)


class LabelVocab:
    """label -> id with a stable order (given, or sorted); saved with results as JSON."""

    def __init__(self, labels: Iterable[str], name: str = "") -> None:
        self.labels: list[str] = list(labels)
        self.name = name
        self._ids = {lab: i for i, lab in enumerate(self.labels)}
        if len(self._ids) != len(self.labels):
            raise ValueError(f"vocabulary {name!r} has duplicate labels")

    @classmethod
    def from_values(cls, values: Iterable[object], name: str = "") -> LabelVocab:
        """Sorted unique string values (None ignored): the same set gives the same ids everywhere."""
        return cls(sorted({str(v) for v in values if v is not None}), name)

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self._ids

    def id(self, label: str) -> int:
        try:
            return self._ids[label]
        except KeyError:
            raise KeyError(f"label {label!r} is not in vocabulary {self.name!r} ({len(self)} labels)") from None

    def label(self, i: int) -> str:
        return self.labels[i]

    def to_json(self) -> dict:
        return {"name": self.name, "labels": self.labels}

    @classmethod
    def from_json(cls, obj: Mapping) -> LabelVocab:
        return cls(obj["labels"], obj.get("name", ""))

    def save(self, path: str) -> None:
        """Write atomically as JSON."""
        d = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".vocab-", dir=d)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str) -> LabelVocab:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(json.load(f))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelVocab) and self.labels == other.labels

    def __repr__(self) -> str:
        return f"LabelVocab({self.name!r}, {len(self)} labels)"


def _segment_arrays(segments: Sequence[tuple[int, int, str]]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    starts = np.fromiter((s for s, _, _ in segments), dtype=np.int64, count=len(segments))
    ends = np.fromiter((e for _, e, _ in segments), dtype=np.int64, count=len(segments))
    if len(segments) and (np.any(ends <= starts) or np.any(starts[1:] < ends[:-1])):
        raise ValueError("segments must be non-empty, sorted and non-overlapping")
    return starts, ends, [lab for _, _, lab in segments]


def segment_index_per_frame(
    segments: Sequence[tuple[int, int, str]], geometry: ConvFrontEnd | FbankFrontEnd, num_frames: int
) -> np.ndarray:
    """Index of the segment containing each frame's centre sample, -1 where none does."""
    starts, ends, _ = _segment_arrays(segments)
    c = frame_centres(geometry, num_frames)
    idx = np.searchsorted(starts, c, side="right") - 1
    ok = idx >= 0
    ok[ok] = c[ok] < ends[idx[ok]]
    return np.where(ok, idx, -1)


def frame_labels(
    segments: Sequence[tuple[int, int, str]],
    vocab: LabelVocab,
    geometry: ConvFrontEnd | FbankFrontEnd,
    num_frames: int,
    ignore: Iterable[str] = (),
) -> np.ndarray:
    """int32 (num_frames,) label ids of the segment holding each frame's centre; -1 unlabelled/ignored."""
    ignore = set(ignore)
    seg_ids = np.array([-1 if lab in ignore else vocab.id(lab) for _, _, lab in segments] + [-1], dtype=np.int32)
    idx = segment_index_per_frame(segments, geometry, num_frames)
    return seg_ids[idx]  # idx == -1 picks the trailing -1


def middle_frame_mask(
    segments: Sequence[tuple[int, int, str]],
    geometry: ConvFrontEnd | FbankFrontEnd,
    num_frames: int,
    ignore: Iterable[str] = (),
) -> np.ndarray:
    """bool (num_frames,): the frame nearest each segment's midpoint, if its centre is in the segment."""
    ignore = set(ignore)
    starts, ends, labels = _segment_arrays(segments)
    mask = np.zeros(num_frames, dtype=bool)
    if num_frames == 0 or not len(segments):
        return mask
    c2 = 2 * frame_centres(geometry, num_frames)  # doubled, so midpoints stay integers
    mid2 = starts + ends - 1
    j = np.searchsorted(c2, mid2, side="left")  # first centre >= midpoint
    lo = np.clip(j - 1, 0, num_frames - 1)
    hi = np.clip(j, 0, num_frames - 1)
    best = np.where(np.abs(c2[lo] - mid2) <= np.abs(c2[hi] - mid2), lo, hi)  # tie -> earlier frame
    inside = (c2[best] >= 2 * starts) & (c2[best] < 2 * ends)
    keep = inside & np.array([lab not in ignore for lab in labels], dtype=bool)
    mask[best[keep]] = True
    return mask


def utterance_frame_labels(label_id: int, num_frames: int) -> np.ndarray:
    """An utterance-level label id broadcast to every frame (int32; -1 for unknown)."""
    return np.full(num_frames, label_id, dtype=np.int32)
