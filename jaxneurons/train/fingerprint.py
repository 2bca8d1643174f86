"""Content fingerprints: what a checkpoint, a cached target file or a finished scan was computed from.

A resume or a cache hit is only safe when the inputs are the same *content*, not the same path: weights replaced
in place, a different mask or other utterances must not silently reuse old results. Every fingerprint here is a
SHA-256 over canonical bytes (paths, dtypes, shapes and raw data of arrays; sorted-key JSON of configs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
from flax import nnx


def json_fingerprint(obj: Any) -> str:
    """Hash of a JSON-able object (dataclasses are converted); key order does not matter."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _update_array(h: Any, x: Any) -> None:
    arr = np.ascontiguousarray(np.asarray(x))
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())


def arrays_fingerprint(arrays: Iterable[Any]) -> str:
    """Hash of a sequence of arrays (``None`` entries allowed: they hash as a marker)."""
    h = hashlib.sha256()
    for x in arrays:
        if x is None:
            h.update(b"<none>")
        elif isinstance(x, list | tuple):
            h.update(b"<seq>" + arrays_fingerprint(x).encode())
        else:
            _update_array(h, x)
    return h.hexdigest()[:16]


def weights_fingerprint(model: nnx.Module) -> str:
    """Hash of a model's config and every parameter (path, dtype, shape, values), independent of where it lives."""
    h = hashlib.sha256(json_fingerprint(model.config).encode())
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    for path, var in sorted(flat, key=lambda item: tuple(map(str, item[0]))):
        h.update(".".join(map(str, path)).encode())
        _update_array(h, var.get_value())
    return h.hexdigest()[:16]
