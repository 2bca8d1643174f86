"""A decoded corpus, kept for the next model, with one policy for files that turn out to be unusable.

Readers and ``read_manifest`` look only at headers, so a file whose samples are NaN, whose data is truncated
or corrupt, or which is not audio at all, is found only when it is decoded. :class:`DecodedDataset` decodes
each utterance once (:meth:`DecodedDataset.screen`, before any model runs) and applies ``on_error``:

* ``"raise"`` (default): the first unusable file raises its :class:`~jaxneurons.data.audio.AudioError`
  (the CLIs print it as one ``error: <file>: <problem>`` line, exit code 1; see :mod:`jaxneurons.errors`);
* ``"record"``: the utterance is left out, counted in the ``DataIssues`` under its kind (``non_finite``,
  ``truncated``, ``unreadable``, ``corrupt``, ``empty``, ``missing``, ``length_mismatch``, ...) and listed in
  :attr:`DecodedDataset.left_out`; :attr:`DecodedDataset.utts` are the usable utterances, in manifest order.

Everything downstream (labels, i-vector groups, batches, statistics) uses :attr:`DecodedDataset.utts`, so a
scan's statistics cover exactly those utterances, and a resumed scan, which screens the same files again,
scans the same list (same manifest fingerprint, same batches) and ends with the same statistics.
:meth:`DecodedDataset.record` is the JSON for ``run.json`` (how many utterances were used of how many, and
each one left out with its file and problem); :meth:`DecodedDataset.summary` the line for a report.

Decoding does not depend on the weights, so several models' scans share one instance: frame labels (with F0)
are prepared once per front-end geometry and i-vectors clustered once. ``keep_audio=False`` keeps only those
small labels and decodes audio again whenever it is needed (corpora too large for memory; screening then
decodes every file once more).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxneurons.config_flags import field_help
from jaxneurons.data.audio import AudioError, DataIssues, load_audio
from jaxneurons.data.manifest import Utterance
from jaxneurons.errors import SettingError

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "record")
ON_ERROR_HELP = ("Unusable files (audio that is NaN, truncated, corrupt or not audio; transcriptions that break the "
                 "reader): 'raise' stops at the first with one line naming it; 'record' leaves them out, counts "
                 "them and lists them (run.json, the report).")


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
    """How a command treats files that cannot be used (flags: ``define_config_flags(DecodeOptions)``)."""

    on_error: str = field_help("raise", ON_ERROR_HELP, choices=ON_ERROR)

    def __post_init__(self) -> None:
        check_on_error(self.on_error)


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR:
        raise SettingError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    return on_error


@dataclasses.dataclass(frozen=True)
class LeftOut:
    """An utterance left out under ``on_error='record'``: its file and the problem."""

    utt_id: str
    path: str
    kind: str
    error: str


def checked_audio(utt: Utterance, issues: DataIssues | None = None, sample_rate: int = 16000) -> np.ndarray:
    """``load_audio`` of one manifest utterance, which must have the manifest's length (else AudioError)."""
    x = load_audio(utt.path, sample_rate, issues=issues)
    if x.shape[0] != utt.num_samples:
        detail = (f"loaded {x.shape[0]} samples but the manifest says {utt.num_samples} (utterance {utt.utt_id}); "
                  "the manifest is stale")
        if issues is not None:
            issues.add("length_mismatch", utt.path, detail)
        raise AudioError(utt.path, "length_mismatch", detail)
    return x


class DecodedDataset:
    """What a scan prepares from the data alone, kept for the next model (see the module docstring).

    ``utts``: the manifest's utterances. With ``on_error='record'`` they are screened at construction: :attr:`utts`
    holds the usable ones, :attr:`all_utts` the manifest's. With ``'raise'`` decoding is lazy; call
    :meth:`screen` to fail on a bad file before any model runs. The counters say how much decoding happened.
    """

    def __init__(self, utts: Sequence[Utterance], *, keep_audio: bool = True, issues: DataIssues | None = None,
                 on_error: str = "raise", progress: bool = True):
        self.all_utts = list(utts)
        self.utts = list(utts)
        self.keep_audio = keep_audio
        self.issues = issues if issues is not None else DataIssues()
        self.on_error = check_on_error(on_error)
        self.left_out: list[LeftOut] = []
        self.screened = False
        self._audio: dict[str, np.ndarray] = {}  # utt_id -> samples
        self._reindex()
        self.frame_labels: dict[tuple, list[Any]] = {}  # geometry key -> UtteranceLabels per utterance
        self.speaker_groups: dict[tuple, np.ndarray] = {}  # i-vector k-means groups
        self.audio_decodes = 0
        self.f0_runs = 0
        self.ivector_runs = 0
        if self.on_error == "record":  # utts must be the usable ones from the start
            self.screen(progress)

    def _reindex(self) -> None:
        self._ids = tuple(u.utt_id for u in self.utts)
        self._index = {u.utt_id: i for i, u in enumerate(self.utts)}

    def screen(self, progress: bool = True) -> list[Utterance]:
        """Decode every utterance once, before any model runs; returns the usable utterances (:attr:`utts`).

        ``on_error='raise'``: the first unusable file raises (before hours of model passes, not during them);
        ``'record'``: it is left out, counted and listed in :attr:`left_out`. Idempotent.
        """
        if self.screened:
            return self.utts
        from jaxneurons.progress import progress as bar

        kept = []
        items = bar(self.all_utts, desc="decoding") if progress else self.all_utts
        for u in items:
            try:
                x = self._decode(u)
            except AudioError as exc:
                if self.on_error == "raise":
                    raise
                self.left_out.append(LeftOut(u.utt_id, u.path, exc.kind, str(exc)))
                continue
            if self.keep_audio:
                self._audio[u.utt_id] = x
            kept.append(u)
        self.utts = kept
        self.screened = True
        self._reindex()
        if self.left_out:
            log.warning("%s", self.summary())
        return self.utts

    def _decode(self, u: Utterance) -> np.ndarray:
        x = checked_audio(u, self.issues)
        self.audio_decodes += 1
        return x

    def check(self, utts: Sequence[Utterance]) -> None:
        """The cache belongs to one list of utterances (:attr:`utts`): refuse another (labels would be wrong)."""
        if len(utts) != len(self._ids) or any(u.utt_id != i for u, i in zip(utts, self._ids, strict=True)):
            if self.left_out and [u.utt_id for u in utts] == [u.utt_id for u in self.all_utts]:
                raise ValueError(f"{len(self.left_out)} utterance(s) were left out (on_error='record'): pass "
                                 "DecodedDataset.utts, the usable ones, instead of the manifest's list")
            raise ValueError("DecodedDataset was made for a different list of utterances")

    def audio(self, index: int) -> np.ndarray:
        """Decoded audio of utterance ``index`` of :attr:`utts` (from memory when kept)."""
        u = self.utts[index]
        x = self._audio.get(u.utt_id)
        if x is None:
            x = self._decode(u)
            if self.keep_audio:
                self._audio[u.utt_id] = x
        return x

    def all_audio(self) -> list[np.ndarray]:
        return [self.audio(i) for i in range(len(self.utts))]

    def load_fn(self) -> Callable[[Utterance], np.ndarray]:
        """``BatchLoader(load_fn=...)``: the scan pass reads the same decoded audio."""
        return lambda u: self.audio(self._index[u.utt_id])

    @property
    def cached_bytes(self) -> int:
        """Bytes of audio held in memory."""
        return sum(x.nbytes for x in self._audio.values())

    def record(self) -> dict[str, Any]:
        """JSON for ``run.json``: utterances used of how many, and every one left out with its problem."""
        kinds: dict[str, int] = {}
        for item in self.left_out:
            kinds[item.kind] = kinds.get(item.kind, 0) + 1
        return {"on_error": self.on_error, "utterances_total": len(self.all_utts), "utterances_used": len(self.utts),
                "left_out_by_kind": dict(sorted(kinds.items())),
                "left_out": [dataclasses.asdict(item) for item in self.left_out]}

    def summary(self) -> str:
        """One line for a report: ``used N of M utterances; K left out (kind: n, ...)``."""
        line = f"used {len(self.utts)} of {len(self.all_utts)} utterances"
        if not self.left_out:
            return line
        by_kind = self.record()["left_out_by_kind"]
        kinds = ", ".join(f"{k}: {n}" for k, n in by_kind.items())
        return f"{line}; {len(self.left_out)} left out as unusable ({kinds}): " + ", ".join(
            item.path for item in self.left_out)


def screen_corpus(utts: Sequence[Utterance], source: str, *, on_error: str = "raise", keep_audio: bool = True,
                  issues: DataIssues | None = None) -> DecodedDataset:
    """:class:`DecodedDataset` of ``utts`` with every file decoded once now, before any model runs: the first
    unusable file raises (``on_error='raise'``) or every one is left out and the summary goes to stderr
    (``'record'``); a corpus with no usable utterance is a ``ManifestError`` naming ``source``."""
    from jaxneurons.data.manifest import ManifestError

    decoded = DecodedDataset(utts, keep_audio=keep_audio, issues=issues, on_error=on_error)
    decoded.screen()
    if decoded.left_out:
        print(f"{source}: {decoded.summary()}", file=sys.stderr, flush=True)
    if not decoded.utts:
        raise ManifestError(f"{source}: no usable utterances ({decoded.summary()})")
    return decoded
