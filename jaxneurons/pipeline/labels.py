"""Per-utterance frame labels for a model's frames: phones, middle-of-phone frames, gender, pitch bins, classes.

Everything here is host-side NumPy prepared once before a scan; the scan loop only pads and batches it.
Frames are the model's own (``model.num_frames``); a frame's label is the segment holding its receptive
field's centre sample (:mod:`jaxneurons.data.frames`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

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
from jaxneurons.features.pitch import pitch_bin_edges, yin
from jaxneurons.models.config import SpeechConfig

SILENCE = "sil"
GENDERS = ("m", "f")  # manifest values (Utterance.gender); class ids 0 / 1
GENDER_NAMES = {"m": "male", "f": "female"}  # the one spelling of gender groups in every result


def frame_geometry(config: SpeechConfig) -> ConvFrontEnd | FbankFrontEnd:
    """Receptive-field geometry of the model's frames."""
    if config.family == "melhubert":
        if config.frame_stacking != MELHUBERT_FBANK.stack:
            return FbankFrontEnd(hop=160, window=400, stack=config.frame_stacking)
        return MELHUBERT_FBANK
    if config.family == "ast":
        raise ValueError("AST models have patch tokens, not time frames: frame labels are undefined")
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
    return pitch_bin_edges(np.concatenate(values) if values else np.zeros(0))


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
    audio: Sequence[np.ndarray], num_frames: Sequence[int], batch_size: int = 16
) -> list[np.ndarray] | None:
    """Log-F0 on the MFCC frame grid, ``(num_frames[i], 1)`` per utterance, normalised over the corpus.

    YIN (71-800 Hz, threshold 0.1) every 10 ms, frame t centred on sample ``160 t + 200`` like a Kaldi MFCC
    frame. Unvoiced frames take the log-F0 linearly interpolated between the neighbouring voiced frames
    (held at the ends): a continuous contour like Kaldi's pitch feature, with no fill value that would
    make its own GMM mode, and no noise. The stream is z-scored with the mean / std of the voiced frames of
    the whole corpus, not per utterance: a speaker's pitch level is what it is for. An utterance without
    voiced frames gets the corpus mean (0). Returns None when the corpus has no voiced frame at all.
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
    if all(tr is None for tr in tracks):
        return None
    voiced_log = np.concatenate([tr[1] for tr in tracks if tr is not None])
    mu, sd = float(voiced_log.mean()), max(float(voiced_log.std()), 1e-3)
    out = []
    for tr, n in zip(tracks, num_frames, strict=True):
        z = np.zeros(int(n)) if tr is None else (np.interp(np.arange(int(n)), tr[0], tr[1]) - mu) / sd
        out.append(z.astype(np.float32)[:, None])
    return out


def ivector_clusters(
    audio: Sequence[np.ndarray], num_clusters: int = 2, *, num_components: int = 64, ivector_dim: int = 100,
    seed: int = 0, pitch_weight: float = 0.0, space: str = "ivector", n_init: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """(cluster id per utterance, length-normalised vectors): GMM-UBM + total variability on MFCC+deltas,
    then k-means (arXiv 2506.21712 uses k = 2 clusters of i-vectors as label-free speaker groups).

    The defaults are the study's method (MFCC-only i-vectors). Two label-free options decide whether k = 2
    follows gender on our espeak-ng corpus, and are what a synthetic-corpus run should pass
    (``pitch_weight=4, space="supervector"``; the demo does). ``benchmarks/bench_ivector.py``, purity vs
    gender over 3 English corpora and one English+Turkish corpus of 40 pseudo-speakers at ``ivector_dim``
    100: plain i-vectors 0.50-0.58, with both options 1.00 / 1.00 / 1.00 / 0.997; pairwise speaker EER
    0.17-0.19 -> 0.05-0.07 (table in ``benchmarks/ivector.md``):

    - ``pitch_weight`` > 0 adds a corpus-normalised log-F0 stream (:func:`log_f0_stream`) to the
      statistics with that stream weight; the UBM and the frame alignment stay on the MFCCs
      (``align_dims``, :func:`jaxneurons.features.ivector.extend_gmm`). espeak-ng's male and female
      variants differ in F0 (per-speaker median 76-130 vs 149-305 Hz) far more than in their MFCCs.
      0 gives the published MFCC-only front end. 4 is the smallest weight that reached >= 0.99 on all
      four corpora (1-2: 0.87-1.00); larger weights cost speaker EER (16: 0.11-0.13).
    - ``space="supervector"`` maps the i-vectors by ``M^(1/2)`` (the GMM-supervector / KL metric,
      :func:`jaxneurons.features.ivector.supervector_coordinates`) before the length normalisation, so
      k-means weighs each direction by how much it changes the model instead of treating the isotropic
      i-vector space as flat; ``"ivector"`` is the published plain i-vector.

    k-means keeps the best of ``n_init`` seeded starts (:func:`jaxneurons.scoring.speaker.kmeans`;
    ``n_init=1`` is a single start). The two options were tuned on synthetic speech only; on real speech
    (the study's LibriSpeech purities) they are unmeasured here, which is why they are not the default.
    """
    feats, align_dims = ivector_input(audio, pitch=pitch_weight > 0)
    return ivector_clusters_of_features(feats, align_dims, num_clusters, num_components=num_components,
                                        ivector_dim=ivector_dim, seed=seed, pitch_weight=pitch_weight,
                                        space=space, n_init=n_init)


def ivector_input(audio: Sequence[np.ndarray], *, pitch: bool = True) -> tuple[list[np.ndarray], int | None]:
    """(per-utterance frames, align_dims): MFCC+deltas (CMN), with the log-F0 stream as a last column when
    ``pitch`` and the corpus has voiced frames (then ``align_dims`` = the MFCC width, else None)."""
    feats = mfcc_deltas_per_utterance(audio)
    if not pitch:
        return feats, None
    f0 = log_f0_stream(audio, [len(f) for f in feats])
    if f0 is None:
        return feats, None
    return [np.concatenate([m, p], axis=1) for m, p in zip(feats, f0, strict=True)], feats[0].shape[1]


def ivector_clusters_of_features(
    feats: Sequence[np.ndarray], align_dims: int | None, num_clusters: int = 2, *, num_components: int = 64,
    ivector_dim: int = 100, seed: int = 0, pitch_weight: float = 0.0, space: str = "ivector",
    n_init: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ivector_clusters` on frames from :func:`ivector_input`; ``pitch_weight`` 0 drops the stream."""
    from jaxneurons.features.ivector import ivector_pipeline
    from jaxneurons.scoring.speaker import kmeans

    if align_dims is not None and pitch_weight <= 0:
        feats, align_dims = [f[:, :align_dims] for f in feats], None
    ivecs, _ = ivector_pipeline(feats, num_components=num_components, ivector_dim=ivector_dim, seed=seed,
                                align_dims=align_dims, aux_weight=pitch_weight if align_dims else 1.0,
                                space=space)
    _, labels = kmeans(np.asarray(ivecs), num_clusters, seed=seed, n_init=n_init)
    return labels, np.asarray(ivecs)
