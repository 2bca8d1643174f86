"""Attention-head metrics: diagonality, verticality, globalness (study 4, arXiv 2409.03115).

The three patterns follow Yang, Liu & Lee 2020 ("Understanding Self-Attention of
Self-Supervised Audio Transformers", arXiv 2006.03265), who sort heads into *diagonal* (attend
near the query's own frame), *vertical* (all queries attend the same few frames) and *global*
(spread attention). For an attention map A (n x n over the n valid frames, rows sum to 1):

* diagonality, ``diagonality_kind="normalized"`` (default):
  ``mean_i [1 - sum_j A_ij |i-j| / max_j |i-j|]`` in [0, 1]; 1 = every row on its own frame.
  The same per-row normalisation appears in public ESPnet-based attention-analysis scripts
  (``diagonality(att)``: ``1 - sum_j att_ij |i-j| / max_j |i-j|`` averaged over queries).
  ``"distance"``: ``-mean_i sum_j A_ij |i-j|`` (minus the expected query-key distance in
  frames; higher = more diagonal, unbounded below, not comparable across lengths).
* verticality, ``verticality_kind="normalized"`` (default): ``1 - H(m) / log n`` with
  ``m_j = mean_i A_ij`` the column-mass distribution; in [0, 1]; 1 = all mass on one column.
  ``"entropy"``: ``-H(m)`` in nats.
* globalness, ``globalness_kind="normalized"`` (default): ``mean_i H(A_i) / log n``; in [0, 1];
  1 = every row uniform. ``"entropy"``: ``mean_i H(A_i)`` in nats.

Source note: the defaults are the project's specification (METHODS, study 4). The full text of
arXiv 2006.03265 was not reachable from our build machine, so we could not check its exact
equations; the unnormalised kinds are the plain forms (expected distance, column-mass entropy,
mean row entropy) that the paper's metrics are built on. Verify against the paper before
quoting numbers as "theirs"; the kinds are flags so either can be used.

Padding: only the first ``length`` frames of an utterance are used (rows and columns beyond
it are dropped), and ``log n`` uses that length, so a padded map gives exactly the metrics of
the unpadded one. With ``renormalize=True`` (default) each valid row is divided by its mass on
valid columns: needed for models that do not mask padded keys (e.g. wav2vec 2.0 base with
group-norm front end, which is run without an attention mask), a no-op when they do.
Undefined cases give NaN, never a made-up number: utterances shorter than 2 frames (no
pattern; ``log 1 = 0``), and a valid row with no mass on valid columns.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

__all__ = [
    "METRIC_NAMES",
    "DIAGONALITY_KINDS",
    "VERTICALITY_KINDS",
    "GLOBALNESS_KINDS",
    "head_metrics",
    "attention_map_metrics",
]

METRIC_NAMES = ("diagonality", "verticality", "globalness")
DIAGONALITY_KINDS = ("normalized", "distance")
VERTICALITY_KINDS = ("normalized", "entropy")
GLOBALNESS_KINDS = ("normalized", "entropy")


def _check_kinds(diagonality_kind: str, verticality_kind: str, globalness_kind: str) -> None:
    for name, kind, allowed in (("diagonality_kind", diagonality_kind, DIAGONALITY_KINDS),
                                ("verticality_kind", verticality_kind, VERTICALITY_KINDS),
                                ("globalness_kind", globalness_kind, GLOBALNESS_KINDS)):
        if kind not in allowed:
            raise ValueError(f"{name}={kind!r} is not one of {allowed}")


@functools.partial(
    jax.jit, static_argnames=("diagonality_kind", "verticality_kind", "globalness_kind", "renormalize")
)
def _head_metrics(attn, lengths, diagonality_kind, verticality_kind, globalness_kind, renormalize):
    t = attn.shape[-1]
    attn = attn.astype(jnp.float32)
    # lengths (B,) -> (..., B, H) by broadcasting against the (B, H) axes before (T, T).
    n = jnp.broadcast_to(lengths.astype(jnp.int32)[:, None], attn.shape[:-2])
    pos = jnp.arange(t, dtype=jnp.int32)
    valid = pos < n[..., None]  # (..., T) valid frames, used for rows and columns
    a = jnp.where(valid[..., :, None] & valid[..., None, :], attn, 0.0)
    row_mass = jnp.sum(a, axis=-1)  # (..., T)
    bad_row = jnp.any(valid & (row_mass <= 0.0), axis=-1)
    if renormalize:
        a = a / jnp.where(row_mass > 0.0, row_mass, 1.0)[..., None]
    nf = n.astype(jnp.float32)
    inv_n = 1.0 / jnp.maximum(nf, 1.0)
    log_n = jnp.log(jnp.maximum(nf, 2.0))
    vrow = valid.astype(jnp.float32)

    dist = jnp.abs(pos[:, None] - pos[None, :]).astype(jnp.float32)  # (T, T)
    exp_dist = jnp.sum(a * dist, axis=-1)  # (..., T) expected |i - j| per row
    if diagonality_kind == "normalized":
        max_dist = jnp.maximum(pos, n[..., None] - 1 - pos).astype(jnp.float32)  # max_j |i - j|
        per_row = 1.0 - exp_dist / jnp.maximum(max_dist, 1.0)
        diag = jnp.sum(per_row * vrow, axis=-1) * inv_n
    else:
        diag = -jnp.sum(exp_dist * vrow, axis=-1) * inv_n

    col_mass = jnp.sum(a, axis=-2) * inv_n[..., None]  # (..., T) mean over valid rows
    col_entropy = -jnp.sum(xlogy(col_mass, col_mass), axis=-1)
    vert = 1.0 - col_entropy / log_n if verticality_kind == "normalized" else -col_entropy

    row_entropy = -jnp.sum(xlogy(a, a), axis=-1)  # (..., T)
    mean_row_entropy = jnp.sum(row_entropy * vrow, axis=-1) * inv_n
    glob = mean_row_entropy / log_n if globalness_kind == "normalized" else mean_row_entropy

    out = jnp.stack([diag, vert, glob], axis=-1)
    undefined = (n < 2) | bad_row
    return jnp.where(undefined[..., None], jnp.nan, out)


def head_metrics(
    attn,
    lengths,
    *,
    diagonality_kind: str = "normalized",
    verticality_kind: str = "normalized",
    globalness_kind: str = "normalized",
    renormalize: bool = True,
) -> jax.Array:
    """Per-utterance head metrics from attention probabilities.

    ``attn`` (L, B, H, T, T) (or (B, H, T, T)), softmax probabilities, rows = queries;
    ``lengths`` (B,) valid frames per utterance (0 for a padding row of the batch).
    Returns (L, B, H, 3) (resp. (B, H, 3)) float32 with the metrics in :data:`METRIC_NAMES`
    order; NaN where undefined (length < 2, or a row with no mass on valid frames). Jitted and
    usable inside other jitted code; shapes and (when concrete) lengths are checked here.
    """
    _check_kinds(diagonality_kind, verticality_kind, globalness_kind)
    if attn.ndim not in (4, 5) or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be (L, B, H, T, T) or (B, H, T, T) with square maps, got {attn.shape}")
    if getattr(lengths, "ndim", None) != 1 or lengths.shape[0] != attn.shape[-4]:
        raise ValueError(f"lengths must be (B,) with B={attn.shape[-4]}, got shape "
                         f"{getattr(lengths, 'shape', None)}")
    if not isinstance(lengths, jax.core.Tracer):
        ln = np.asarray(lengths)
        if not np.issubdtype(ln.dtype, np.integer):
            raise ValueError(f"lengths must be integers, got {ln.dtype}")
        if ln.size and (ln.min() < 0 or ln.max() > attn.shape[-1]):
            raise ValueError(f"lengths must lie in [0, T={attn.shape[-1]}], got min {ln.min()} max {ln.max()}")
    return _head_metrics(jnp.asarray(attn), jnp.asarray(lengths), diagonality_kind, verticality_kind,
                         globalness_kind, renormalize)


def attention_map_metrics(attn_map, length: int | None = None, **kinds) -> dict[str, float]:
    """The three metrics of a single (T, T) map (numpy in, floats out); ``length`` defaults to T."""
    m = np.asarray(attn_map, dtype=np.float32)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"attention map must be square (T, T), got {m.shape}")
    length = m.shape[0] if length is None else int(length)
    out = np.asarray(head_metrics(m[None, None], np.array([length]), **kinds))[0, 0]
    return dict(zip(METRIC_NAMES, map(float, out), strict=True))
