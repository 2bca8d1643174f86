"""Readers that turn real corpora into the manifest format (``jaxneurons.data.manifest``).

* ``read_timit(root)``: the TIMIT tree ``{TRAIN,TEST}/DR<n>/<sex><initials><digit>/<sentence>.{WAV,PHN,WRD}``
  (any letter case; NIST SPHERE ``.WAV`` read by libsndfile, or RIFF ``.WAV.wav`` copies). ``.PHN`` and
  ``.WRD`` hold ``start end label`` in 16 kHz samples. Phones are folded 61 -> 39 (``phones.fold_timit``);
  adjacent ``sil`` after folding are merged; the deleted ``q`` leaves its samples unlabelled (counted as
  ``timit_q_removed``). Speaker = directory name (e.g. ``FCJF0``), gender = its first letter, labels
  ``dialect`` (``DR1``), ``subset`` and ``sentence``. Overlapping TIMIT words are trimmed so the earlier
  word ends where the next starts (counted as ``word_overlap_trimmed``). A last phone or word segment that
  ends at most ``SEGMENT_END_TOLERANCE`` samples (10 ms) after the audio, as real TIMIT has, is clipped to
  the audio's end (counted as ``segment_end_clipped``); larger overshoots and overlaps are errors.
* ``read_mfa(audio_root, ...)``: a LibriSpeech-style tree ``<speaker>/<chapter>/<utt>.flac`` with a
  Montreal Forced Aligner TextGrid per utterance (``words`` and ``phones`` tiers, ARPAbet with stress
  digits, which are removed; ``sil``/``sp``/empty -> ``sil``; ``spn`` leaves its samples unlabelled and is
  counted as ``spoken_noise``; intervals ending up to 10 ms after the audio are clipped, counted as
  ``segment_end_clipped``). TextGrids are looked for at the same relative path under
  ``textgrid_root`` and then at ``textgrid_root/<speaker>/<utt>.TextGrid``. Gender comes from
  LibriSpeech's ``SPEAKERS.TXT`` (``ID | SEX | SUBSET | MINUTES | NAME``) when given.
* ``read_voxceleb(root)``: ``<speaker>/<video>/<utt>.wav`` (speaker labels; optional ``vox1_meta.csv``
  style metadata for gender and nationality).
* ``read_path_list(path)``: a CSV or TSV (``.tsv``; header row) or JSONL listing ``path`` and optional ``utt_id``,
  ``speaker``, ``gender``, ``language``, ``text``; every other column becomes an utterance label.

Every reader reads only audio headers (``audio_info``); ``num_samples`` is the length ``load_audio``
returns at 16 kHz. A file that cannot be used raises (``on_error="raise"``, the default) or, with
``on_error="record"``, is left out of the manifest and counted in the ``DataIssues`` passed in - never
skipped silently. Segment times are converted with ``round(t * 16000)``.

CLI: ``python -m jaxneurons.data.readers --format timit --root DIR --out manifest.jsonl`` prints what it
wrote and one line per kind of data decision (clipped segments, left-out files, ...), each file's decision in
``manifest.data_issues.json``; a file that cannot be
used in ``--on_error raise`` mode ends it with one ``error: <file>: <problem>`` line (exit code 1).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Sequence

from jaxneurons.data import phones as _phones
from jaxneurons.data.audio import AudioError, DataIssues, audio_info
from jaxneurons.data.decoded import check_on_error
from jaxneurons.data.manifest import ManifestError, Segment, Utterance
from jaxneurons.data.textgrid import TextGridError, read_textgrid
from jaxneurons.errors import SettingError

SR = 16000
# How far (in samples) the last segment of a transcription may end after the audio and be clipped to the
# audio's end instead of rejected: 10 ms, half the 20 ms frame hop of wav2vec2-style front ends, so a
# clip never moves a segment end by more than half a frame. Real TIMIT has final ``h#`` segments one
# sample past the audio (e.g. 54682 of 54681 samples) and aligners write durations rounded to 10 ms.
# Counted as ``segment_end_clipped``; a larger overshoot, or one on a segment other than the last, is a
# CorpusError.
SEGMENT_END_TOLERANCE = SR // 100
AUDIO_EXTS = (".flac", ".wav", ".mp3", ".ogg", ".sph")


class CorpusError(ValueError):
    """A corpus file with content that breaks the reader's expectations; names the file."""


def _merge_sil(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for s, e, lab in segs:
        if out and lab == _phones.SILENCE and out[-1][2] == _phones.SILENCE and out[-1][1] == s:
            out[-1] = (out[-1][0], e, lab)
        else:
            out.append((s, e, lab))
    return out


def _clip_last_segment(segs: list, n: int, path: str, what: str, issues: DataIssues) -> list:
    """Clip the last segment's end to the audio's ``n`` samples when it overshoots by at most
    ``SEGMENT_END_TOLERANCE`` (counted as ``segment_end_clipped``); anything else is left to the checks."""
    if not segs:
        return segs
    s, e, lab = segs[-1]
    if n < e <= n + SEGMENT_END_TOLERANCE and s < n:
        issues.add("segment_end_clipped", path,
                   f"last {what} segment {lab!r} ended at {e}, {e - n} sample(s) after the audio ({n}); clipped")
        return [*segs[:-1], (s, n, lab)]
    return segs


def _check_segments(segs: list[Segment], n: int, path: str, what: str) -> None:
    prev = 0
    for s, e, lab in segs:
        if s < 0 or e <= s:
            raise CorpusError(f"{path}: {what} segment {(s, e, lab)} is empty or negative")
        if e > n:
            raise CorpusError(f"{path}: {what} segment {(s, e, lab)} ends after the audio ({n} samples; "
                              f"only the last segment may end up to {SEGMENT_END_TOLERANCE} samples after it)")
        if s < prev:
            raise CorpusError(f"{path}: {what} segment {(s, e, lab)} overlaps the previous one (ends {prev})")
        prev = e


def _guard(on_error: str, issues: DataIssues | None) -> Callable:
    """Run fn(); on a data error either raise or record it and return None."""
    check_on_error(on_error)

    def run(fn: Callable, path: str) -> object:
        try:
            return fn()
        except (AudioError, CorpusError, TextGridError, ManifestError, _phones.UnknownPhoneError) as exc:
            if on_error == "raise":
                raise
            if issues is not None and not isinstance(exc, AudioError):  # AudioError already counted
                issues.add("error_" + type(exc).__name__, path, str(exc))  # the message names its file
            return None

    return run


# --- TIMIT ---------------------------------------------------------------------------------------------
_TIMIT_SPK = re.compile(r"^[MF][A-Z]{3}\d$", re.IGNORECASE)
_TIMIT_DR = re.compile(r"^DR\d$", re.IGNORECASE)


def _read_timit_segments(path: str) -> list[tuple[int, int, str]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise CorpusError(f"{path}:{lineno}: expected 'start end label', got {line.strip()!r}")
            try:
                s, e = int(parts[0]), int(parts[1])
            except ValueError:
                raise CorpusError(f"{path}:{lineno}: start/end are not integers: {line.strip()!r}") from None
            out.append((s, e, parts[2]))
    return out


def _find_audio(stem: str) -> str:
    for ext in (".WAV", ".wav", ".WAV.wav", ".wav.wav", ".flac", ".FLAC"):
        if os.path.exists(stem + ext):
            return stem + ext
    raise AudioError(stem, "missing", "no audio file (.WAV/.wav/.WAV.wav/.flac) next to the transcription")


def read_timit(
    root: str, subsets: Sequence[str] = ("TRAIN", "TEST"), on_error: str = "raise", issues: DataIssues | None = None
) -> list[Utterance]:
    """Utterances of a TIMIT tree under ``root`` (sorted by utt_id); see the module docstring."""
    issues = issues if issues is not None else DataIssues()
    guard = _guard(on_error, issues)
    wanted = {s.upper() for s in subsets}
    utts = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        parts = os.path.relpath(dirpath, root).split(os.sep)
        if len(parts) < 3 or not _TIMIT_SPK.match(parts[-1]) or not _TIMIT_DR.match(parts[-2]):
            continue
        subset = parts[-3].upper()
        if subset not in wanted:
            continue
        for fn in sorted(filenames):
            if not fn.upper().endswith(".PHN"):
                continue
            u = guard(lambda fn=fn, dp=dirpath, sub=subset, pr=parts: _timit_utt(dp, fn, sub, pr, issues),
                      os.path.join(dirpath, fn))
            if u is not None:
                utts.append(u)
    if not utts and not issues.counts:
        raise CorpusError(f"{root}: no TIMIT utterances found (expected {{TRAIN,TEST}}/DR*/<speaker>/*.PHN)")
    return sorted(utts, key=lambda u: u.utt_id)


def _timit_utt(dirpath: str, fn: str, subset: str, parts: list[str], issues: DataIssues) -> Utterance:
    phn_path = os.path.join(dirpath, fn)
    stem = phn_path[: -len(".PHN")]
    sentence = os.path.basename(stem).upper()
    speaker = parts[-1].upper()
    audio = _find_audio(stem)
    n, sr, _ = audio_info(audio, SR, issues)
    if sr != SR:
        raise CorpusError(f"{audio}: TIMIT audio should be 16 kHz, found {sr} Hz (segment times would not match)")
    segs = []
    for s, e, lab in _clip_last_segment(_read_timit_segments(phn_path), n, phn_path, "phone", issues):
        try:
            folded = _phones.fold_timit(lab.lower())
        except _phones.UnknownPhoneError as exc:
            raise CorpusError(f"{phn_path}: {exc}") from None
        if folded is None:
            issues.add("timit_q_removed", phn_path)
            continue
        segs.append((s, e, folded))
    segs = _merge_sil(segs)
    _check_segments(segs, n, phn_path, "phone")
    words = None
    wrd = [p for p in (stem + ".WRD", stem + ".wrd") if os.path.exists(p)]
    if wrd:
        raw = _clip_last_segment(_read_timit_segments(wrd[0]), n, wrd[0], "word", issues)
        words = []
        for i, (s, e, w) in enumerate(raw):
            if i + 1 < len(raw) and raw[i + 1][0] < e:
                issues.add("word_overlap_trimmed", wrd[0], f"{w} {s}-{e}")
                e = raw[i + 1][0]
            if e > s:
                words.append((s, e, w))
        _check_segments(words, n, wrd[0], "word")
    text = None
    txt = [p for p in (stem + ".TXT", stem + ".txt") if os.path.exists(p)]
    if txt:
        with open(txt[0], encoding="utf-8") as f:
            fields = f.read().split(maxsplit=2)
        text = fields[2].strip() if len(fields) == 3 else None
    return Utterance(
        utt_id=f"timit_{speaker}_{sentence}", path=os.path.abspath(audio), speaker=speaker,
        gender=speaker[0].lower(), language="en", duration=n / SR, sample_rate=SR, num_samples=n,
        phones=tuple(segs), phone_set="en39", words=None if words is None else tuple(words),
        labels={"dataset": "timit", "dialect": parts[-2].upper(), "subset": subset, "sentence": sentence},
        text=text,
    )


# --- Montreal Forced Aligner over a LibriSpeech-style tree ---------------------------------------------
def read_librispeech_speakers(path: str) -> dict[str, str]:
    """speaker id -> 'm' / 'f' from LibriSpeech SPEAKERS.TXT (``;`` comment lines)."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip() or line.lstrip().startswith(";"):
                continue
            fields = [x.strip() for x in line.split("|")]
            if len(fields) < 2 or fields[1].upper() not in ("M", "F"):
                raise CorpusError(f"{path}:{lineno}: expected 'ID | SEX | ...', got {line.strip()!r}")
            out[fields[0]] = fields[1].lower()
    return out


def _intervals_to_segments(
    items: Sequence[tuple], n: int, mapper: Callable[[str], str | None], issues: DataIssues, path: str, kind: str
) -> list[Segment]:
    segs = []
    for xmin, xmax, label in items:
        s, e = round(xmin * SR), round(xmax * SR)
        if e > n + SEGMENT_END_TOLERANCE:
            raise CorpusError(f"{path}: interval {(xmin, xmax, label)} ends {(e - n) / SR:.3f} s after the audio "
                              f"(at most {SEGMENT_END_TOLERANCE} samples are clipped)")
        if e > n:  # aligners write the file duration rounded
            if s < n and label.strip():
                issues.add("segment_end_clipped", path, f"interval {label.strip()!r} ended at {e}, "
                           f"{e - n} sample(s) after the audio ({n}); clipped")
            e = n
        if e <= s:
            continue  # an interval shorter than half a sample has no samples
        mapped = mapper(label.strip())
        if mapped is None:
            issues.add(kind, path, label)
            continue
        segs.append((s, e, mapped))
    return segs


def read_mfa(
    audio_root: str,
    textgrid_root: str | None = None,
    speakers_file: str | None = None,
    language: str = "en",
    missing_alignment: str = "error",
    on_error: str = "raise",
    issues: DataIssues | None = None,
) -> list[Utterance]:
    """LibriSpeech-style audio tree + MFA TextGrids -> utterances (sorted by utt_id).

    ``missing_alignment``: "error" (default; CorpusError unless on_error="record") or "keep" (the
    utterance keeps phones/words = null and is counted as ``no_alignment``).
    """
    if missing_alignment not in ("error", "keep"):
        raise SettingError(f"missing_alignment must be 'error' or 'keep', got {missing_alignment!r}")
    issues = issues if issues is not None else DataIssues()
    guard = _guard(on_error, issues)
    textgrid_root = textgrid_root or audio_root
    genders = read_librispeech_speakers(speakers_file) if speakers_file else {}
    utts = []
    for dirpath, dirnames, filenames in os.walk(audio_root):
        dirnames.sort()
        for fn in sorted(filenames):
            if not fn.lower().endswith(AUDIO_EXTS):
                continue
            path = os.path.join(dirpath, fn)
            u = guard(
                lambda p=path: _mfa_utt(p, audio_root, textgrid_root, genders, language, missing_alignment, issues),
                path,
            )
            if u is not None:
                utts.append(u)
    if not utts and not issues.counts:
        raise CorpusError(f"{audio_root}: no audio files found")
    return sorted(utts, key=lambda u: u.utt_id)


def _mfa_utt(
    path: str, root: str, tg_root: str, genders: dict, language: str, missing: str, issues: DataIssues
) -> Utterance:
    rel = os.path.relpath(path, root)
    rel_parts = rel.split(os.sep)
    speaker = rel_parts[0] if len(rel_parts) > 1 else None
    stem = os.path.splitext(os.path.basename(path))[0]
    candidates = [os.path.join(tg_root, os.path.splitext(rel)[0] + ".TextGrid")]
    if speaker is not None:
        candidates.append(os.path.join(tg_root, speaker, stem + ".TextGrid"))
    n, _, _ = audio_info(path, SR, issues)
    tg_path = next((c for c in candidates if os.path.exists(c)), None)
    phones = words = None
    if tg_path is None:
        if missing == "error":
            raise CorpusError(f"{path}: no TextGrid (looked for {candidates})")
        issues.add("no_alignment", path)
    else:
        tiers = read_textgrid(tg_path)
        for name in ("words", "phones"):
            if name not in tiers or tiers[name].kind != "IntervalTier":
                raise CorpusError(f"{tg_path}: no interval tier {name!r} (tiers: {sorted(tiers)})")
        if language != "en":
            raise CorpusError(f"{tg_path}: only English ARPAbet alignments are supported, language={language!r}")

        def phone_map(label: str) -> str | None:
            try:
                return _phones.arpabet_to_phone(label)
            except _phones.UnknownPhoneError as exc:
                raise CorpusError(f"{tg_path}: {exc}") from None

        items = tiers["phones"].items
        phones = _merge_sil(_intervals_to_segments(items, n, phone_map, issues, tg_path, "spoken_noise"))
        words = [w for w in _intervals_to_segments(tiers["words"].items, n, lambda w: w or "", issues, tg_path, "")
                 if w[2]]
        _check_segments(phones, n, tg_path, "phone")
        _check_segments(words, n, tg_path, "word")
    labels = {"dataset": "librispeech-mfa"}
    if len(rel_parts) > 2:
        labels["chapter"] = rel_parts[1]
    return Utterance(
        utt_id=stem, path=os.path.abspath(path), speaker=speaker, gender=genders.get(speaker or ""),
        language=language, duration=n / SR, sample_rate=SR, num_samples=n,
        phones=None if phones is None else tuple(phones), phone_set="en39" if phones is not None else None,
        words=None if words is None else tuple(words), labels=labels,
        text=None if words is None else " ".join(w[2] for w in words),
    )


# --- VoxCeleb --------------------------------------------------------------------------------------------
def read_voxceleb_meta(path: str) -> dict[str, dict[str, str]]:
    """speaker id -> {gender, nationality, set} from a tab-separated ``vox1_meta.csv``-style file."""
    out = {}
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows:
        raise CorpusError(f"{path}: empty metadata file")
    header = [h.strip().lower() for h in rows[0]]
    try:
        i_id = next(i for i, h in enumerate(header) if h.endswith("id") and "vgg" not in h)
        i_g = header.index("gender")
    except (StopIteration, ValueError):
        raise CorpusError(f"{path}: header needs an ID column and 'Gender', got {rows[0]}") from None
    i_n = header.index("nationality") if "nationality" in header else None
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        g = row[i_g].strip().lower()[:1]
        if g not in ("m", "f"):
            raise CorpusError(f"{path}:{lineno}: gender {row[i_g]!r} is not m/f")
        out[row[i_id].strip()] = {"gender": g, **({"nationality": row[i_n].strip()} if i_n is not None else {})}
    return out


def read_voxceleb(
    root: str, meta_file: str | None = None, on_error: str = "raise", issues: DataIssues | None = None
) -> list[Utterance]:
    """``root/<speaker>/<video>/<utt>.wav`` -> utterances with speaker (and meta) labels, no phones."""
    issues = issues if issues is not None else DataIssues()
    guard = _guard(on_error, issues)
    meta = read_voxceleb_meta(meta_file) if meta_file else {}
    utts = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        parts = os.path.relpath(dirpath, root).split(os.sep)
        if len(parts) != 2 or parts[0] == ".":
            continue
        speaker, video = parts
        for fn in sorted(filenames):
            if not fn.lower().endswith(AUDIO_EXTS):
                continue
            path = os.path.join(dirpath, fn)

            def make(path: str = path, speaker: str = speaker, video: str = video, fn: str = fn) -> Utterance:
                n, _, _ = audio_info(path, SR, issues)
                m = meta.get(speaker, {})
                labels = {"dataset": "voxceleb", "video": video}
                if "nationality" in m:
                    labels["nationality"] = m["nationality"]
                return Utterance(
                    utt_id=f"{speaker}/{video}/{os.path.splitext(fn)[0]}", path=os.path.abspath(path),
                    speaker=speaker, gender=m.get("gender"), language=None, duration=n / SR, sample_rate=SR,
                    num_samples=n, labels=labels,
                )

            u = guard(make, path)
            if u is not None:
                utts.append(u)
    if not utts and not issues.counts:
        raise CorpusError(f"{root}: no <speaker>/<video>/<utt>.wav files found")
    return sorted(utts, key=lambda u: u.utt_id)


# --- plain lists ----------------------------------------------------------------------------------------
_LIST_KEYS = ("utt_id", "path", "speaker", "gender", "language", "text")


def read_path_list(path: str, on_error: str = "raise", issues: DataIssues | None = None) -> list[Utterance]:
    """CSV / TSV (with header) or JSONL of audio paths plus labels -> utterances (in file order)."""
    issues = issues if issues is not None else DataIssues()
    guard = _guard(on_error, issues)
    base = os.path.dirname(os.path.abspath(path))
    rows: list[tuple[str, dict]] = []
    with open(path, encoding="utf-8", newline="") as f:
        if path.lower().endswith((".jsonl", ".json")):
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CorpusError(f"{path}:{lineno}: not valid JSON ({exc})") from None
                if not isinstance(obj, dict):
                    raise CorpusError(f"{path}:{lineno}: each line must be a JSON object")
                rows.append((f"{path}:{lineno}", obj))
        else:
            reader = csv.DictReader(f, delimiter="\t" if path.lower().endswith(".tsv") else ",")
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise CorpusError(f"{path}: CSV/TSV needs a header row with a 'path' column")
            for lineno, row in enumerate(reader, start=2):
                rows.append((f"{path}:{lineno}", {k: (v if v != "" else None) for k, v in row.items()}))
    utts = []
    seen: dict[str, str] = {}
    for where, obj in rows:
        if not obj.get("path"):
            raise CorpusError(f"{where}: no 'path'")
        audio = obj["path"] if os.path.isabs(obj["path"]) else os.path.normpath(os.path.join(base, obj["path"]))
        gender = obj.get("gender")
        if gender is not None:
            g = str(gender).strip().lower()
            gender = {"male": "m", "female": "f"}.get(g, g)
            if gender not in ("m", "f"):
                raise CorpusError(f"{where}: gender {obj['gender']!r} is not m/f/male/female")
        utt_id = obj.get("utt_id") or os.path.splitext(os.path.relpath(audio, base))[0].replace(os.sep, "/")
        if utt_id in seen:
            raise CorpusError(f"{where}: duplicate utt_id {utt_id!r} (first at {seen[utt_id]})")
        seen[utt_id] = where
        labels = {k: v for k, v in obj.items() if k not in _LIST_KEYS}
        for k, v in labels.items():
            if v is not None and not isinstance(v, str | int | float | bool):
                raise CorpusError(f"{where}: label {k!r} must be a scalar, got {v!r}")

        def make(audio: str = audio, obj: dict = obj, gender: str | None = gender, utt_id: str = utt_id,
                 labels: dict = labels) -> Utterance:
            n, _, _ = audio_info(audio, SR, issues)
            return Utterance(
                utt_id=utt_id, path=audio, speaker=obj.get("speaker"), gender=gender, language=obj.get("language"),
                duration=n / SR, sample_rate=SR, num_samples=n, labels=labels, text=obj.get("text"),
            )

        u = guard(make, audio)
        if u is not None:
            utts.append(u)
    return utts


def main(argv: Sequence[str]) -> None:
    from absl import flags

    from jaxneurons.data.manifest import write_manifest

    del argv
    f = flags.FLAGS
    issues = DataIssues()
    if f.format == "timit":
        utts = read_timit(f.root, on_error=f.on_error, issues=issues)
    elif f.format == "mfa":
        utts = read_mfa(f.root, f.textgrid_root, f.speakers_file, on_error=f.on_error, issues=issues)
    elif f.format == "voxceleb":
        utts = read_voxceleb(f.root, f.meta_file, on_error=f.on_error, issues=issues)
    else:
        utts = read_path_list(f.root, on_error=f.on_error, issues=issues)
    out = write_manifest(f.out, utts)
    print(f"wrote {out}: {len(utts)} utterances; {issues.summary()}")
    for line in issues.summary_lines():
        print(f"  {line}")
    if issues.counts:
        from jaxneurons.results import write_json

        detail = os.path.splitext(out)[0] + ".data_issues.json"
        write_json(detail, issues.as_dict())
        print(f"  every file: {detail}")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_enum("format", None, ["timit", "mfa", "voxceleb", "list"], "corpus layout")
    flags.DEFINE_string("root", None, "corpus root directory (for 'list': the CSV/TSV/JSONL file)")
    flags.DEFINE_string("textgrid_root", None, "mfa: directory of TextGrids (default: the audio root)")
    flags.DEFINE_string("speakers_file", None, "mfa: LibriSpeech SPEAKERS.TXT for gender")
    flags.DEFINE_string("meta_file", None, "voxceleb: tab-separated metadata (ID, Gender, Nationality)")
    from jaxneurons.config_flags import define_config_flags
    from jaxneurons.data.decoded import DecodeOptions

    define_config_flags(DecodeOptions)  # --on_error, the same policy as the scans'
    flags.DEFINE_string("out", None, "manifest to write")
    flags.mark_flags_as_required(["format", "root", "out"])
    from jaxneurons.data import readers as _module  # the imported module, not __main__: one class per error type
    from jaxneurons.errors import parse_flags, user_errors

    app.run(user_errors(_module.main), flags_parser=parse_flags)
