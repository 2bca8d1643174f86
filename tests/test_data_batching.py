"""Bucketed batches: padding, dummy rows, labels, multi-process consistency, device splits, prefetch."""

import numpy as np
import pytest
import soundfile as sf

from jaxneurons.data.audio import AudioError
from jaxneurons.data.batching import Batch, BatchLoader, FrameLabelSpec, shard_manifest
from jaxneurons.data.frames import WAV2VEC2_CONV, LabelVocab, frame_labels, middle_frame_mask
from jaxneurons.data.manifest import Utterance
from jaxneurons.data.phones import phone_set
from jaxneurons.errors import SettingError


def _corpus(tmp_path, n=11):
    rng = np.random.default_rng(0)
    utts = []
    for i in range(n):
        length = int(rng.integers(800, 5000))
        x = (0.1 * rng.standard_normal(length)).astype(np.float32)
        path = str(tmp_path / f"u{i}.wav")
        sf.write(path, x, 16000, subtype="FLOAT")
        cut = length // 2
        phones = ((0, cut, "sil"), (cut, length, "aa")) if i % 3 else None
        utts.append(Utterance(
            utt_id=f"u{i}", path=path, speaker=f"s{i % 4}", gender=(None if i == 5 else "mf"[i % 2]), language="en",
            duration=length / 16000, sample_rate=16000, num_samples=length, phones=phones,
            phone_set="en39" if phones else None, labels={"pitch": ["low", "high"][i % 2]},
        ))
    return utts


def test_shard_manifest_is_a_partition():
    utts = [Utterance(f"u{i}", f"/x{i}", None, None, None, n / 16000, 16000, n)
            for i, n in enumerate([5, 3, 9, 1, 7, 7, 2])]
    shards = [shard_manifest(utts, p, 3) for p in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert shards == [shard_manifest(utts, p, 3) for p in range(3)]  # deterministic
    assert shards[0] == [0, 2, 3]  # length order 3,6,1,0,4,5,2 -> positions 0, 3, 6
    with pytest.raises(ValueError):
        shard_manifest(utts, 3, 3)


def test_batches_pad_label_and_cover_everything(tmp_path):
    utts = _corpus(tmp_path)
    pv = LabelVocab(phone_set("en"), "phones")
    gv = LabelVocab(["f", "m"], "gender")
    specs = {
        "phone": FrameLabelSpec("phones", pv),
        "phone_mid": FrameLabelSpec("phones", pv, frames="mid", ignore=("sil",)),
        "type": FrameLabelSpec("phone_type", LabelVocab(["vowel", "voiced", "unvoiced"])),
        "gender": FrameLabelSpec("gender", gv),
        "pitch": FrameLabelSpec("labels.pitch", LabelVocab(["low", "high"])),
    }
    loader = BatchLoader(utts, batch_size=4, num_frames=WAV2VEC2_CONV, labels=specs, pad_multiple=1600, num_devices=2)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    seen = []
    for b in batches:
        assert b.audio.shape[0] == 4 and b.audio.shape[1] % 1600 == 0
        f_pad = WAV2VEC2_CONV.num_frames(b.audio.shape[1])
        for name in specs:
            assert b.labels[name].shape == (4, f_pad) and b.labels[name].dtype == np.int32
        for row, i in enumerate(b.utt_indices):
            if i < 0:  # dummy row: nothing valid
                assert b.audio_lengths[row] == b.frame_lengths[row] == 0 and not b.audio[row].any()
                assert all((v[row] == -1).all() for v in b.labels.values())
                continue
            u = utts[i]
            seen.append(int(i))
            n, f = u.num_samples, WAV2VEC2_CONV.num_frames(u.num_samples)
            assert b.audio_lengths[row] == n and b.frame_lengths[row] == f
            np.testing.assert_array_equal(b.audio[row, :n], sf.read(u.path, dtype="float32")[0])
            assert not b.audio[row, n:].any()
            for v in b.labels.values():
                assert (v[row, f:] == -1).all()
            if u.phones is None:
                assert (b.labels["phone"][row] == -1).all()
            else:
                np.testing.assert_array_equal(b.labels["phone"][row, :f], frame_labels(u.phones, pv, WAV2VEC2_CONV, f))
                mid = middle_frame_mask(u.phones, WAV2VEC2_CONV, f, ignore=["sil"])
                assert (b.labels["phone_mid"][row, :f] >= 0).tolist() == mid.tolist()
                assert set(b.labels["type"][row, :f].tolist()) <= {-1, 0}  # "aa" is a vowel, sil unlabelled
            want_g = -1 if u.gender is None else gv.id(u.gender)
            assert (b.labels["gender"][row, :f] == want_g).all()
        # rows of a batch split evenly over the 2 devices
        halves = b.split(2)
        assert [h.audio.shape[0] for h in halves] == [2, 2]
        np.testing.assert_array_equal(np.concatenate([h.utt_indices for h in halves]), b.utt_indices)
    assert sorted(seen) == list(range(len(utts)))
    # bucketing: batches are in length order, so padded lengths never decrease
    assert [b.audio.shape[1] for b in batches] == sorted(b.audio.shape[1] for b in batches)


def test_processes_get_equal_steps_and_shapes(tmp_path):
    utts = _corpus(tmp_path, n=9)
    loaders = [BatchLoader(utts, 2, WAV2VEC2_CONV.num_frames, pad_multiple=1000, process_index=p, process_count=2,
                           prefetch=0) for p in range(2)]
    steps = [list(ld) for ld in loaders]
    assert len(steps[0]) == len(steps[1]) == 3  # 9 utts, global batch 4 -> 3 steps on both processes
    for a, b in zip(*steps, strict=True):
        assert a.audio.shape == b.audio.shape
    got = [sorted(int(i) for b in s for i in b.utt_indices if i >= 0) for s in steps]
    assert got == [shard_manifest(utts, p, 2) for p in range(2)]
    assert sorted(got[0] + got[1]) == list(range(9))


def test_shuffle_prefetch_and_errors(tmp_path):
    utts = _corpus(tmp_path)
    base = dict(batch_size=2, num_frames=WAV2VEC2_CONV, pad_multiple=800)
    plain = [b.utt_indices.tolist() for b in BatchLoader(utts, prefetch=0, **base)]
    pre = list(BatchLoader(utts, prefetch=3, **base))
    assert [b.utt_indices.tolist() for b in pre] == plain
    sh = BatchLoader(utts, shuffle=True, seed=1, **base)
    e0 = [b.utt_indices.tolist() for b in sh.iterate(0)]
    assert e0 == [b.utt_indices.tolist() for b in sh.iterate(0)] and sorted(e0) == sorted(plain)
    assert e0 != [b.utt_indices.tolist() for b in sh.iterate(1)] or len(e0) < 3
    with pytest.raises(SettingError, match="not divisible"):
        BatchLoader(utts, batch_size=3, num_frames=WAV2VEC2_CONV, num_devices=2)
    with pytest.raises(ValueError, match="needs a frame geometry"):
        BatchLoader(utts, 2, WAV2VEC2_CONV.num_frames, labels={"p": FrameLabelSpec("phones", LabelVocab(["aa"]))})
    with pytest.raises(KeyError, match=r"utterance u\d+ \(.*u\d+\.wav\): label 's[1-3]' is not in vocabulary"):
        list(BatchLoader(utts, 2, WAV2VEC2_CONV, labels={"s": FrameLabelSpec("speaker", LabelVocab(["s0"]))}))
    stale = [utts[0].__class__(**{**utts[0].__dict__, "num_samples": utts[0].num_samples + 1,
                                  "duration": (utts[0].num_samples + 1) / 16000})]
    with pytest.raises(AudioError, match="the manifest is stale"):
        list(BatchLoader(stale, 1, WAV2VEC2_CONV))


def test_frame_mask():
    b = Batch(np.zeros((2, 10), np.float32), np.array([10, 0], np.int32), np.array([3, 0], np.int32), {},
              np.array([0, -1], np.int32))
    assert b.frame_mask(4).tolist() == [[True, True, True, False], [False] * 4]
    assert b.valid.tolist() == [True, False]


def test_padded_batches_cover_every_waveform_once():
    from jaxneurons.data.batching import padded_batches

    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(n).astype(np.float32) for n in (100, 9000, 5, 8000, 16001)]
    seen = []
    for idx, batch, lengths in padded_batches(audio, batch_size=2, pad_multiple=8000):
        assert batch.shape[1] % 8000 == 0 and batch.shape[0] == len(idx) == len(lengths)
        for row, i in enumerate(idx):
            np.testing.assert_array_equal(batch[row, : lengths[row]], audio[i])
            assert not batch[row, lengths[row]:].any()
            seen.append(int(i))
    assert sorted(seen) == list(range(len(audio)))
