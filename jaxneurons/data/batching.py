"""Length-bucketed, padded, multi-process-consistent batches of audio and per-frame labels.

``BatchLoader`` sorts the manifest by length and cuts it into *global* batches of
``batch_size * process_count`` utterances; process ``p`` takes every ``process_count``-th utterance of
each global batch (so ``shard_manifest`` gives exactly its utterances: disjoint, every utterance once)
and pads to ``batch_size`` rows with dummy utterances (audio 0, length 0, no valid frames, labels -1,
index -1). Audio is zero-padded to a multiple of ``pad_multiple`` samples of the global batch's longest
utterance, so all processes see the same shapes at every step, every process runs the same number of
steps (collectives never hang), and JAX compiles only a few shapes. ``batch_size`` must be divisible by
``num_devices`` so a batch splits evenly over local devices (``Batch.split`` or sharding on axis 0).

Per-frame labels are requested as ``{name: FrameLabelSpec(source, vocab, frames, ignore)}``; sources:
``phones``, ``words``, ``phone_type`` (vowel / voiced / unvoiced from the utterance's phone set), or an
utterance-level label broadcast to all valid frames: ``speaker``, ``gender``, ``language``, ``utt_id``,
or a key of ``Utterance.labels`` (optionally written ``labels.<key>``). ``frames="mid"`` keeps only the
middle frame of each segment (``frames.middle_frame_mask``). Arrays are int32 ``(B, F)`` with -1 for
unlabelled, ignored, padded and dummy frames, ``F = num_frames(padded length)``. An utterance with no
value for an utterance-level source (e.g. gender null) gets -1 frames; a value outside the vocabulary
raises. Batches are deterministic (``shuffle`` permutes the global batch order with ``seed + epoch``);
audio for the next ``prefetch`` batches is loaded in a background thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from jaxneurons.data import phones as _phones
from jaxneurons.data.audio import AudioError, DataIssues, load_audio
from jaxneurons.data.frames import (
    ConvFrontEnd,
    FbankFrontEnd,
    LabelVocab,
    frame_labels,
    middle_frame_mask,
    utterance_frame_labels,
)
from jaxneurons.data.manifest import Utterance
from jaxneurons.errors import SettingError

_SEGMENT_SOURCES = ("phones", "words", "phone_type")
_UTT_FIELDS = ("speaker", "gender", "language", "utt_id")


@dataclass(frozen=True)
class FrameLabelSpec:
    """Which per-frame label array to build (see the module docstring)."""

    source: str
    vocab: LabelVocab
    frames: str = "all"  # "all" | "mid"
    ignore: tuple[str, ...] = ()


@dataclass
class Batch:
    audio: np.ndarray  # (B, T) float32, zero padded
    audio_lengths: np.ndarray  # (B,) int32, 0 for dummy rows
    frame_lengths: np.ndarray  # (B,) int32, 0 for dummy rows
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (B, F) int32, -1 = ignore
    utt_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # (B,), -1 dummy

    @property
    def valid(self) -> np.ndarray:
        return self.utt_indices >= 0

    def frame_mask(self, num_frames: int) -> np.ndarray:
        """(B, num_frames) bool: frame t of row b is real (t < frame_lengths[b])."""
        return np.arange(num_frames)[None, :] < self.frame_lengths[:, None]

    def split(self, n: int) -> list[Batch]:
        """n equal sub-batches along the batch axis (B must be divisible by n)."""
        b = self.audio.shape[0]
        if b % n:
            raise ValueError(f"batch of {b} rows does not split evenly over {n} devices")
        k = b // n
        parts = []
        for i in range(n):
            rows = slice(i * k, (i + 1) * k)
            parts.append(Batch(self.audio[rows], self.audio_lengths[rows], self.frame_lengths[rows],
                               {name: v[rows] for name, v in self.labels.items()}, self.utt_indices[rows]))
        return parts


def _length_order(utts: Sequence[Utterance]) -> list[int]:
    return sorted(range(len(utts)), key=lambda i: (utts[i].num_samples, i))


def shard_manifest(utts: Sequence[Utterance], process_index: int, process_count: int) -> list[int]:
    """Indices (ascending) of the utterances process ``process_index`` handles: length-sorted, strided.

    Disjoint over processes, every utterance exactly once, deterministic, and balanced in total length.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return sorted(_length_order(utts)[process_index::process_count])


class BatchLoader:
    """Iterate padded ``Batch``es over a manifest (see the module docstring)."""

    def __init__(
        self,
        utts: Sequence[Utterance],
        batch_size: int,
        num_frames: Callable[[int], int] | ConvFrontEnd | FbankFrontEnd,
        labels: Mapping[str, FrameLabelSpec] | None = None,
        pad_multiple: int = 16000,
        num_devices: int = 1,
        process_index: int = 0,
        process_count: int = 1,
        shuffle: bool = False,
        seed: int = 0,
        prefetch: int = 2,
        sample_rate: int = 16000,
        issues: DataIssues | None = None,
        load_fn: Callable[[Utterance], np.ndarray] | None = None,
    ) -> None:
        if batch_size < 1 or pad_multiple < 1 or num_devices < 1:
            raise SettingError("batch_size, pad_multiple and num_devices must be >= 1")
        if batch_size % num_devices:
            raise SettingError(f"batch_size {batch_size} is not divisible by num_devices {num_devices}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        self.utts = list(utts)
        self.batch_size = batch_size
        self.geometry = num_frames if isinstance(num_frames, ConvFrontEnd | FbankFrontEnd) else None
        self.num_frames_fn: Callable[[int], int] = (
            num_frames.num_frames if self.geometry is not None else num_frames  # type: ignore[union-attr]
        )
        self.labels = dict(labels or {})
        for name, spec in self.labels.items():
            self._check_spec(name, spec)
        self.pad_multiple = pad_multiple
        self.num_devices = num_devices
        self.process_index, self.process_count = process_index, process_count
        self.shuffle, self.seed, self.prefetch = shuffle, seed, prefetch
        self.sample_rate = sample_rate
        self.issues = issues if issues is not None else DataIssues()
        self._load = load_fn or (lambda u: load_audio(u.path, self.sample_rate, issues=self.issues))
        for u in self.utts:
            if u.sample_rate != sample_rate:
                raise ValueError(
                    f"utterance {u.utt_id}: manifest sample_rate {u.sample_rate} != loader's {sample_rate}"
                )
        order = _length_order(self.utts)
        g = batch_size * process_count
        self._plan: list[tuple[list[int], int]] = []
        for start in range(0, len(order), g):
            chunk = order[start : start + g]
            longest = max(self.utts[i].num_samples for i in chunk)
            padded = math.ceil(longest / pad_multiple) * pad_multiple
            mine = chunk[process_index::process_count]
            self._plan.append((mine + [-1] * (batch_size - len(mine)), padded))

    def _check_spec(self, name: str, spec: FrameLabelSpec) -> None:
        if spec.frames not in ("all", "mid"):
            raise ValueError(f"label {name!r}: frames must be 'all' or 'mid', got {spec.frames!r}")
        if spec.source in _SEGMENT_SOURCES:
            if self.geometry is None:
                raise ValueError(
                    f"label {name!r} from {spec.source!r} needs a frame geometry (ConvFrontEnd / FbankFrontEnd), "
                    "not a bare num_frames function"
                )
        elif spec.frames == "mid":
            raise ValueError(f"label {name!r}: frames='mid' needs a segment source {_SEGMENT_SOURCES}")

    def __len__(self) -> int:
        return len(self._plan)

    def plan(self, epoch: int = 0) -> list[tuple[list[int], int]]:
        """(utterance indices with -1 for dummies, padded length) of each batch of this process."""
        if not self.shuffle:
            return list(self._plan)
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self._plan))
        return [self._plan[i] for i in perm]

    def _segments(self, u: Utterance, source: str) -> list | None:
        if source == "phones":
            return None if u.phones is None else list(u.phones)
        if source == "words":
            return None if u.words is None else list(u.words)
        if u.phones is None:
            return None
        out = []
        for s, e, lab in u.phones:  # phone_type
            t = _phones.phone_type(lab, u.phone_set or (u.language or ""))
            if t is not None:
                out.append((s, e, t))
        return out

    def _utt_value(self, u: Utterance, source: str) -> object:
        if source in _UTT_FIELDS:
            return getattr(u, source)
        key = source[len("labels.") :] if source.startswith("labels.") else source
        return u.labels.get(key)

    def _row_labels(self, u: Utterance, spec: FrameLabelSpec, n_frames: int) -> np.ndarray:
        if spec.source in _SEGMENT_SOURCES:
            segs = self._segments(u, spec.source)
            if segs is None:
                return np.full(n_frames, -1, np.int32)
            try:
                ids = frame_labels(segs, spec.vocab, self.geometry, n_frames, spec.ignore)
            except KeyError as exc:
                raise KeyError(f"utterance {u.utt_id} ({u.path}): {exc.args[0]}") from None
            if spec.frames == "mid":
                ids = np.where(middle_frame_mask(segs, self.geometry, n_frames, spec.ignore), ids, -1)
            return ids.astype(np.int32)
        value = self._utt_value(u, spec.source)
        if value is None or str(value) in spec.ignore:
            return np.full(n_frames, -1, np.int32)
        try:
            return utterance_frame_labels(spec.vocab.id(str(value)), n_frames)
        except KeyError as exc:
            raise KeyError(f"utterance {u.utt_id} ({u.path}): {exc.args[0]}") from None

    def _build(self, indices: list[int], padded: int) -> Batch:
        b = len(indices)
        f_pad = self.num_frames_fn(padded)
        audio = np.zeros((b, padded), np.float32)
        audio_len = np.zeros(b, np.int32)
        frame_len = np.zeros(b, np.int32)
        labels = {name: np.full((b, f_pad), -1, np.int32) for name in self.labels}
        for row, i in enumerate(indices):
            if i < 0:
                continue
            u = self.utts[i]
            x = self._load(u)
            if x.shape[0] != u.num_samples:
                raise AudioError(u.path, "length_mismatch", f"loaded {x.shape[0]} samples but the manifest says "
                                 f"{u.num_samples} (utterance {u.utt_id}); the manifest is stale")
            audio[row, : x.shape[0]] = x
            audio_len[row] = x.shape[0]
            n = self.num_frames_fn(x.shape[0])
            if n > f_pad:
                raise ValueError(f"num_frames({x.shape[0]}) = {n} > num_frames(padded {padded}) = {f_pad}")
            frame_len[row] = n
            for name, spec in self.labels.items():
                labels[name][row, :n] = self._row_labels(u, spec, n)
        return Batch(audio, audio_len, frame_len, labels, np.asarray(indices, np.int32))

    def iterate(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` from batch number ``start`` on (a resumed scan loads nothing it skips)."""
        plan = self.plan(epoch)[start:]
        if self.prefetch <= 0:
            for indices, padded in plan:
                yield self._build(indices, padded)
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxneurons-prefetch") as pool:
            pending: list[Future] = []
            nxt = 0
            for _ in range(len(plan)):
                while nxt < len(plan) and len(pending) <= self.prefetch:
                    pending.append(pool.submit(self._build, *plan[nxt]))
                    nxt += 1
                yield pending.pop(0).result()

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate(0)


def dummy_like(batch: Batch) -> Batch:
    """An all-dummy batch of the same shapes (e.g. to keep a step count aligned)."""
    return replace(
        batch, audio=np.zeros_like(batch.audio), audio_lengths=np.zeros_like(batch.audio_lengths),
        frame_lengths=np.zeros_like(batch.frame_lengths),
        labels={k: np.full_like(v, -1) for k, v in batch.labels.items()},
        utt_indices=np.full_like(batch.utt_indices, -1),
    )


def padded_batches(
    audio: Sequence[np.ndarray], batch_size: int, pad_multiple: int = 8000
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """In-memory waveforms in length-sorted groups: (indices, (B, S) zero-padded float32, lengths (B,)).

    ``S`` is a multiple of ``pad_multiple`` so few shapes get compiled; for feature passes over decoded audio
    (F0, MFCC, layer features) where a :class:`BatchLoader` over a manifest is not needed.
    """
    order = np.argsort([len(a) for a in audio], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        padded = -(-max(len(audio[i]) for i in idx) // pad_multiple) * pad_multiple
        batch = np.zeros((len(idx), padded), np.float32)
        lengths = np.zeros((len(idx),), np.int32)
        for row, i in enumerate(idx):
            batch[row, : len(audio[i])] = audio[i]
            lengths[row] = len(audio[i])
        yield idx, batch, lengths
