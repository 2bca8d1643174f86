"""espeak-ng through the pinned ``espeakng-loader`` wheel, driven by ctypes in a worker process.

``EspeakWorker`` starts ``_espeak_worker.py`` as a separate Python process (stdlib only, so it starts in
tens of milliseconds and forks cheaply). The worker initialises libespeak-ng once with
``AUDIO_OUTPUT_SYNCHRONOUS`` and ``espeakINITIALIZE_PHONEME_EVENTS`` and forks a fresh child per
utterance, because libespeak-ng carries synthesis state across calls (see the worker's docstring): with
the fork every utterance is a pure function of its request. Requests may be pipelined: ``submit`` sends,
``receive`` returns replies in submission order, so the caller resamples and writes utterance k while
the worker synthesises k + 1.

Only plain espeak voices and variants are used, never MBROLA voices (their phoneme event timings are off
by 10-60 ms).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections import deque
from dataclasses import dataclass

import numpy as np

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_espeak_worker.py")


@dataclass(frozen=True)
class SynthRequest:
    """One utterance to synthesise. ``voice`` is an espeak voice name with an optional ``+variant``."""

    text: str
    voice: str
    rate: int = 175  # words per minute
    volume: int = 100  # 0..200, espeak's amplitude
    pitch: int = 50  # 0..100, espeak's base-pitch adjustment
    range: int = 50  # 0..100, espeak's pitch-range adjustment
    seed: int = 0  # espeak_ng_SetRandSeed: breath/noise of some variants


@dataclass
class RawSynthesis:
    """espeak's output at its native rate: int16 audio and the events in emission order."""

    audio: np.ndarray  # (num_samples,) int16
    sample_rate: int
    phonemes: list[tuple[int, str]]  # (sample, mnemonic incl. stress marks)
    words: list[tuple[int, int, int, int]]  # (sample, text_position (1-based chars), length, event index)
    events: list[list]  # raw events in order: ["phoneme", sample, name] / ["word", sample, pos, len]


class EspeakError(RuntimeError):
    """espeak-ng failed on a request (bad voice, crash, ...)."""


def _read_exact(f, n: int) -> bytes:  # noqa: ANN001
    buf = bytearray()
    while len(buf) < n:  # unbuffered pipe: reads may come back short
        chunk = f.read(n - len(buf))
        if not chunk:
            raise EspeakError("espeak worker closed its output unexpectedly (see stderr for its error)")
        buf += chunk
    return bytes(buf)


def _read_msg(f) -> bytes:  # noqa: ANN001
    (n,) = struct.unpack(">I", _read_exact(f, 4))
    return _read_exact(f, n)


class EspeakWorker:
    """A worker process holding an initialised libespeak-ng. Use as a context manager."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        hello = json.loads(_read_msg(self._proc.stdout))
        if not hello.get("ok"):
            self.close()
            raise EspeakError(f"espeak-ng failed to start: {hello.get('error')}")
        self.sample_rate: int = int(hello["sample_rate"])
        self._pending: deque[SynthRequest] = deque()

    def submit(self, req: SynthRequest) -> None:
        """Send a request; its reply comes from a later ``receive`` (first in, first out)."""
        payload = json.dumps(
            {"text": req.text, "voice": req.voice, "rate": req.rate, "volume": req.volume, "pitch": req.pitch,
             "range": req.range, "seed": req.seed}
        ).encode()
        self._proc.stdin.write(struct.pack(">I", len(payload)) + payload)
        self._proc.stdin.flush()
        self._pending.append(req)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def receive(self) -> RawSynthesis:
        """The reply to the oldest submitted request; raises EspeakError naming the request."""
        req = self._pending.popleft()
        header = json.loads(_read_msg(self._proc.stdout))
        if not header.get("ok"):
            raise EspeakError(f"espeak-ng failed on {req}: {header.get('error')}")
        audio = np.frombuffer(_read_msg(self._proc.stdout), dtype="<i2").astype(np.int16)
        if audio.shape[0] != header["num_samples"]:
            raise EspeakError(f"espeak worker sent {audio.shape[0]} samples, announced {header['num_samples']}")
        phonemes, words = [], []
        for i, ev in enumerate(header["events"]):
            if ev[0] == "phoneme":
                phonemes.append((int(ev[1]), str(ev[2])))
            else:
                words.append((int(ev[1]), int(ev[2]), int(ev[3]), i))
        return RawSynthesis(audio, int(header["sample_rate"]), phonemes, words, header["events"])

    def synthesize(self, req: SynthRequest) -> RawSynthesis:
        """Synthesise one request synchronously."""
        if self._pending:
            raise RuntimeError("synthesize() called with pipelined requests pending; receive() them first")
        self.submit(req)
        return self.receive()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                payload = json.dumps({"cmd": "quit"}).encode()
                self._proc.stdin.write(struct.pack(">I", len(payload)) + payload)
                self._proc.stdin.flush()
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()

    def __enter__(self) -> EspeakWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
