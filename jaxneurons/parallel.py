"""Device mesh, batch sharding and multi-process start-up.

Conventions: a 2-D mesh with axes ``('data', 'model')``; batches are split over ``'data'`` on their
leading (batch) axis, ``P('data')``; ``'model'`` is reserved (size 1) for sharded weights. Statistics are
reduced with ``psum`` over ``'data'`` and are replicated (``P()``) afterwards, so every process can read
them; by convention process 0 writes files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA, MODEL = "data", "model"


def make_mesh(devices: Sequence[jax.Device] | None = None, *, model: int = 1) -> Mesh:
    """A ``('data', 'model')`` mesh over ``devices`` (default: all devices of all processes)."""
    devs = list(jax.devices() if devices is None else devices)
    if model < 1 or len(devs) % model:
        raise ValueError(f"model axis size {model} must divide the number of devices {len(devs)}")
    return Mesh(np.array(devs).reshape(len(devs) // model, model), (DATA, MODEL))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over 'data', the rest replicated."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def shard_batch(batch: Any, mesh: Mesh, *, source: str = "batch") -> Any:
    """Place a pytree of host arrays (this process's part of the batch) as global arrays split over 'data'.

    Every leaf must have a leading batch axis divisible by this process's number of 'data' shards. In a
    multi-process run each process passes its own local rows; the global batch is their concatenation in
    process order (``jax.make_array_from_process_local_data``).
    """
    sharding = data_sharding(mesh)
    n_local = len({d for d in mesh.devices[:, 0].flat if d.process_index == jax.process_index()})

    def put(path, x):
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % max(n_local, 1):
            raise ValueError(f"{source}: leaf {jax.tree_util.keystr(path)} has shape {x.shape}; its leading "
                             f"batch axis must be divisible by the {n_local} local 'data' shards")
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map_with_path(put, batch)


def init_distributed(coordinator: str, num_processes: int, process_id: int, *,
                     local_devices: int | None = None, cpu: bool | None = None) -> None:
    """Start multi-process JAX (call before any other JAX use in the process).

    On CPU (``cpu=True``, or when ``JAX_PLATFORMS`` is 'cpu'), cross-process collectives go through gloo
    and ``local_devices`` sets the number of CPU devices of this process. ``coordinator`` is
    ``host:port`` of process 0.
    """
    import os

    if cpu is None:
        cpu = os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu"
    if cpu:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        if local_devices is not None:
            jax.config.update("jax_num_cpu_devices", int(local_devices))
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def host_local(tree: Mapping[str, Any] | Any) -> Any:
    """Host numpy copy of a pytree of replicated global arrays (valid in every process)."""
    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            x = x.addressable_data(0)
        return np.asarray(x)

    return jax.tree_util.tree_map(get, tree)
