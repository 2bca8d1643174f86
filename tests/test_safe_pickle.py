"""Pickled checkpoints never run code: only tensors, plain containers, argparse.Namespace and skipped
optimizer/scheduler objects are unpickled; anything else is refused with one error naming the file and the class."""

from __future__ import annotations

import argparse
import os
import pickle

import pytest

torch = pytest.importorskip("torch")

from checkpoints_convert.convert import convert  # noqa: E402
from checkpoints_convert.hf_weights import CheckpointError  # noqa: E402
from checkpoints_convert.safe_pickle import SkippedObject, load_torch_checkpoint, tensors_of  # noqa: E402
from tests.s3prl_reference import legacy_optimizers_module  # noqa: E402


class RunsCode:
    """Unpickling this calls os.system, which would create ``marker``."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _state():
    return {"encoder.weight": torch.ones(2, 2)}


@pytest.mark.parametrize("legacy_format", [False, True])
def test_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path, legacy_format):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"Transformer": _state(), "Upstream_Config": {}, "payload": RunsCode(str(marker))}, path,
               _use_new_zipfile_serialization=not legacy_format)
    with pytest.raises(CheckpointError) as err:
        load_torch_checkpoint(str(path))
    assert str(path) in str(err.value) and f"{os.system.__module__}.system" in str(err.value)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        convert(str(path), str(tmp_path / "out"))
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": RunsCode(str(marker))}, f)
    with pytest.raises(CheckpointError, match=r"evil\.pkl"):
        load_torch_checkpoint(str(path))
    assert not marker.exists()


def test_namespace_is_allowed_and_scheduler_objects_are_skipped(tmp_path):
    path = tmp_path / "ok.ckpt"
    torch.save({"model": _state(), "Args": argparse.Namespace(frame_period=20)}, path)
    obj, skipped = load_torch_checkpoint(str(path))
    assert obj["Args"].frame_period == 20 and skipped == []  # the weights-only path
    with legacy_optimizers_module() as module:
        scheduler = module.WarmupLinearSchedule()
        torch.save({"Transformer": _state(), "Scheduler": scheduler}, path)
    obj, skipped = load_torch_checkpoint(str(path))
    assert skipped == ["optimizers.WarmupLinearSchedule"]
    assert isinstance(obj["Scheduler"], SkippedObject) and not hasattr(obj["Scheduler"], "warmup")
    assert torch.equal(obj["Transformer"]["encoder.weight"], torch.ones(2, 2))


def test_skipped_object_where_weights_belong_is_an_error(tmp_path):
    path = tmp_path / "odd.ckpt"
    with legacy_optimizers_module() as module:
        torch.save({"Transformer": {"encoder.weight": module.WarmupLinearSchedule()}}, path)
    obj, _ = load_torch_checkpoint(str(path))
    with pytest.raises(CheckpointError, match=r"odd\.ckpt: Transformer\['encoder.weight'\] is a SkippedObject"):
        tensors_of(obj["Transformer"], str(path), "Transformer")
