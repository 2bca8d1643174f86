"""The utterance manifest: JSONL, one utterance per line, validated on read and on write.

Schema (every line is one JSON object; ``manifest_version`` is on every line so files can be
concatenated, split and sharded line by line):

==================  ========================================================================================
key                 meaning
==================  ========================================================================================
manifest_version    1 (required)
utt_id              unique non-empty string (required)
path                audio file, relative to the manifest's directory or absolute (required)
speaker             speaker id string, or null when unknown (required key)
gender              "m", "f" or null (required key)
language            language code such as "en", "tr", or null (required key)
duration            seconds, = num_samples / sample_rate within 1 ms (required)
sample_rate         rate of num_samples and of every segment position, 16000 for this toolkit (required)
num_samples         length of the audio as ``load_audio(path, sample_rate)`` returns it (required)
phones              list of [start_sample, end_sample, label] or null (required key)
phone_set           name of the phone set the phone labels belong to (``phones.PHONE_SETS``), null when
                    phones is null (optional; defaults to the language's set when phones are present)
words               list of [start_sample, end_sample, word] or null (optional)
labels              object of extra utterance-level labels, values str/int/float/bool/null (optional)
text                transcript string or null (optional)
==================  ========================================================================================

Segments are half-open sample ranges ``[start, end)`` at ``sample_rate``: integers with
``0 <= start < end <= num_samples``, sorted by start and non-overlapping (gaps are allowed and mean
"unlabelled"). Any violation, an unknown key or a phone outside the phone set raises ``ManifestError``
naming the file and line. ``write_manifest`` validates the same way and writes atomically (temp file in
the same directory, then ``os.replace``); paths under the manifest's directory are written relative.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from jaxneurons.data import phones as _phones

MANIFEST_VERSION = 1
Segment = tuple[int, int, str]

_REQUIRED = (
    "manifest_version", "utt_id", "path", "speaker", "gender", "language", "duration", "sample_rate",
    "num_samples", "phones",
)
_OPTIONAL = ("phone_set", "words", "labels", "text")
_KEYS = set(_REQUIRED) | set(_OPTIONAL)


class ManifestError(ValueError):
    """A manifest line (or Utterance) that breaks the schema."""


@dataclass(frozen=True)
class Utterance:
    """One manifest line. ``path`` is absolute once read (resolved against the manifest's directory)."""

    utt_id: str
    path: str
    speaker: str | None
    gender: str | None
    language: str | None
    duration: float
    sample_rate: int
    num_samples: int
    phones: tuple[Segment, ...] | None = None
    phone_set: str | None = None
    words: tuple[Segment, ...] | None = None
    labels: dict = field(default_factory=dict)
    text: str | None = None


def _segments(value: object, what: str, num_samples: int, where: str) -> tuple[Segment, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple):
        raise ManifestError(f"{where}: {what} must be a list of [start, end, label] or null")
    out: list[Segment] = []
    prev_end = 0
    for i, seg in enumerate(value):
        if not isinstance(seg, list | tuple) or len(seg) != 3:
            raise ManifestError(f"{where}: {what}[{i}] must be [start, end, label], got {seg!r}")
        start, end, label = seg
        if isinstance(start, bool) or isinstance(end, bool) or not isinstance(start, int) or not isinstance(end, int):
            raise ManifestError(f"{where}: {what}[{i}] start/end must be integer samples, got {seg!r}")
        if not isinstance(label, str) or not label:
            raise ManifestError(f"{where}: {what}[{i}] label must be a non-empty string, got {label!r}")
        if start < 0 or end <= start:
            raise ManifestError(f"{where}: {what}[{i}] = {seg!r} is empty or negative")
        if end > num_samples:
            raise ManifestError(
                f"{where}: {what}[{i}] = {seg!r} ends after the audio (num_samples = {num_samples})"
            )
        if start < prev_end:
            raise ManifestError(
                f"{where}: {what}[{i}] = {seg!r} starts before the previous segment ends ({prev_end}): "
                "segments must be sorted and non-overlapping"
            )
        prev_end = end
        out.append((int(start), int(end), label))
    return tuple(out)


def _check_type(obj: dict, key: str, types: tuple, where: str, nullable: bool) -> None:
    v = obj[key]
    if v is None and nullable:
        return
    if isinstance(v, bool) and bool not in types:
        raise ManifestError(f"{where}: {key} must be {'/'.join(t.__name__ for t in types)}, got {v!r}")
    if not isinstance(v, types):
        raise ManifestError(f"{where}: {key} must be {'/'.join(t.__name__ for t in types)}, got {v!r}")


def utterance_from_dict(obj: object, base_dir: str, where: str) -> Utterance:
    """Validate one decoded manifest object; ``where`` (file:line) prefixes every error."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: each line must be a JSON object")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise ManifestError(f"{where}: unknown keys {unknown}; allowed {sorted(_KEYS)}")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise ManifestError(f"{where}: missing keys {missing}")
    if obj["manifest_version"] != MANIFEST_VERSION or isinstance(obj["manifest_version"], bool):
        raise ManifestError(f"{where}: manifest_version {obj['manifest_version']!r} is not {MANIFEST_VERSION}")
    for key in ("utt_id", "path"):
        _check_type(obj, key, (str,), where, nullable=False)
        if not obj[key]:
            raise ManifestError(f"{where}: {key} is empty")
    for key in ("speaker", "language"):
        _check_type(obj, key, (str,), where, nullable=True)
    if obj["gender"] not in ("m", "f", None):
        raise ManifestError(f"{where}: gender must be 'm', 'f' or null, got {obj['gender']!r}")
    _check_type(obj, "sample_rate", (int,), where, nullable=False)
    _check_type(obj, "num_samples", (int,), where, nullable=False)
    _check_type(obj, "duration", (int, float), where, nullable=False)
    sr, n = obj["sample_rate"], obj["num_samples"]
    if sr <= 0 or n <= 0:
        raise ManifestError(f"{where}: sample_rate and num_samples must be positive, got {sr}, {n}")
    if not math.isfinite(obj["duration"]) or abs(obj["duration"] - n / sr) > 1e-3:
        raise ManifestError(f"{where}: duration {obj['duration']} != num_samples / sample_rate = {n / sr:.6f}")
    phones = _segments(obj["phones"], "phones", n, where)
    phone_set = obj.get("phone_set")
    if phone_set is not None and not isinstance(phone_set, str):
        raise ManifestError(f"{where}: phone_set must be a string or null, got {phone_set!r}")
    if phones is not None:
        if phone_set is None:
            phone_set = _phones.LANGUAGE_PHONE_SET.get(obj["language"] or "")
            if phone_set is None:
                raise ManifestError(
                    f"{where}: phones given but no phone_set and language {obj['language']!r} has no default set"
                )
        if phone_set not in _phones.PHONE_SETS:
            raise ManifestError(f"{where}: unknown phone_set {phone_set!r}; known {sorted(_phones.PHONE_SETS)}")
        known = _phones.PHONE_SETS[phone_set]
        for i, (_, _, label) in enumerate(phones):
            if label not in known:
                raise ManifestError(f"{where}: phones[{i}] label {label!r} is not in phone set {phone_set!r}")
    words = _segments(obj.get("words"), "words", n, where)
    labels = obj.get("labels") or {}
    if not isinstance(labels, dict):
        raise ManifestError(f"{where}: labels must be an object, got {labels!r}")
    for k, v in labels.items():
        if v is not None and not isinstance(v, str | int | float | bool):
            raise ManifestError(f"{where}: labels[{k!r}] must be a JSON scalar, got {v!r}")
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        raise ManifestError(f"{where}: text must be a string or null")
    path = obj["path"]
    if not os.path.isabs(path):
        path = os.path.normpath(os.path.join(base_dir, path))
    return Utterance(
        utt_id=obj["utt_id"], path=path, speaker=obj["speaker"], gender=obj["gender"],
        language=obj["language"], duration=float(obj["duration"]), sample_rate=sr, num_samples=n,
        phones=phones, phone_set=phone_set if phones is not None else phone_set, words=words,
        labels=dict(labels), text=text,
    )


def utterance_to_dict(utt: Utterance, base_dir: str | None = None) -> dict:
    """The JSON object for one utterance; ``path`` relative to ``base_dir`` when it lies under it."""
    path = utt.path
    if base_dir is not None and os.path.isabs(path):
        rel = os.path.relpath(path, base_dir)
        if not rel.startswith(os.pardir + os.sep) and rel != os.pardir:
            path = rel
    out = {
        "manifest_version": MANIFEST_VERSION,
        "utt_id": utt.utt_id,
        "path": path,
        "speaker": utt.speaker,
        "gender": utt.gender,
        "language": utt.language,
        "duration": round(utt.num_samples / utt.sample_rate, 6),
        "sample_rate": utt.sample_rate,
        "num_samples": utt.num_samples,
        "phones": None if utt.phones is None else [list(s) for s in utt.phones],
        "phone_set": utt.phone_set,
        "words": None if utt.words is None else [list(s) for s in utt.words],
        "labels": dict(utt.labels),
        "text": utt.text,
    }
    return out


def read_manifest(path: str) -> list[Utterance]:
    """Read and validate a JSONL manifest; raises ManifestError naming ``path:line`` on any problem."""
    base_dir = os.path.dirname(os.path.abspath(path))
    utts: list[Utterance] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if not line.strip():
                raise ManifestError(f"{where}: empty line")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{where}: not valid JSON ({exc})") from None
            utt = utterance_from_dict(obj, base_dir, where)
            if utt.utt_id in seen:
                raise ManifestError(f"{where}: duplicate utt_id {utt.utt_id!r} (first on line {seen[utt.utt_id]})")
            seen[utt.utt_id] = lineno
            utts.append(utt)
    return utts


def write_manifest(path: str, utts: Iterable[Utterance]) -> str:
    """Validate and write ``utts`` atomically as JSONL; returns the absolute path written."""
    path = os.path.abspath(path)
    base_dir = os.path.dirname(path)
    os.makedirs(base_dir, exist_ok=True)
    lines = []
    seen: set[str] = set()
    for i, utt in enumerate(utts):
        obj = utterance_to_dict(utt, base_dir)
        where = f"{path} (utterance {i}, {utt.utt_id!r})"
        # Round-trip through the reader's validation so a written manifest is always readable.
        utterance_from_dict(json.loads(json.dumps(obj)), base_dir, where)
        if utt.utt_id in seen:
            raise ManifestError(f"{where}: duplicate utt_id")
        seen.add(utt.utt_id)
        lines.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".tmp", dir=base_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def manifest_fingerprint(utts: Sequence[Utterance]) -> str:
    """A short content hash of a manifest (ids, lengths, labels), for results' config.json."""
    import hashlib

    h = hashlib.sha256()
    for u in utts:
        obj = utterance_to_dict(u)
        del obj["path"]  # location-independent: the same corpus copied elsewhere keeps its fingerprint
        h.update(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:16]
