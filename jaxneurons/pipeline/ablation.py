"""Ablation effects measured by probes: train probes on the unablated model, evaluate them on ablated ones.

Model editing as in arXiv 2409.05910: zeroing neuron ``i`` is ``h[..., i] = 0`` (equivalently zeroing
column ``W2[:, i]``, keeping ``b2``). Every neuron set is compared with a random control of the same size
in every layer (seeded), so an effect can be told apart from "fewer neurons". Probes read the last layer's
output, which every ablated layer feeds. Splits are speaker-disjoint (stratified by gender when known).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import nnx

from jaxneurons.data import BatchLoader, FrameLabelSpec, Utterance
from jaxneurons.pipeline.labels import GENDERS, PhoneInventory, frame_geometry
from jaxneurons.probes import evaluate, extract_features, speaker_disjoint_split, train_gender_probe, train_phone_probe


def random_control(mask: np.ndarray, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """A random set with the same number of neurons per layer as ``mask`` (avoiding ``exclude`` if possible)."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(mask, dtype=bool)
    for layer in range(mask.shape[0]):
        n = int(mask[layer].sum())
        pool = np.flatnonzero(~exclude[layer]) if exclude is not None else np.arange(mask.shape[1])
        if len(pool) < n:
            pool = np.arange(mask.shape[1])
        out[layer, rng.choice(pool, n, replace=False)] = True
    return out


def probe_ablation(
    model: nnx.Module,
    utts: Sequence[Utterance],
    inventory: PhoneInventory,
    neuron_sets: Mapping[str, np.ndarray],
    *,
    batch_size: int = 8,
    seed: int = 0,
    max_epochs: int = 30,
) -> dict[str, Any]:
    """Phone (frame) and gender (utterance) probe metrics for the clean model and each ablation + control.

    ``neuron_sets``: name -> (L, D) bool neurons to zero. Returns {"clean": {...}, name: {...},
    f"{name} (random)": {...}, "sizes": {name: n}} with test-set accuracies and chance levels.
    """
    geometry = frame_geometry(model.config)
    loader = BatchLoader(
        utts, batch_size, geometry, labels={
            "phone": FrameLabelSpec("phones", inventory.vocab, frames="all", ignore=("sil",))},
    )
    values = {
        "utt": np.arange(len(utts)),
        "gender": np.array([GENDERS.index(u.gender) if u.gender in GENDERS else -1 for u in utts]),
    }
    layer = model.config.num_hidden_layers

    def features(mask):
        return extract_features(model, loader, layers=[layer], frame_label_keys=("phone",),
                                utt_label_values=values, neuron_mask=mask)

    clean = features(None)
    order = np.asarray(clean.utt_labels["utt"])
    speakers = [utts[i].speaker or utts[i].utt_id for i in order]
    gender = np.asarray(clean.utt_labels["gender"])
    split = speaker_disjoint_split(speakers, dev_fraction=0.15, test_fraction=0.25, seed=seed,
                                   stratify=gender if (gender >= 0).all() else None)
    phone = train_phone_probe(clean.subset(split.train), clean.subset(split.dev), num_classes=inventory.size,
                              class_names=inventory.vocab.labels, max_epochs=max_epochs, seed=seed)
    has_gender = len(set(gender[split.train])) == 2
    sex = None
    if has_gender:
        sex = train_gender_probe(clean.subset(split.train).pooled(), clean.subset(split.dev).pooled(),
                                 num_classes=2, class_names=list(GENDERS), seed=seed)

    def metrics(feats) -> dict[str, Any]:
        test = feats.subset(split.test)
        out = {"phone_accuracy": evaluate(phone, test)["accuracy"]}
        if sex is not None:
            out["gender_accuracy"] = evaluate(sex, test.pooled())["accuracy"]
        return out

    results: dict[str, Any] = {"clean": metrics(clean), "sizes": {}, "split": split.sizes()}
    results["chance"] = {"phone_accuracy": evaluate(phone, clean.subset(split.test))["chance"]["accuracy"]}
    if sex is not None:
        results["chance"]["gender_accuracy"] = evaluate(sex, clean.subset(split.test).pooled())["chance"]["accuracy"]
    union = np.zeros_like(next(iter(neuron_sets.values())), dtype=bool) if neuron_sets else None
    for m in neuron_sets.values():
        union |= np.asarray(m, bool)
    for k, (name, mask) in enumerate(neuron_sets.items()):
        mask = np.asarray(mask, bool)
        results["sizes"][name] = int(mask.sum())
        results[name] = metrics(features((~mask).astype(np.float32)))
        control = random_control(mask, seed + 1000 + k, exclude=union)
        results[f"{name} (random)"] = metrics(features((~control).astype(np.float32)))
    return results
