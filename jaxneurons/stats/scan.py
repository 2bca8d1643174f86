"""The scan loop: one jitted step (forward + statistics) per batch, data-parallel, resumable.

``forward_fn(params, batch) -> (h, valid)`` is any function of the model parameters (or None) and a
batch dict; it returns FFN activations ``(L, B, T, D)`` (or a tuple of per-layer ``(B, T, D_l)``) and the
``(B, T)`` valid-frame mask, optionally followed by a dict of labels computed in the same pass (they
replace the batch's labels of the same names, which then only need the right shape and range). The
batch dict also carries ``batch["labels"][name]`` for every condition set / continuous label of the
config and ``batch["selections"][name]`` for every selection they use, and, when the config keeps
max-activating examples, ``batch["utt_index"]`` (B,): the global utterance index of each row (-1 = padding).

Checkpoints (``save_checkpoint``) hold every accumulator array, the config and the cursor (batches done)
in ONE ``.npz`` written to a temporary file and ``os.replace``d, so a kill leaves either the previous or
the new checkpoint, never a torn one. ``run_scan`` resumes from it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxneurons.parallel import DATA, shard_batch
from jaxneurons.stats.kernels import update_stats
from jaxneurons.stats.spec import StatsConfig
from jaxneurons.stats.state import NeuronStats, init_stats, stats_from_numpy, to_host

log = logging.getLogger(__name__)

ForwardFn = Callable[[Any, Mapping[str, Any]], tuple[Any, jax.Array]]
_META = "__meta__"
CHECKPOINT_VERSION = 1


def _pick(batch: Mapping[str, Any], config: StatsConfig) -> tuple[dict, dict]:
    labels = batch.get("labels", {})
    sels = batch.get("selections", {})
    names = [c.name for c in config.conditions] + [c.name for c in config.continuous]
    return {n: labels[n] for n in names if n in labels}, {n: sels[n] for n in config.selections() if n in sels}


def make_stats_step(forward_fn: ForwardFn, config: StatsConfig, *, mesh: Mesh | None = None,
                    topk_method: str = "auto") -> Callable[[NeuronStats, Any, Mapping[str, Any]], NeuronStats]:
    """``step(stats, params, batch) -> stats``: forward and statistics fused in one ``jax.jit``.

    With a mesh, the forward is partitioned by jit from the batch's ``P('data')`` sharding and the
    statistics run under ``shard_map``: each device counts its frames, partial counts are ``psum``-ed
    over 'data' (exact in int32), and the updated state is replicated.
    """

    def step(stats: NeuronStats, params: Any, batch: Mapping[str, Any]) -> NeuronStats:
        out = forward_fn(params, batch)
        h, valid = out[0], out[1]
        labels, sels = _pick(batch, config)
        if len(out) > 2:  # labels computed by the model pass itself (e.g. k-means clusters of a layer)
            labels = {**labels, **out[2]}
        utt = batch["utt_index"] if config.examples else None  # check_labels made sure it is there
        if mesh is None:
            return update_stats(stats, h, valid, labels, sels, topk_method=topk_method, utt_index=utt)

        def sharded(stats, h, valid, labels, sels, utt):
            return update_stats(stats, h, valid, labels, sels, axis_name=DATA, topk_method=topk_method,
                                utt_index=utt)

        h_spec = tuple(P(DATA) for _ in h) if isinstance(h, (list, tuple)) else P(None, DATA)
        fn = jax.shard_map(
            sharded,
            mesh=mesh,
            in_specs=(P(), h_spec, P(DATA), P(DATA), P(DATA), P(DATA)),
            out_specs=P(),
        )
        return fn(stats, h if not isinstance(h, list) else tuple(h), valid, labels, sels, utt)

    return jax.jit(step)


def check_labels(batch: Mapping[str, Any], config: StatsConfig, *, source: str) -> None:
    """Raise ValueError (naming ``source``) on missing, mis-shaped or out-of-range labels / selections."""
    labels = batch.get("labels")
    if not isinstance(labels, Mapping):
        if config.conditions or config.continuous:
            raise ValueError(f"{source}: batch has no 'labels' mapping")
        labels = {}
    sels = batch.get("selections", {}) or {}
    for c in config.conditions:
        if c.name not in labels:
            raise ValueError(f"{source}: labels for condition {c.name!r} are missing")
        lab = np.asarray(labels[c.name])
        if lab.ndim not in (1, 2) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"{source}: labels {c.name!r} must be integer (B,) or (B, T), got {lab.dtype} {lab.shape}")
        bad = (lab < -1) | (lab >= c.num_classes)
        if bad.any():
            v = lab[bad].ravel()[:5].tolist()
            raise ValueError(f"{source}: labels {c.name!r} have {int(bad.sum())} values outside [-1, "
                             f"{c.num_classes}) (e.g. {v})")
    for y in config.continuous:
        if y.name not in labels:
            raise ValueError(f"{source}: continuous label {y.name!r} is missing")
        if not np.issubdtype(np.asarray(labels[y.name]).dtype, np.floating):
            raise ValueError(f"{source}: continuous label {y.name!r} must be float (NaN = ignore)")
    if config.examples:
        utt = batch.get("utt_index")
        if utt is None:
            raise ValueError(f"{source}: the scan keeps max-activating examples but the batch has no 'utt_index' "
                             "(global utterance index of each row, -1 for padding rows)")
        utt = np.asarray(utt)
        if utt.ndim != 1 or not np.issubdtype(utt.dtype, np.integer) or (utt < -1).any():
            raise ValueError(f"{source}: 'utt_index' must be integer (B,) with values >= -1, got {utt.dtype} "
                             f"{utt.shape}")
    for s in config.selections():
        if s not in sels:
            raise ValueError(f"{source}: selection mask {s!r} is missing")
        if np.asarray(sels[s]).dtype != np.bool_:
            raise ValueError(f"{source}: selection mask {s!r} must be bool")


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(path: str, stats: NeuronStats, cursor: int, *, extra: Mapping[str, Any] | None = None) -> None:
    """Atomically write accumulators + config + cursor to ``path`` (a .npz)."""
    arrays = stats.to_numpy()
    meta = {"version": CHECKPOINT_VERSION, "cursor": int(cursor), "config": stats.config.to_json(),
            "extra": dict(extra or {})}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str) -> tuple[NeuronStats, int, dict]:
    """Read a checkpoint: (stats, cursor, extra). Errors name the file and what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable statistics checkpoint ({e})") from e
    if _META not in arrays:
        raise ValueError(f"{path}: statistics checkpoint has no {_META} entry")
    meta = json.loads(arrays.pop(_META).tobytes().decode())
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint version {meta.get('version')} != {CHECKPOINT_VERSION}")
    config = StatsConfig.from_json(meta["config"])
    return stats_from_numpy(config, arrays, source=path), int(meta["cursor"]), meta.get("extra", {})


# ---------------------------------------------------------------- the loop

def run_scan(
    forward_fn: ForwardFn,
    params: Any,
    batches: Iterable[Mapping[str, Any]] | Callable[[int], Iterable[Mapping[str, Any]]],
    config: StatsConfig,
    *,
    mesh: Mesh | None = None,
    checkpoint_path: str | None = None,
    checkpoint_every: int = 100,
    max_batches: int | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    topk_method: str = "auto",
    on_batch: Callable[[int, NeuronStats], None] | None = None,
) -> tuple[NeuronStats, int]:
    """Accumulate statistics over ``batches``; returns (stats, cursor = batches done in total).

    ``batches``: an iterable of batch dicts (on resume the first ``cursor`` are skipped by iterating
    them), or a callable ``start -> iterable`` that starts at batch ``start`` (no wasted loading). With a
    mesh each batch holds this process's rows and is placed with :func:`shard_batch`.
    ``checkpoint_path``: resume from it if present (its config and ``fingerprint`` must match) and
    rewrite it every ``checkpoint_every`` batches and at the end (process 0 writes).
    ``max_batches``: stop after this many batches in total (cursor), e.g. to split a scan into jobs.
    ``topk_method``: how the top-k and h > 0 counts are computed (identical counts); "auto" = the native
    FFI kernel on CPU when it builds, else ``lax.top_k`` (see :func:`jaxneurons.stats.batch_partials`).
    """
    fingerprint = dict(fingerprint or {})
    stats, cursor = init_stats(config), 0
    if checkpoint_path and os.path.exists(checkpoint_path):
        stats, cursor, extra = load_checkpoint(checkpoint_path)
        if stats.config != config:
            raise ValueError(f"{checkpoint_path}: checkpoint config {stats.config} differs from the requested {config}")
        if extra.get("fingerprint", {}) != json.loads(json.dumps(fingerprint)):
            raise ValueError(f"{checkpoint_path}: checkpoint fingerprint {extra.get('fingerprint')} differs from "
                             f"{fingerprint}")
        log.info("resuming statistics scan at batch %d from %s", cursor, checkpoint_path)
    if mesh is not None:
        stats = jax.device_put(stats, jax.sharding.NamedSharding(mesh, P()))
    step = make_stats_step(forward_fn, config, mesh=mesh, topk_method=topk_method)
    it = batches(cursor) if callable(batches) else islice(batches, cursor, None)
    write = jax.process_index() == 0

    def save():
        if checkpoint_path and write:
            save_checkpoint(checkpoint_path, stats, cursor, extra={"fingerprint": fingerprint})

    last_saved = cursor
    for batch in it:
        if max_batches is not None and cursor >= max_batches:
            break
        check_labels(batch, config, source=f"batch {cursor}")
        if mesh is not None:
            batch = shard_batch(batch, mesh, source=f"batch {cursor}")
        stats = step(stats, params, batch)
        cursor += 1
        if on_batch is not None:
            on_batch(cursor, stats)
        if checkpoint_path and cursor - last_saved >= checkpoint_every:
            save()
            last_saved = cursor
    rejected = {c.name: int(to_host(stats.arrays[f"{c.name}/rejected"])) for c in config.conditions}
    if any(rejected.values()):
        raise ValueError(f"statistics scan: out-of-range labels reached the kernel: {rejected}")
    if cursor != last_saved:
        save()
    return stats, cursor
