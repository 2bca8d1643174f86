"""The explorer's static HTML: every asset exists, every link resolves, nothing external; the pages show
what the scan found (top examples with audio, traces, profiles; sentences instead of empty plots)."""

from __future__ import annotations

import html
import os
import re
import wave
from urllib.parse import urlsplit

import numpy as np
import pytest

from jaxneurons.data import load_audio
from jaxneurons.models import forward_with_captures
from jaxneurons.report.explorer import EXPLORER_DIR, example_group_shares, write_multi_explorer
from tests.helpers import EXPLORER_EXAMPLES as EXAMPLES
from tests.helpers import build_results, parse, read


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return build_results(str(tmp_path_factory.mktemp("explorer")))


def pages(out):
    root = os.path.join(out, EXPLORER_DIR)
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".html")]


def test_every_reference_resolves_and_nothing_is_external(scan):
    files = pages(scan["out"])
    assert len(files) >= 5
    n_audio = 0
    for path in files:
        p = parse(path)
        assert len(p.ids) == len(set(p.ids)), f"{path}: duplicate ids"
        for tag, key, ref in p.refs:
            parts = urlsplit(ref)
            if ref == "data:,":  # the empty favicon (so that browsers request none)
                continue
            assert not parts.scheme and not parts.netloc, f"{path}: external reference {ref}"
            if parts.path:
                target = os.path.normpath(os.path.join(os.path.dirname(path), parts.path))
                assert os.path.isfile(target), f"{path}: <{tag} {key}={ref}> does not exist"
            if parts.fragment:
                assert parts.fragment in (p.ids if not parts.path else parse(target).ids), f"{path}: #{parts.fragment}"
            n_audio += tag == "audio"
        text = read(path)
        assert not re.search(r"https?://", text), f"{path}: mentions a URL (no network at view time)"
    assert n_audio >= EXAMPLES  # at least one neuron page with playable snippets


def test_neuron_page_shows_examples_audio_trace_and_profile(scan):
    out = os.path.join(scan["out"], EXPLORER_DIR)
    page = os.path.join(out, "neurons", "1.40.html")
    p = parse(page)
    text = read(page)
    assert "phone_type/vowel" in text and "gender/male" in text  # the sets it belongs to
    audios = [a["src"] for t, a in p.tags if t == "audio"]
    ex = scan["stats"].examples()
    kept = [(u, f) for u, f in zip(ex["utt"][1, 40], ex["frame"][1, 40], strict=True) if u >= 0]
    assert len(audios) == len(kept) == EXAMPLES
    assert audios == [f"../media/u{u}_f{f}.wav" for u, f in kept]  # best first, as the scan kept them
    with wave.open(os.path.join(out, "neurons", audios[0])) as w:
        assert w.getframerate() == 16000 and w.getnframes() == 8000  # 0.5 s at the scan's rate
    imgs = [a["src"] for t, a in p.tags if t == "img"]
    assert imgs == [s.replace(".wav", ".png") for s in audios]
    assert text.count("<polyline") == EXAMPLES  # one activation trace per snippet
    assert "phone: P(|h| in the layer's top" in html.unescape(text) and "gender: P(" in text  # profiles
    assert f"h = {ex['value'][1, 40, 0]:.3f}" in text
    # (utterance, frame) of the examples are where the activation is: one unbatched forward per utterance
    for (u, f), v in zip(kept[:2], ex["value"][1, 40], strict=False):  # 2 of them: eager forwards are slow
        _, ffn, _ = forward_with_captures(scan["model"], load_audio(scan["utts"][u].path)[None])
        assert float(ffn[1][0, f, 40]) == pytest.approx(float(v), rel=1e-4, abs=1e-5)


def test_overview_heatmaps_sentences_issues_and_example_shares(scan):
    text = read(os.path.join(scan["out"], EXPLORER_DIR, "index.html"))
    assert "aape_gender: no neuron was found in any group" in text  # no empty plot
    assert "unreadable" in text  # data issues
    assert text.count("background:rgba(") >= 2  # phone_type and gender heatmaps
    assert "share in group" in text and "phone_type / vowel" in text


def test_group_shares_match_a_direct_count(scan):
    plan, ex = scan["plan"], scan["stats"].examples()
    sets = {"phone_type": {"vowel": {"layers.0.ffn": [3, 17], "layers.1.ffn": [40]}}}
    (row,) = example_group_shares(ex, sets, plan)
    vowel_ids = set(plan.inventory.ids_of_type("vowel"))
    hits = [int(plan.utt_labels[u].phone[f]) in vowel_ids for layer, d in ((0, 3), (0, 17), (1, 40))
            for u, f in zip(ex["utt"][layer, d], ex["frame"][layer, d], strict=True) if u >= 0]
    assert row["examples"] == len(hits) == 3 * EXAMPLES
    assert row["share"] == pytest.approx(np.mean(hits))
    frames = np.concatenate([lab.phone for lab in plan.utt_labels])
    assert row["chance"] == pytest.approx(np.isin(frames, list(vowel_ids)).mean())


def test_index_lists_every_set_neuron_with_filters(scan):
    p = parse(os.path.join(scan["out"], EXPLORER_DIR, "neurons.html"))
    rows = [a["data-id"] for t, a in p.tags if t == "tr" and "data-id" in a]
    assert rows == ["0.3", "0.17", "1.40", "1.41"]
    assert {"f-layer", "f-prop", "f-group", "f-query"} <= set(p.ids)
    report = read(os.path.join(scan["out"], "report.md"))
    assert "explorer/index.html" in report


def test_multi_model_page_links_each_explorer_and_shows_overlaps(tmp_path):
    for name in ("a", "b"):
        os.makedirs(tmp_path / name / EXPLORER_DIR)
        for page in ("index.html", "neurons.html"):
            (tmp_path / name / EXPLORER_DIR / page).write_text("<html></html>")
    summary = {"models": {"a": {"results_dir": "a", "per_layer_counts": {"gender": {"male": [1, 2]}}},
                          "b": {"results_dir": "b", "per_layer_counts": {}}},
               "overlap": [{"models": ["a", "b"], "property": "gender", "group": "male", "sizes": [3, 0],
                            "iou": [[1, 0.25], [0.25, 1]], "iou_null_mean": [[1, 0.01], [0.01, 1]],
                            "iou_z": [[0, 7.5], [7.5, 0]]}]}
    page = write_multi_explorer(str(tmp_path), summary)
    p = parse(page)
    refs = [ref for _, _, ref in p.refs if ref.endswith(".html")]
    assert "../a/explorer/index.html" in refs and "../b/explorer/neurons.html" in refs
    for _, _, ref in p.refs:
        if ref != "data:,":
            assert os.path.isfile(os.path.normpath(os.path.join(os.path.dirname(page), ref))), ref
    text = read(page)
    assert "0.250 (0.010, +7.5)" in text and "a 3, b 0" in text


def test_caps_bound_pages_and_media_and_say_so(scan, tmp_path):
    import shutil

    from jaxneurons.report.explorer import ExplorerConfig, write_explorer

    copy = tmp_path / "results"
    shutil.copytree(scan["out"], copy, ignore=shutil.ignore_patterns(EXPLORER_DIR))
    write_explorer(str(copy), stats=scan["stats"], plan=scan["plan"], utterances=scan["utts"], model=scan["model"],
                   config=ExplorerConfig(max_audio_neurons=1, max_neuron_pages=2))
    out = copy / EXPLORER_DIR
    assert len(os.listdir(out / "neurons")) == 2
    assert len(os.listdir(out / "media")) == 2 * EXAMPLES  # one neuron's snippets + spectrograms
    index = parse(str(out / "neurons.html"))
    links = [ref for tag, _, ref in index.refs if ref.startswith("neurons/")]
    rows = [a for t, a in index.tags if t == "tr" and "data-id" in a]
    assert len(links) == 2 and len(rows) == 4
    overview = read(str(out / "index.html"))
    assert "Capped at the first 1 neurons" in overview and "Neuron pages: 2 of the 4 set neurons" in overview
    no_audio = [read(str(out / "neurons" / f)) for f in os.listdir(out / "neurons")]
    assert sum("<audio" in page for page in no_audio) == 1
    assert any("Audio was rendered for the first 1 neurons" in page for page in no_audio)
