"""jaxneurons.progress: a tqdm bar on a terminal, nothing in logs and pipes, forced on/off by JAXNEURONS_PROGRESS."""

import io
import sys

from jaxneurons.progress import ProgressBar, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(monkeypatch, stream, env=None):
    monkeypatch.setattr(sys, "stderr", stream)
    if env is None:
        monkeypatch.delenv("JAXNEURONS_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("JAXNEURONS_PROGRESS", env)
    items = list(progress(range(7), desc="decoding"))
    assert items == list(range(7))  # the iterable passes through unchanged
    return stream.getvalue()


def test_quiet_when_not_a_terminal(monkeypatch):
    assert _run(monkeypatch, io.StringIO()) == ""


def test_bar_on_a_terminal_and_forced(monkeypatch):
    assert "decoding" in _run(monkeypatch, _Terminal()) and "7/7" in _run(monkeypatch, _Terminal())
    assert "7/7" in _run(monkeypatch, io.StringIO(), env="1")  # e.g. a notebook
    assert _run(monkeypatch, _Terminal(), env="0") == ""


def test_callback_bar_follows_done_counts(monkeypatch):
    stream = _Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delenv("JAXNEURONS_PROGRESS", raising=False)
    bar = ProgressBar(total=5, initial=2, desc="scan", unit="batch")
    for done in (3, 4, 5):
        bar(done, None)  # run_scan's on_batch(done, stats)
    assert bar._bar.n == 5 and "5/5" in stream.getvalue() and "scan" in stream.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    quiet = ProgressBar(total=2)
    quiet(2)
    assert sys.stderr.getvalue() == ""


def test_callback_bar_postfix_and_early_close(monkeypatch):
    stream = _Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delenv("JAXNEURONS_PROGRESS", raising=False)
    with ProgressBar(total=10, desc="train", unit="step") as bar:
        for step in range(3):  # a loop that stops early (e.g. early stopping) ...
            bar(step + 1, loss=f"{1.0 / (step + 1):.4f}")
    assert bar._bar.disable  # ... is closed by the block's end, not left open at 3/10
    assert "3/10" in stream.getvalue().split("\r")[-1] and "loss=0.3333" in stream.getvalue().split("\r")[-1]
