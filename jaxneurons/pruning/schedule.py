"""Protected pruning strategies and schedules: one-shot to a density, and iterative with training between steps.

Protection (property neurons, arXiv 2409.05910 §pruning; speaker neurons, arXiv 2506.21712) comes from a
callback so this module never runs statistics itself::

    identify(model, keep, layer) -> protected

``model`` is the current model (physically slimmed in iterative physical pruning), ``keep`` the keep mask over
its neurons so far (run the model with ``neuron_mask=keep`` to see the partly pruned model), ``layer`` is
``None`` for strategy ``all`` and the layer about to be pruned for ``each``. It returns a bool mask over the
model's neurons (``(L, D)`` or L arrays); with ``each`` only row ``layer`` is used.

- strategy ``all``: identify once (per step), then prune every layer.
- strategy ``each``: before pruning layer ``l`` (layers in order 0..L-1), re-identify on the model with
  layers ``< l`` already pruned. Needs ``scope="layer"``.

The original schedule (MelHuBERT, arXiv 2409.05910) removed 128 neurons per layer per step for 20 steps, with
25k updates of continued pre-training (lr 1e-5, batch 4) between steps: ``iterative_prune(model,
neurons_per_step=128, num_steps=20, train_fn=...)`` where ``train_fn(model, step) -> model`` runs that
training (it is called after every pruning step, the last one included).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from flax import nnx

from jaxneurons.pruning.scores import LayerValues, as_bool_rows, as_rows, ffn_widths, l1_scores, pack_rows
from jaxneurons.pruning.select import PruningError, keep_count, select_keep, select_layer
from jaxneurons.pruning.slim import slim_model, zero_pruned

IdentifyFn = Callable[[nnx.Module, LayerValues, int | None], LayerValues]
ScoreFn = Callable[[nnx.Module], LayerValues]
TrainFn = Callable[[nnx.Module, int], nnx.Module]

STRATEGIES = ("all", "each")


def _check(strategy: str, scope: str, identify: IdentifyFn | None) -> None:
    if strategy not in STRATEGIES:
        raise PruningError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if scope not in ("layer", "global"):
        raise PruningError(f"scope must be 'layer' or 'global', got {scope!r}")
    if strategy == "each" and scope != "layer":
        raise PruningError("strategy 'each' re-identifies before each layer and needs scope='layer'")
    if strategy == "each" and identify is None:
        raise PruningError("strategy 'each' needs an identify callback")


def _protected(identify: IdentifyFn | None, model: nnx.Module, keep: list[np.ndarray], layer: int | None,
               widths: list[int]) -> list[np.ndarray] | None:
    if identify is None:
        return None
    return as_bool_rows(identify(model, pack_rows(keep), layer), widths, "identify() result")


def _prune_step(
    model: nnx.Module,
    scores: LayerValues,
    alive: list[np.ndarray],
    targets: list[int] | int,
    *,
    identify: IdentifyFn | None,
    strategy: str,
    scope: str,
    clamp: bool,
) -> list[np.ndarray]:
    """Keep masks after one pruning step from ``alive`` to ``targets`` kept neurons."""
    widths = [a.shape[0] for a in alive]
    score_rows = as_rows(scores, widths, "scores")
    if strategy == "all":
        prot = _protected(identify, model, alive, None, widths)
        return as_bool_rows(select_keep(score_rows, targets, scope=scope, protected=prot, alive=alive, clamp=clamp),
                            widths, "keep")
    keep = [a.copy() for a in alive]
    for layer in range(len(widths)):
        prot = _protected(identify, model, keep, layer, widths)
        keep[layer] = select_layer(score_rows[layer], targets[layer], protected=prot[layer], alive=alive[layer],
                                   clamp=clamp, layer=layer)
    return keep


def protected_prune(
    model: nnx.Module,
    density: float,
    *,
    identify: IdentifyFn | None = None,
    strategy: str = "all",
    scope: str = "layer",
    score_fn: ScoreFn = l1_scores,
    clamp: bool = False,
) -> LayerValues:
    """One-shot pruning to ``density``: keep masks over the model's neurons (apply with :func:`slim_model`).

    Without ``identify`` this is plain L1 pruning. Each layer keeps exactly ``round(density * D_l)`` neurons
    (``global``: ``round(density * Σ D_l)`` in all) and no protected neuron is pruned.
    """
    _check(strategy, scope, identify)
    widths = ffn_widths(model)
    alive = [np.ones(w, bool) for w in widths]
    targets: list[int] | int = ([keep_count(w, density) for w in widths] if scope == "layer"
                                else keep_count(sum(widths), density))
    keep = _prune_step(model, score_fn(model), alive, targets, identify=identify, strategy=strategy, scope=scope,
                       clamp=clamp)
    return pack_rows(keep)


@dataclasses.dataclass
class PruneStep:
    """One step of :func:`iterative_prune`: widths after the step and kept neurons in original indices."""

    step: int
    widths: list[int]
    kept: list[np.ndarray]

    def to_json(self) -> dict:
        return {"step": self.step, "widths": self.widths, "kept": [k.tolist() for k in self.kept]}


def iterative_prune(
    model: nnx.Module,
    *,
    neurons_per_step: int,
    num_steps: int,
    train_fn: TrainFn | None = None,
    identify: IdentifyFn | None = None,
    strategy: str = "all",
    scope: str = "layer",
    physical: bool = True,
    score_fn: ScoreFn = l1_scores,
    clamp: bool = False,
    on_step: Callable[[PruneStep, nnx.Module], None] | None = None,
) -> tuple[nnx.Module, LayerValues, list[PruneStep]]:
    """Remove ``neurons_per_step`` neurons per layer (``global``: ``neurons_per_step * L`` in all) per step.

    Scores (and protected sets) are recomputed on the current weights every step. ``physical=True`` slims the
    model after each step (training then runs on the smaller model); ``physical=False`` keeps the shapes and
    zeroes the pruned neurons' weights (re-zeroed after ``train_fn``). Returns the final model, the keep mask
    over the ORIGINAL neurons, and the per-step history.
    """
    _check(strategy, scope, identify)
    if neurons_per_step < 1 or num_steps < 1:
        raise PruningError("neurons_per_step and num_steps must be >= 1")
    widths0 = ffn_widths(model)
    original = [np.arange(w) for w in widths0]  # original index of each current neuron
    alive = [np.ones(w, bool) for w in widths0]
    history: list[PruneStep] = []
    for step in range(num_steps):
        widths = ffn_widths(model)
        counts = [int(a.sum()) for a in alive]
        if scope == "layer":
            targets: list[int] | int = [c - neurons_per_step for c in counts]
            short = [i for i, t in enumerate(targets) if t < 0]
            if short:
                raise PruningError(f"step {step}: layers {short} have fewer than {neurons_per_step} neurons left")
        else:
            targets = sum(counts) - neurons_per_step * len(counts)
            if targets < 0:
                raise PruningError(f"step {step}: fewer than {neurons_per_step * len(counts)} neurons left")
        keep = _prune_step(model, score_fn(model), alive, targets, identify=identify, strategy=strategy,
                           scope=scope, clamp=clamp)
        if physical:
            model = slim_model(model, keep)
            original = [o[k] for o, k in zip(original, keep, strict=True)]
            alive = [np.ones(len(o), bool) for o in original]
        else:
            model = zero_pruned(model, keep)
            alive = keep
        record = PruneStep(step, [int(a.sum()) for a in alive],
                           [o[a] for o, a in zip(original, alive, strict=True)])
        history.append(record)
        if on_step is not None:
            on_step(record, model)
        if train_fn is not None:
            model = train_fn(model, step)
            if ffn_widths(model) != (widths if not physical else [len(o) for o in original]):
                raise PruningError(f"train_fn changed the FFN widths at step {step}")
            if not physical:
                model = zero_pruned(model, alive)
    final = [np.zeros(w, bool) for w in widths0]
    for f, o, a in zip(final, original, alive, strict=True):
        f[o[a]] = True
    return model, pack_rows(final), history
