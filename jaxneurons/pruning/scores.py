"""Per-neuron pruning scores read from the FFN weights, and the per-layer value containers pruning uses.

Per-layer values (scores, keep masks, protected sets) are an ``(L, D)`` array when every layer has the same
width, or a sequence of L 1-D arrays ``(D_l,)`` after physical pruning made the widths unequal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flax import nnx

LayerValues = np.ndarray | Sequence[np.ndarray]


def as_rows(values: LayerValues, widths: Sequence[int] | None = None, name: str = "values") -> list[np.ndarray]:
    """``(L, D)`` array or L 1-D arrays -> list of 1-D NumPy arrays (checked against ``widths``)."""
    if isinstance(values, np.ndarray) or (hasattr(values, "__array__") and np.ndim(values) == 2):
        arr = np.asarray(values)
        if arr.ndim != 2:
            raise ValueError(f"{name}: expected shape (layers, neurons), got {arr.shape}")
        rows = list(arr)
    else:
        rows = [np.asarray(r) for r in values]
        for layer, r in enumerate(rows):
            if r.ndim != 1:
                raise ValueError(f"{name}: layer {layer} has shape {r.shape}, expected 1-D")
    if widths is not None:
        if len(rows) != len(widths):
            raise ValueError(f"{name}: {len(rows)} layers, the model has {len(widths)}")
        for layer, (r, w) in enumerate(zip(rows, widths, strict=True)):
            if r.shape[0] != w:
                raise ValueError(f"{name}: layer {layer} has {r.shape[0]} neurons, the model has {w}")
    return rows


def pack_rows(rows: Sequence[np.ndarray]) -> LayerValues:
    """Inverse of :func:`as_rows`: an ``(L, D)`` array when widths are equal, else the list."""
    if len({r.shape[0] for r in rows}) == 1:
        return np.stack(rows)
    return list(rows)


def as_bool_rows(values: LayerValues, widths: Sequence[int] | None, name: str) -> list[np.ndarray]:
    rows = as_rows(values, widths, name)
    out = []
    for layer, r in enumerate(rows):
        if r.dtype != bool:
            if not np.isin(r, (0, 1)).all():
                raise ValueError(f"{name}: layer {layer} is not boolean (or 0/1)")
            r = r.astype(bool)
        out.append(r)
    return out


def ffn_widths(model: nnx.Module) -> list[int]:
    config = model.config
    return [config.ffn_width(i) for i in range(config.num_hidden_layers)]


def ffn_weights(model: nnx.Module, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W1ᵀ kernel (C, D), b1 (D,), W2ᵀ kernel (D, C)) of one layer as NumPy arrays."""
    ff = model.encoder.layers[layer].feed_forward
    return (np.asarray(ff.intermediate_dense.kernel[...]), np.asarray(ff.intermediate_dense.bias[...]),
            np.asarray(ff.output_dense.kernel[...]))


def l1_scores(model: nnx.Module) -> LayerValues:
    """L1 score of every FFN neuron: ``‖W1[i,:]‖₁ + |b1[i]| + ‖W2[:,i]‖₁`` (lowest = pruned first).

    In NNX layout ``intermediate_dense.kernel`` is W1ᵀ (C, D), so W1[i, :] is ``kernel[:, i]``, and
    ``output_dense.kernel`` is W2ᵀ (D, C), so W2[:, i] is ``kernel[i, :]``. Computed in float64.
    """
    rows = []
    for layer in range(model.config.num_hidden_layers):
        w1t, b1, w2t = (x.astype(np.float64) for x in ffn_weights(model, layer))
        rows.append(np.abs(w1t).sum(axis=0) + np.abs(b1) + np.abs(w2t).sum(axis=1))
    return pack_rows(rows)
