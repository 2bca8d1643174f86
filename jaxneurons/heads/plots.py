"""Figures for head typing: a layer x head map of types, and a grid of example attention maps.

Matplotlib with the Agg backend (no display needed); functions write a PNG and return its path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from jaxneurons.heads.classify import HEAD_TYPES, UNTYPED  # noqa: E402

__all__ = ["plot_head_types", "plot_attention_examples"]

# Colour-blind-safe (Okabe-Ito) colours: untyped, diagonal, vertical, global.
_COLOURS = ("#BBBBBB", "#0072B2", "#E69F00", "#009E73")


def plot_head_types(types, path: str, *, scores=None, title: str = "Attention head types") -> str:
    """Heatmap of head types, layers as rows (layer 0 at the top) and heads as columns.

    ``types`` (L, H) from :func:`jaxneurons.heads.classify.head_types`; ``scores`` (L, H),
    optional numbers to print in the cells (e.g. the winning normalised metric).
    """
    t = np.asarray(types)
    if t.ndim != 2:
        raise ValueError(f"types must be (L, H), got shape {t.shape}")
    if np.any((t < UNTYPED) | (t >= len(HEAD_TYPES))):
        raise ValueError(f"types must lie in [{UNTYPED}, {len(HEAD_TYPES) - 1}]")
    n_layers, n_heads = t.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * n_heads + 2.5), max(3.0, 0.4 * n_layers + 1.5)))
    ax.imshow(t + 1, cmap=ListedColormap(_COLOURS), vmin=0, vmax=len(_COLOURS) - 1,
              aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    if scores is not None:
        s = np.asarray(scores)
        if s.shape != t.shape:
            raise ValueError(f"scores shape {s.shape} != types shape {t.shape}")
        for i in range(n_layers):
            for j in range(n_heads):
                if np.isfinite(s[i, j]):
                    ax.text(j, i, f"{s[i, j]:.1f}", ha="center", va="center", fontsize=7)
    handles = [Patch(color=_COLOURS[i + 1], label=name) for i, name in enumerate(HEAD_TYPES)]
    if np.any(t == UNTYPED):
        handles.append(Patch(color=_COLOURS[0], label="untyped"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_attention_examples(
    maps: Sequence, path: str, *, titles: Sequence[str] | None = None,
    lengths: Sequence[int] | None = None, ncols: int = 4,
) -> str:
    """Grid of attention maps (each (T, T), queries as rows); ``lengths`` crops padding."""
    if len(maps) == 0:
        raise ValueError("no attention maps to plot")
    if titles is not None and len(titles) != len(maps):
        raise ValueError(f"{len(titles)} titles for {len(maps)} maps")
    if lengths is not None and len(lengths) != len(maps):
        raise ValueError(f"{len(lengths)} lengths for {len(maps)} maps")
    ncols = max(1, min(ncols, len(maps)))
    nrows = -(-len(maps) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(maps):
            ax.axis("off")
            continue
        m = np.asarray(maps[k], np.float32)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"map {k} must be square (T, T), got {m.shape}")
        if lengths is not None:
            m = m[: lengths[k], : lengths[k]]
        ax.imshow(m, cmap="viridis", aspect="equal", interpolation="nearest", origin="upper")
        ax.set_title(titles[k] if titles is not None else f"map {k}", fontsize=9)
        ax.set_xlabel("key frame", fontsize=8)
        ax.set_ylabel("query frame", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    _save(fig, path)
    return path


def _save(fig, path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    try:
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
