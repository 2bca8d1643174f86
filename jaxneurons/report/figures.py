"""Figures for reports (matplotlib, Agg backend): every axis labelled, units in the labels, legends on."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def layer_profile(
    path: str,
    series: Mapping[str, Sequence[float]],
    title: str,
    ylabel: str = "neurons",
    xlabel: str = "layer",
    normalise_depth: bool = False,
) -> str:
    """One line per series over layers (1-based); ``normalise_depth`` puts layers of models of different
    depth on a common 0..1 axis."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in series.items():
        values = np.asarray(values, dtype=float)
        x = np.arange(1, len(values) + 1)
        if normalise_depth:
            x = x / len(values)
        ax.plot(x, values, marker="o", label=name)
    ax.set_xlabel("relative depth (layer / number of layers)" if normalise_depth else xlabel)
    if not normalise_depth:
        ax.set_xticks(np.arange(1, max(len(v) for v in series.values()) + 1))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def heatmap(
    path: str,
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    colorbar_label: str,
    annotate: bool = True,
    fmt: str = "{:.2f}",
    cmap: str = "viridis",
) -> str:
    matrix = np.asarray(matrix, dtype=float)
    # A floor on the size keeps small matrices (2 x 2) readable; long titles wrap to the figure's width.
    width = max(5.0, 1.6 + 0.6 * len(col_labels))
    fig, ax = plt.subplots(figsize=(width, max(3.5, 1.6 + 0.45 * len(row_labels))))
    im = ax.imshow(matrix, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(col_labels)), labels=col_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), labels=row_labels)
    ax.set_title(textwrap.fill(title, width=int(width * 9)), fontsize=10)
    fig.colorbar(im, ax=ax, label=colorbar_label)
    if annotate and matrix.size <= 400:
        finite = matrix[np.isfinite(matrix)]
        mid = (finite.max() + finite.min()) / 2 if finite.size else 0.0
        for (i, j), v in np.ndenumerate(matrix):
            text = "n/a" if not np.isfinite(v) else fmt.format(v)
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if v < mid else "black")
    return _save(fig, path)


def curves(
    path: str,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    title: str,
    xlabel: str,
    ylabel: str,
    baseline: float | None = None,
    baseline_label: str = "unpruned",
) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in series.items():
        ax.plot(x, values, marker="o", label=name)
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", label=baseline_label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def grouped_bars(
    path: str, groups: Sequence[str], series: Mapping[str, Sequence[float]], title: str, ylabel: str
) -> str:
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 4))
    width = 0.8 / max(len(series), 1)
    for k, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(groups)) + k * width, values, width, label=name)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, labels=groups, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    return _save(fig, path)


def training_curve(
    path: str,
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    title: str,
    xlabel: str = "training step",
) -> str:
    """One panel per metric (its y label), one line per series (legend) with its own x values, e.g. the
    iterations of a pre-training run."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5))
    axes = np.atleast_1d(axes)
    for ax, (ylabel, series) in zip(axes, panels.items(), strict=True):
        for name, (x, y) in series.items():
            ax.plot(x, y, label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)
