"""One progress bar for every long loop (scans, training, feature extraction, probe fitting): ``tqdm`` on stderr.

    for utt in progress(utts, desc="decoding"):
        ...

    on_batch = ProgressBar(total=len(loader), initial=start, desc="scan", unit="batch")   # callback style:
    run_scan(..., on_batch=on_batch)                   # on_batch(done) moves the bar to ``done``; closes at total

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
             initial: int = 0) -> Iterator[T]:
    """``iterable`` with a tqdm bar on stderr (see the module docstring); ``initial``: items already done (resume)."""
    from tqdm import tqdm

    forced = progress_enabled()
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial, file=sys.stderr,
                     disable=None if forced is None else not forced, dynamic_ncols=True, leave=True))


class ProgressBar:
    """Callback form of :func:`progress` for loops that report ``done`` counts (``run_scan(on_batch=...)``).

    ``bar(done)`` (extra arguments ignored) moves the bar to ``done`` of ``total``; it closes itself at ``total``.
    """

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it") -> None:
        from tqdm import tqdm

        forced = progress_enabled()
        self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                         disable=None if forced is None else not forced)
        self.total = total

    def __call__(self, done: int, *_: object) -> None:
        self._bar.update(done - self._bar.n)
        if done >= self.total:
            self.close()

    def close(self) -> None:
        self._bar.close()
