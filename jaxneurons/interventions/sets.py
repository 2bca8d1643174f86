"""Named FFN-neuron sets of one model, and ablations as data.

:class:`NeuronSets` is the one type every study uses for "these neurons": the property neurons of a scan
(``neurons.json``), AAPE class neurons, selective-pruning sets, speaker neurons. Names are
``"property/group"`` (``"phone_type/vowels"``, ``"gender/male"``, ``"speaker/group0"``); each set maps a layer
to its sorted neuron indices. It converts to the scan's JSON format and back, to boolean selections, to
random controls of the same per-layer sizes drawn only *outside* the set (an error, never a silent overlap,
when a layer has too few other neurons) and to an :class:`Ablation` for the forward pass.

:class:`Ablation` holds the masks :func:`jaxneurons.models.forward_with_captures` / ``model(...)`` take:
FFN ``h -> h * neuron_mask + neuron_offset`` and attention ``probs * head_mask`` (masks are data: changing
the set never recompiles).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxneurons.interventions.masks import (
    InterventionError,
    _layer_id,
    head_mask_remove,
    mean_ablation,
    random_controls,
    zero_ablation,
)

__all__ = ["Ablation", "InterventionError", "NeuronSets"]

FORMAT = "jaxneurons.neuron_sets"
FORMAT_VERSION = 1
ABLATION_KINDS = ("zero", "mean")


@dataclasses.dataclass(frozen=True)
class Ablation:
    """Masks for one forward pass; ``None`` = no intervention of that kind.

    ``neuron_mask`` / ``neuron_offset``: (L, D) float arrays, or L arrays (D_l,) for a physically pruned model;
    ``head_mask``: (L, H). ``label`` names the ablation in results.
    """

    neuron_mask: Any = None
    neuron_offset: Any = None
    head_mask: Any = None
    label: str = ""

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model(audio, lengths, **kwargs)`` / ``extract_features``."""
        return {"neuron_mask": self.neuron_mask, "neuron_offset": self.neuron_offset, "head_mask": self.head_mask}

    @classmethod
    def remove_heads(cls, selection: np.ndarray, label: str = "") -> Ablation:
        """Zero the attention of every selected head ((L, H) bool)."""
        return cls(head_mask=head_mask_remove(selection), label=label)


def _model_widths(model: Any) -> tuple[int, ...]:
    config = model.config
    return tuple(int(config.ffn_width(i)) for i in range(config.num_hidden_layers))


@dataclasses.dataclass(frozen=True)
class NeuronSets:
    """Named FFN-neuron sets of one model: ``{name: {layer: sorted indices}}``, names ``'property/group'``.

    ``widths``: the FFN width of every layer (indices are checked against it). The constructor normalises
    the sets (integer layers, sorted unique indices, empty layers dropped), so two equal collections compare
    equal whatever order they were built in.
    """

    sets: Mapping[str, Mapping[int, tuple[int, ...]]]
    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        widths = tuple(int(w) for w in self.widths)
        if not widths or min(widths) < 1:
            raise InterventionError(f"widths must be a non-empty sequence of positive FFN widths, got {self.widths}")
        out: dict[str, dict[int, tuple[int, ...]]] = {}
        for name, layers in self.sets.items():
            prop, sep, group = str(name).partition("/")
            if not (sep and prop and group):
                raise InterventionError(f"set name {name!r} must be 'property/group'")
            if not isinstance(layers, Mapping):
                raise InterventionError(f"set {name!r}: expected layer -> indices, got {type(layers).__name__}")
            norm: dict[int, tuple[int, ...]] = {}
            for key, idx in layers.items():
                try:
                    layer = _layer_id(key, len(widths))
                except ValueError as e:
                    raise InterventionError(f"set {name!r}: {e}") from None
                arr = np.unique(np.asarray(list(idx), dtype=np.int64))
                if arr.size and (arr[0] < 0 or arr[-1] >= widths[layer]):
                    raise InterventionError(f"set {name!r}, layer {layer}: indices must lie in [0, {widths[layer]}),"
                                            f" got {arr[0]}..{arr[-1]}")
                if layer in norm:
                    raise InterventionError(f"set {name!r}: layer {layer} given twice (key {key!r})")
                if arr.size:
                    norm[layer] = tuple(int(i) for i in arr)
            out[str(name)] = dict(sorted(norm.items()))
        object.__setattr__(self, "sets", out)
        object.__setattr__(self, "widths", widths)

    # ---------------------------------------------------------------- construction and I/O

    @classmethod
    def from_selections(cls, selections: Mapping[str, np.ndarray], widths: Sequence[int]) -> NeuronSets:
        """``{name: (L, D) bool}`` -> sets (``D`` >= every width; columns past a layer's width must be False)."""
        sets = {}
        for name, sel in selections.items():
            sel = np.asarray(sel, bool)
            if sel.ndim != 2 or sel.shape[0] != len(widths):
                raise InterventionError(f"set {name!r}: selection must be (L={len(widths)}, D), got {sel.shape}")
            sets[name] = {layer: np.flatnonzero(row).tolist() for layer, row in enumerate(sel)}
        return cls(sets, tuple(widths))

    @classmethod
    def from_neurons_json(cls, data: Mapping, widths: Sequence[int]) -> NeuronSets:
        """The scan's ``neurons.json``: ``{property: {group: {"layers.{i}.ffn": [indices]}}}``."""
        if not isinstance(data, Mapping):
            raise InterventionError(f"neuron-set JSON must map property -> group -> layer -> indices, got "
                                    f"{type(data).__name__}")
        sets = {}
        for prop, groups in data.items():
            if not isinstance(groups, Mapping):
                raise InterventionError(f"property {prop!r}: expected group -> layer -> indices, got "
                                        f"{type(groups).__name__}")
            for group, layers in groups.items():
                sets[f"{prop}/{group}"] = layers
        return cls(sets, tuple(widths))

    def to_neurons_json(self) -> dict[str, dict[str, dict[str, list[int]]]]:
        """Inverse of :meth:`from_neurons_json` (layer keys ``"layers.{i}.ffn"``)."""
        out: dict[str, dict[str, dict[str, list[int]]]] = {}
        for name, layers in self.sets.items():
            prop, _, group = name.partition("/")
            out.setdefault(prop, {})[group] = {f"layers.{layer}.ffn": list(idx) for layer, idx in layers.items()}
        return out

    def save(self, path: str) -> str:
        """Atomically write ``{"format", "version", "widths", "neurons": <neurons.json>}``."""
        path = os.path.abspath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        payload = {"format": FORMAT, "version": FORMAT_VERSION, "widths": list(self.widths),
                   "neurons": self.to_neurons_json()}
        fd, tmp = tempfile.mkstemp(prefix=".neuron-sets-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(payload, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str, widths: Sequence[int] | None = None) -> NeuronSets:
        """A file written by :meth:`save`, or a scan's plain ``neurons.json`` (then ``widths`` is required)."""
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise InterventionError(f"{path}: cannot read neuron sets ({e})") from None
        if isinstance(data, Mapping) and data.get("format") == FORMAT:
            if data.get("version") != FORMAT_VERSION:
                raise InterventionError(f"{path}: unsupported neuron-set version {data.get('version')!r}")
            stored = tuple(data["widths"])
            if widths is not None and tuple(widths) != stored:
                raise InterventionError(f"{path}: sets are for FFN widths {list(stored)}, not {list(widths)}")
            data, widths = data["neurons"], stored
        elif widths is None:
            raise InterventionError(f"{path}: a plain neurons.json has no FFN widths; pass widths= (the model's)")
        try:
            return cls.from_neurons_json(data, widths)
        except InterventionError as e:
            raise InterventionError(f"{path}: {e}") from None

    # ---------------------------------------------------------------- queries

    @property
    def num_layers(self) -> int:
        return len(self.widths)

    def names(self) -> list[str]:
        return list(self.sets)

    def select(self, *names_or_prefixes: str) -> NeuronSets:
        """The sets named exactly, or whose property is given (``"gender"`` selects ``"gender/male"``, ...)."""
        keep = []
        for want in names_or_prefixes:
            hits = [n for n in self.sets if n == want or n.partition("/")[0] == want]
            if not hits:
                raise InterventionError(f"no neuron set named {want!r} or of property {want!r}; have {self.names()}")
            keep += [h for h in hits if h not in keep]
        return NeuronSets({n: self.sets[n] for n in keep}, self.widths)

    def _names(self, name: str | Sequence[str] | None) -> list[str]:
        if name is None:
            return self.names()
        names = [name] if isinstance(name, str) else list(name)
        missing = [n for n in names if n not in self.sets]
        if missing:
            raise InterventionError(f"no neuron set {missing[0]!r}; have {self.names()}")
        return names

    def selection(self, name: str | Sequence[str] | None = None) -> np.ndarray:
        """Bool ``(L, max D)`` of one set (or of several / the union of all when ``name`` is a list / None)."""
        sel = np.zeros((self.num_layers, max(self.widths)), bool)
        for n in self._names(name):
            for layer, idx in self.sets[n].items():
                sel[layer, list(idx)] = True
        return sel

    def valid(self) -> np.ndarray:
        """Bool ``(L, max D)``: True where a layer has that neuron (False in the padding of narrower layers)."""
        return np.arange(max(self.widths))[None, :] < np.asarray(self.widths)[:, None]

    def size(self, name: str | Sequence[str] | None = None) -> int:
        return int(self.selection(name).sum())

    def per_layer_sizes(self, name: str | Sequence[str] | None = None) -> list[int]:
        return self.selection(name).sum(axis=1).astype(int).tolist()

    # ---------------------------------------------------------------- controls and ablations

    def random_control(self, name: str, seed: int, *, exclude: Any = None) -> np.ndarray:
        """Bool ``(L, max D)``: as many neurons per layer as set ``name``, drawn only outside it and outside
        ``exclude`` (a selection, a set name or names, or None). :class:`InterventionError` when a layer has
        too few eligible neurons: a control overlapping the set it controls for would measure nothing."""
        sel = self.selection(name)
        excluded = sel.copy()
        if exclude is not None:
            if isinstance(exclude, str) or (isinstance(exclude, Sequence) and not isinstance(exclude, np.ndarray)
                                             and all(isinstance(e, str) for e in exclude)):
                excluded |= self.selection(exclude)
            else:
                ex = np.asarray(exclude, bool)
                if ex.shape != sel.shape:
                    raise InterventionError(f"exclude has shape {ex.shape}, expected {sel.shape}")
                excluded |= ex
        try:
            return random_controls(sel, 1, seed=seed, exclude=excluded, valid=self.valid())[0]
        except InterventionError as e:
            raise InterventionError(f"random control of {name!r}: {e}") from None

    def to_ablation(self, model: Any, name: str | Sequence[str] | None = None, *, kind: str = "zero",
                    mean: Any = None, label: str | None = None) -> Ablation:
        """An :class:`Ablation` that zeroes (``kind="zero"``) or mean-ablates (``kind="mean"``, ``mean`` (L, D) or
        L arrays: each neuron's mean activation) the neurons of ``name`` (None = the union of all sets)."""
        widths = _model_widths(model)
        if widths != self.widths:
            raise InterventionError(f"sets are for FFN widths {list(self.widths)}, the model has {list(widths)}")
        return self.selection_ablation(model, self.selection(name), kind=kind, mean=mean,
                                       label=label if label is not None else
                                       (name if isinstance(name, str) else "+".join(self._names(name))))

    @staticmethod
    def selection_ablation(model: Any, selection: np.ndarray, *, kind: str = "zero", mean: Any = None,
                           label: str = "") -> Ablation:
        """An :class:`Ablation` of a boolean ``(L, max D)`` selection (e.g. a random control) for ``model``."""
        if kind not in ABLATION_KINDS:
            raise InterventionError(f"ablation kind must be one of {ABLATION_KINDS}, got {kind!r}")
        widths = _model_widths(model)
        sel = np.asarray(selection, bool)
        if sel.shape != (len(widths), max(widths)):
            raise InterventionError(f"selection has shape {sel.shape}, the model needs {(len(widths), max(widths))}")
        if kind == "mean":
            if mean is None:
                raise InterventionError("kind='mean' needs mean= (each neuron's mean activation, from a scan)")
            if hasattr(mean, "shape") and len(mean.shape) == 2:
                full = np.asarray(mean, np.float32)
            else:
                full = np.zeros(sel.shape, np.float32)
                for layer, m in enumerate(mean):
                    full[layer, : len(m)] = np.asarray(m, np.float32)
            mask, offset = mean_ablation(sel, full)
        else:
            mask, offset = zero_ablation(sel)
        if len(set(widths)) > 1:  # physically pruned model: the forward takes one (D_l,) array per layer
            mask = tuple(mask[i, :w] for i, w in enumerate(widths))
            offset = tuple(offset[i, :w] for i, w in enumerate(widths))
        return Ablation(neuron_mask=mask, neuron_offset=offset if kind == "mean" else None, label=label)
