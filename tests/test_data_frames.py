"""Frame geometry against brute-force convolutions, frame labels, middle frames, vocabularies."""

import numpy as np
import pytest

from jaxneurons.data.frames import (
    MELHUBERT_FBANK,
    WAV2VEC2_CONV,
    ConvFrontEnd,
    FbankFrontEnd,
    LabelVocab,
    frame_centres,
    frame_labels,
    frame_spans,
    middle_frame_mask,
    utterance_frame_labels,
)


def _conv_stack(x, kernels, strides):
    """Unpadded strided convolutions with all-ones kernels along the last axis."""
    for k, s in zip(kernels, strides, strict=True):
        if x.shape[-1] < k:
            return x[..., :0]
        x = np.lib.stride_tricks.sliding_window_view(x, k, axis=-1)[..., ::s, :].sum(-1)
    return x


def test_wav2vec2_geometry_matches_brute_force_convolution():
    g = WAV2VEC2_CONV
    assert (g.hop, g.size) == (320, 400)
    L = 1500
    assert g.num_frames(L) == len(_conv_stack(np.zeros(L), g.kernels, g.strides)) == 4
    # Which input samples reach each output frame: push an impulse through the stack of ones-kernels.
    reach = (_conv_stack(np.eye(L), g.kernels, g.strides) > 0).T  # reach[t, i]: sample i feeds frame t
    starts, ends = frame_spans(g, g.num_frames(L))
    for t in range(reach.shape[0]):
        idx = np.flatnonzero(reach[t])
        assert (idx[0], idx[-1] + 1) == (starts[t], ends[t])
    assert list(frame_centres(g, 3)) == [200, 520, 840]


@pytest.mark.parametrize("n", [0, 399, 400, 401, 719, 720, 16000, 16001, 160000])
def test_conv_num_frames_is_hf_formula(n):
    length = n
    for k, s in zip(WAV2VEC2_CONV.kernels, WAV2VEC2_CONV.strides, strict=True):
        length = max((length - k) // s + 1, 0) if length >= k else 0
    assert WAV2VEC2_CONV.num_frames(n) == length
    assert WAV2VEC2_CONV.num_frames(16000) == 49


def test_fbank_geometry():
    g = MELHUBERT_FBANK  # 10 ms hop, 25 ms window, 2 stacked
    assert (g.frame_hop, g.size) == (320, 560)
    for n in (0, 399, 400, 559, 560, 16000, 16160):
        base = 0 if n < 400 else 1 + (n - 400) // 160
        assert g.num_base_frames(n) == base and g.num_frames(n) == base // 2
        assert FbankFrontEnd(stack=2, remainder="pad").num_frames(n) == -(-base // 2)
    starts, ends = frame_spans(g, 3)
    assert list(starts) == [0, 320, 640] and list(ends) == [560, 880, 1200]
    assert list(frame_centres(g, 2)) == [280, 600]
    one = FbankFrontEnd()  # unstacked: frame i covers [160 i, 160 i + 400)
    assert one.num_frames(16000) == 98 and list(frame_centres(one, 2)) == [200, 360]
    with pytest.raises(NotImplementedError):
        FbankFrontEnd(snip_edges=False)


def test_frame_labels_use_the_centre_sample():
    g = ConvFrontEnd((10,), (10,))  # frame t covers [10 t, 10 t + 10), centre 10 t + 5
    vocab = LabelVocab(["sil", "a", "b"])
    segs = [(0, 5, "sil"), (5, 26, "a"), (30, 60, "b")]
    lab = frame_labels(segs, vocab, g, 6)
    # centres 5 15 25 35 45 55: 5 is the first sample of "a"; 25 in "a"; none in the gap [26, 30)
    assert lab.dtype == np.int32 and list(lab) == [1, 1, 1, 2, 2, 2]
    assert list(frame_labels([(0, 5, "sil"), (5, 25, "a")], vocab, g, 4, ignore=["a"])) == [-1, -1, -1, -1]
    assert list(frame_labels([(0, 6, "sil"), (6, 20, "a")], vocab, g, 3)) == [0, 1, -1]
    with pytest.raises(KeyError, match="'zz' is not in vocabulary"):
        frame_labels([(0, 10, "zz")], vocab, g, 1)


def test_middle_frame_tie_goes_to_the_earlier_frame():
    g = ConvFrontEnd((10,), (10,))
    # [5, 16): midpoint (5 + 15) / 2 = 10, exactly between centres 5 and 15 -> frame 0
    assert list(np.flatnonzero(middle_frame_mask([(5, 16, "a")], g, 3))) == [0]
    # a segment between two centres gets no frame; the last segment of the utterance counts too
    assert not middle_frame_mask([(6, 14, "a")], g, 3).any()
    m = middle_frame_mask([(0, 12, "sil"), (12, 30, "a")], g, 3, ignore=["sil"])
    assert list(np.flatnonzero(m)) == [2]


def test_middle_frame_matches_brute_force():
    rng = np.random.default_rng(0)
    g = WAV2VEC2_CONV
    for _ in range(20):
        cuts = np.sort(rng.choice(np.arange(1, 9000), size=12, replace=False))
        bounds = [0, *cuts.tolist(), 9000]
        segs = [(s, e, "a") for s, e in zip(bounds[:-1], bounds[1:], strict=True) if rng.random() < 0.8]
        n = g.num_frames(9000)
        c = frame_centres(g, n)
        want = np.zeros(n, bool)
        for s, e, _ in segs:
            d = np.abs(2 * c - (s + e - 1))
            t = int(np.argmin(d))  # argmin returns the first minimum: ties -> earlier frame
            if s <= c[t] < e:
                want[t] = True
        np.testing.assert_array_equal(middle_frame_mask(segs, g, n), want)


def test_vocab_and_broadcast(tmp_path):
    v = LabelVocab.from_values(["m", "f", None, "m"], name="gender")
    assert v.labels == ["f", "m"] and v.id("m") == 1 and v.label(0) == "f" and "f" in v
    p = str(tmp_path / "gender.json")
    v.save(p)
    assert LabelVocab.load(p) == v and LabelVocab.load(p).name == "gender"
    with pytest.raises(ValueError, match="duplicate"):
        LabelVocab(["a", "a"])
    assert list(utterance_frame_labels(1, 3)) == [1, 1, 1]
