"""Loading pickled PyTorch checkpoints (MelHuBERT, s3prl TERA/Mockingjay) without running code from them.

A pickle can name any Python callable and have the unpickler call it, so an untrusted ``.ckpt`` must never be
read with plain ``torch.load``. :func:`load_torch_checkpoint`:

1. ``torch.load(weights_only=True)`` (PyTorch's own restricted unpickler: tensors and plain containers), with
   ``argparse.Namespace`` allow-listed: the MelHuBERT trainer pickles its command-line ``Args`` (a Namespace
   restores as a plain attribute bag, nothing is called).
2. Only if that refuses a class: the same allow-list in our own restricted unpickler, which additionally
   *skips* (replaces by an inert :class:`SkippedObject`) instances from optimizer / scheduler modules: old s3prl
   checkpoints pickle their scheduler object (module ``optimizers``, now ``s3prl.optimizers``) next to the
   weights. Nothing of those classes is imported or called; the converter never reads those entries.

Any other class (``os.system``, ``builtins.eval``, a project's own model class, ...) is refused with one error
naming the file and the class, before anything of it runs.
"""

from __future__ import annotations

import argparse
import pickle
import types
from typing import Any

from checkpoints_convert.hf_weights import CheckpointError

# Harmless classes a checkpoint may need beyond PyTorch's weights-only set.
EXTRA_ALLOWED = {"argparse.Namespace": argparse.Namespace}
# Objects from these modules are training state (optimizer, LR scheduler): skipped, never imported or called.
SKIPPED_MODULE_ROOTS = ("optimizers", "schedulers", "s3prl.optimizers", "s3prl.schedulers", "torch.optim",
                        "transformers.optimization")


class SkippedObject:
    """Stands in for an unpickled optimizer/scheduler object; records its class name, ignores its state."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> SkippedObject:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<skipped {self.qualname}>"


class RefusedClass(pickle.UnpicklingError):
    def __init__(self, qualname: str):
        super().__init__(qualname)
        self.qualname = qualname


def _allowed_globals() -> dict[str, Any]:
    import numpy as np
    from torch import _weights_only_unpickler

    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    allowed.update(EXTRA_ALLOWED)
    # NumPy scalars (a step counter saved as np.int64): built from a dtype and raw bytes, nothing else runs.
    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[f"{module}.scalar"] = scalar
    allowed["numpy.dtype"] = np.dtype
    return allowed


def _skipped(module: str) -> bool:
    return any(module == root or module.startswith(root + ".") for root in SKIPPED_MODULE_ROOTS)


def _restricted_pickle_module(skipped: list[str]) -> types.ModuleType:
    allowed = _allowed_globals()

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            qualname = f"{module}.{name}"
            if qualname in allowed:
                return allowed[qualname]
            if _skipped(module):
                skipped.append(qualname)
                return type("SkippedObject", (SkippedObject,), {"qualname": qualname})
            raise RefusedClass(qualname)

    module = types.ModuleType("jaxneurons_restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = lambda f, **kwargs: RestrictedUnpickler(f, **kwargs).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module


def load_torch_checkpoint(path: str) -> tuple[Any, list[str]]:
    """The checkpoint's object and the classes skipped as training state (see the module docstring)."""
    try:
        import torch
    except ImportError as e:
        raise CheckpointError(f"{path}: reading a PyTorch checkpoint needs torch (pip install 'jaxneurons[convert]')"
                              ) from e
    try:
        with torch.serialization.safe_globals(list(EXTRA_ALLOWED.values())):
            return torch.load(path, map_location="cpu", weights_only=True), []
    except pickle.UnpicklingError:
        pass  # a class outside the weights-only set: decide with our own allow-list below
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint ({e})") from e
    skipped: list[str] = []
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle_module(skipped))
    except RefusedClass as e:
        raise CheckpointError(
            f"{path}: refusing to unpickle {e.qualname} (a checkpoint may hold only tensors, plain containers, "
            "argparse.Namespace and optimizer/scheduler state; a pickle naming other classes can run code)"
        ) from None
    except (pickle.UnpicklingError, OSError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint ({e})") from e
    return obj, sorted(set(skipped))


def tensors_of(entry: Any, path: str, what: str) -> dict[str, Any]:
    """A state dict entry as {key: float32 NumPy array}; anything but tensors in it is an error."""
    import torch

    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: {what} is a {type(entry).__name__}, expected a state dict")
    out = {}
    for key, value in entry.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: {what}[{key!r}] is a {type(value).__name__}, not a tensor")
        out[key] = value.detach().to(torch.float32 if value.is_floating_point() else value.dtype).numpy()
    return out
