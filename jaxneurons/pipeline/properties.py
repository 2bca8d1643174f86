"""What a scan looks for: one class per method, each with its own parameters.

A property implements one small protocol (:class:`Property`):

- ``prepare(ctx)``: everything it needs from the data before the model pass (vocabularies, pitch edges,
  i-vector groups, SSL centroids), returned as its *state*;
- ``conditions(state)``: the condition sets the statistics pass counts (:class:`~jaxneurons.stats.spec.ConditionSpec`);
- ``frame_labels(state, rows)``: per-frame (or per-utterance) class ids of one batch, from the shared
  :class:`BatchRows`; ``forward_labels(state, out, labels)`` optionally turns them into per-frame labels inside
  the jitted forward pass (the speaker property's SSL cluster of every frame);
- ``score(state, stats, widths)``: ``{result name: {"groups": {group: (L, D) bool}, ...}}``.

A new property is one new class; the scan never dispatches on names. The CLI and configs name properties by
:attr:`Property.name` (``phone_type``, ``gender``, ``pitch``, ``speaker``, ``aape_LABEL``, ``selective_LABEL``),
which is also the key of its results in ``neurons.json`` and the condition name of its statistics:
:func:`make_property` maps a name to an object with the parameters of a :class:`ScanOptions`.

Group names: gender groups are ``male`` / ``female`` everywhere (property neurons and AAPE classes alike).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from jaxneurons.config_flags import field_help
from jaxneurons.data import LabelVocab, Utterance
from jaxneurons.features.ivector import IVectorConfig
from jaxneurons.pipeline.labels import GENDER_NAMES, GENDERS, PhoneInventory, UtteranceLabels, pitch_bins
from jaxneurons.stats.spec import ConditionSpec

PITCH_GROUPS = ("low", "mid", "high")
PHONE_TYPE_GROUPS = ("vowel", "voiced", "unvoiced")


# ---------------------------------------------------------------------------------------------------- parameters


@dataclasses.dataclass(frozen=True)
class PropertyNeuronConfig:
    """Property neurons (arXiv 2409.05910): top-1 % |h| events (rho 0.01), chance k/D, kept for a group when
    meaningful for >= sigma (0.8) of its cells, exclusive to one group; middle frame of each phone."""

    frames: str = field_help("mid", "Phone frames counted: the middle frame of each phone (the paper) or all.",
                             choices=("mid", "all"))
    rho: float = field_help(0.01, "Top-k fraction of |h| per frame and layer (the paper: 1 %).")
    sigma: float = field_help(0.8, "Keep a neuron for a group if meaningful for >= sigma of its cells (0.8).")
    pitch_edges: tuple[float, ...] | None = field_help(
        None, "Fixed pitch-bin edges in Hz (the paper's LibriSpeech dev-clean values: 129.03,179.78); default: "
        "33rd/66th percentiles of voiced frames of voiced phones in the scanned data.")

    def __post_init__(self) -> None:
        if self.frames not in ("mid", "all"):
            raise ValueError(f"frames must be 'mid' or 'all', got {self.frames!r}")
        if self.pitch_edges is not None:
            edges = tuple(float(x) for x in self.pitch_edges)
            if not edges:
                edges = None
            elif len(edges) != 2 or not 0 < edges[0] < edges[1]:
                raise ValueError(f"pitch_edges: two increasing values in Hz (low/mid, mid/high), got {edges}")
            object.__setattr__(self, "pitch_edges", edges)


@dataclasses.dataclass(frozen=True)
class SpeakerNeuronConfig:
    """Label-free speaker neurons (arXiv 2506.21712): cells (i-vector group g of k = 2, SSL cluster c of k = 3 at
    the layer 3/4 of the depth, layer 9 of 12 in the paper), every frame; a neuron is kept for g when it counts
    in >= sigma of the SSL clusters (1.0: all, the paper's text; 0.8 its code default) and is exclusive to g.
    i-vectors: :class:`~jaxneurons.features.ivector.IVectorConfig` (GMM-UBM 64 components + total variability
    100 dims as upper bounds, MFCC-only, plain space)."""

    rho: float = field_help(0.01, "Top-k fraction of |h| per frame and layer (the paper: 1 %).")
    sigma: float = field_help(1.0, "Fraction of SSL clusters a speaker neuron must count in (1.0: all, the "
                              "paper's text; 0.8: its code default).")
    ssl_layer: int | None = field_help(None, "hidden_states index whose frames are clustered (default: 3/4 of "
                                       "the depth, layer 9 of 12 in the paper).")
    num_ssl_clusters: int = field_help(3, "SSL k-means clusters (the paper: 3).")
    num_speaker_clusters: int = field_help(2, "i-vector k-means clusters (the paper: 2).")
    ssl_max_utterances: int = field_help(200, "Utterances whose frames fit the SSL k-means (seeded subsample).")
    ivector: IVectorConfig = IVectorConfig()  # the study's MFCC i-vector front end (features/ivector.py)
    ivector_extractor: str = field_help("", "Directory of an i-vector extractor fitted once on a background corpus "
                                        "(features.ivector.save_ivector_extractor); empty: fit on the scanned data.")


@dataclasses.dataclass(frozen=True)
class AAPEConfig:
    """AAPE (arXiv 2602.15307, after LAPE): ``h > 0`` probability per class, entropy over classes; keep the
    lowest-entropy top_rate (1 %) of all neurons; filter_rate and activation_bar_ratio 0.95."""

    top_rate: float = field_help(0.01, "Fraction of all neurons kept (the paper: 1 %).")
    filter_rate: float = field_help(0.95, "Quantile of p below which a neuron is dismissed (0.95).")
    activation_bar_ratio: float = field_help(0.95, "Quantile a class's p must exceed (0.95).")


# ---------------------------------------------------------------------------------------------------- the protocol


@dataclasses.dataclass
class ScanContext:
    """What :meth:`Property.prepare` may use: the model, the utterances, frame labels and decoded audio."""

    model: Any
    utts: Sequence[Utterance]
    inventory: PhoneInventory | None
    utt_labels: list[UtteranceLabels]
    all_audio: Callable[[], list[np.ndarray]]
    audio_of: Callable[[int], np.ndarray]
    decoded: Any = None


@dataclasses.dataclass
class BatchRows:
    """Shared per-batch arrays every property maps to its labels (rows with utt index -1 are padding)."""

    utt_indices: np.ndarray  # (B,)
    phone: np.ndarray  # (B, T) int32, -1 silence / unlabelled
    middle: np.ndarray  # (B, T) bool
    gender: np.ndarray  # (B, 1) int32, -1 unknown
    f0: np.ndarray  # (B, T) float32 Hz (0: unvoiced or not computed)


class Property:
    """Base class of scan properties (see the module docstring). Subclasses are frozen dataclasses."""

    name: str
    needs_phones: ClassVar[bool] = False
    needs_f0: ClassVar[bool] = False

    def prepare(self, ctx: ScanContext) -> Any:
        return None

    def conditions(self, state: Any) -> list[ConditionSpec]:
        raise NotImplementedError

    def frame_labels(self, state: Any, rows: BatchRows) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def selections(self, rows: BatchRows) -> dict[str, np.ndarray]:
        return {}

    def forward_labels(self, state: Any, out: Any, labels: Mapping[str, Any]) -> dict[str, Any]:
        """Labels computed inside the jitted forward pass (replacing the host labels of the same name)."""
        return {}

    def score(self, state: Any, stats: Any, widths: Sequence[int]) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def summary(self, state: Any) -> dict[str, Any]:
        """JSON-able facts about the prepared state (pitch edges, cluster purity, class vocabulary)."""
        return {}


# ---------------------------------------------------------------------------------------------------- property neurons


@dataclasses.dataclass(frozen=True)
class _PhoneCellProperty(Property):
    """Property neurons over phone cells (arXiv 2409.05910); subclasses define the cells and groups."""

    config: PropertyNeuronConfig = PropertyNeuronConfig()
    needs_phones: ClassVar[bool] = True
    condition: ClassVar[str]

    def _selection(self) -> str | None:
        return "mid" if self.config.frames == "mid" else None

    def selections(self, rows: BatchRows) -> dict[str, np.ndarray]:
        return {"mid": rows.middle} if self.config.frames == "mid" else {}

    def conditions(self, state: Any) -> list[ConditionSpec]:
        return [ConditionSpec(self.condition, self.num_groups * state["inventory"].size, self._selection())]

    def prepare(self, ctx: ScanContext) -> Any:
        return {"inventory": ctx.inventory}

    def score(self, state: Any, stats: Any, widths: Sequence[int]) -> dict[str, dict[str, Any]]:
        from jaxneurons.scoring.property import property_neurons

        arr = stats.to_numpy()
        res = property_neurons(arr[f"{self.condition}/topk"], arr[f"{self.condition}/frames"],
                               self.groups(state), rho=self.config.rho, sigma=self.config.sigma, widths=widths)
        return {self.name: {"groups": res["exclusive"], "scores": res["scores"], "empty_cells": res["empty_cells"],
                            **self.summary(state)}}

    num_groups: ClassVar[int] = 1

    def groups(self, state: Any) -> dict[str, list[int]]:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class PhoneType(_PhoneCellProperty):
    """Phone-type neurons: cells = phones, groups vowel / voiced / unvoiced consonant."""

    name: ClassVar[str] = "phone_type"
    condition: ClassVar[str] = "phone"

    def groups(self, state: Any) -> dict[str, list[int]]:
        return {g: state["inventory"].ids_of_type(g) for g in PHONE_TYPE_GROUPS}

    def frame_labels(self, state: Any, rows: BatchRows) -> dict[str, np.ndarray]:
        return {self.condition: rows.phone}


@dataclasses.dataclass(frozen=True)
class Gender(_PhoneCellProperty):
    """Gender neurons: cells = gender x phone, groups male / female."""

    name: ClassVar[str] = "gender"
    condition: ClassVar[str] = "gender_phone"
    num_groups: ClassVar[int] = len(GENDERS)

    def groups(self, state: Any) -> dict[str, list[int]]:
        n = state["inventory"].size
        return {GENDER_NAMES[g]: [k * n + i for i in range(n)] for k, g in enumerate(GENDERS)}

    def frame_labels(self, state: Any, rows: BatchRows) -> dict[str, np.ndarray]:
        n = state["inventory"].size
        ok = (rows.phone >= 0) & (rows.gender >= 0)
        return {self.condition: np.where(ok, rows.gender * n + rows.phone, -1).astype(np.int32)}


@dataclasses.dataclass(frozen=True)
class Pitch(_PhoneCellProperty):
    """Pitch neurons: cells = pitch bin x voiced phone (voiced frames only), groups low / mid / high."""

    name: ClassVar[str] = "pitch"
    condition: ClassVar[str] = "pitch_phone"
    needs_f0: ClassVar[bool] = True
    num_groups: ClassVar[int] = len(PITCH_GROUPS)

    def prepare(self, ctx: ScanContext) -> Any:
        from jaxneurons.pipeline.labels import pitch_edges_from_data

        edges = self.config.pitch_edges or pitch_edges_from_data(ctx.utt_labels, ctx.inventory)
        voiced = np.zeros(ctx.inventory.size + 1, bool)  # index -1 (silence) -> False
        voiced[ctx.inventory.voiced_ids] = True
        return {"inventory": ctx.inventory, "edges": tuple(float(e) for e in edges), "voiced": voiced}

    def groups(self, state: Any) -> dict[str, list[int]]:
        inv = state["inventory"]
        return {g: [k * inv.size + i for i in inv.voiced_ids] for k, g in enumerate(PITCH_GROUPS)}

    def bins(self, state: Any, phone: np.ndarray, f0: np.ndarray) -> np.ndarray:
        """Pitch bin of every voiced frame of a voiced phone, -1 elsewhere (the study's rule)."""
        return np.where(state["voiced"][phone], pitch_bins(f0, state["edges"]), -1).astype(np.int32)

    def frame_labels(self, state: Any, rows: BatchRows) -> dict[str, np.ndarray]:
        n = state["inventory"].size
        pitch = self.bins(state, rows.phone, rows.f0)
        ok = (rows.phone >= 0) & (pitch >= 0)
        return {self.condition: np.where(ok, pitch * n + rows.phone, -1).astype(np.int32)}

    def summary(self, state: Any) -> dict[str, Any]:
        return {"edges_hz": list(state["edges"])}


# ---------------------------------------------------------------------------------------------------- speaker neurons


def default_ssl_layer(num_layers: int) -> int:
    """hidden_states index at 3/4 of the depth (layer 9 of 12 in arXiv 2506.21712)."""
    return max(1, int(0.75 * num_layers + 0.5))


@dataclasses.dataclass(frozen=True)
class SpeakerNeurons(Property):
    """Label-free speaker neurons and SSL-cluster neurons (arXiv 2506.21712); results ``speaker``
    (groups ``ivector_cluster{g}``) and ``ssl_cluster`` (groups ``ssl_cluster{c}``)."""

    config: SpeakerNeuronConfig = SpeakerNeuronConfig()
    name: ClassVar[str] = "speaker"
    condition: ClassVar[str] = "speaker_cell"
    ssl_result: ClassVar[str] = "ssl_cluster"

    def prepare(self, ctx: ScanContext) -> Any:
        """i-vector groups per utterance and SSL k-means centroids of one layer (fit on a seeded subsample)."""
        from jaxneurons.pipeline.labels import ivector_clusters
        from jaxneurons.scoring.speaker import cluster_purity, kmeans
        from jaxneurons.train.targets import layer_features

        c = self.config
        key = (c.num_speaker_clusters, c.ivector, c.ivector_extractor)
        decoded = ctx.decoded
        if decoded is not None and key in decoded.speaker_groups:
            groups = decoded.speaker_groups[key]
        else:
            groups, _ = ivector_clusters(ctx.all_audio(), c.num_speaker_clusters, config=c.ivector,
                                         extractor=c.ivector_extractor or None)
            if decoded is not None:
                decoded.speaker_groups[key] = groups
                decoded.ivector_runs += 1
        layer = c.ssl_layer if c.ssl_layer is not None else default_ssl_layer(ctx.model.config.num_hidden_layers)
        rng = np.random.default_rng(0)
        pick = rng.choice(len(ctx.utts), min(len(ctx.utts), c.ssl_max_utterances), replace=False)
        feats = layer_features(ctx.model, [ctx.audio_of(int(i)) for i in pick], layer)
        centroids, _ = kmeans(np.concatenate(feats), c.num_ssl_clusters, seed=0, max_points=100_000)
        gender = np.array([GENDERS.index(u.gender) if u.gender in GENDERS else -1 for u in ctx.utts])
        purity = cluster_purity(groups, gender) if (gender >= 0).any() else None
        if purity is not None:  # majority class as its group name (one spelling: male / female)
            for v in purity["clusters"].values():
                v["majority"] = GENDER_NAMES[GENDERS[v["majority"]]]
        return {"ssl_layer": layer, "ssl_centroids": centroids, "speaker_groups": np.asarray(groups),
                "clustering": {"ivector_clusters_vs_gender": purity, "ssl_layer": layer}}

    def conditions(self, state: Any) -> list[ConditionSpec]:
        return [ConditionSpec(self.condition, self.config.num_speaker_clusters * self.config.num_ssl_clusters)]

    def frame_labels(self, state: Any, rows: BatchRows) -> dict[str, np.ndarray]:
        # The i-vector group per utterance; the forward pass turns it into g * num_ssl + SSL cluster per frame.
        groups = state["speaker_groups"][np.maximum(rows.utt_indices, 0)]
        return {self.condition: np.where(rows.utt_indices >= 0, groups, -1).astype(np.int32)}

    def forward_labels(self, state: Any, out: Any, labels: Mapping[str, Any]) -> dict[str, Any]:
        import jax.numpy as jnp

        centroids = jnp.asarray(state["ssl_centroids"])
        x = out.hidden_states[state["ssl_layer"]]
        dist = jnp.sum(x * x, -1, keepdims=True) - 2 * x @ centroids.T + jnp.sum(centroids * centroids, -1)
        cluster = jnp.argmin(dist, axis=-1).astype(jnp.int32)
        group = labels[self.condition][:, None]
        cell = jnp.where((group >= 0) & out.frame_mask, group * centroids.shape[0] + cluster, -1)
        return {self.condition: cell}

    def score(self, state: Any, stats: Any, widths: Sequence[int]) -> dict[str, dict[str, Any]]:
        from jaxneurons.scoring.speaker import speaker_neurons

        c = self.config
        arr = stats.to_numpy()
        res = speaker_neurons(arr[f"{self.condition}/topk"], arr[f"{self.condition}/frames"], c.num_speaker_clusters,
                              c.num_ssl_clusters, rho=c.rho, sigma=c.sigma, widths=widths)
        return {
            self.name: {"groups": {f"ivector_cluster{g}": res["speaker"]["exclusive"][f"group{g}"]
                                   for g in range(c.num_speaker_clusters)},
                        "scores": res["speaker"]["scores"], "clustering": state["clustering"]},
            self.ssl_result: {"groups": {f"ssl_cluster{k}": res["ssl"]["exclusive"][f"ssl{k}"]
                                         for k in range(c.num_ssl_clusters)}},
        }

    def summary(self, state: Any) -> dict[str, Any]:
        return {"clustering": state["clustering"]}


# ---------------------------------------------------------------------------------------------------- utterance classes


def utterance_value(u: Utterance, key: str) -> str | None:
    """An utterance's class for ``key``: a manifest field or a ``labels`` entry; gender as male / female."""
    if key == "gender":
        return GENDER_NAMES.get(u.gender) if u.gender else None
    v = getattr(u, key) if key in ("speaker", "language", "utt_id") else u.labels.get(key.removeprefix("labels."))
    return None if v is None or v == "" else str(v)


@dataclasses.dataclass(frozen=True)
class _UtteranceClassProperty(Property):
    """Classes of an utterance label (gender, speaker, language or a key of the manifest's ``labels``)."""

    label: str = "gender"
    prefix: ClassVar[str]
    stat: ClassVar[str]

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.prefix}_{self.label}"

    def prepare(self, ctx: ScanContext) -> Any:
        values = [utterance_value(u, self.label) for u in ctx.utts]
        vocab = LabelVocab.from_values(values, name=self.label)
        if len(vocab) < 2:
            raise ValueError(f"property {self.name!r}: label {self.label!r} has {len(vocab)} distinct value(s) in "
                             "the manifest (needs >= 2)")
        classes = np.array([-1 if v is None else vocab.id(v) for v in values], np.int32)
        return {"vocab": vocab, "classes": classes}

    def conditions(self, state: Any) -> list[ConditionSpec]:
        return [ConditionSpec(self.name, len(state["vocab"]), None, (self.stat,))]

    def frame_labels(self, state: Any, rows: BatchRows) -> dict[str, np.ndarray]:
        idx = rows.utt_indices
        return {self.name: np.where(idx >= 0, state["classes"][np.maximum(idx, 0)], -1).astype(np.int32)}

    def summary(self, state: Any) -> dict[str, Any]:
        return {"classes": state["vocab"].labels}


@dataclasses.dataclass(frozen=True)
class AAPE(_UtteranceClassProperty):
    """Class-specific neurons by activation-probability entropy (arXiv 2602.15307): every frame, per class of
    an utterance label; each kept neuron belongs to every class whose p exceeds the activation bar."""

    config: AAPEConfig = AAPEConfig()
    prefix: ClassVar[str] = "aape"
    stat: ClassVar[str] = "positive"

    def score(self, state: Any, stats: Any, widths: Sequence[int]) -> dict[str, dict[str, Any]]:
        from jaxneurons.scoring.entropy import class_coverage, lape_neurons

        arr = stats.to_numpy()
        c = self.config
        vocab = state["vocab"]
        res = lape_neurons(arr[f"{self.name}/positive"], arr[f"{self.name}/frames"], top_rate=c.top_rate,
                           filter_rate=c.filter_rate, activation_bar_ratio=c.activation_bar_ratio, widths=widths)
        return {self.name: {"groups": {vocab.label(k): res["class_masks"][k] for k in range(len(vocab))},
                            "selected": res["selected"], "coverage": class_coverage(res["class_masks"]),
                            "bar": res["bar"], "activation_bar": res["activation_bar"]}}


@dataclasses.dataclass(frozen=True)
class Selective(_UtteranceClassProperty):
    """Selective-pruning scores (arXiv 2408.17324): per class, mean|h| on the class / (mean|h| on the other
    classes, frame-weighted, + 1e-3); streaming compensated per-class means. Scores only (no neuron sets)."""

    prefix: ClassVar[str] = "selective"
    stat: ClassVar[str] = "moments"

    def score(self, state: Any, stats: Any, widths: Sequence[int]) -> dict[str, dict[str, Any]]:
        from jaxneurons.scoring.selective import selective_scores

        vocab = state["vocab"]
        mean_abs = np.asarray(stats.mean(self.name, absolute=True))  # (L, C, D)
        frames = stats.to_numpy()[f"{self.name}/frames"].astype(np.float64)
        scores = {}
        for k in range(len(vocab)):
            rest = [j for j in range(len(vocab)) if j != k]
            w = frames[rest] / max(frames[rest].sum(), 1.0)
            retain = np.einsum("c,lcd->ld", w, mean_abs[:, rest])
            scores[vocab.label(k)] = selective_scores(mean_abs[:, k], retain)
        return {self.name: {"scores": scores, "groups": {}}}


# ---------------------------------------------------------------------------------------------------- names


def _label_kind(cls: type[_UtteranceClassProperty], config_field: str | None) -> Callable[[str, Any], Property]:
    def make(label: str, options: Any) -> Property:
        if not label:
            raise ValueError(f"property {cls.prefix!r} needs a label: '{cls.prefix}_gender', '{cls.prefix}_speaker', "
                             f"'{cls.prefix}_KEY' for a manifest labels key")
        kw = {"config": getattr(options, config_field)} if config_field else {}
        return cls(label=label, **kw)
    return make


# Fixed names -> factory(options); prefixed names (aape_LABEL) -> factory(label, options).
FIXED_PROPERTIES: dict[str, Callable[[Any], Property]] = {
    "phone_type": lambda o: PhoneType(o.property),
    "gender": lambda o: Gender(o.property),
    "pitch": lambda o: Pitch(o.property),
    "speaker": lambda o: SpeakerNeurons(o.speaker),
}
LABEL_PROPERTIES: dict[str, Callable[[str, Any], Property]] = {
    "aape": _label_kind(AAPE, "aape"),
    "selective": _label_kind(Selective, None),
}


def property_names_help() -> str:
    return (", ".join(FIXED_PROPERTIES) + ", " + ", ".join(f"{p}_LABEL" for p in LABEL_PROPERTIES)
            + " (LABEL: gender, speaker, language or a manifest labels key)")


def make_property(name: str, options: Any) -> Property:
    """A property object from its name, with the parameters of ``options`` (a :class:`ScanOptions`)."""
    if name in FIXED_PROPERTIES:
        return FIXED_PROPERTIES[name](options)
    prefix, sep, label = name.partition("_")
    if sep and prefix in LABEL_PROPERTIES:
        return LABEL_PROPERTIES[prefix](label, options)
    raise ValueError(f"unknown property {name!r}; use {property_names_help()}")


def result_names(properties: Sequence[Property]) -> list[str]:
    """Result keys of a list of properties (the speaker property also gives ``ssl_cluster``)."""
    out = []
    for p in properties:
        out.append(p.name)
        if isinstance(p, SpeakerNeurons):
            out.append(p.ssl_result)
    return out
