"""Deterministic train / dev / test splits of utterances.

- ``speaker_disjoint_split``: no speaker appears in two splits (phones, gender, pitch: the probe must not
  recognise the speaker instead of the property). Optional stratification (e.g. by gender) so every split
  gets speakers of every group.
- ``within_speaker_split``: every speaker appears in every split, utterances are disjoint (speaker ID: the
  test speakers must be known classes).

Both are a pure function of the inputs and the seed, and raise ``SplitError`` when a split would be empty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


class SplitError(ValueError):
    """A split that cannot be made as asked (too few speakers or utterances, unknown speakers)."""


@dataclasses.dataclass(frozen=True)
class Split:
    """Sorted utterance indices of each part."""

    train: np.ndarray
    dev: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}


def _counts(n: int, dev_fraction: float, test_fraction: float, what: str) -> tuple[int, int]:
    """How many of ``n`` items go to dev and test: rounded, at least 1 where the fraction is > 0."""
    n_dev = max(1, round(dev_fraction * n)) if dev_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_dev - n_test < 1:
        raise SplitError(
            f"{what}: {n} item(s) cannot fill train + dev ({n_dev}) + test ({n_test}); the train split would be empty"
        )
    return n_dev, n_test


def _check_fractions(dev_fraction: float, test_fraction: float) -> None:
    if not (0 <= dev_fraction < 1 and 0 <= test_fraction < 1 and dev_fraction + test_fraction < 1):
        raise SplitError(f"need 0 <= dev, test fractions and dev + test < 1, got {dev_fraction}, {test_fraction}")


def _speaker_array(speakers: Sequence) -> np.ndarray:
    spk = np.asarray([None if s is None else str(s) for s in speakers], dtype=object)
    if len(spk) == 0:
        raise SplitError("no utterances to split")
    missing = np.flatnonzero([s is None for s in spk])
    if len(missing):
        raise SplitError(
            f"{len(missing)} utterance(s) have no speaker (first index {missing[0]}); cannot split by speaker")
    return spk


def speaker_disjoint_split(
    speakers: Sequence,
    *,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    stratify: Sequence | None = None,
) -> Split:
    """Split utterances so that each speaker is in exactly one part.

    Fractions are of speakers, not utterances. ``stratify``: one value per utterance (constant within each
    speaker, e.g. gender); speakers are split within each stratum so all parts see every stratum.
    """
    _check_fractions(dev_fraction, test_fraction)
    spk = _speaker_array(speakers)
    rng = np.random.default_rng(seed)
    if stratify is None:
        strata = {"": sorted(set(spk))}
    else:
        if len(stratify) != len(spk):
            raise SplitError(f"stratify has {len(stratify)} values for {len(spk)} utterances")
        of_speaker: dict[str, str] = {}
        for s, g in zip(spk, stratify, strict=True):
            g = str(g)
            if of_speaker.setdefault(s, g) != g:
                raise SplitError(f"speaker {s!r} has more than one stratify value ({of_speaker[s]!r}, {g!r})")
        strata = {}
        for s, g in sorted(of_speaker.items()):
            strata.setdefault(g, []).append(s)
    part_of: dict[str, int] = {}
    for name, members in sorted(strata.items()):
        order = [members[i] for i in rng.permutation(len(members))]
        what = f"speakers{f' of stratum {name!r}' if name else ''}"
        n_dev, n_test = _counts(len(order), dev_fraction, test_fraction, what)
        for i, s in enumerate(order):
            part_of[s] = 2 if i < n_test else 1 if i < n_test + n_dev else 0
    part = np.array([part_of[s] for s in spk])
    return Split(*(np.flatnonzero(part == p) for p in range(3)))


def within_speaker_split(
    speakers: Sequence,
    *,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """Split each speaker's utterances so every speaker is in train, dev and test (utterance-disjoint)."""
    _check_fractions(dev_fraction, test_fraction)
    spk = _speaker_array(speakers)
    rng = np.random.default_rng(seed)
    part = np.zeros(len(spk), dtype=np.int64)
    too_few = []
    for s in sorted(set(spk)):
        idx = np.flatnonzero(spk == s)
        try:
            n_dev, n_test = _counts(len(idx), dev_fraction, test_fraction, f"speaker {s!r}")
        except SplitError:
            too_few.append(f"{s!r} ({len(idx)})")
            continue
        idx = idx[rng.permutation(len(idx))]
        part[idx[:n_test]] = 2
        part[idx[n_test:n_test + n_dev]] = 1
    if too_few:
        need = 1 + (dev_fraction > 0) + (test_fraction > 0)
        raise SplitError(
            f"{len(too_few)} speaker(s) have fewer than {need} utterances, so a split would lack them: "
            + ", ".join(too_few[:10]) + (" ..." if len(too_few) > 10 else "")
        )
    return Split(*(np.flatnonzero(part == p) for p in range(3)))
