"""Accumulator state of a scan: a pytree of count and moment arrays, and its exact merge.

Layout (C = classes of a condition set, L layers, D = max layer width; padded neurons stay zero):
  ``{cond}/frames``    (C,)      int32  frames counted per class (valid, selected, labelled)
  ``{cond}/rejected``  ()        int32  valid selected frames whose label was < -1 or >= C (must stay 0)
  ``{cond}/topk``      (L, C, D) int32  frames where the neuron is among the layer's top-k by |h|
  ``{cond}/positive``  (L, C, D) int32  frames where h > 0
  ``{cond}/{mean,m2,abs_mean,abs_m2}`` and ``..._lo``  (L, C, D)  moments of h and |h| per class
  ``{y}/n`` () int32, ``{y}/{y_mean,y_m2}`` (), ``{y}/{h_mean,h_m2,c}`` (L, D) (+ ``_lo``)  for correlations

Counts are int32, so they are exact up to 2**31 - 1 frames per class (about 11,900 h of audio at 50
frames/s); per-batch counts are formed in float32 (exact below 2**24 frames per batch) and cast.

Moments: each batch contributes its own mean and centred M2 (two passes in float32); batches are merged
with Chan et al.'s parallel update, and the running mean / M2 are kept as unevaluated double-float
pairs (``hi + lo``, two-sum compensation), which gives float64-like accuracy in float32. With
``jax_enable_x64`` the moment arrays are float64 (and still compensated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxneurons.stats.examples import empty_examples, example_shapes, examples_to_numpy, merge_examples
from jaxneurons.stats.spec import StatsConfig

_MOMENT_KEYS = ("mean", "m2", "abs_mean", "abs_m2")
_CONT_SCALARS = ("y_mean", "y_m2")
_CONT_LAYER = ("h_mean", "h_m2", "c")


def float_dtype() -> jnp.dtype:
    """Moment dtype: float64 when x64 is enabled, else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def state_shapes(config: StatsConfig) -> dict[str, tuple[tuple[int, ...], jnp.dtype]]:
    """Shape and dtype of every accumulator array of ``config``."""
    L, D = config.num_layers, config.max_width
    f = float_dtype()
    out: dict[str, tuple[tuple[int, ...], jnp.dtype]] = {}
    for c in config.conditions:
        C = c.num_classes
        out[f"{c.name}/frames"] = ((C,), jnp.int32)
        out[f"{c.name}/rejected"] = ((), jnp.int32)
        if "topk" in c.stats:
            out[f"{c.name}/topk"] = ((L, C, D), jnp.int32)
        if "positive" in c.stats:
            out[f"{c.name}/positive"] = ((L, C, D), jnp.int32)
        if "moments" in c.stats:
            for m in _MOMENT_KEYS:
                out[f"{c.name}/{m}"] = ((L, C, D), f)
                out[f"{c.name}/{m}_lo"] = ((L, C, D), f)
    for y in config.continuous:
        out[f"{y.name}/n"] = ((), jnp.int32)
        for m in _CONT_SCALARS:
            out[f"{y.name}/{m}"] = ((), f)
            out[f"{y.name}/{m}_lo"] = ((), f)
        for m in _CONT_LAYER:
            out[f"{y.name}/{m}"] = ((L, D), f)
            out[f"{y.name}/{m}_lo"] = ((L, D), f)
    if config.examples:
        out.update(example_shapes(L, D, config.examples))
    return out


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NeuronStats:
    """Accumulated statistics of one scan. ``arrays`` are the pytree leaves; ``config`` is static."""

    arrays: dict[str, jax.Array]
    config: StatsConfig = dataclasses.field(metadata=dict(static=True))

    # ---- read-out helpers (work on jax or numpy leaves) ----
    def frames(self, cond: str) -> jax.Array:
        """(C,) frames per class."""
        return self._get(cond, "frames")

    def topk_counts(self, cond: str) -> jax.Array:
        """(L, C, D) top-k membership counts."""
        return self._get(cond, "topk")

    def positive_counts(self, cond: str) -> jax.Array:
        """(L, C, D) counts of h > 0."""
        return self._get(cond, "positive")

    def mean(self, cond: str, *, absolute: bool = False) -> jax.Array:
        """(L, C, D) per-class mean of h (or of |h|); 0 for classes without frames."""
        m = "abs_mean" if absolute else "mean"
        return self._get(cond, m) + self._get(cond, m + "_lo")

    def var(self, cond: str, *, absolute: bool = False, ddof: int = 0) -> jax.Array:
        """(L, C, D) per-class variance of h (or |h|); NaN where a class has <= ddof frames."""
        m = "abs_m2" if absolute else "m2"
        m2 = self._get(cond, m) + self._get(cond, m + "_lo")
        n = self.frames(cond).astype(m2.dtype)[None, :, None] - ddof
        return jnp.where(n > 0, m2 / jnp.where(n > 0, n, 1), jnp.nan)

    def sum_abs(self, cond: str) -> jax.Array:
        """(L, C, D) per-class sum of |h| (= frames x mean |h|)."""
        return self.mean(cond, absolute=True) * self.frames(cond).astype(self.mean(cond).dtype)[None, :, None]

    def continuous(self, name: str) -> dict[str, jax.Array]:
        """Moments for a continuous label: n, y_mean, y_m2, h_mean, h_m2, c (co-moment), each hi + lo."""
        out = {"n": self.arrays[f"{name}/n"]}
        for m in _CONT_SCALARS + _CONT_LAYER:
            out[m] = self.arrays[f"{name}/{m}"] + self.arrays[f"{name}/{m}_lo"]
        return out

    def examples(self) -> dict[str, np.ndarray]:
        """Top-N max-activating frames per neuron (host arrays, best first): ``value`` (L, D, N) float32
        (NaN where empty), ``utt`` (global utterance index) and ``frame`` (L, D, N) int32 (-1 where empty)."""
        if not self.config.examples:
            raise KeyError("this scan kept no max-activating examples (StatsConfig.examples = 0)")
        return examples_to_numpy({k: to_host(v) for k, v in self.arrays.items() if k.startswith("examples/")})

    def neuron_mask(self) -> np.ndarray:
        """(L, D) bool: True for real neurons, False for padding of narrower layers."""
        return width_mask(self.config)

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Host copy of every array (works for arrays replicated over several processes)."""
        return {k: to_host(v) for k, v in self.arrays.items()}

    def _get(self, cond: str, kind: str) -> jax.Array:
        key = f"{cond}/{kind}"
        if key not in self.arrays:
            spec = self.config.condition(cond)
            raise KeyError(f"statistic {kind!r} was not collected for condition {cond!r} (stats={spec.stats})")
        return self.arrays[key]


def to_host(x: jax.Array | np.ndarray) -> np.ndarray:
    """Host copy of an array, also when it is a replicated global array spanning several processes."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        # Replicated over processes: every process holds a full copy; read the local one.
        x = x.addressable_data(0)
    return np.asarray(x)


def width_mask(config: StatsConfig) -> np.ndarray:
    """(L, D_max) bool mask of real neurons."""
    return np.arange(config.max_width)[None, :] < np.asarray(config.widths)[:, None]


def init_stats(config: StatsConfig) -> NeuronStats:
    """All-zero accumulators (empty example slots)."""
    arrays = {k: jnp.zeros(s, d) for k, (s, d) in state_shapes(config).items()}
    if config.examples:
        arrays.update(empty_examples(config.num_layers, config.max_width, config.examples))
    return NeuronStats(arrays, config)


def stats_from_numpy(config: StatsConfig, arrays: Mapping[str, np.ndarray], *, source: str = "arrays") -> NeuronStats:
    """Rebuild a NeuronStats from host arrays, checking every key, shape and dtype against ``config``."""
    want = state_shapes(config)
    missing = sorted(set(want) - set(arrays))
    extra = sorted(set(arrays) - set(want))
    if missing or extra:
        raise ValueError(f"{source}: accumulator keys do not match the config (missing {missing}, unexpected {extra})")
    out = {}
    for k, (shape, dtype) in want.items():
        a = np.asarray(arrays[k])
        if a.shape != shape:
            raise ValueError(f"{source}: array {k!r} has shape {a.shape}, config expects {shape}")
        if a.dtype != np.dtype(dtype):
            raise ValueError(f"{source}: array {k!r} has dtype {a.dtype}, config expects {np.dtype(dtype)}")
        out[k] = jnp.asarray(a)
    return NeuronStats(out, config)


# ---------------------------------------------------------------- compensated Chan merge

def _two_sum(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """s + e == a + b exactly (Knuth)."""
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


def _dd_add(hi: jax.Array, lo: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(hi, lo) + x as a renormalised double-float pair."""
    s, e = _two_sum(hi, x)
    e = e + lo
    hi2 = s + e
    return hi2, e - (hi2 - s)


def merge_moments(n_a, mean, m2, n_b, mean_b, m2_b):
    """Chan et al. merge of (n_a, mean=(hi,lo), m2=(hi,lo)) with a batch (n_b, mean_b=(hi,lo), m2_b).

    ``n_*`` must broadcast against the moment arrays. Returns (mean_hi, mean_lo, m2_hi, m2_lo).
    """
    n = n_a + n_b
    w = jnp.where(n > 0, n_b / jnp.where(n > 0, n, 1), 0)
    mh, ml, delta = _merge_mean(mean, mean_b, w)
    vh, vl = _dd_add(m2[0], m2[1], m2_b + delta * delta * (n_a * w))
    return mh, ml, vh, vl


def _merge_mean(a, b, w):
    """a + w * (b - a) for (hi, lo) pairs; returns (hi, lo, b - a rounded).

    The hi and lo differences are added separately: a batch shifted by the running mean has equal hi
    parts (difference exactly 0), and merging into an empty state (w = 1, a = 0) copies b exactly.
    """
    dhi, dlo = b[0] - a[0], b[1] - a[1]
    hi, lo = _dd_add(a[0], a[1], dhi * w)
    hi, lo = _dd_add(hi, lo, dlo * w)
    return hi, lo, dhi + dlo


def merge_stats(a: NeuronStats, b: NeuronStats) -> NeuronStats:
    """Combine two accumulators of the same config (order-independent up to float rounding).

    Counts add exactly; moments merge by Chan's formula with compensation; max-activating examples by
    their exact top-N merge. Used per batch by the scan
    and to combine scans run separately (e.g. different shards of a corpus).
    """
    if a.config != b.config:
        raise ValueError("cannot merge statistics of different configs")
    A, B, f = a.arrays, b.arrays, float_dtype()
    out = dict(A)
    for c in a.config.conditions:
        p = c.name
        for kind in ("frames", "rejected", "topk", "positive"):
            if f"{p}/{kind}" in A:
                out[f"{p}/{kind}"] = A[f"{p}/{kind}"] + B[f"{p}/{kind}"]
        if "moments" in c.stats:
            na = A[f"{p}/frames"].astype(f)[None, :, None]
            nb = B[f"{p}/frames"].astype(f)[None, :, None]
            for m, v in (("mean", "m2"), ("abs_mean", "abs_m2")):
                # b's lo terms are folded in, so a merged-state b is exact too.
                mh, ml, vh, vl = merge_moments(
                    na, (A[f"{p}/{m}"], A[f"{p}/{m}_lo"]), (A[f"{p}/{v}"], A[f"{p}/{v}_lo"]),
                    nb, (B[f"{p}/{m}"], B[f"{p}/{m}_lo"]), B[f"{p}/{v}"] + B[f"{p}/{v}_lo"])
                out.update({f"{p}/{m}": mh, f"{p}/{m}_lo": ml, f"{p}/{v}": vh, f"{p}/{v}_lo": vl})
    for y in a.config.continuous:
        p = y.name
        na, nb = A[f"{p}/n"].astype(f), B[f"{p}/n"].astype(f)
        n = na + nb
        w = jnp.where(n > 0, nb / jnp.where(n > 0, n, 1), 0)
        full = {k: B[f"{p}/{k}"] + B[f"{p}/{k}_lo"] for k in _CONT_SCALARS + _CONT_LAYER}
        def pair(X, k, p=p):
            return X[f"{p}/{k}"], X[f"{p}/{k}_lo"]

        yh, yl, dy = _merge_mean(pair(A, "y_mean"), pair(B, "y_mean"), w)
        hh, hl, dh = _merge_mean(pair(A, "h_mean"), pair(B, "h_mean"), w)
        out.update({f"{p}/y_mean": yh, f"{p}/y_mean_lo": yl, f"{p}/h_mean": hh, f"{p}/h_mean_lo": hl})
        incs = {"y_m2": full["y_m2"] + dy * dy * (na * w),
                "h_m2": full["h_m2"] + dh * dh * (na * w),
                "c": full["c"] + dh * dy * (na * w)}
        for k, inc in incs.items():
            out[f"{p}/{k}"], out[f"{p}/{k}_lo"] = _dd_add(A[f"{p}/{k}"], A[f"{p}/{k}_lo"], inc)
        out[f"{p}/n"] = A[f"{p}/n"] + B[f"{p}/n"]
    if a.config.examples:
        out.update(merge_examples(A, B))
    return NeuronStats(out, a.config)
