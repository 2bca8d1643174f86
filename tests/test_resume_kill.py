"""SIGKILL a training run and a multi-model scan mid-way, including while a checkpoint is being written, then
resume: the results equal an uninterrupted run's exactly.

Each run is a child process (same environment for the reference, the killed and the resumed run, so the
numerics are the same). "During a checkpoint write" is made certain, not left to chance: the child wraps the
commit step of the write (orbax's atomic rename for training checkpoints, the ``os.replace`` of the statistics
checkpoint) so that it announces itself in a marker file and waits; the parent kills it there, with the new
checkpoint's data on disk but not committed.
"""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import textwrap
import time

import numpy as np
import pytest

from tests.helpers import CHILD_TIMEOUT, failure_message, run_python, start_python

TRAIN_CHILD = textwrap.dedent('''
    import os, sys, time, json
    import numpy as np
    workdir, marker, stall_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if stall_at >= 0:  # stall inside the commit of checkpoint `stall_at`: its files written, not yet renamed
        from orbax.checkpoint._src.path import atomicity
        real = atomicity.AtomicRenameTemporaryPath.finalize
        async def finalize(self, *a, **k):
            if self.get_final().name == str(stall_at):
                with open(marker, "w") as f:
                    f.write(str(self.get()))
                time.sleep(600)
            return await real(self, *a, **k)
        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    from jaxneurons.models import build_model
    from jaxneurons.train.pretrain import TrainConfig, Trainer
    from tests.helpers import TINY_MEL, tone_corpus
    config = TrainConfig(steps=8, batch_size=4, crop_seconds=0.5, learning_rate=3e-3, warmup_steps=2,
                         checkpoint_every=2, keep_checkpoints=2, log_every=1, mask_prob=0.5, mask_length=2)
    trainer = Trainer(build_model(TINY_MEL, seed=1), tone_corpus(), config, workdir)
    resumed = trainer.restore_latest()
    trainer.train()
    kernel = trainer.encoder().encoder.layers[1].feed_forward.output_dense.kernel[...]
    np.save(os.path.join(workdir, "final_kernel.npy"), np.asarray(kernel))
    print(json.dumps({"resumed": resumed}))
''')


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return run_python(["-c", code, *args])


def _kill_when(code: str, args: list[str], marker: str, deadline: float = CHILD_TIMEOUT,
               after: float | None = None) -> None:
    """Start the child, SIGKILL it when ``marker`` appears (or ``after`` seconds), and reap it."""
    proc = start_python(["-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    try:
        while not os.path.exists(marker) and (after is None or time.monotonic() - t0 < after):
            if proc.poll() is not None:
                if after is not None and proc.returncode == 0:
                    return  # a timed kill that came too late: the run simply finished
                raise AssertionError(failure_message(["-c", "<child>", *args], "ended before the kill point", "",
                                                     proc.stderr.read()))
            if time.monotonic() - t0 > deadline:
                raise AssertionError(f"child never reached the kill point in {deadline:.0f} s")
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stderr.close()


def _metrics(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _assert_same_training(reference: str, resumed: str) -> None:
    ref, res = _metrics(reference), _metrics(resumed)
    assert [r["step"] for r in res] == list(range(1, 9))
    assert [r["loss"] for r in res] == [r["loss"] for r in ref]
    np.testing.assert_array_equal(np.load(os.path.join(resumed, "final_kernel.npy")),
                                  np.load(os.path.join(reference, "final_kernel.npy")))


@pytest.fixture(scope="module")
def reference_training(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("train_reference") / "w")
    _run(TRAIN_CHILD, workdir, os.devnull, "-1")
    return workdir


def test_sigkill_during_a_training_checkpoint_write_resumes_identically(reference_training, tmp_path):
    workdir, marker = str(tmp_path / "w"), str(tmp_path / "stalled")
    _kill_when(TRAIN_CHILD, [workdir, marker, "4"], marker)
    with open(marker) as f:
        uncommitted = f.read()
    assert os.path.exists(uncommitted), "the kill did not happen inside the checkpoint write"
    out = _run(TRAIN_CHILD, workdir, os.devnull, "-1")
    assert json.loads(out.stdout.strip().splitlines()[-1])["resumed"]  # from step 2: step 4 never committed
    _assert_same_training(reference_training, workdir)


@pytest.mark.slow  # a few kills at random times, each followed by a resume
def test_sigkill_at_random_times_resumes_identically(reference_training, tmp_path):
    rng = random.Random(0)
    workdir = str(tmp_path / "w")
    for _ in range(3):
        _kill_when(TRAIN_CHILD, [workdir, os.devnull, "-1"], str(tmp_path / "never"), after=rng.uniform(5, 40))
    _run(TRAIN_CHILD, workdir, os.devnull, "-1")
    _assert_same_training(reference_training, workdir)


# ---------------------------------------------------------------- multi-model scan

SCAN_CHILD = textwrap.dedent('''
    import os, sys, time
    manifest, models, out, marker, stall_model, stall_write = sys.argv[1:7]
    stall_write = int(stall_write)
    if stall_write >= 0:  # stall inside the os.replace that commits a statistics checkpoint
        import jaxneurons.stats.scan as stats_scan
        real, seen = os.replace, []
        class _Os:
            def __getattr__(self, name):
                return getattr(os, name)
            @staticmethod
            def replace(src, dst):
                if (os.path.basename(os.path.dirname(dst)) == stall_model + ".work"
                        and os.path.basename(dst).startswith("stats-") and dst.endswith(".npz")):
                    seen.append(dst)
                    if len(seen) == stall_write:
                        with open(marker, "w") as f:
                            f.write(src)
                        time.sleep(600)
                return real(src, dst)
        stats_scan.os = _Os()
    from jaxneurons.data import read_manifest
    from jaxneurons.pipeline.multiscan import ModelSpec, SeparationOptions
    from jaxneurons.pipeline.scan import ScanOptions, scan
    specs = [ModelSpec(os.path.basename(p), p) for p in models.split(",")]
    scan(specs, read_manifest(manifest), options=ScanOptions(properties=("gender", "phone_type"), batch_size=2,
         checkpoint_every=1), out_dir=out, separation=SeparationOptions(enabled=False), null_draws=10,
         progress=False)
''')


@pytest.fixture(scope="module")
def scan_inputs(tmp_path_factory, tiny_manifest):
    from jaxneurons.models import build_model
    from jaxneurons.models.checkpoint import save_model
    from tests.helpers import MICRO_MELHUBERT

    root = tmp_path_factory.mktemp("scan_inputs")
    models = [save_model(build_model(MICRO_MELHUBERT, seed=s), str(root / f"m{s}")) for s in (0, 1)]
    return tiny_manifest, ",".join(models)


def _scan_results(out: str) -> dict[str, str]:
    """Every result file of every model except run.json (wall times) and the rendered reports."""
    files = {}
    for name in sorted(os.listdir(out)):
        sub = os.path.join(out, name)
        if not os.path.isdir(sub):
            continue
        for f in sorted(os.listdir(sub)):
            if f.endswith((".json", ".npz", ".npy", ".tsv", ".csv")) and f != "run.json":
                with open(os.path.join(sub, f), "rb") as fh:
                    files[f"{name}/{f}"] = fh.read()
    return files


@pytest.mark.slow  # three scan processes of two models (the training kill above stays in the default run)
def test_sigkill_during_a_scan_checkpoint_write_resumes_identically(scan_inputs, tmp_path):
    manifest, models = scan_inputs
    reference, resumed, marker = str(tmp_path / "ref"), str(tmp_path / "out"), str(tmp_path / "stalled")
    _run(SCAN_CHILD, manifest, models, reference, os.devnull, "", "-1")
    # killed while committing model m1's second statistics checkpoint (m0 already finished)
    _kill_when(SCAN_CHILD, [manifest, models, resumed, marker, "m1", "2"], marker)
    assert os.path.exists(os.path.join(resumed, "m0", "neurons.json"))
    from jaxneurons.stats.scan import load_checkpoint

    (checkpoint,) = glob.glob(os.path.join(resumed, "m1.work", "stats-*.npz"))
    assert load_checkpoint(checkpoint)[1] >= 1  # the first checkpoint survived
    _run(SCAN_CHILD, manifest, models, resumed, os.devnull, "", "-1")
    ref, res = _scan_results(reference), _scan_results(resumed)
    assert any(k.endswith("neurons.json") for k in ref) and ref.keys() == res.keys()
    for key in ref:
        assert res[key] == ref[key], f"{key} differs after the resume"
