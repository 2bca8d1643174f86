"""Per-utterance frame labels for a model's frames: phones, middle-of-phone frames, gender, pitch bins, classes.

Everything here is host-side NumPy prepared once before a scan; the scan loop only pads and batches it.
Frames are the model's own (``model.num_frames``); a frame's label is the segment holding its receptive
field's centre sample (:mod:`jaxneurons.data.frames`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jaxneurons.data import (
    MELHUBERT_FBANK,
    ConvFrontEnd,
    FbankFrontEnd,
    LabelVocab,
    Utterance,
    frame_labels,
    middle_frame_mask,
    phone_set,
    phone_type,
)
from jaxneurons.data.batching import padded_batches
from jaxneurons.errors import SettingError
from jaxneurons.features.ivector import (
    IVectorConfig,
    IVectorExtractor,
    fit_ivector_extractor,
    ivector_pipeline,
    load_ivector_extractor,
    utterance_ivectors,
)
from jaxneurons.features.pitch import pitch_bin_edges, yin
from jaxneurons.models.config import SpeechConfig

SILENCE = "sil"
GENDERS = ("m", "f")  # manifest values (Utterance.gender); class ids 0 / 1
GENDER_NAMES = {"m": "male", "f": "female"}  # the one spelling of gender groups in every result


def frame_geometry(config: SpeechConfig) -> ConvFrontEnd | FbankFrontEnd:
    """Receptive-field geometry of the model's frames."""
    if config.family == "melhubert":
        if config.frame_stacking_pad:  # the authors' MelHuBERT keeps an odd last fbank frame (zero-padded)
            return FbankFrontEnd(hop=160, window=400, stack=config.frame_stacking, remainder="pad")
        if config.frame_stacking != MELHUBERT_FBANK.stack:
            return FbankFrontEnd(hop=160, window=400, stack=config.frame_stacking)
        return MELHUBERT_FBANK
    if config.family == "tera":
        from jaxneurons.models.tera import frame_geometry as tera_geometry

        return tera_geometry(config)
    if config.family == "ast":
        raise ValueError("AST models have patch tokens, not time frames: frame labels are undefined")
    if config.family == "whisper":
        # Whisper frame t is centred on sample 320 t (centred STFT, conv2 stride 2) and an utterance of n samples
        # has ceil(n / 320) real frames: exactly the centres and counts of a single 1-sample conv of stride 320.
        return ConvFrontEnd((1,), (320,))
    return ConvFrontEnd(tuple(config.conv_kernel), tuple(config.conv_stride))


def manifest_phone_set(utts: Sequence[Utterance]) -> str:
    """The single phone set of a manifest's phone labels (errors name the utterances that disagree)."""
    sets = {}
    for u in utts:
        if u.phones is None:
            continue
        name = u.phone_set or u.language
        sets.setdefault(name, u.utt_id)
    if not sets:
        raise ValueError("no utterance of the manifest has phone segments; phone properties need them")
    if len(sets) > 1:
        raise ValueError(f"the manifest mixes phone sets {sets} (name -> first utterance); scan one set at a time")
    return next(iter(sets))


@dataclasses.dataclass
class PhoneInventory:
    """The phones of a set (silence excluded) and their types (vowel / voiced / unvoiced consonant)."""

    name: str
    vocab: LabelVocab
    types: list[str]

    @classmethod
    def of(cls, set_name: str) -> PhoneInventory:
        phones = [p for p in phone_set(set_name) if p != SILENCE]
        return cls(set_name, LabelVocab(phones, name=f"phones:{set_name}"), [phone_type(p, set_name) for p in phones])

    @property
    def size(self) -> int:
        return len(self.types)

    def ids_of_type(self, kind: str) -> list[int]:
        return [i for i, t in enumerate(self.types) if t == kind]

    @property
    def voiced_ids(self) -> list[int]:
        """Phones voiced by nature (vowels and voiced consonants): the pitch property uses only these."""
        return [i for i, t in enumerate(self.types) if t in ("vowel", "voiced")]


@dataclasses.dataclass
class UtteranceLabels:
    """Per-frame arrays of one utterance (length = model frames)."""

    phone: np.ndarray  # int32 phone id, -1 silence / unlabelled
    middle: np.ndarray  # bool, middle frame of each non-silence phone
    gender: int  # 0 m, 1 f, -1 unknown
    f0: np.ndarray | None = None  # float32 Hz, 0 unvoiced


def utterance_labels(
    utts: Sequence[Utterance], geometry: ConvFrontEnd | FbankFrontEnd, inventory: PhoneInventory | None,
    num_frames: Sequence[int],
) -> list[UtteranceLabels]:
    out = []
    for u, n in zip(utts, num_frames, strict=True):
        if inventory is not None and u.phones is not None:
            phone = frame_labels(u.phones, inventory.vocab, geometry, n, ignore=(SILENCE,))
            middle = middle_frame_mask(u.phones, geometry, n, ignore=(SILENCE,))
        else:
            phone, middle = np.full(n, -1, np.int32), np.zeros(n, bool)
        gender = GENDERS.index(u.gender) if u.gender in GENDERS else -1
        out.append(UtteranceLabels(phone.astype(np.int32), middle, gender))
    return out


def attach_f0(labels: list[UtteranceLabels], audio: Sequence[np.ndarray], batch_size: int = 16) -> None:
    """F0 per model frame by YIN (20 ms hop, 71-800 Hz). YIN frame t is centred on sample 320 t + 160, within
    half a frame of model frame t's centre, so frames are matched by index (truncated / padded at the end)."""
    for idx, batch, lengths in padded_batches(audio, batch_size):
        f0, voiced, _ = yin(jnp.asarray(batch), jnp.asarray(lengths))
        f0 = np.where(np.asarray(voiced), np.asarray(f0), 0.0)
        for row, i in enumerate(idx):
            t = len(labels[i].phone)
            values = f0[row, : min(t, f0.shape[1])]
            labels[i].f0 = np.pad(values, (0, t - len(values))).astype(np.float32)


def pitch_edges_from_data(labels: Sequence[UtteranceLabels], inventory: PhoneInventory) -> tuple[float, float]:
    """33rd / 66th percentiles of F0 over voiced frames of voiced phones (the property-neuron study's rule)."""
    voiced_phone = np.zeros(inventory.size + 1, bool)
    voiced_phone[inventory.voiced_ids] = True
    values = [lab.f0[(lab.f0 > 0) & voiced_phone[lab.phone]] for lab in labels if lab.f0 is not None]
    if not sum(len(v) for v in values):  # e.g. noise, or whispered speech: the corpus, not a bug
        raise SettingError(f"pitch: no voiced frames (F0 > 0) in the voiced phones of the {len(labels)} utterances, "
                           "so no pitch groups; leave 'pitch' out of the properties for this corpus")
    return pitch_bin_edges(np.concatenate(values))


def pitch_bins(f0: np.ndarray, edges: tuple[float, float]) -> np.ndarray:
    """0 low / 1 mid / 2 high, -1 unvoiced."""
    return np.where(f0 <= 0, -1, np.where(f0 < edges[0], 0, np.where(f0 < edges[1], 1, 2))).astype(np.int32)


IVECTOR_PAD = 32000  # pad feature batches to 2 s multiples: few distinct shapes to compile


def mfcc_deltas_per_utterance(audio: Sequence[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
    """MFCC (13) + deltas + delta-deltas with per-utterance mean normalisation, 10 ms frames (i-vector input)."""
    from jaxneurons.features.mfcc import add_deltas, cmn, mfcc

    out: list[np.ndarray | None] = [None] * len(audio)
    for idx, batch, lengths in padded_batches(audio, batch_size, IVECTOR_PAD):
        feats, n = mfcc(jnp.asarray(batch), jnp.asarray(lengths))
        feats = cmn(add_deltas(feats, n), n)
        feats, n = np.asarray(feats), np.asarray(n)
        for row, i in enumerate(idx):
            out[i] = feats[row, : int(n[row])]
    return out  # type: ignore[return-value]


def log_f0_stream(
    audio: Sequence[np.ndarray], num_frames: Sequence[int], batch_size: int = 16, *,
    norm: tuple[float, float] | None = None,
) -> tuple[list[np.ndarray], tuple[float, float]] | None:
    """Log-F0 on the MFCC frame grid, ``(num_frames[i], 1)`` per utterance, normalised over the corpus,
    and the ``(mean, std)`` of log-F0 it was normalised with.

    YIN (71-800 Hz, threshold 0.1) every 10 ms, frame t centred on sample ``160 t + 200`` like a Kaldi MFCC
    frame. Unvoiced frames take the log-F0 linearly interpolated between the neighbouring voiced frames
    (held at the ends): a continuous contour like Kaldi's pitch feature, with no fill value that would
    make its own GMM mode, and no noise. The stream is z-scored with the mean / std of the voiced frames of
    the whole corpus (or with ``norm``, e.g. a background corpus's, stored with its i-vector extractor),
    not per utterance: a speaker's pitch level is what it is for. An utterance without voiced frames gets
    the mean (0). Returns None when the corpus has no voiced frame at all and no ``norm`` is given.
    """
    tracks: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(audio)  # (voiced frames, their log-F0)
    for idx, batch, lengths in padded_batches(audio, batch_size, IVECTOR_PAD):
        f0, voiced, _ = yin(jnp.asarray(batch), jnp.asarray(lengths), frame_shift_ms=10.0, centre_offset=200,
                            num_frames=max(1, (batch.shape[1] - 400) // 160 + 1))
        f0, voiced = np.asarray(f0), np.asarray(voiced)
        for row, i in enumerate(idx):
            t = np.flatnonzero(voiced[row, : int(num_frames[i])])
            if t.size:
                tracks[i] = (t, np.log(f0[row, t]))
    if norm is None:
        if all(tr is None for tr in tracks):
            return None
        voiced_log = np.concatenate([tr[1] for tr in tracks if tr is not None])
        norm = (float(voiced_log.mean()), max(float(voiced_log.std()), 1e-3))
    mu, sd = norm
    out = []
    for tr, n in zip(tracks, num_frames, strict=True):
        z = np.zeros(int(n)) if tr is None else (np.interp(np.arange(int(n)), tr[0], tr[1]) - mu) / sd
        out.append(z.astype(np.float32)[:, None])
    return out, (float(mu), float(sd))


class IVectorInput(NamedTuple):
    """Per-utterance i-vector frames, ``align_dims`` (MFCC width when a log-F0 stream is the last column,
    else None) and the stream's ``(mean, std)`` normalisation (None without a stream)."""

    features: list[np.ndarray]
    align_dims: int | None
    stream_norm: tuple[float, float] | None


def ivector_clusters(
    audio: Sequence[np.ndarray], num_clusters: int = 2, *, config: IVectorConfig | None = None,
    extractor: IVectorExtractor | str | None = None, **overrides: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """(cluster id per utterance, length-normalised vectors): GMM-UBM + total variability on MFCC+deltas,
    then k-means (arXiv 2506.21712 uses k = 2 clusters of i-vectors as label-free speaker groups).

    ``config`` (:class:`~jaxneurons.features.ivector.IVectorConfig`, default = the study's MFCC-only front
    end, sizes lowered to what the corpus supports: ``dims="auto"``); ``overrides`` replace its fields
    (``num_components=..., ivector_dim=..., pitch_weight=..., space=..., seed=..., n_init=...``: what
    ``ScanOptions`` passes). ``extractor``: a fitted extractor (or the directory of a saved one,
    :func:`~jaxneurons.features.ivector.load_ivector_extractor`) fitted once on a background corpus
    (:func:`fit_ivector_extractor_from_audio`); then only the statistics and i-vectors of ``audio`` are
    computed, with the extractor's own sizes and log-F0 stream settings.

    Measured (``benchmarks/ivector.md``): on real LibriSpeech (subsets of 100-251 utterances of
    ``librispeech-251``) the default's k = 2 clusters match gender at 0.90-0.964 (the study: 97.2 % male /
    89.8 % female); the fixed study sizes (R = 100 on a few hundred utterances) are at chance (0.54-0.61).
    The pitch options (``pitch_weight=4, space="supervector"``) are what made k = 2 follow gender on the
    synthetic espeak-ng corpus, whose voices differ mainly in F0 (1.000 there, default 0.59).

    k-means keeps the best of ``config.n_init`` seeded starts (:func:`jaxneurons.scoring.speaker.kmeans`).
    """
    config = dataclasses.replace(config or IVectorConfig(), **overrides)
    if isinstance(extractor, str):
        extractor = load_ivector_extractor(extractor)
    if extractor is None:
        inp = ivector_input(audio, pitch=config.pitch_weight > 0)
    else:
        inp = ivector_input(audio, pitch=extractor.align_dims is not None, stream_norm=extractor.stream_norm)
    return ivector_clusters_of_features(inp.features, inp.align_dims, num_clusters, config=config,
                                        extractor=extractor)


def fit_ivector_extractor_from_audio(
    audio: Sequence[np.ndarray], config: IVectorConfig | None = None, **overrides: Any
) -> IVectorExtractor:
    """Fit an i-vector extractor on a background corpus (waveforms): MFCC+deltas (and the log-F0 stream
    when ``pitch_weight`` > 0, its normalisation stored with the extractor). Save it with
    :func:`~jaxneurons.features.ivector.save_ivector_extractor`, reuse it with ``ivector_clusters(...,
    extractor=...)``."""
    config = dataclasses.replace(config or IVectorConfig(), **overrides)
    inp = ivector_input(audio, pitch=config.pitch_weight > 0)
    return fit_ivector_extractor(inp.features, config, align_dims=inp.align_dims, stream_norm=inp.stream_norm)


def ivector_input(
    audio: Sequence[np.ndarray], *, pitch: bool = True, stream_norm: tuple[float, float] | None = None
) -> IVectorInput:
    """MFCC+deltas (CMN) per utterance, with the log-F0 stream (:func:`log_f0_stream`, normalised over
    this corpus or by ``stream_norm``) as a last column when ``pitch`` and there are voiced frames."""
    feats = mfcc_deltas_per_utterance(audio)
    if not pitch:
        return IVectorInput(feats, None, None)
    stream = log_f0_stream(audio, [len(f) for f in feats], norm=stream_norm)
    if stream is None:
        return IVectorInput(feats, None, None)
    f0, norm = stream
    return IVectorInput([np.concatenate([m, p], axis=1) for m, p in zip(feats, f0, strict=True)],
                        feats[0].shape[1], norm)


def ivector_clusters_of_features(
    feats: Sequence[np.ndarray], align_dims: int | None, num_clusters: int = 2, *,
    config: IVectorConfig | None = None, extractor: IVectorExtractor | None = None, **overrides: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ivector_clusters` on frames from :func:`ivector_input`. Without ``extractor`` one is fitted
    on ``feats`` (``pitch_weight`` 0 drops a log-F0 stream column); with one, its stream setting must match."""
    from jaxneurons.scoring.speaker import kmeans

    config = dataclasses.replace(config or IVectorConfig(), **overrides)
    if extractor is None:
        if align_dims is not None and config.pitch_weight <= 0:
            feats, align_dims = [f[:, :align_dims] for f in feats], None
        ivecs, _ = ivector_pipeline(feats, config, align_dims=align_dims)
    else:
        if (align_dims is None) != (extractor.align_dims is None):
            raise ValueError("ivector_clusters_of_features: the extractor was fitted "
                             f"{'with' if extractor.align_dims else 'without'} a log-F0 stream, the features "
                             f"are {'with' if align_dims else 'without'} one")
        ivecs = utterance_ivectors(extractor, feats, config)
    _, labels = kmeans(np.asarray(ivecs), num_clusters, seed=config.seed, n_init=config.n_init)
    return labels, np.asarray(ivecs)
