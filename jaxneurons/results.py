"""Versioned, self-describing results directories, written atomically.

A results directory holds ``run.json`` (format version, the command's flags, software versions, model and
manifest fingerprints, wall time), NumPy arrays (``arrays/NAME.npy``), JSON documents (``NAME.json``),
figures (``figures/*.png``) and reports. It is assembled in a temporary sibling directory and renamed into
place only when complete, so an interrupted run never leaves a directory that looks finished.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import numpy as np

FORMAT_VERSION = 1
RUN_FILE = "run.json"


def software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("jaxneurons", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(path: str, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(_jsonable(data), f, indent=2, sort_keys=True, allow_nan=True)
        f.write("\n")
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def replace_directory(src: str, dest: str) -> None:
    """Move the finished directory ``src`` to ``dest``; an existing ``dest`` is first renamed aside and removed
    only after the swap, so a kill at any point leaves either the old or the new directory at ``dest``."""
    if os.path.lexists(dest):
        old = f"{dest}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dest)


@contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """``with atomic_directory(path) as tmp:`` write the directory's files into ``tmp`` (a fresh sibling of
    ``path``); on success it replaces ``path`` (:func:`replace_directory`), on any error it is removed and
    ``path`` is left as it was. The one way this package writes a directory atomically."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(path)}-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is a normal directory
    try:
        yield tmp
        replace_directory(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class ResultsDir:
    """Collects one run's outputs in a temp directory; :meth:`commit` moves it to ``path``.

    Use as a context manager: on an exception nothing is committed and the temp directory is removed.
    """

    def __init__(self, path: str, kind: str, flags: dict[str, Any] | None = None, overwrite: bool = True):
        self.path = os.path.abspath(path)
        self.kind = kind
        self.overwrite = overwrite
        parent = os.path.dirname(self.path)
        os.makedirs(parent, exist_ok=True)
        if os.path.exists(self.path) and not overwrite:
            raise FileExistsError(f"{self.path}: results directory exists (pass overwrite=True to replace it)")
        self.tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(self.path)}-", dir=parent)
        os.chmod(self.tmp, 0o755)  # mkdtemp makes it private; the result is a normal directory
        self.run: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "argv": sys.argv,
            "flags": flags or {},
            "software": software_versions(),
        }

    def file(self, relative: str) -> str:
        """Absolute path of ``relative`` inside the (temporary) directory; parent folders are created."""
        full = os.path.join(self.tmp, relative)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return full

    def save_array(self, name: str, array: np.ndarray) -> None:
        np.save(self.file(f"arrays/{name}.npy"), np.asarray(array))

    def save_json(self, name: str, data: Any) -> None:
        write_json(self.file(f"{name}.json"), data)

    def commit(self) -> str:
        self.run["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        write_json(os.path.join(self.tmp, RUN_FILE), self.run)
        replace_directory(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> ResultsDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def load_results(path: str) -> dict[str, Any]:
    """``run.json`` of a results directory, checking its format version."""
    run_path = os.path.join(path, RUN_FILE)
    if not os.path.exists(run_path):
        raise FileNotFoundError(f"{path}: not a complete results directory (no {RUN_FILE})")
    with open(run_path) as f:
        run = json.load(f)
    if run.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{run_path}: results format {run.get('format_version')}, this version reads {FORMAT_VERSION}")
    return run


def load_array(path: str, name: str) -> np.ndarray:
    return np.load(os.path.join(path, "arrays", f"{name}.npy"))
