"""Frame-level k-means targets for masked-prediction pre-training, and the recipe that regenerates them.

First iteration (HuBERT): k-means of MFCC + deltas + delta-deltas (39 dims, per-utterance mean/variance
normalised). Model frames are 20 ms (frame ``t`` starts at sample ``320 t``) and MFCC frames 10 ms, so the
feature of model frame ``t`` is the mean of MFCC frames ``2t`` and ``2t + 1`` (clipped at the utterance end).
Later iterations: k-means of one Transformer layer's features of an earlier model (:func:`layer_features`).

A model's prediction head only means something for the targets it was trained on: cluster ``j`` of a new
k-means is unrelated to head output ``j``. Continued pre-training (for example between pruning steps, arXiv
2409.05910 §pruning; METHODS.md §1) must therefore use the SAME targets. :class:`TargetRecipe` records how a
model's targets are made (feature source, the feature model and layer, the k-means centroids, the frame
geometry); ``jaxneurons train`` stores it in the model directory (``targets/``: ``recipe.json``,
``centroids.npy`` and, for layer features, the feature model as a jaxneurons model directory; no pickle), and
:func:`continued_pretraining_data` regenerates exactly those targets (nearest centroid of the same features)::

    model = load_model("models/mine")
    data = continued_pretraining_data(model, audio, recipe="models/mine")      # the stored recipe
    data = continued_pretraining_data(hf_model, audio, targets="fresh_mfcc_kmeans", num_clusters=100)

A model without a stored recipe (HF conversions, models from before recipes were stored) must choose
``targets="fresh_mfcc_kmeans"`` explicitly: new MFCC clusters, and the Trainer then re-initialises the
prediction head, because the old head indices would mean something else.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from sklearn.cluster import MiniBatchKMeans

from jaxneurons.data.batching import padded_batches
from jaxneurons.features.mfcc import add_deltas, cmn, mfcc
from jaxneurons.results import atomic_directory
from jaxneurons.train.fingerprint import weights_fingerprint

FRAME_HOP = 320  # samples per 20 ms model frame at 16 kHz (every supported family)
TARGET_SOURCES = ("mfcc", "layer", "head")
SELF = "."  # recipe.json: the feature model is the model directory holding the recipe
TARGET_CHOICES = ("recipe", "fresh_mfcc_kmeans")
RECIPE_DIR = "targets"  # inside a model directory
RECIPE_FILE = "recipe.json"
CENTROIDS_FILE = "centroids.npy"
FEATURE_MODEL_DIR = "feature_model"
RECIPE_VERSION = 1
# Sample counts at which two models must produce the same number of frames to share targets: short, odd,
# window-edge and long lengths (MelHuBERT's Kaldi windows and conv stacks differ at the edges).
REFERENCE_LENGTHS = (400, 719, 1600, 3519, 16000, 16319, 48000)


class TargetError(ValueError):
    """Targets that do not fit a model (head size, frame geometry) or a missing / unreadable recipe."""


# ---------------------------------------------------------------- features


@jax.jit
def _mfcc39(audio: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    feats, n = mfcc(audio, lengths)
    feats = add_deltas(feats, n)
    return cmn(feats, n, variance=True), n


def mfcc_frame_features(
    audio: Sequence[np.ndarray], num_frames: Callable[[int], int], batch_size: int = 16
) -> list[np.ndarray]:
    """Per utterance, (num_frames(len), 39) MFCC features aligned to 20 ms model frames."""
    out: list[np.ndarray | None] = [None] * len(audio)
    for idx, batch, lengths in padded_batches(audio, batch_size):
        feats, n = _mfcc39(jnp.asarray(batch), jnp.asarray(lengths))
        feats, n = np.asarray(feats), np.asarray(n)
        for row, i in enumerate(idx):
            frames = int(num_frames(int(lengths[row])))
            last = max(int(n[row]) - 1, 0)
            a = np.minimum(2 * np.arange(frames), last)
            b = np.minimum(2 * np.arange(frames) + 1, last)
            out[i] = 0.5 * (feats[row, a] + feats[row, b])
    return out  # type: ignore[return-value]


def layer_features(
    model: nnx.Module, audio: Sequence[np.ndarray], layer: int, batch_size: int = 8
) -> list[np.ndarray]:
    """Per utterance, (T, C) hidden states of ``hidden_states[layer]`` (0 = input of the first layer)."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, audio, lengths):
        out = nnx.merge(graphdef, state)(audio, lengths)
        return out.hidden_states[layer], out.frame_lengths

    return _per_utterance(forward, state, audio, batch_size)


def _per_utterance(forward: Callable[..., Any], state: Any, audio: Sequence[np.ndarray],
                   batch_size: int) -> list[np.ndarray]:
    """``forward(state, audio, lengths) -> (per-frame values (B, T, ...), frame lengths (B,))`` over length-sorted
    padded batches; per utterance (in ``audio``'s order), its valid frames."""
    result: list[np.ndarray | None] = [None] * len(audio)
    for idx, batch, lengths in padded_batches(audio, batch_size):
        values, n = forward(state, jnp.asarray(batch), jnp.asarray(lengths))
        values, n = np.asarray(values), np.asarray(n)
        for row, i in enumerate(idx):
            result[i] = values[row, : int(n[row])]
    return result  # type: ignore[return-value]


# ---------------------------------------------------------------- k-means


def fit_centroids(features: Sequence[np.ndarray], num_clusters: int, seed: int = 0,
                  max_fit_frames: int = 200_000) -> np.ndarray:
    """(K, F) float32 k-means centroids of (a seeded subsample of) all frames (MiniBatchKMeans, 3 inits)."""
    stacked = np.concatenate(features, axis=0)
    if len(stacked) < num_clusters:
        raise TargetError(f"k-means targets: {len(stacked)} frames are fewer than {num_clusters} clusters")
    rng = np.random.default_rng(seed)
    fit = stacked if len(stacked) <= max_fit_frames else stacked[rng.choice(len(stacked), max_fit_frames, False)]
    km = MiniBatchKMeans(n_clusters=num_clusters, random_state=seed, n_init=3, batch_size=4096).fit(fit)
    return np.asarray(km.cluster_centers_, np.float32)


def assign_targets(features: Sequence[np.ndarray], centroids: np.ndarray, chunk: int = 8192) -> list[np.ndarray]:
    """Per utterance, int32 index of the nearest centroid (squared Euclidean in float64; ties: lowest index).

    The ONE assignment used when training targets are made and when they are regenerated, so the two agree
    exactly on the same features.
    """
    c = np.asarray(centroids, np.float64)
    c_sq = (c * c).sum(axis=1)
    out = []
    for f in features:
        x = np.asarray(f, np.float64)
        if x.ndim != 2 or x.shape[1] != c.shape[1]:
            raise TargetError(f"features of shape {x.shape} do not match centroids of dimension {c.shape[1]}")
        labels = np.empty(len(x), np.int32)
        for s in range(0, len(x), chunk):
            xs = x[s: s + chunk]
            # ||x - c||² without the per-row constant ||x||²: the argmin is the same.
            labels[s: s + chunk] = np.argmin(c_sq[None, :] - 2.0 * xs @ c.T, axis=1)
        out.append(labels)
    return out


def kmeans_targets(
    features: Sequence[np.ndarray], num_clusters: int, seed: int = 0, max_fit_frames: int = 200_000
) -> tuple[list[np.ndarray], np.ndarray]:
    """Fit k-means on the frames and return (per-utterance int32 cluster ids, (K, F) centroids)."""
    centroids = fit_centroids(features, num_clusters, seed, max_fit_frames)
    return assign_targets(features, centroids), centroids


# ---------------------------------------------------------------- the recipe


@dataclasses.dataclass(frozen=True)
class FrameGeometry:
    """How a model cuts audio into frames: the hop, and its frame counts at :data:`REFERENCE_LENGTHS` samples."""

    hop_samples: int
    frames_at: tuple[tuple[int, int], ...]  # (num_samples, num_frames)

    @classmethod
    def of(cls, model: nnx.Module) -> FrameGeometry:
        return cls(FRAME_HOP, tuple((n, int(model.num_frames(n))) for n in REFERENCE_LENGTHS))

    def mismatch(self, other: FrameGeometry) -> str | None:
        """A one-line description of how ``other`` differs, or None when they agree."""
        if self.hop_samples != other.hop_samples:
            return f"frame hop {other.hop_samples} samples vs {self.hop_samples}"
        for (n, a), (_, b) in zip(self.frames_at, other.frames_at, strict=False):
            if a != b:
                return f"{b} frames from {n} samples vs {a}"
        return None


@dataclasses.dataclass(frozen=True, eq=False)
class TargetRecipe:
    """How a model's masked-prediction targets are made; enough to regenerate them exactly.

    ``source="mfcc"``: 39-dim MFCC features aligned to model frames; ``source="layer"``: ``hidden_states[layer]``
    of ``feature_model`` (the model whose features were clustered, e.g. iteration 1 for HuBERT iteration 2;
    a model directory, stored inside the trained model's ``targets/`` directory). Targets are the nearest of
    the ``num_clusters`` ``centroids`` (:func:`assign_targets`). ``geometry`` is the frame geometry the
    targets are aligned to: a model with another geometry cannot use them.

    ``source="head"`` (no centroids) is the explicit fallback for a model whose original targets cannot be
    regenerated (the bundled default model, whose iteration-1 feature model was not kept): the target of a
    frame is the argmax of ``feature_model``'s own prediction head on the unmasked utterance, so head output
    ``j`` keeps the meaning the trained head gives it (see docs/default_model.md).
    """

    source: str
    num_clusters: int
    centroids: np.ndarray | None  # (num_clusters, feature dim) float32; None for source "head"
    geometry: FrameGeometry
    layer: int | None = None
    feature_model: str | None = None  # model directory (absolute once loaded)
    feature_model_fingerprint: str | None = None  # weights_fingerprint of the feature model
    seed: int = 0
    note: str = ""

    def __post_init__(self) -> None:
        if self.source not in TARGET_SOURCES:
            raise TargetError(f"target source must be one of {TARGET_SOURCES}, got {self.source!r}")
        if self.source == "head":
            if self.centroids is not None or self.feature_model is None:
                raise TargetError("recipe: source 'head' takes a feature model and no centroids")
        elif np.ndim(self.centroids) != 2 or len(self.centroids) != self.num_clusters:
            raise TargetError(f"recipe: centroids of shape {np.shape(self.centroids)} for {self.num_clusters} "
                              "clusters")
        if self.source == "layer" and (self.layer is None or self.feature_model is None):
            raise TargetError("recipe: source 'layer' needs a layer and a feature model")

    def fingerprint(self) -> str:
        """Content hash of everything that decides the targets (for caches and checkpoint fingerprints)."""
        from jaxneurons.train.fingerprint import arrays_fingerprint, json_fingerprint

        meta = {"source": self.source, "k": self.num_clusters, "layer": self.layer,
                "geometry": dataclasses.asdict(self.geometry), "feature_model": self.feature_model_fingerprint}
        return json_fingerprint([meta, arrays_fingerprint([self.centroids])])

    @property
    def has_centroids(self) -> bool:
        return self.centroids is not None

    def to_json(self) -> dict[str, Any]:
        return {"version": RECIPE_VERSION, "source": self.source, "num_clusters": self.num_clusters,
                "layer": self.layer, "feature_model_fingerprint": self.feature_model_fingerprint,
                "seed": self.seed, "note": self.note,
                "centroids_shape": list(np.shape(self.centroids)) if self.centroids is not None else None,
                "geometry": {"hop_samples": self.geometry.hop_samples,
                             "frames_at": [list(p) for p in self.geometry.frames_at]}}


def fit_target_recipe(
    model: nnx.Module,
    audio: Sequence[np.ndarray],
    num_clusters: int,
    *,
    source: str = "mfcc",
    feature_model: nnx.Module | None = None,
    feature_model_path: str | None = None,
    layer: int | None = None,
    seed: int = 0,
    max_fit_frames: int = 200_000,
) -> tuple[TargetRecipe, list[np.ndarray]]:
    """Fit new k-means targets for training ``model``: (the recipe, the per-utterance targets).

    ``source="layer"`` clusters ``hidden_states[layer]`` of ``feature_model`` (loaded from
    ``feature_model_path`` when not given), which must cut frames like ``model``.
    """
    geometry = FrameGeometry.of(model)
    fm_fp = None
    if source == "layer":
        if layer is None:
            raise TargetError("target source 'layer' needs a layer index")
        if feature_model is None:
            if feature_model_path is None:
                raise TargetError("target source 'layer' needs a feature model")
            from jaxneurons.models.checkpoint import load_model

            feature_model = load_model(feature_model_path)
        bad = geometry.mismatch(FrameGeometry.of(feature_model))
        if bad:
            raise TargetError(f"feature model {feature_model_path or ''} cuts frames differently from the trained "
                              f"model ({bad}): its features cannot be targets")
        fm_fp = weights_fingerprint(feature_model, with_config=False)
    recipe_stub = TargetRecipe(source, num_clusters, np.zeros((num_clusters, 1), np.float32), geometry, layer,
                               feature_model_path or ("<in memory>" if source == "layer" else None), fm_fp, seed)
    features = recipe_features(recipe_stub, audio, feature_model=feature_model, model=model)
    centroids = fit_centroids(features, num_clusters, seed, max_fit_frames)
    recipe = dataclasses.replace(recipe_stub, centroids=centroids)
    return recipe, assign_targets(features, centroids)


def head_recipe(model: nnx.Module, model_dir: str, note: str = "") -> TargetRecipe:
    """A "head" recipe for ``model`` (stored at ``model_dir``): targets = its own head's argmax, unmasked input.

    The explicit fallback when a model's original targets cannot be regenerated (see :class:`TargetRecipe`);
    store it with ``save_recipe(recipe, model_dir, self_features=True)``.
    """
    k = head_size(model)
    if k is None:
        raise TargetError("a head recipe needs a model with a prediction head (final_proj)")
    return TargetRecipe("head", k, None, FrameGeometry.of(model), feature_model=os.path.abspath(model_dir),
                        feature_model_fingerprint=weights_fingerprint(model, with_config=False), note=note)


def recipe_features(recipe: TargetRecipe, audio: Sequence[np.ndarray], *, feature_model: nnx.Module | None = None,
                    model: nnx.Module | None = None) -> list[np.ndarray]:
    """The recipe's features of ``audio``, one (frames, F) array per utterance."""
    if recipe.source == "mfcc":
        frames = _geometry_num_frames(model, recipe.geometry)
        return mfcc_frame_features(audio, frames)
    if feature_model is None:
        feature_model = load_feature_model(recipe)
    if recipe.source == "head":
        raise TargetError("a 'head' recipe has no features to cluster; use recipe_targets")
    return layer_features(feature_model, audio, int(recipe.layer))  # type: ignore[arg-type]


def head_targets(model: nnx.Module, audio: Sequence[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
    """Per utterance, int32 argmax of ``model``'s own prediction head on the unmasked input (frames, )."""
    if head_size(model) is None:
        raise TargetError("head targets need a model with a prediction head (final_proj)")
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, audio, lengths):
        m = nnx.merge(graphdef, state)
        out = m(audio, lengths)
        return m.predict(out).argmax(-1).astype(jnp.int32), out.frame_lengths

    return _per_utterance(forward, state, audio, batch_size)


def recipe_targets(recipe: TargetRecipe, audio: Sequence[np.ndarray], *, model: nnx.Module | None = None,
                   feature_model: nnx.Module | None = None) -> list[np.ndarray]:
    """The recipe's targets of ``audio``: nearest centroid of its features, or its feature model's head argmax."""
    if recipe.source == "head":
        return head_targets(feature_model if feature_model is not None else load_feature_model(recipe), audio)
    features = recipe_features(recipe, audio, feature_model=feature_model, model=model)
    return assign_targets(features, recipe.centroids)  # type: ignore[arg-type]


def _geometry_num_frames(model: nnx.Module | None, geometry: FrameGeometry) -> Callable[[int], int]:
    if model is None:
        raise TargetError("MFCC targets need the model whose frames they are aligned to")
    bad = geometry.mismatch(FrameGeometry.of(model))
    if bad:
        raise TargetError(f"the model cuts frames differently from its targets ({bad})")
    return lambda n: int(model.num_frames(n))


def load_feature_model(recipe: TargetRecipe) -> nnx.Module:
    """The recipe's feature model, checked against the fingerprint it had when the targets were made."""
    from jaxneurons.models.checkpoint import load_model

    if recipe.feature_model is None or not os.path.isdir(recipe.feature_model):
        raise TargetError(f"recipe: feature model directory {recipe.feature_model} is missing")
    fm = load_model(recipe.feature_model)
    stored = recipe.feature_model_fingerprint
    if stored and weights_fingerprint(fm, with_config=False) != stored:
        raise TargetError(f"{recipe.feature_model}: weights differ from the feature model the targets were made "
                          "with (fingerprint mismatch)")
    return fm


def save_recipe(recipe: TargetRecipe, model_dir: str, feature_model: nnx.Module | None = None, *,
                self_features: bool = False) -> str:
    """Write ``model_dir/targets/`` (replacing an existing one atomically); returns its path.

    For a layer recipe the feature model is stored inside (float32, so its features, and with them the
    targets, are bit-identical when regenerated); pass it in memory or have ``recipe.feature_model`` point at it.
    ``self_features=True``: the feature model IS the model in ``model_dir`` (a "head" recipe of an unpruned
    model); nothing is copied and its weights are checked against the recipe's fingerprint on load.
    """
    from jaxneurons.models.checkpoint import save_model

    dest = os.path.join(model_dir, RECIPE_DIR)
    with atomic_directory(dest) as tmp:
        if self_features:
            from jaxneurons.models.checkpoint import load_model

            if weights_fingerprint(load_model(model_dir), with_config=False) != recipe.feature_model_fingerprint:
                raise TargetError(f"save_recipe: {model_dir} is not the recipe's feature model")
        elif recipe.source in ("layer", "head"):
            fm = feature_model if feature_model is not None else load_feature_model(recipe)
            if weights_fingerprint(fm, with_config=False) != recipe.feature_model_fingerprint:
                raise TargetError("save_recipe: the feature model is not the one the recipe was made with")
            save_model(fm, os.path.join(tmp, FEATURE_MODEL_DIR))
        if recipe.centroids is not None:
            np.save(os.path.join(tmp, CENTROIDS_FILE), np.asarray(recipe.centroids, np.float32), allow_pickle=False)
        meta = recipe.to_json()
        if recipe.source != "mfcc":
            meta["feature_model"] = SELF if self_features else FEATURE_MODEL_DIR
        with open(os.path.join(tmp, RECIPE_FILE), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
    return dest


def load_recipe(model_dir: str) -> TargetRecipe | None:
    """The recipe stored in ``model_dir/targets/``, or None when the model has none."""
    path = os.path.join(model_dir, RECIPE_DIR, RECIPE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            meta = json.load(f)
        centroids = (np.load(os.path.join(model_dir, RECIPE_DIR, CENTROIDS_FILE), allow_pickle=False)
                     if meta.get("centroids_shape") is not None else None)
    except (OSError, ValueError) as e:
        raise TargetError(f"{path}: unreadable target recipe ({e})") from e
    if meta.get("version") != RECIPE_VERSION:
        raise TargetError(f"{path}: recipe version {meta.get('version')}, this jaxneurons reads {RECIPE_VERSION}")
    geometry = FrameGeometry(int(meta["geometry"]["hop_samples"]),
                             tuple((int(a), int(b)) for a, b in meta["geometry"]["frames_at"]))
    location = meta.get("feature_model")
    feature_model = (None if location is None else os.path.abspath(model_dir) if location == SELF
                     else os.path.abspath(os.path.join(model_dir, RECIPE_DIR, location)))
    return TargetRecipe(meta["source"], int(meta["num_clusters"]), centroids, geometry, meta.get("layer"),
                        feature_model, meta.get("feature_model_fingerprint"), int(meta.get("seed", 0)),
                        meta.get("note", ""))


def head_size(model: nnx.Module) -> int | None:
    """Output size of the model's own masked-prediction head (``final_proj``), or None without one."""
    head = getattr(model, "final_proj", None)
    return None if head is None else int(head.out_features)


def check_recipe_fits(model: nnx.Module, recipe: TargetRecipe) -> None:
    """Raise :class:`TargetError` if ``model``'s head or frame geometry does not match ``recipe``."""
    k = head_size(model)
    if k is not None and k != recipe.num_clusters:
        raise TargetError(f"the model's head (final_proj) predicts {k} clusters but its target recipe has "
                          f"{recipe.num_clusters}")
    bad = recipe.geometry.mismatch(FrameGeometry.of(model))
    if bad:
        raise TargetError(f"the model cuts frames differently from its target recipe ({bad})")


def targets_cache_key(
    model: nnx.Module,
    audio: Sequence[np.ndarray],
    *,
    choice: str,
    source: str,
    num_clusters: int,
    seed: int,
    feature_model: nnx.Module | None = None,
    layer: int | None = None,
    recipe: TargetRecipe | None = None,
    manifest: str = "",
) -> str:
    """Key of cached training targets: everything that decides them. The model being trained (its weights:
    ``--init`` or the preset and seed), its frame geometry, the choice (stored recipe or new k-means) and its
    settings, the feature model's weights, the recipe, and the data (manifest fingerprint and audio content)."""
    from jaxneurons.train.fingerprint import arrays_fingerprint, json_fingerprint

    return json_fingerprint({
        "choice": choice, "source": source, "k": num_clusters, "seed": seed, "layer": layer,
        "feature_model": None if feature_model is None else weights_fingerprint(feature_model, with_config=False),
        "recipe": None if recipe is None else recipe.fingerprint(),
        "init": weights_fingerprint(model), "geometry": dataclasses.asdict(FrameGeometry.of(model)),
        "manifest": manifest, "audio": arrays_fingerprint(audio),
    })


# ---------------------------------------------------------------- continued pre-training


def _as_audio(utterances_or_audio: Any) -> list[np.ndarray]:
    if hasattr(utterances_or_audio, "all_audio"):  # DecodedDataset: already decoded once
        return list(utterances_or_audio.all_audio())
    items = list(utterances_or_audio)
    if not items:
        raise TargetError("continued pre-training needs at least one utterance")
    if all(isinstance(x, np.ndarray) for x in items):
        return [np.asarray(x, np.float32) for x in items]
    from jaxneurons.data import load_audio

    return [load_audio(u.path, 16000) for u in items]


def continued_pretraining_data(
    model: nnx.Module,
    utterances_or_audio: Any,
    *,
    recipe: TargetRecipe | str | None = None,
    targets: str = "recipe",
    num_clusters: int | None = None,
    seed: int = 0,
) -> Any:
    """The :class:`~jaxneurons.train.pretrain.TrainData` for continued pre-training of ``model``.

    ``targets="recipe"`` (default): regenerate exactly the targets ``model`` was trained on, from ``recipe``
    (a :class:`TargetRecipe`, or a model directory holding one in ``targets/``); the head size and the frame
    geometry must match it. Pass the recipe of the model *before* pruning: pruning changes neither.
    ``targets="fresh_mfcc_kmeans"``: the explicit choice for a model without a recipe (an HF conversion, a
    model without a head): new k-means of MFCC features with ``num_clusters`` clusters (default: the head's
    size) and a re-initialised prediction head (``TrainData.reinit_head``), since old head outputs would not
    mean the new clusters.

    ``utterances_or_audio``: 16 kHz float32 arrays, :class:`~jaxneurons.data.Utterance` objects, or a
    ``DecodedDataset``. The returned data carries the recipe (``TrainData.recipe``) so the trained model
    can store it.
    """
    from jaxneurons.train.pretrain import TrainData

    if targets not in TARGET_CHOICES:
        raise TargetError(f"targets must be one of {TARGET_CHOICES}, got {targets!r}")
    audio = _as_audio(utterances_or_audio)
    if targets == "fresh_mfcc_kmeans":
        k = num_clusters if num_clusters is not None else head_size(model)
        if k is None:
            raise TargetError("targets='fresh_mfcc_kmeans' on a model without a head needs num_clusters")
        if head_size(model) not in (None, k):
            raise TargetError(f"num_clusters={k} but the model's head has {head_size(model)} outputs (it is "
                              "re-initialised, not resized)")
        fresh, labels = fit_target_recipe(model, audio, k, source="mfcc", seed=seed)
        fresh = dataclasses.replace(fresh, note="fresh MFCC k-means for continued pre-training (head re-initialised)")
        return TrainData(audio, labels, k, recipe=fresh, reinit_head=True)
    if isinstance(recipe, str):
        directory = recipe
        recipe = load_recipe(directory)
        if recipe is None:
            raise TargetError(f"{directory}: no stored target recipe ({RECIPE_DIR}/{RECIPE_FILE}); choose "
                              "targets='fresh_mfcc_kmeans' explicitly (new clusters, re-initialised head)")
    if recipe is None:
        raise TargetError("no target recipe given; pass the model's recipe (or its directory), or choose "
                          "targets='fresh_mfcc_kmeans' explicitly (new clusters, re-initialised head)")
    if num_clusters is not None and num_clusters != recipe.num_clusters:
        raise TargetError(f"num_clusters={num_clusters} but the recipe has {recipe.num_clusters} clusters")
    check_recipe_fits(model, recipe)
    labels = recipe_targets(recipe, audio, model=model)
    return TrainData(audio, labels, recipe.num_clusters, recipe=recipe)
