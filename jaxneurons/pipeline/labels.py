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
GENDERS = ("m", "f")


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


def mfcc_deltas_per_utterance(audio: Sequence[np.ndarray], batch_size: int = 16) -> list[np.ndarray]:
    """MFCC (13) + deltas + delta-deltas with per-utterance mean normalisation, 10 ms frames (i-vector input)."""
    from jaxneurons.features.mfcc import add_deltas, cmn, mfcc

    out: list[np.ndarray | None] = [None] * len(audio)
    for idx, batch, lengths in padded_batches(audio, batch_size):
        feats, n = mfcc(jnp.asarray(batch), jnp.asarray(lengths))
        feats = cmn(add_deltas(feats, n), n)
        feats, n = np.asarray(feats), np.asarray(n)
        for row, i in enumerate(idx):
            out[i] = feats[row, : int(n[row])]
    return out  # type: ignore[return-value]


def ivector_clusters(
    audio: Sequence[np.ndarray], num_clusters: int = 2, *, num_components: int = 64, ivector_dim: int = 100,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(cluster id per utterance, length-normalised i-vectors): GMM-UBM + total variability on MFCC+deltas,
    then k-means (arXiv 2506.21712 uses k = 2 clusters of i-vectors as label-free speaker groups)."""
    from jaxneurons.features.ivector import ivector_pipeline
    from jaxneurons.scoring.speaker import kmeans

    ivecs, _ = ivector_pipeline(mfcc_deltas_per_utterance(audio), num_components=num_components,
                                ivector_dim=ivector_dim, seed=seed)
    _, labels = kmeans(np.asarray(ivecs), num_clusters, seed=seed)
    return np.asarray(labels, np.int32), np.asarray(ivecs)
