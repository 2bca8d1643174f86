"""Native XLA FFI CPU kernels for the statistics scan, each one pass over a layer's ``h``: top-k |h| and
h > 0 counts (``counts.cc``), and the max-activating examples (``examples.cc``).

The sources (next to this file) are compiled together into one library on first use with the C++
compiler (``$JAXNEURONS_CXX``, else ``$CXX``, else ``g++``) into a per-user cache directory
(``$JAXNEURONS_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxneurons``, else ``~/.cache/jaxneurons``), keyed
by a hash of the sources, the flags, the compiler's version, jaxlib's version and the CPU
(``-march=native``; a portable build is tried if that fails). The library is written to a temporary
file and ``os.replace``d, under a file lock, so concurrent processes (pytest-xdist workers,
multi-process scans) never load a torn file. A compile error leaves a ``.failed`` note next to where
the library would be, so later processes fall back at once.

Why native: on XLA CPU, ``lax.top_k`` is a single-threaded per-row partial sort and the ``h > 0``
counts a memory-bound float matmul; together they were ~11 % of a base-size forward. The kernel reads
each layer's ``h`` once (see ``counts.cc`` for the algorithm and the tie rule, which is lax.top_k's).
For the examples, XLA's two ``lax.top_k(k=16)`` per layer and the O(n^2) merge ranks cost more than the
whole scan statistics; ``examples.cc`` compares each neuron with its running n-th value in one SIMD pass
and touches a small heap only when it is beaten, and merges two sorted lists in O(n).

``JAXNEURONS_NATIVE=0`` disables it; without a compiler, when the build fails, or on a non-CPU backend,
``topk_method="auto"`` uses the pure-XLA path and logs one warning saying why.

``JAXNEURONS_REQUIRE_NATIVE=1`` (set by ``.ci/run``) declares that the kernel MUST build here: the native
equality tests then fail instead of skipping when it does not (:func:`native_required`).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)

TARGET = "jaxneurons_neuron_counts"
EXAMPLES_TARGET = "jaxneurons_top_examples"
MERGE_TARGET = "jaxneurons_merge_examples"
SOURCES = ("counts.cc", "examples.cc")
# FFI target name -> exported handler symbol of the library
SYMBOLS = {TARGET: "NeuronCounts", EXAMPLES_TARGET: "TopExamples", MERGE_TARGET: "MergeExamples"}
BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
# Tried in order: -march=native for the SIMD prefilter, then a portable build (e.g. compilers without it).
ARCH_FLAGS = (("-march=native",), ())

_lock = threading.Lock()
_status: tuple[bool, str] | None = None   # (available, why / library path), None = not tried yet
_registered: set[str] = set()             # FFI targets registered in this process (never twice)
_warned: set[str] = set()
_libs: list[ctypes.CDLL] = []            # keep the loaded libraries referenced


def _cache_dir() -> str:
    d = os.environ.get("JAXNEURONS_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "jaxneurons")
    return d


def _compiler() -> str:
    return os.environ.get("JAXNEURONS_CXX") or os.environ.get("CXX") or "g++"


def _cpu_id() -> str:
    """What -march=native depends on: the CPU model and feature flags (a shared home directory may be
    mounted on machines with different CPUs)."""
    info = platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as fh:
            lines = [ln for ln in fh if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        info += "".join(sorted(set(lines)))
    return info


def _sources() -> dict[str, bytes]:
    return {name: resources.files(__name__).joinpath(name).read_bytes() for name in SOURCES}


def _build(cache_dir: str, cxx: str) -> str:
    """Path of the compiled library in ``cache_dir`` (compiled if missing); raises RuntimeError on failure."""
    exe = shutil.which(cxx)
    if exe is None:
        raise RuntimeError(f"no C++ compiler {cxx!r} found (set JAXNEURONS_CXX or CXX)")
    try:
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"C++ compiler {exe} does not run: {e}") from e
    import jaxlib

    srcs = _sources()
    include = jax.ffi.include_dir()
    os.makedirs(cache_dir, exist_ok=True)
    errors = []
    for arch in ARCH_FLAGS:
        flags = (*BASE_FLAGS, *arch)
        key = hashlib.sha256(b"\0".join([*srcs.values(), " ".join(flags).encode(), version.encode(),
                                         jaxlib.__version__.encode(), _cpu_id().encode()])).hexdigest()[:20]
        path = os.path.join(cache_dir, f"native_stats-{key}.so")
        failed = path + ".failed"  # a compile error, kept so that later processes do not retry in vain
        if os.path.exists(path):
            return path
        with _file_lock(path + ".lock"):
            if os.path.exists(path):  # built by another process while we waited
                return path
            if os.path.exists(failed):
                errors.append(f"{' '.join(flags)}: failed before (delete {failed} to retry)")
                continue
            with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".build-") as tmp:
                src_paths = []
                for name, text in srcs.items():
                    src_paths.append(os.path.join(tmp, name))
                    with open(src_paths[-1], "wb") as fh:
                        fh.write(text)
                out = os.path.join(tmp, "lib.so")
                cmd = [exe, *flags, "-isystem", include, *src_paths, "-o", out]
                try:
                    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                except (OSError, subprocess.SubprocessError) as e:
                    errors.append(f"{' '.join(cmd)}: {e}")
                    continue
                if r.returncode != 0:
                    errors.append(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
                    with contextlib.suppress(OSError), open(failed, "w") as fh:
                        fh.write(errors[-1] + "\n")
                    continue
                os.replace(out, path)  # atomic: readers see no file or the whole library
            log.info("built the native statistics kernel: %s", path)
            return path
    raise RuntimeError("building the native statistics kernel failed:\n" + "\n".join(errors))


@contextlib.contextmanager
def _file_lock(path: str):
    """An exclusive lock across processes (only one compiles); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load() -> tuple[bool, str]:
    if os.environ.get("JAXNEURONS_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False, "disabled by JAXNEURONS_NATIVE=0"
    try:
        path = _build(_cache_dir(), _compiler())
        if any(t not in _registered for t in SYMBOLS):
            lib = ctypes.CDLL(path)
            _libs.append(lib)
            for target, symbol in SYMBOLS.items():
                if target not in _registered:
                    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
                    _registered.add(target)
        return True, path
    except Exception as e:  # any build / load / registration failure: fall back to XLA
        return False, str(e)


def native_required() -> bool:
    """Whether ``JAXNEURONS_REQUIRE_NATIVE`` demands the kernel (CI on CPU: a failed build is an error)."""
    return os.environ.get("JAXNEURONS_REQUIRE_NATIVE", "0").strip().lower() in ("1", "true", "yes", "on")


def native_status() -> tuple[bool, str]:
    """``(available, detail)``: whether the kernel is built and registered (detail = library path), or why
    not. Builds it on the first call."""
    global _status
    with _lock:
        if _status is None:
            _status = _load()
        return _status


def reset() -> None:
    """Forget the build status (tests): the next :func:`native_status` tries again with the current
    environment. A target already registered in this process stays registered."""
    global _status
    with _lock:
        _status = None
        _warned.clear()


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        log.warning("native statistics kernel not used (%s); using the XLA top_k + scatter path", reason)


def resolve_topk_method(method: str) -> str:
    """The top-k method ``batch_partials`` runs: "native", "topk" or "blocked".

    "auto" is "native" on the CPU backend when the kernel is available, else "topk" (with one warning
    saying why, except when disabled on purpose by JAXNEURONS_NATIVE=0). "native" raises if unavailable.
    """
    if method in ("topk", "blocked"):
        return method
    if method not in ("auto", "native"):
        raise ValueError(f"unknown top-k method {method!r} (expected 'auto', 'native', 'topk' or 'blocked')")
    backend = jax.default_backend()
    if backend != "cpu":
        why = f"the native kernel is CPU-only and the backend is {backend}"
        if method == "native":
            raise RuntimeError(f"topk_method='native': {why}")
        _warn_once(why)
        return "topk"
    ok, detail = native_status()
    if ok:
        return "native"
    if method == "native":
        raise RuntimeError(f"topk_method='native' but the native kernel is unavailable: {detail}")
    if not detail.startswith("disabled by"):
        _warn_once(detail)
    return "topk"


def neuron_counts(h: jax.Array, rows: jax.Array, *, k: int, n_topk: int, topk_rows: int,
                  positive_rows: int) -> tuple[jax.Array, jax.Array]:
    """Top-k |h| membership and h > 0 counts (the native kernel; CPU backend, works under jit/shard_map).

    ``h``: (N, D) float32 activations of one layer, or (L, N, D) for L stacked layers (one call, no
    per-layer slices copied); ``rows``: (S, N) int32 count row of every frame per condition set, -1 = not
    counted; the first ``n_topk`` sets index the top-k counts (``topk_rows`` rows), the others the h > 0
    counts (``positive_rows`` rows). Returns int32 counts (..., topk_rows, D) and (..., positive_rows, D).
    """
    if h.ndim < 2 or rows.ndim != 2 or rows.shape[1] != h.shape[-2] or not 0 <= n_topk <= rows.shape[0]:
        raise ValueError(f"neuron_counts: h {h.shape}, rows {rows.shape}, n_topk {n_topk} are inconsistent")
    ok, detail = native_status()  # registers the FFI target before it is lowered
    if not ok:
        raise RuntimeError(f"the native statistics kernel is unavailable: {detail}")
    lead, D = tuple(h.shape[:-2]), h.shape[-1]
    if n_topk and not 1 <= k <= D:
        raise ValueError(f"top-k size {k} must be in [1, {D}]")
    call = jax.ffi.ffi_call(
        TARGET,
        (jax.ShapeDtypeStruct((*lead, topk_rows, D), jnp.int32),
         jax.ShapeDtypeStruct((*lead, positive_rows, D), jnp.int32)),
        vmap_method="sequential",
    )
    return call(h.astype(jnp.float32), rows.astype(jnp.int32), k=np.int64(k), n_topk=np.int64(n_topk))


def top_examples(h: jax.Array, utt: jax.Array, frame: jax.Array, bound: tuple[jax.Array, jax.Array, jax.Array],
                 *, n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A batch's top-``n`` frames per neuron that can enter a running example state (the native kernel).

    ``h``: (N, D) float32 activations of one layer (or (..., N, D) stacked layers); ``utt`` / ``frame``:
    (N,) int32 global utterance and frame index of every row (``utt < 0``: not counted); ``bound``: the
    running state's n-th entry per neuron, (value, utt, frame) each (..., D) (``-inf, EMPTY, EMPTY`` = no
    bound). Returns (value, utt, frame), each (..., D, n), best first under the tie rule of
    :mod:`jaxneurons.stats.examples`, empty slots ``-inf, EMPTY, EMPTY``: only frames that come strictly
    before the bound are kept, which is all the exact merge with that state needs.
    """
    if h.ndim < 2 or utt.shape != (h.shape[-2],) or frame.shape != utt.shape or n < 1:
        raise ValueError(f"top_examples: h {h.shape}, utt {utt.shape}, frame {frame.shape}, n {n} are inconsistent")
    lead = tuple(h.shape[:-2]) + (h.shape[-1],)
    if any(b.shape != lead for b in bound):
        raise ValueError(f"top_examples: bounds {[b.shape for b in bound]} must all be {lead}")
    ok, detail = native_status()  # registers the FFI target before it is lowered
    if not ok:
        raise RuntimeError(f"the native statistics kernel is unavailable: {detail}")
    shape = (*lead, n)
    call = jax.ffi.ffi_call(
        EXAMPLES_TARGET,
        (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape, jnp.int32),
         jax.ShapeDtypeStruct(shape, jnp.int32)),
        vmap_method="sequential",
    )
    bv, bu, bf = bound
    return call(h.astype(jnp.float32), utt.astype(jnp.int32), frame.astype(jnp.int32), bv.astype(jnp.float32),
                bu.astype(jnp.int32), bf.astype(jnp.int32), n=np.int64(n))


def merge_top_examples(a: tuple[jax.Array, jax.Array, jax.Array],
                       b: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The first n of two example lists (value, utt, frame), each (..., n) and sorted best first under the
    tie rule of :mod:`jaxneurons.stats.examples` (the native kernel: a two-pointer merge per neuron)."""
    shape = a[0].shape
    if any(x.shape != shape for x in (*a, *b)) or not shape:
        raise ValueError(f"merge_top_examples: shapes {[x.shape for x in (*a, *b)]} differ")
    ok, detail = native_status()
    if not ok:
        raise RuntimeError(f"the native statistics kernel is unavailable: {detail}")
    call = jax.ffi.ffi_call(
        MERGE_TARGET,
        (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape, jnp.int32),
         jax.ShapeDtypeStruct(shape, jnp.int32)),
        vmap_method="sequential",
    )
    dtypes = (jnp.float32, jnp.int32, jnp.int32)
    return call(*(x.astype(t) for x, t in zip(a, dtypes, strict=True)),
                *(x.astype(t) for x, t in zip(b, dtypes, strict=True)))


def reference_counts(h: np.ndarray, rows: np.ndarray, *, k: int, n_topk: int, topk_rows: int,
                     positive_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference of :func:`neuron_counts` for one layer (N, D) (tests): a stable sort of -|h| gives
    lax.top_k's tie rule."""
    h = np.asarray(h, np.float32)
    D = h.shape[1]
    ct = np.zeros((topk_rows, D), np.int32)
    cp = np.zeros((positive_rows, D), np.int32)
    top = np.argsort(-np.abs(h), axis=1, kind="stable")[:, :k] if n_topk else None
    for s, r in enumerate(np.asarray(rows)):
        for f in np.nonzero(r >= 0)[0]:
            if s < n_topk:
                ct[r[f], top[f]] += 1
            else:
                cp[r[f]] += h[f] > 0
    return ct, cp


__all__ = ["merge_top_examples", "native_status", "neuron_counts", "reference_counts", "reset",
           "resolve_topk_method", "top_examples"]
