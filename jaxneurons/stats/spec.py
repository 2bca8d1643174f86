"""What a statistics scan counts: condition sets, selections, continuous labels, layer widths.

A *condition set* is a named labelling of frames with integer classes in ``[0, num_classes)``; ``-1`` means
"ignore this frame" (unlabelled, unvoiced, ...). Labels come per frame ``(B, T)`` or per utterance ``(B,)``
(broadcast over frames). A *selection* is a named ``(B, T)`` bool mask (e.g. "middle frame of each phone")
ANDed with the padding mask; a condition set names the selection it uses, or ``None`` for every valid frame.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

STAT_KINDS = ("topk", "positive", "moments")
DEFAULT_EXAMPLES = 16  # max-activating frames kept per neuron when a scan collects examples


def topk_size(width: int, rho: float) -> int:
    """Number of top-|h| neurons per frame: ``k = round(rho * D)`` (half rounds up), at least 1.

    ``round`` follows METHODS (k = round(0.01 D), 31 for D = 3072); half-up rather than Python's
    banker's rounding so that k never depends on the parity of ``rho * D``.
    """
    if width <= 0:
        raise ValueError(f"layer width must be positive, got {width}")
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"rho must be in (0, 1], got {rho}")
    return max(1, min(width, int(math.floor(rho * width + 0.5))))


@dataclasses.dataclass(frozen=True)
class ConditionSpec:
    """One categorical condition set.

    Attributes:
      name: key of the labels in the batch (``batch["labels"][name]``) and of the statistics.
      num_classes: C; labels must lie in ``[0, C)`` or be ``-1``.
      selection: name of a frame selection mask in ``batch["selections"]``, or None for every frame.
      stats: which statistics to accumulate, a subset of ``("topk", "positive", "moments")``:
        top-k-by-|h| membership counts (property/speaker neurons), ``h > 0`` counts (LAPE/AAPE), and
        per-class mean / variance of ``h`` and ``|h|`` (selective pruning, correlations). Default: top-k
        only. "positive" costs a (C, frames) x (frames, D) matmul per layer and "moments" four, so their
        cost grows with C (see benchmarks/stats_kernel.md); enable them where a scorer needs them.
    """

    name: str
    num_classes: int
    selection: str | None = None
    stats: tuple[str, ...] = ("topk",)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"condition name must be non-empty and contain no '/': {self.name!r}")
        if self.num_classes < 1:
            raise ValueError(f"condition {self.name!r}: num_classes must be >= 1, got {self.num_classes}")
        bad = [s for s in self.stats if s not in STAT_KINDS]
        if bad or not self.stats:
            raise ValueError(f"condition {self.name!r}: stats must be a non-empty subset of {STAT_KINDS}, "
                             f"got {self.stats}")
        object.__setattr__(self, "stats", tuple(self.stats))


@dataclasses.dataclass(frozen=True)
class ContinuousSpec:
    """A continuous per-frame (or per-utterance) label for streaming correlation with every neuron.

    ``batch["labels"][name]`` is float; NaN marks frames to ignore (e.g. unvoiced frames for F0).
    """

    name: str
    selection: str | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"continuous label name must be non-empty and contain no '/': {self.name!r}")


@dataclasses.dataclass(frozen=True)
class StatsConfig:
    """Everything static about a scan (hashable: it is a jit static argument and a pytree meta field).

    Attributes:
      widths: FFN width D_l of every layer (L entries). Unequal widths (physically pruned models) are
        stored zero-padded to ``max(widths)``; padded neurons never count as events.
      conditions: categorical condition sets.
      continuous: continuous labels for correlation scores.
      rho: top-k fraction, k_l = round(rho * D_l). Default 0.01 = top 1% (arXiv 2409.05910, 2506.21712).
      examples: N, the max-activating frames kept per neuron (:mod:`jaxneurons.stats.examples`; the
        batches then carry ``batch["utt_index"]``, the global utterance index of each row, -1 for padding
        rows). 0 = off; scans for the explorer use :data:`DEFAULT_EXAMPLES` (16, as Neuroscope-style
        viewers show a page of top examples per neuron).
    """

    widths: tuple[int, ...]
    conditions: tuple[ConditionSpec, ...] = ()
    continuous: tuple[ContinuousSpec, ...] = ()
    rho: float = 0.01
    examples: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.examples < 0:
            raise ValueError(f"StatsConfig.examples must be >= 0 (0 = off), got {self.examples}")
        object.__setattr__(self, "conditions", tuple(self.conditions))
        object.__setattr__(self, "continuous", tuple(self.continuous))
        if not self.widths:
            raise ValueError("StatsConfig.widths must list at least one layer")
        for w in self.widths:
            topk_size(w, self.rho)
        names = [c.name for c in self.conditions] + [c.name for c in self.continuous]
        if len(set(names)) != len(names):
            raise ValueError(f"condition / continuous label names must be unique, got {names}")
        if "examples" in names:
            raise ValueError("'examples' is reserved for the max-activating examples; rename that condition")

    @property
    def num_layers(self) -> int:
        return len(self.widths)

    @property
    def max_width(self) -> int:
        return max(self.widths)

    @property
    def ks(self) -> tuple[int, ...]:
        """Top-k size per layer."""
        return tuple(topk_size(w, self.rho) for w in self.widths)

    def condition(self, name: str) -> ConditionSpec:
        for c in self.conditions:
            if c.name == name:
                return c
        raise KeyError(f"no condition set named {name!r}; have {[c.name for c in self.conditions]}")

    def selections(self) -> tuple[str, ...]:
        """Selection masks the batches must provide."""
        sel = [c.selection for c in self.conditions] + [c.selection for c in self.continuous]
        return tuple(sorted({s for s in sel if s is not None}))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> StatsConfig:
        return cls(
            widths=tuple(d["widths"]),
            conditions=tuple(ConditionSpec(c["name"], c["num_classes"], c.get("selection"),
                                           tuple(c.get("stats", ("topk",))))
                             for c in d.get("conditions", ())),
            continuous=tuple(ContinuousSpec(c["name"], c.get("selection")) for c in d.get("continuous", ())),
            rho=float(d.get("rho", 0.01)),
            examples=int(d.get("examples", 0)),
        )


def uniform_config(num_layers: int, width: int, conditions: Sequence[ConditionSpec] = (),
                   continuous: Sequence[ContinuousSpec] = (), rho: float = 0.01, examples: int = 0) -> StatsConfig:
    """Convenience: a config for ``num_layers`` layers of equal width."""
    return StatsConfig(widths=(width,) * num_layers, conditions=tuple(conditions),
                       continuous=tuple(continuous), rho=rho, examples=examples)
