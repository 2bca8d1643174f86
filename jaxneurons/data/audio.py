"""Audio loading with an explicit policy for bad input, and a counter of what happened to each file.

``load_audio(path, target_sr=16000, min_samples=0, issues=None)`` returns float32 mono samples in
[-1, 1] (float files are returned as stored). Every case below is either an error (``AudioError``,
naming the file) or a logged, counted change; nothing is skipped silently:

==========================  ======================================================================
input                       decision (``DataIssues`` kind)
==========================  ======================================================================
missing file                error (``missing``)
empty file (0 bytes)        error (``empty``)
not audio / corrupt header  error (``unreadable``)
undecodable audio data      error (``corrupt``), e.g. a FLAC stream that loses sync
truncated data              error (``truncated``): fewer frames decoded than the header announces,
                            or (WAV) fewer data bytes than the RIFF header announces
0 frames                    error (``empty``)
NaN or inf samples          error (``non_finite``)
shorter than min_samples    error (``too_short``), measured after resampling
more than one channel       mean of the channels (``downmixed``)
other sample rate           ``scipy.signal.resample_poly`` to target_sr (``resampled``)
clipped samples             loaded unchanged, counted (``clipped``): samples with
                            ``|x| >= 32767/32768`` (int16 full scale)
==========================  ======================================================================

A scan over many files passes one ``DataIssues`` to every call (``scan_audio`` does this): errors are
recorded there before being raised, so the caller can continue and report how many files got each
decision (``issues.counts``) with example paths (``issues.examples``) and every file (``issues.files``).
With a ``DataIssues`` the per-file changes (clipped, downmixed, resampled) are logged at DEBUG only and the
collector's owner logs one line per kind at the end (``DataIssues.log_summary``), so a real corpus where
every file has full-scale samples does not print one warning per file; without one (a single call) they are
logged at WARNING (clipped, resampled) or INFO (downmixed).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Iterable

import numpy as np
import soundfile as sf
from scipy.signal import firwin, resample_poly

log = logging.getLogger("jaxneurons.data.audio")

CLIP_LEVEL = 32767 / 32768


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str, kind: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.kind = kind


class DataIssues:
    """Thread-safe record of data decisions: kind -> count, the first ``max_examples`` paths, every file.

    Per-file decisions are logged at DEBUG as they happen; whoever owns the collector reports the aggregate
    once (:meth:`log_summary`: one line per kind, :meth:`summary` for a report) and stores the per-file
    detail with the results (:meth:`as_dict` -> ``run.json``). ``max_files`` bounds the per-file list of one
    kind (memory on huge corpora); the counts stay exact.
    """

    def __init__(self, max_examples: int = 5, max_files: int = 100_000) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.files: dict[str, list[str]] = {}
        self.max_examples = max_examples
        self.max_files = max_files
        self._lock = threading.Lock()

    @staticmethod
    def _entry(path: str, detail: str) -> str:
        # Error messages already start with the file's path: do not write it twice.
        if not detail:
            return path
        return detail if detail.startswith(f"{path}:") else f"{path}: {detail}"

    def add(self, kind: str, path: str, detail: str = "", n: int = 1) -> None:
        entry = self._entry(os.fspath(path), detail)
        log.debug("data decision %s: %s", kind, entry)
        with self._lock:
            self.counts[kind] += n
            ex = self.examples.setdefault(kind, [])
            if len(ex) < self.max_examples:
                ex.append(entry)
            files = self.files.setdefault(kind, [])
            if len(files) < self.max_files:
                files.append(entry)

    def merge(self, other: DataIssues) -> None:
        for kind, n in other.counts.items():
            with self._lock:
                self.counts[kind] += n
                ex = self.examples.setdefault(kind, [])
                ex.extend(other.examples.get(kind, [])[: max(0, self.max_examples - len(ex))])
                files = self.files.setdefault(kind, [])
                files.extend(other.files.get(kind, [])[: max(0, self.max_files - len(files))])

    def as_dict(self) -> dict:
        """JSON-able record for a results directory: counts, examples and every file of each kind."""
        return {"counts": dict(sorted(self.counts.items())), "examples": dict(sorted(self.examples.items())),
                "files": dict(sorted(self.files.items()))}

    def summary(self) -> str:
        """One line for a report: ``kind: count, ...``."""
        if not self.counts:
            return "no data issues"
        return ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items()))

    def summary_lines(self) -> list[str]:
        """One line per kind with its count and first example."""
        return [f"{kind}: {n} file(s), e.g. {self.examples[kind][0]}" if self.examples.get(kind) else f"{kind}: {n}"
                for kind, n in sorted(self.counts.items())]

    def log_summary(self, logger: logging.Logger | None = None, level: int = logging.WARNING) -> None:
        """Log :meth:`summary_lines`, one line per kind (the end of a scan or of a corpus read)."""
        for line in self.summary_lines():
            (logger or log).log(level, "data: %s", line)

    def __repr__(self) -> str:
        return f"DataIssues({self.summary()})"


@functools.lru_cache(maxsize=16)
def _filter(up: int, down: int) -> np.ndarray:
    # The same filter resample_poly designs by default (Kaiser beta 5, half length 10 * max rate);
    # cached because designing it costs more than filtering a short utterance.
    max_rate = max(up, down)
    h = firwin(2 * 10 * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0))
    h.setflags(write=False)
    return h


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling along axis 0 (``resample_poly`` with its default filter, cached).

    The output has ``ceil(len(x) * target_sr / orig_sr)`` samples; the filter is linear-phase and
    centred, so sample position p maps to ``p * target_sr / orig_sr``.
    """
    if orig_sr == target_sr:
        return x
    g = math.gcd(int(orig_sr), int(target_sr))
    up, down = int(target_sr) // g, int(orig_sr) // g
    return resample_poly(x, up, down, axis=0, window=np.array(_filter(up, down), dtype=x.dtype))


def resampled_length(num_samples: int, orig_sr: int, target_sr: int) -> int:
    """Length ``resample`` (and so ``load_audio``) returns for ``num_samples`` at ``orig_sr``."""
    return -(-num_samples * int(target_sr) // int(orig_sr))


def _wav_declared_bytes(path: str) -> tuple[int, int] | None:
    """(data bytes the RIFF header announces, bytes present) for WAV files, else None.

    libsndfile quietly shortens a truncated WAV to the bytes present, so the header is checked here.
    """
    import struct

    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(f.fileno()).st_size
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, n = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                if n in (0, 0xFFFFFFFF):  # streaming writers leave the size unset
                    return None
                return n, size - pos - 8
            pos += 8 + n + (n & 1)
    return None


def _decision(issues: DataIssues | None, kind: str, path: str, detail: str, level: int = logging.WARNING) -> None:
    """A change made to a file's audio: counted in ``issues`` (which logs it at DEBUG; its owner reports the
    aggregate), or logged at ``level`` when nobody collects (a single ``load_audio`` call)."""
    if issues is not None:
        issues.add(kind, path, detail)
    else:
        log.log(level, "%s: %s", path, detail)


def _fail(issues: DataIssues | None, path: str, kind: str, detail: str) -> AudioError:
    if issues is not None:
        issues.add(kind, path, detail)
    return AudioError(path, kind, detail)


def _existing_file(path: str, issues: DataIssues | None) -> str:
    """``path`` as a string, or the error for a missing or 0-byte file (counted in ``issues``)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise _fail(issues, path, "missing", "file does not exist")
    if os.path.getsize(path) == 0:
        raise _fail(issues, path, "empty", "file is empty (0 bytes)")
    return path


def audio_info(path: str, target_sr: int = 16000, issues: DataIssues | None = None) -> tuple[int, int, int]:
    """(num_samples at target_sr, native sample rate, channels) from the header, without decoding."""
    path = _existing_file(path, issues)
    try:
        info = sf.info(path)
    except Exception as exc:  # libsndfile's error types vary by version
        raise _fail(issues, path, "unreadable", f"not a readable audio file ({exc})") from None
    if info.frames <= 0:
        raise _fail(issues, path, "empty", "audio has no samples")
    return resampled_length(info.frames, info.samplerate, target_sr), info.samplerate, info.channels


def load_audio(
    path: str, target_sr: int = 16000, min_samples: int = 0, issues: DataIssues | None = None
) -> np.ndarray:
    """Load ``path`` as float32 mono at ``target_sr``; see the module docstring for the policy."""
    path = _existing_file(path, issues)
    try:
        f = sf.SoundFile(path)
    except Exception as exc:  # libsndfile's error types vary by version
        raise _fail(issues, path, "unreadable", f"not a readable audio file ({exc})") from None
    try:
        with f:
            sr, channels, frames = f.samplerate, f.channels, f.frames
            data = f.read(dtype="float32", always_2d=True)
    except Exception as exc:
        raise _fail(issues, path, "corrupt", f"audio data cannot be decoded ({exc})") from None
    if data.shape[0] == 0:
        raise _fail(issues, path, "empty", "audio has no samples")
    declared = _wav_declared_bytes(path)
    if data.shape[0] < frames or (declared is not None and declared[0] > declared[1]):
        detail = (f"decoded {data.shape[0]} of {frames} frames" if data.shape[0] < frames else
                  f"header announces {declared[0]} data bytes, {declared[1]} present")
        raise _fail(issues, path, "truncated", f"{detail}; file is truncated")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise _fail(issues, path, "non_finite", f"{bad} NaN/inf samples")
    clipped = int((np.abs(data) >= CLIP_LEVEL).sum())
    if clipped:
        _decision(issues, "clipped", path, f"{clipped} clipped samples (|x| >= {CLIP_LEVEL:.5f}); loaded unchanged")
    if channels > 1:
        _decision(issues, "downmixed", path, f"{channels} channels, downmixed to mono by averaging", logging.INFO)
        x = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    else:
        x = data[:, 0]
    if sr != target_sr:
        _decision(issues, "resampled", path, f"sample rate {sr} Hz, resampled to {target_sr} Hz (resample_poly)")
        x = resample(x.astype(np.float64), sr, target_sr).astype(np.float32)
    if x.shape[0] < min_samples:
        raise _fail(
            issues, path, "too_short", f"{x.shape[0]} samples at {target_sr} Hz, the front end needs >= {min_samples}"
        )
    return np.ascontiguousarray(x, dtype=np.float32)


def scan_audio(
    paths: Iterable[str], target_sr: int = 16000, min_samples: int = 0
) -> tuple[list[bool], DataIssues]:
    """Try to load every file; returns (ok per file, issues). Errors are counted, never hidden."""
    issues = DataIssues()
    ok = []
    for p in paths:
        try:
            load_audio(p, target_sr, min_samples, issues)
            ok.append(True)
        except AudioError:
            ok.append(False)
        else:
            issues.add("ok", p)
    return ok, issues
