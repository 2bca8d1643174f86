"""One progress bar for every long loop (scans, training, feature extraction, probe fitting): ``tqdm`` on stderr.

    for utt in progress(utts, desc="decoding"):
        ...

    on_batch = ProgressBar(total=len(loader), initial=start, desc="scan", unit="batch")   # callback style:
    run_scan(..., on_batch=on_batch)                   # on_batch(done) moves the bar to ``done``; closes at total

    with ProgressBar(total=steps, desc="train", unit="step") as bar:   # a loop that may stop early
        for step in range(steps):
            bar(step + 1, loss=f"{loss:.4f}")          # keyword arguments: the bar's postfix

Inner loops of a library call (EM iterations, probe epochs) pass ``leave=False``: their bar is erased when it
ends, so a terminal keeps one line per long run, not one per fitted probe.

The bar is shown only when stderr is a terminal (``tqdm``'s ``disable=None``), so logs, pipes and CI output
stay clean; ``JAXNEURONS_PROGRESS=0`` hides it everywhere and ``=1`` forces it (e.g. in a notebook).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool | None:
    """True / False when ``JAXNEURONS_PROGRESS`` forces it, else None (tqdm: only on a terminal)."""
    value = os.environ.get("JAXNEURONS_PROGRESS", "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    return None


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
             initial: int = 0, leave: bool = True) -> Iterator[T]:
    """``iterable`` with a tqdm bar on stderr (see the module docstring); ``initial``: items already done (resume);
    ``leave=False``: erase the bar when the loop ends."""
    from tqdm import tqdm

    forced = progress_enabled()
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr,
                     disable=None if forced is None else not forced, dynamic_ncols=True, leave=leave))


class ProgressBar:
    """Callback form of :func:`progress` for loops that report ``done`` counts (``run_scan(on_batch=...)``).

    ``bar(done)`` (extra positional arguments ignored) moves the bar to ``done`` of ``total``; keyword arguments
    replace its postfix (``bar(7, loss="0.1234")``). It closes itself at ``total``, or when used as a context
    manager, at the end of the block (a loop that stops early, or fails).
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it", leave: bool = True) -> None:
        from tqdm import tqdm

        forced = progress_enabled()
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                         disable=None if forced is None else not forced, leave=leave)
        self.total = total

    def __call__(self, done: int, *_: object, **postfix: object) -> None:
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)  # drawn with the update below (tqdm rate-limits it)
        self._bar.update(done - self._bar.n)
        if done >= self.total:
            self.close()

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
