"""Saving and restoring jaxneurons models: an orbax checkpoint of the NNX state plus our ``config.json``.

Layout of a model directory::

    config.json        SpeechConfig (family, sizes, per-layer FFN widths after pruning)
    state/             orbax StandardCheckpointer directory with the parameters
    provenance.json    optional: where the weights came from (converter report, training command)

Directories are written to a temporary sibling and renamed when complete, so a crash never leaves a
half-written model that looks valid.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxneurons.models.config import ConfigError, SpeechConfig
from jaxneurons.models.registry import abstract_model, build_model
from jaxneurons.results import atomic_directory

CONFIG_FILE = "config.json"
STATE_DIR = "state"
PROVENANCE_FILE = "provenance.json"


def _pure(state: nnx.State, storage_dtype: str | None = None) -> dict:
    def cast(x):
        x = np.asarray(x)
        return x.astype(storage_dtype) if storage_dtype and np.issubdtype(x.dtype, np.floating) else x

    return jax.tree.map(cast, nnx.to_pure_dict(state))


def save_model(
    model: nnx.Module, path: str, provenance: dict[str, Any] | None = None, storage_dtype: str | None = None
) -> str:
    """Write ``model`` to ``path`` atomically (an existing directory is replaced).

    ``storage_dtype="float16"`` halves the files (the bundled model uses it); :func:`load_model` always
    restores float32.
    """
    path = os.path.abspath(path)
    with atomic_directory(path) as tmp:
        model.config.save(os.path.join(tmp, CONFIG_FILE))
        checkpointer = ocp.StandardCheckpointer()
        state = nnx.state(model, nnx.Not(nnx.Intermediate))  # never sown activations
        checkpointer.save(os.path.join(tmp, STATE_DIR), _pure(state, storage_dtype))
        checkpointer.wait_until_finished()
        if provenance is not None:
            with open(os.path.join(tmp, PROVENANCE_FILE), "w") as f:
                json.dump(provenance, f, indent=2, sort_keys=True, default=str)
    return path


def load_model(path: str) -> nnx.Module:
    """Restore a model written by :func:`save_model` (or by the HF converter)."""
    config_path = os.path.join(path, CONFIG_FILE)
    state_path = os.path.join(os.path.abspath(path), STATE_DIR)
    if not os.path.exists(config_path):
        raise ConfigError(f"{path}: not a jaxneurons model directory (no {CONFIG_FILE})")
    if not os.path.isdir(state_path):
        raise ConfigError(f"{path}: no {STATE_DIR}/ checkpoint directory")
    config = SpeechConfig.load(config_path)
    model = abstract_model(config)
    graphdef, state = nnx.split(model)
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(state))
    try:
        restored = ocp.StandardCheckpointer().restore(state_path, target)
    except Exception as e:  # orbax raises many types for structure/shape mismatches
        raise ConfigError(f"{state_path}: checkpoint does not match {CONFIG_FILE} ({e})") from e
    nnx.replace_by_pure_dict(state, restored)
    return nnx.merge(graphdef, state)


def random_model(config: SpeechConfig, seed: int = 0) -> nnx.Module:
    """Alias of :func:`build_model` for symmetry with :func:`load_model` (random-init twins)."""
    return build_model(config, seed)


def read_provenance(path: str) -> dict[str, Any]:
    p = os.path.join(path, PROVENANCE_FILE)
    if not os.path.exists(p):
        return {}
    with open(p) as f:
        return json.load(f)
