"""Synthetic labelled speech corpus from espeak-ng: many pseudo-speakers, exact phone boundaries.

``generate_corpus(out_dir, num_speakers, minutes, languages, seed)`` (or the CLI
``python -m jaxneurons.data.synth --num_speakers 40 --minutes 60 --languages en,tr --seed 0 --out DIR``)
writes ``DIR/audio/<speaker>/<utt_id>.flac`` (16 kHz, 16-bit FLAC) and ``DIR/manifest.jsonl``
(schema in ``jaxneurons.data.manifest``) and returns the manifest path.

How it is made:

* Synthesis: libespeak-ng from the pinned ``espeakng-loader`` wheel via ctypes (``espeak.py``):
  ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, espeakINITIALIZE_PHONEME_EVENTS)``, a synth callback,
  ``espeak_SetVoiceByName("<accent>+<variant>")``, ``espeak_SetParameter`` for rate, pitch and range,
  ``espeak_ng_SetRandSeed`` and ``espeak_Synth``. Each utterance is synthesised in a freshly forked
  child of an initialised worker, so it depends only on its own request (libespeak-ng otherwise carries
  state from one utterance to the next). Plain voices and variants only, never MBROLA.
* Phone boundaries: each phoneme event carries espeak's exact sample counter; a phone runs from its
  event to the next one, audio before the first event is ``sil``, pauses are ``sil``, zero-length
  phones are dropped and adjacent ``sil`` segments merged, so the segments tile the audio exactly.
  Mnemonics map to the ``en39`` / ``tr29`` phone sets in ``phones.py``; an unmapped mnemonic raises
  with the utterance id. Words start at the first phoneme after espeak's word event and end at the next
  word or pause.
* Resampling: espeak's native 22050 Hz -> 16 kHz with ``scipy.signal.resample_poly`` (up 320, down
  441; its linear-phase filter has no delay), sample positions rescaled by ``round(s * 320 / 441)``.
* Pseudo-speakers: speaker k of a language gets an accent x variant combination (English accents
  ``ACCENTS['en']``, Turkish ``tr``; variants ``VARIANTS``, interleaved male/female so genders balance)
  and its own pitch (35-65), pitch range (30-80) and rate (150-200 wpm) settings, all from the seed.
  Volume is 60 (espeak's default 100 saturates int16 for loud variants); an utterance whose peak after
  resampling exceeds 0.98 is scaled down to 0.98, so no sample is clipped.
  **Gender** is the ``gender`` line of the variant's file in ``espeak-ng-data/voices/!v`` ("male" ->
  "m", "female" -> "f"); only variants whose file declares a gender and which use espeak's own
  synthesiser (not Klatt) are listed, and the file is checked at start-up. Note that timbre comes from
  the variant: pseudo-speakers sharing a variant differ only in accent, pitch, range and rate.
* Text: sentences from the bundled word lists and templates in ``text.py`` (1 or 2 per utterance).
* Determinism and resumption: every choice comes from ``numpy.random.default_rng`` seeded with
  (seed, speaker, utterance); the same arguments give byte-identical audio and manifest. Each finished
  speaker is recorded in ``DIR/.part-<speaker>.jsonl`` (atomic), so an interrupted run resumes where
  it stopped; the final manifest is written atomically and the part files removed. A rerun on a
  complete directory returns its manifest. ``DIR/synth_config.json`` guards against resuming with
  different arguments.

Speed, measured on this project's 2-core AMD EPYC machine while other jobs were running (1 worker;
"real time" = seconds of audio per second; ``/usr/bin/time`` counts the worker processes too):

* ``python -m jaxneurons.data.synth --num_speakers 20 --minutes 20 --languages en,tr --seed 0
  --out /tmp/syn20``: 20.68 min of audio; CPU time 5.5 s (user 3.85 + sys 1.67) = 225x real time per
  CPU-second; wall 19.0 s = 65x, with a load average of 11 on the 2 cores from other jobs.
* ``python -m jaxneurons.data.synth --num_speakers 8 --minutes 4 --languages en,tr --seed 0
  --out /tmp/syn1`` at a load average of about 4: 4.29 min of audio in 1.9 s wall = 134x.

So with one free core the generator runs well above 100x real time; on a saturated machine its wall
speed is its CPU share times ~225x. ``--num_workers 2`` gives byte-identical output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
import soundfile as sf

from jaxneurons.data import phones as _phones
from jaxneurons.data import text as _text
from jaxneurons.data.audio import resample
from jaxneurons.data.espeak import EspeakError, EspeakWorker, RawSynthesis, SynthRequest
from jaxneurons.data.manifest import Segment, Utterance, read_manifest, write_manifest
from jaxneurons.errors import SettingError
from jaxneurons.progress import progress as progress_bar

log = logging.getLogger(__name__)

TARGET_SR = 16000
CORPUS_VERSION = 1

ACCENTS: dict[str, tuple[str, ...]] = {
    "en": (
        "en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan",
        "en-gb-x-gbcwmd",
    ),
    "tr": ("tr",),
}
# espeak-ng variants (voices/!v) with a declared gender and espeak's own synthesiser.
VARIANTS: dict[str, tuple[str, ...]] = {
    "m": ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "Lee", "Denis", "michel", "travis",
          "victor", "miguel", "Diogo"),
    "f": ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda", "linda",
          "steph", "steph2", "steph3", "grandma"),
}
PITCH_RANGE = (35, 65)
RANGE_RANGE = (30, 80)
RATE_RANGE = (150, 200)
VOLUME = 60  # espeak amplitude (default 100 saturates int16 for some variants)
PEAK_LIMIT = 0.98


def variant_gender(variant: str) -> str:
    """'m' or 'f' from the ``gender`` line of espeak-ng-data/voices/!v/<variant>; raises if absent."""
    import espeakng_loader

    path = os.path.join(espeakng_loader.get_data_path(), "voices", "!v", variant)
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].lower() == "gender":
                g = parts[1].lower()
                if g in ("male", "female"):
                    return g[0]
            if parts and parts[0].lower() == "klatt":
                raise ValueError(f"{path}: variant uses the Klatt synthesiser; not allowed")
    raise ValueError(f"{path}: variant declares no male/female gender")


@dataclass(frozen=True)
class SpeakerSpec:
    speaker_id: str
    language: str
    accent: str
    variant: str
    gender: str
    pitch: int
    range: int
    rate: int

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"


def make_speakers(num_speakers: int, languages: Sequence[str], seed: int) -> list[SpeakerSpec]:
    """Deterministic pseudo-speakers, spread round-robin over ``languages``, genders alternating."""
    if num_speakers < 1:
        raise SettingError(f"num_speakers must be >= 1, got {num_speakers}")
    for lang in languages:
        if lang not in ACCENTS:
            raise SettingError(f"language {lang!r} not supported; choose from {sorted(ACCENTS)}")
    for gender, names in VARIANTS.items():
        for name in names:
            if variant_gender(name) != gender:
                raise ValueError(f"espeak variant {name!r} does not declare gender {gender!r}")
    speakers = []
    counts = dict.fromkeys(languages, 0)
    combos: dict[str, list[tuple[str, str, str]]] = {}
    for li, lang in enumerate(languages):
        rng = np.random.default_rng([seed, 7, li])
        per_gender = []
        for gender in ("m", "f"):
            c = [(a, v, gender) for a in ACCENTS[lang] for v in VARIANTS[gender]]
            per_gender.append([c[i] for i in rng.permutation(len(c))])
        combos[lang] = [x for pair in zip(*per_gender, strict=True) for x in pair]
    for i in range(num_speakers):
        li = i % len(languages)
        lang = languages[li]
        k = counts[lang]
        counts[lang] += 1
        accent, variant, gender = combos[lang][k % len(combos[lang])]
        rng = np.random.default_rng([seed, 11, li, k])
        speakers.append(
            SpeakerSpec(
                speaker_id=f"syn-{lang}-{k:03d}", language=lang, accent=accent, variant=variant, gender=gender,
                pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
                range=int(rng.integers(RANGE_RANGE[0], RANGE_RANGE[1] + 1)),
                rate=int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1)),
            )
        )
    return speakers


def _rescale(pos: int, up: int, down: int) -> int:
    """round(pos * up / down), half up, in exact integer arithmetic."""
    return (2 * pos * up + down) // (2 * down)


def raw_to_utterance_audio(
    raw: RawSynthesis, text: str, language: str, accent: str, utt_id: str, target_sr: int = TARGET_SR
) -> tuple[np.ndarray, list[Segment], list[Segment]]:
    """Resample espeak output to ``target_sr`` and turn its events into phone and word segments."""
    n_native = raw.audio.shape[0]
    if n_native == 0:
        raise RuntimeError(f"espeak produced no audio for {utt_id} ({text!r})")
    g = math.gcd(target_sr, raw.sample_rate)
    up, down = target_sr // g, raw.sample_rate // g
    audio = resample(raw.audio.astype(np.float64) / 32768.0, raw.sample_rate, target_sr)
    peak = float(np.abs(audio).max())
    if peak > PEAK_LIMIT:  # never write clipped samples: scale the utterance down instead
        audio *= PEAK_LIMIT / peak
    audio = audio.astype(np.float32)
    n = audio.shape[0]

    # Phones: [event_k, event_{k+1}), audio before the first event is silence.
    segs: list[list] = []
    cur, cur_label = 0, _phones.SILENCE
    prev_native = 0
    phone_starts: list[int] = []  # 16 kHz start of each phoneme event, in event order
    for s_native, mnemonic in raw.phonemes:
        if s_native < prev_native or s_native > n_native:
            raise RuntimeError(
                f"{utt_id}: espeak phoneme event {mnemonic!r} at sample {s_native} is out of order or past "
                f"the end ({n_native})"
            )
        prev_native = s_native
        label = _phones.espeak_to_phone(mnemonic, language, accent, context=f"utterance {utt_id} ({text!r})")
        s = min(_rescale(s_native, up, down), n)
        phone_starts.append(s)
        if s > cur:
            segs.append([cur, s, cur_label])
        cur, cur_label = max(cur, s), label
    if n > cur:
        segs.append([cur, n, cur_label])
    phones: list[Segment] = []
    for start, end, label in segs:
        if phones and label == _phones.SILENCE and phones[-1][2] == _phones.SILENCE:
            phones[-1] = (phones[-1][0], end, label)
        else:
            phones.append((start, end, label))

    # Words: start at the first phoneme event after the word event, end at the next word or pause.
    word_starts: list[tuple[int, str]] = []
    pending: tuple[int, int] | None = None
    phon_i = 0
    for ev in raw.events:
        if ev[0] == "word":
            pending = (int(ev[2]), int(ev[3]))
        else:
            if pending is not None:
                pos, length = pending
                word = text[pos - 1 : pos - 1 + length].strip(" ,.?!;:")
                if word:
                    word_starts.append((phone_starts[phon_i], word))
                pending = None
            phon_i += 1
    sil_starts = [p[0] for p in phones if p[2] == _phones.SILENCE]
    words: list[Segment] = []
    for i, (start, word) in enumerate(word_starts):
        end = word_starts[i + 1][0] if i + 1 < len(word_starts) else n
        end = min([end] + [s for s in sil_starts if s > start])
        if end > start:
            words.append((start, end, word))
    return audio, phones, words


def _write_flac_atomic(path: str, audio: np.ndarray, sr: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".flac", dir=os.path.dirname(path))
    os.close(fd)
    try:
        sf.write(tmp, np.clip(audio, -1.0, 32767 / 32768), sr, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _utterance_plan(spk: SpeakerSpec, index: int, j: int, seed: int) -> tuple[str, SynthRequest]:
    """Text and request for utterance j of a speaker: a pure function of (seed, speaker, j)."""
    rng = np.random.default_rng([seed, 13, index, j])
    n_sent = 2 if rng.random() < 0.3 else 1
    text = " ".join(_text.sentence(spk.language, rng) for _ in range(n_sent))
    req = SynthRequest(
        text=text, voice=spk.voice, rate=spk.rate, volume=VOLUME, pitch=spk.pitch, range=spk.range,
        seed=int(rng.integers(1, 2**31 - 1)),
    )
    return text, req


def _make_speaker(
    worker: EspeakWorker, spk: SpeakerSpec, index: int, seed: int, seconds: float, out_dir: str
) -> list[Utterance]:
    """Synthesise utterances for one speaker until ``seconds`` of audio; pipelined one ahead."""
    utts: list[Utterance] = []
    total = 0.0
    j = 0
    plans = [_utterance_plan(spk, index, 0, seed)]
    worker.submit(plans[0][1])
    try:
        while True:
            plans.append(_utterance_plan(spk, index, j + 1, seed))
            worker.submit(plans[j + 1][1])  # the worker synthesises j + 1 while we resample and write j
            raw = worker.receive()
            text = plans[j][0]
            utt_id = f"{spk.speaker_id}-{j:04d}"
            audio, phones, words = raw_to_utterance_audio(raw, text, spk.language, spk.accent, utt_id)
            rel = os.path.join("audio", spk.speaker_id, f"{utt_id}.flac")
            _write_flac_atomic(os.path.join(out_dir, rel), audio, TARGET_SR)
            utts.append(
                Utterance(
                    utt_id=utt_id, path=os.path.join(os.path.abspath(out_dir), rel), speaker=spk.speaker_id,
                    gender=spk.gender, language=spk.language, duration=audio.shape[0] / TARGET_SR,
                    sample_rate=TARGET_SR, num_samples=int(audio.shape[0]), phones=tuple(phones),
                    phone_set=_phones.LANGUAGE_PHONE_SET[spk.language], words=tuple(words),
                    labels={
                        "dataset": "synth-espeak", "accent": spk.accent, "voice": spk.variant,
                        "pitch_setting": spk.pitch, "range_setting": spk.range, "rate_setting": spk.rate,
                    },
                    text=text,
                )
            )
            total += audio.shape[0] / TARGET_SR
            j += 1
            if total >= seconds:
                break
    finally:
        while worker.pending:  # the speculative request beyond the target (or after an error) is dropped
            with contextlib.suppress(EspeakError):
                worker.receive()
    return utts


def generate_corpus(
    out_dir: str,
    num_speakers: int,
    minutes: float,
    languages: Sequence[str] = ("en", "tr"),
    seed: int = 0,
    num_workers: int = 1,
    progress: bool = True,
) -> str:
    """Synthesise a corpus into ``out_dir`` (resuming a partial run); returns the manifest path."""
    languages = list(languages)
    if minutes <= 0:
        raise SettingError(f"minutes must be positive, got {minutes}")
    speakers = make_speakers(num_speakers, languages, seed)
    seconds = minutes * 60.0 / num_speakers
    os.makedirs(out_dir, exist_ok=True)
    config = {"corpus_version": CORPUS_VERSION, "num_speakers": num_speakers, "minutes": minutes,
              "languages": languages, "seed": seed, "speakers": [asdict(s) for s in speakers]}
    cfg_path = os.path.join(out_dir, "synth_config.json")
    manifest_path = os.path.join(os.path.abspath(out_dir), "manifest.jsonl")
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8") as f:
            old = json.load(f)
        if old != json.loads(json.dumps(config)):
            raise SettingError(f"{cfg_path}: {out_dir} holds a corpus made with other arguments; use a new --out")
        if os.path.exists(manifest_path):
            read_manifest(manifest_path)  # complete already; validate and return
            return manifest_path
    else:
        _write_text_atomic(cfg_path, json.dumps(config, indent=1, ensure_ascii=False))

    def part(i: int) -> str:
        # Top-level (hidden) so its audio paths are written relative, exactly as in the final manifest.
        return os.path.join(out_dir, f".part-{speakers[i].speaker_id}.jsonl")

    todo = [i for i in range(len(speakers)) if not os.path.exists(part(i))]
    if progress and len(todo) < len(speakers):
        print(f"resuming: {len(speakers) - len(todo)} of {len(speakers)} speakers already done", file=sys.stderr)
    t0 = time.time()
    done_seconds = [0.0]
    lock = threading.Lock()
    workers: queue.Queue[EspeakWorker] = queue.Queue()
    started = [EspeakWorker() for _ in range(max(1, min(num_workers, len(todo) or 1)))]
    for w in started:
        workers.put(w)

    def run(i: int) -> None:
        w = workers.get()
        try:
            utts = _make_speaker(w, speakers[i], i, seed, seconds, out_dir)
        finally:
            workers.put(w)
        write_manifest(part(i), utts)
        with lock:
            done_seconds[0] += sum(u.duration for u in utts)
            log.debug("%s (%s): %d utterances; %.1f min of audio in %.1f s", speakers[i].speaker_id,
                      speakers[i].voice, len(utts), done_seconds[0] / 60, time.time() - t0)

    try:
        with ThreadPoolExecutor(max_workers=len(started)) as pool:
            futures = [pool.submit(run, i) for i in todo]
            done = len(speakers) - len(todo)
            waits = (progress_bar(futures, total=len(speakers), initial=done, desc="speakers", unit="speaker")
                     if progress else futures)
            try:
                for fut in waits:
                    fut.result()
            except BaseException:
                for fut in futures:  # stop at the first failure; finished speakers stay recorded
                    fut.cancel()
                raise
    finally:
        for w in started:
            w.close()
    all_utts: list[Utterance] = []
    for i in range(len(speakers)):
        all_utts.extend(read_manifest(part(i)))
    write_manifest(manifest_path, all_utts)
    for i in range(len(speakers)):
        os.remove(part(i))
    return manifest_path


def _write_text_atomic(path: str, content: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    os.replace(tmp, path)


def main(argv: Sequence[str]) -> None:
    from absl import flags

    del argv
    f = flags.FLAGS
    t0 = time.time()
    path = generate_corpus(
        f.out, f.num_speakers, f.minutes, [x.strip() for x in f.languages.split(",") if x.strip()], f.seed,
        num_workers=f.num_workers,
    )
    utts = read_manifest(path)
    total = sum(u.duration for u in utts)
    dt = time.time() - t0
    print(f"wrote {path}: {len(utts)} utterances, {total / 60:.2f} min of audio in {dt:.1f} s "
          f"({total / dt:.0f}x real time)")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_integer("num_speakers", 20, "number of pseudo-speakers (spread over the languages)")
    flags.DEFINE_float("minutes", 10.0, "total minutes of audio")
    flags.DEFINE_string("languages", "en,tr", "comma-separated languages (en, tr)")
    flags.DEFINE_integer("seed", 0, "random seed; the same seed gives byte-identical output")
    flags.DEFINE_string("out", None, "output directory (created; an interrupted run resumes)")
    flags.DEFINE_integer("num_workers", 1, "espeak worker processes (threads resample and write)")
    flags.mark_flag_as_required("out")
    from jaxneurons.data import synth as _module  # the imported module, not __main__: one class per error type
    from jaxneurons.errors import parse_flags, user_errors

    app.run(user_errors(_module.main), flags_parser=parse_flags)
