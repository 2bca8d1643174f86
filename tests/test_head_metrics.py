"""Attention-head metrics, streaming statistics, typing and figures on hand-built maps."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxneurons.heads import (
    HEAD_TYPES,
    METRIC_NAMES,
    UNTYPED,
    attention_map_metrics,
    finalize_head_stats,
    head_metrics,
    head_types,
    init_head_stats,
    merge_head_stats,
    type_head_mask,
    type_masks,
    update_head_stats,
)

T = 8


def identity(n=T):
    return np.eye(n, dtype=np.float32)


def one_column(n=T, col=2):
    m = np.zeros((n, n), np.float32)
    m[:, col] = 1.0
    return m


def uniform(n=T):
    return np.full((n, n), 1.0 / n, np.float32)


def random_map(rng, n=T):
    logits = rng.standard_normal((n, n)).astype(np.float32) * 2
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def reference_metrics(a):
    """Direct numpy transcription of the default definitions, row by row."""
    n = a.shape[0]
    diag = np.mean([1 - sum(a[i, j] * abs(i - j) for j in range(n)) / max(abs(i - j) for j in range(n))
                    for i in range(n)])
    m = a.mean(0)
    h = -sum(p * np.log(p) for p in m if p > 0)
    rows = [-sum(p * np.log(p) for p in a[i] if p > 0) for i in range(n)]
    return np.array([diag, 1 - h / np.log(n), np.mean(rows) / np.log(n)])


def test_hand_built_maps():
    d = attention_map_metrics(identity())
    assert d["diagonality"] == pytest.approx(1.0, abs=1e-6)
    assert d["globalness"] == pytest.approx(0.0, abs=1e-6)
    assert d["verticality"] == pytest.approx(0.0, abs=1e-6)  # columns evenly covered
    v = attention_map_metrics(one_column())
    assert v["verticality"] == pytest.approx(1.0, abs=1e-6)
    assert v["globalness"] == pytest.approx(0.0, abs=1e-6)
    g = attention_map_metrics(uniform())
    assert g["globalness"] == pytest.approx(1.0, abs=1e-6)
    assert g["verticality"] == pytest.approx(0.0, abs=1e-6)
    # Each hand-built map is typed as its own pattern.
    stack = np.stack([[list(d.values())], [list(v.values())], [list(g.values())]])  # (3 layers, 1 head, 3)
    assert head_types(stack).ravel().tolist() == [0, 1, 2]


def test_matches_reference_on_random_maps():
    rng = np.random.default_rng(0)
    maps = np.stack([random_map(rng) for _ in range(6)]).reshape(2, 3, T, T)  # (B=2, H=3, T, T)
    got = np.asarray(head_metrics(maps, np.array([T, T])))
    ref = np.stack([reference_metrics(m) for m in maps.reshape(-1, T, T)]).reshape(2, 3, 3)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def pad(a, t_pad, rng, leak=0.0):
    """Embed an (n, n) map in (t_pad, t_pad) with garbage in the padding; ``leak`` of each valid
    row's mass is moved to padded columns (a model that does not mask padded keys)."""
    n = a.shape[0]
    out = rng.random((t_pad, t_pad)).astype(np.float32)
    out[:n, :n] = a * (1 - leak)
    out[:n, n:] = leak / (t_pad - n)
    return out


def test_padding_gives_unpadded_metrics():
    rng = np.random.default_rng(1)
    n = 5
    maps = [identity(n), one_column(n, 1), uniform(n), random_map(rng, n)]
    plain = np.asarray(head_metrics(np.stack(maps)[None], np.array([n])))  # (B=1, H=4, 3)
    for leak in (0.0, 0.3):
        padded = np.stack([pad(m, T, rng, leak) for m in maps])[None]
        got = np.asarray(head_metrics(padded, np.array([n])))
        np.testing.assert_allclose(got, plain, atol=1e-5)


def test_layers_batch_and_kinds():
    rng = np.random.default_rng(2)
    b, h, n_layers = 3, 2, 2
    attn = np.stack([[[random_map(rng) for _ in range(h)] for _ in range(b)] for _ in range(n_layers)])
    lengths = np.array([T, 5, 0])
    out = np.asarray(head_metrics(attn, lengths))
    assert out.shape == (n_layers, b, h, 3)
    assert np.all(np.isnan(out[:, 2]))  # length 0: undefined, not 0
    assert np.all(np.isfinite(out[:, :2]))
    # Each utterance equals the single-map computation on its cropped map.
    crop = attn[1, 1, 0, :5, :5]
    crop = crop / crop.sum(1, keepdims=True)
    np.testing.assert_allclose(out[1, 1, 0], reference_metrics(crop), atol=1e-5)
    raw = np.asarray(head_metrics(attn, lengths, diagonality_kind="distance", verticality_kind="entropy",
                                  globalness_kind="entropy"))
    a = attn[0, 0, 1]
    exp_dist = np.mean([(a[i] * np.abs(i - np.arange(T))).sum() for i in range(T)])
    m = a.mean(0)
    np.testing.assert_allclose(raw[0, 0, 1, 0], -exp_dist, rtol=1e-5)
    np.testing.assert_allclose(raw[0, 0, 1, 1], (m * np.log(m)).sum(), rtol=1e-5)
    np.testing.assert_allclose(raw[0, 0, 1, 2], -(a * np.log(a)).sum(1).mean(), rtol=1e-5)


def test_jit_composes_and_bad_input():
    rng = np.random.default_rng(3)
    attn = jnp.asarray(np.stack([[random_map(rng)]]))  # (B=1, H=1, T, T)
    f = jax.jit(lambda a, n: head_metrics(a, n))
    np.testing.assert_allclose(np.asarray(f(attn, jnp.array([T]))), np.asarray(head_metrics(attn, np.array([T]))))
    with pytest.raises(ValueError, match="lengths must lie"):
        head_metrics(attn, np.array([T + 1]))
    with pytest.raises(ValueError, match="square"):
        head_metrics(np.zeros((1, 1, 4, 5)), np.array([4]))
    with pytest.raises(ValueError, match="diagonality_kind"):
        head_metrics(attn, np.array([T]), diagonality_kind="nope")
    # A 1-frame utterance has no pattern: NaN.
    assert np.all(np.isnan(np.asarray(head_metrics(attn, np.array([1])))))


def test_streaming_statistics():
    rng = np.random.default_rng(4)
    n_layers, h, n_bins = 2, 3, 10
    metrics = rng.random((n_layers, 7, h, 3)).astype(np.float32)
    metrics[0, 3, 1, 2] = np.nan  # undefined value: counted, not summed
    metrics[1, 5, 0, 0] = 1.5  # out of range: clipped into the last bin, counted
    valid = np.array([True] * 6 + [False])  # last utterance is batch padding
    stats = init_head_stats(n_layers, h, n_bins=n_bins)
    s1 = update_head_stats(stats, metrics[:, :4], valid[:4])
    s2 = update_head_stats(stats, metrics[:, 4:], valid[4:])
    merged = finalize_head_stats(merge_head_stats(s1, s2))
    one = finalize_head_stats(update_head_stats(stats, metrics, valid))
    for key in ("count", "hist", "n_nan", "n_out_of_range"):
        np.testing.assert_array_equal(merged[key], one[key])
    np.testing.assert_allclose(merged["mean"], one["mean"], rtol=1e-6)
    used = np.where(valid[None, :, None, None], metrics, np.nan)
    np.testing.assert_allclose(one["mean"], np.nanmean(used, 1), rtol=1e-5)
    np.testing.assert_allclose(one["std"], np.nanstd(used, 1), rtol=1e-4, atol=1e-6)
    assert one["n_nan"][0, 1, 2] == 1 and one["n_nan"].sum() == 1
    assert one["n_out_of_range"][1, 0, 0] == 1 and one["n_out_of_range"].sum() == 1
    np.testing.assert_array_equal(one["hist"].sum(-1), one["count"])
    assert one["count"].max() == 6
    ref_hist = np.histogram(np.clip(used[0, :, 2, 1], 0, 1), bins=one["bin_edges"][1])[0]
    np.testing.assert_array_equal(one["hist"][0, 2, 1], ref_hist)
    with pytest.raises(ValueError, match="metrics must be"):
        update_head_stats(stats, metrics[:, :, :2], valid)


def test_streaming_end_to_end_from_attention():
    rng = np.random.default_rng(5)
    attn = np.stack([[[random_map(rng) for _ in range(2)] for _ in range(3)]])  # (L=1, B=3, H=2, T, T)
    lengths = np.array([T, 6, 0])
    stats = update_head_stats(init_head_stats(1, 2), head_metrics(attn, lengths), lengths=lengths)
    fin = finalize_head_stats(stats)
    assert fin["count"].max() == 2 and fin["n_nan"].sum() == 0  # padding row is not data


def test_typing_is_raw_by_default_and_zscore_only_an_option():
    """METHODS section 4: a head's type is its largest raw [0, 1] metric. Here every head is global in raw
    terms, so no head may be typed diagonal or vertical; z-scoring across heads (the old default) invents them."""
    all_global = np.array([[[0.30, 0.10, 0.90], [0.45, 0.20, 0.80]],
                           [[0.20, 0.35, 0.95], [0.40, 0.15, 0.85]]])
    assert (head_types(all_global) == HEAD_TYPES.index("global")).all()
    z = head_types(all_global, normalize="zscore")
    assert {HEAD_TYPES[i] for i in z.ravel()} >= {"diagonal", "vertical"}  # what the option does


def test_typing_normalisation_thresholds_and_masks():
    # Raw diagonality is high everywhere: raw argmax (the default) calls every head diagonal; z-scoring
    # across heads (an option) finds the heads that stand out on each metric.
    m = np.array([[[0.95, 0.10, 0.20], [0.90, 0.60, 0.20]],
                  [[0.90, 0.10, 0.70], [0.92, 0.12, 0.22]]])
    assert head_types(m).tolist() == [[0, 0], [0, 0]]
    t = head_types(m, normalize="zscore")
    assert t[0, 1] == HEAD_TYPES.index("vertical") and t[1, 0] == HEAD_TYPES.index("global")
    assert head_types(m, normalize="minmax")[0, 0] == HEAD_TYPES.index("diagonal")
    th = head_types(m, thresholds={"diagonality": 0.99, "verticality": 0.5, "globalness": 0.5})
    assert th.tolist() == [[UNTYPED, 1], [2, UNTYPED]]
    nan = m.copy()
    nan[1, 1, 0] = np.nan
    assert head_types(nan)[1, 1] == UNTYPED
    masks = type_masks(t)
    assert sum(v.sum() for v in masks.values()) == t.size
    ablate = type_head_mask(t, "vertical")
    assert ablate[0, 1] == 0 and ablate.sum() == t.size - masks["vertical"].sum()
    only = type_head_mask(t, "vertical", keep_only=True)
    np.testing.assert_array_equal(only, masks["vertical"].astype(np.float32))
    with pytest.raises(ValueError, match="unknown metric"):
        head_types(m, thresholds={"diag": 0.5})
    with pytest.raises(ValueError, match="normalize"):
        head_types(m, normalize="rank")
    assert METRIC_NAMES == ("diagonality", "verticality", "globalness")


def test_plots_write_png(tmp_path):
    from jaxneurons.heads.plots import plot_attention_examples, plot_head_types

    types = np.array([[0, 1, 2], [UNTYPED, 0, 2]])
    p1 = plot_head_types(types, str(tmp_path / "fig" / "types.png"), scores=np.ones((2, 3)))
    p2 = plot_attention_examples([identity(), one_column(), uniform()], str(tmp_path / "maps.png"),
                                 titles=["diagonal", "vertical", "global"], lengths=[T, 6, T], ncols=2)
    for p in (p1, p2):
        assert os.path.getsize(p) > 1000
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="types must lie"):
        plot_head_types(np.array([[5]]), str(tmp_path / "bad.png"))
