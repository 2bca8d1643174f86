"""Per-head top utterances (the most diagonal / vertical / global utterances of each head): streamed top-N vs a
plain-Python reference (ties, NaN, fewer utterances than N, any merge order), saved with the heads results and
shown on the heads explorer page (structural HTML test)."""

from __future__ import annotations

import json
import os
from urllib.parse import urlsplit

import numpy as np
import pytest

from jaxneurons.heads import init_head_top, merge_head_top, reference_head_top, update_head_top
from jaxneurons.pipeline.heads import HeadsConfig
from tests.helpers import TINY_MELHUBERT as TINY
from tests.helpers import build_heads_results, parse, read

L, H = 2, 3


def tied_metrics(rng, n_utts):
    """(N, L, H, 3) metrics on a coarse grid (many exact ties) with some NaN (undefined) values."""
    m = (np.round(rng.random((n_utts, L, H, 3)) * 4) / 4).astype(np.float32)
    m[rng.random(m.shape) < 0.15] = np.nan
    return m


def stream(per_utt, n, batch, rng):
    """Feed ``per_utt`` in shuffled batches with padding rows (utt -1, garbage metrics)."""
    order = rng.permutation(len(per_utt))
    top = init_head_top(L, H, n)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        utt = np.concatenate([idx, [-1]])  # one padding row per batch
        metrics = np.concatenate([per_utt[idx], np.full((1, L, H, 3), 9.0, np.float32)])  # (B, L, H, 3)
        top = update_head_top(top, np.moveaxis(metrics, 0, 1), utt)
    return top


@pytest.mark.parametrize(("n_utts", "n", "batch"), [(23, 5, 4), (3, 5, 2), (40, 1, 7)])
def test_streamed_top_utterances_match_reference(n_utts, n, batch):
    """n = 5 > 3 utterances: the trailing slots stay empty (NaN, -1); ties go to the earlier utterance."""
    rng = np.random.default_rng(n_utts)
    per_utt = tied_metrics(rng, n_utts)
    got, want = stream(per_utt, n, batch, rng), reference_head_top(per_utt, n)
    np.testing.assert_array_equal(got.utt, want.utt)
    np.testing.assert_array_equal(got.value, want.value)
    assert not (got.utt == n_utts).any() and (got.value[got.utt >= 0] <= 1).all()  # padding rows never enter
    if n_utts < n:
        assert (got.utt[..., n_utts:] == -1).all()
    if n > 1:  # ties really occur among the kept values
        v = got.value[..., :2]
        assert (v[..., 0] == v[..., 1]).any()


def test_merge_of_shards_is_order_independent():
    rng = np.random.default_rng(4)
    per_utt = tied_metrics(rng, 30)
    shards = []
    for part in np.array_split(np.arange(30), 3):
        shards.append(update_head_top(init_head_top(L, H, 4), np.moveaxis(per_utt[part], 0, 1), part))
    a = merge_head_top(merge_head_top(shards[0], shards[1]), shards[2])
    b = merge_head_top(shards[2], merge_head_top(shards[1], shards[0]))
    want = reference_head_top(per_utt, 4)
    for got in (a, b):
        np.testing.assert_array_equal(got.utt, want.utt)
        np.testing.assert_array_equal(got.value, want.value)


def test_bad_shapes_and_sizes_are_errors():
    with pytest.raises(ValueError, match="n must be >= 1"):
        init_head_top(L, H, 0)
    with pytest.raises(ValueError, match="do not match"):
        update_head_top(init_head_top(L, H, 2), np.zeros((L, 4, H + 1, 3)), np.arange(4))
    with pytest.raises(ValueError, match="top_utterances"):
        HeadsConfig(top_utterances=-1)


# ---------------------------------------------------------------- the pipeline and the explorer page

@pytest.fixture(scope="module")
def heads_dir(tmp_path_factory):
    return build_heads_results(str(tmp_path_factory.mktemp("heads_top")))


def test_pipeline_keeps_each_heads_top_utterances(heads_dir):
    m = heads_dir["analysis"].metrics
    want = reference_head_top(m.utterance_metrics, 3)
    np.testing.assert_array_equal(m.top.utt, want.utt)
    np.testing.assert_array_equal(m.top.value, want.value)
    with open(os.path.join(heads_dir["out"], "top_utterances.json")) as f:
        saved = json.load(f)
    ids = [u.utt_id for u in heads_dir["corpus"]]
    first = saved["heads"][0]
    assert (first["layer"], first["head"]) == (0, 0)
    assert [e["utt_id"] for e in first["globalness"]] == [ids[u] for u in want.utt[0, 0, 2] if u >= 0]


def test_heads_page_lists_every_head_with_type_and_playable_top_utterances(heads_dir):
    out, analysis = heads_dir["out"], heads_dir["analysis"]
    page = os.path.join(out, "explorer", "index.html")
    p = parse(page)
    text = read(page)
    types = analysis.typing.to_json()["types"]
    n_heads = TINY.num_attention_heads
    for layer in range(L):
        for head in range(n_heads):
            assert f"h{layer}.{head}" in p.ids
            assert f"Head {layer}.{head}: {types[layer][head]}</h3>" in text
    audio = [a["src"] for tag, a in p.tags if tag == "audio"]
    shown = {int(u) for u in analysis.metrics.top.utt.ravel() if u >= 0}
    assert len(set(audio)) == len(shown) and len(audio) == int((analysis.metrics.top.utt >= 0).sum())
    for _tag, _key, ref in p.refs:
        parts = urlsplit(ref)
        if ref == "data:,":
            continue
        assert not parts.scheme and not parts.netloc, ref
        if parts.path:
            assert os.path.isfile(os.path.join(out, "explorer", parts.path)), ref
        if parts.fragment:
            assert parts.fragment in p.ids, ref
    wav = os.path.join(out, "explorer", audio[0])
    assert os.path.getsize(wav) <= 44 + 2 * 16000 * 2  # at most clip_seconds = 2 s of 16-bit audio
