"""Apply keep masks to a model: physically (smaller W1/b1/W2 per layer) or by zeroing the pruned weights.

Physical slimming keeps, per layer, the kept rows of W1 and b1 and the kept columns of W2, and records the
new widths in ``config.intermediate_sizes``; its forward equals the masked model's forward
(``neuron_mask = keep``). Neuron indices of the slimmed model are positions among the kept neurons, in the
original order (``np.flatnonzero(keep[l])`` maps them back).

A constant offset (mean ablation, ``h_i -> m_i`` for pruned ``i``) is folded into the output bias:
``b2 += Σ_{pruned i} m_i W2[:, i]``, so mean-pruned models slim exactly too.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxneurons.models.registry import abstract_model
from jaxneurons.pruning.scores import LayerValues, as_bool_rows, as_rows, ffn_widths


def _ffn_path(path: tuple) -> tuple[int, str, str] | None:
    """(layer, 'intermediate_dense'|'output_dense', 'kernel'|'bias') for FFN parameter paths, else None."""
    if len(path) == 6 and path[:2] == ("encoder", "layers") and path[3] == "feed_forward":
        return int(path[2]), str(path[4]), str(path[5])
    return None


def keep_neuron_mask(keep: LayerValues) -> LayerValues:
    """Keep masks -> the float ``neuron_mask`` of the equivalent masked forward."""
    rows = as_bool_rows(keep, None, "keep")
    if len({r.shape[0] for r in rows}) == 1:
        return np.stack(rows).astype(np.float32)
    return [r.astype(np.float32) for r in rows]


def slim_model(model: nnx.Module, keep: LayerValues, *, neuron_offset: LayerValues | None = None) -> nnx.Module:
    """A new model whose FFN layers hold only the kept neurons (``config.intermediate_sizes`` per layer).

    ``neuron_offset`` (same layout as ``keep``) is the constant the pruned neurons are replaced by; the default
    (zero) is plain pruning. The input model is not modified.
    """
    config = model.config
    widths = ffn_widths(model)
    rows = as_bool_rows(keep, widths, "keep")
    offsets = as_rows(neuron_offset, widths, "neuron_offset") if neuron_offset is not None else None
    new_config = config.replace(intermediate_sizes=tuple(int(r.sum()) for r in rows))
    old = dict(nnx.to_flat_state(nnx.state(model)))
    graphdef, state = nnx.split(abstract_model(new_config))
    for path, var in nnx.to_flat_state(state):
        value = old[path].get_value()
        ffn = _ffn_path(path)
        if ffn is not None:
            layer, dense, leaf = ffn
            k = rows[layer]
            if dense == "intermediate_dense":
                value = value[:, k] if leaf == "kernel" else value[k]
            elif leaf == "kernel":
                value = value[k, :]
            elif offsets is not None:
                pruned = ~k
                w2t = np.asarray(old[path[:-1] + ("kernel",)].get_value(), np.float64)
                value = np.asarray(value, np.float64) + offsets[layer][pruned].astype(np.float64) @ w2t[pruned]
        expected = tuple(var.get_value().shape)
        if tuple(np.shape(value)) != expected:
            raise ValueError(f"slimming {'.'.join(map(str, path))}: got shape {np.shape(value)}, expected {expected}")
        var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))
    return nnx.merge(graphdef, state)


def zero_pruned(model: nnx.Module, keep: LayerValues) -> nnx.Module:
    """A copy of ``model`` with the pruned neurons' W1 rows, b1 entries and W2 columns set to 0 (same shapes).

    The pruned neurons then compute ``act(0) = 0`` (every supported activation) and contribute nothing, and
    gradient training leaves them at zero (their gradients are zero), so this is masked pruning a training
    loop needs to know nothing about.
    """
    rows = as_bool_rows(keep, ffn_widths(model), "keep")
    graphdef, state = nnx.split(nnx.clone(model))  # split shares Variables: clone to leave `model` alone
    for path, var in nnx.to_flat_state(state):
        ffn = _ffn_path(path)
        if ffn is None:
            continue
        layer, dense, leaf = ffn
        k = rows[layer]
        value = np.asarray(var.get_value())
        if dense == "intermediate_dense":
            value = np.where(k[None, :], value, 0) if leaf == "kernel" else np.where(k, value, 0)
        elif leaf == "kernel":
            value = np.where(k[:, None], value, 0)
        else:
            continue
        var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))
    return nnx.merge(graphdef, state)

